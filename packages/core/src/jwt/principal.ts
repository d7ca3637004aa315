import type { Principal } from '../call/call-info.js';
import { freezeSound } from '../call/sound-principal.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';

/**
 * Where roles sit in the claims: a dotted path (`roles`, `realm_access.roles`), or an array of
 * path segments for claim names that contain dots themselves
 * (`['https://example.com/roles']`). A dotted string is first looked up as one claim name, so
 * a namespaced claim such as `https://example.com/roles` also works as a plain string.
 *
 * @example
 * ```ts
 * import type { ClaimPath } from '@fluxguard/core';
 * const keycloak: ClaimPath = 'realm_access.roles';
 * const auth0: ClaimPath = ['https://example.com/roles'];
 * ```
 */
export type ClaimPath = string | readonly string[];

/** Options of {@link claimsToPrincipal}. */
export interface ClaimsToPrincipalOptions {
  /** Where the roles are. Default `roles`. */
  readonly rolesClaim?: ClaimPath;
}

const MAX_ENTRIES = 256;
const MAX_ITEM_LENGTH = 256;

/** Checks a claim path at start-up; returns its segments. */
export function compileClaimPath(path: ClaimPath, where: string): readonly string[] {
  if (typeof path === 'string') {
    // A blank name is no claim an issuer writes: the roles would always read as none.
    if (path.split('.').some((s) => s.trim() === '')) {
      throw new ConfigurationError(`${where} must be a claim name or a dotted path of non-empty segments`);
    }
    return Object.freeze([path]);
  }
  const segments: unknown = path;
  if (!Array.isArray(segments) || segments.length === 0) {
    throw new ConfigurationError(`${where} must be a non-empty array of non-empty claim names`);
  }
  const names: string[] = [];
  for (const segment of segments as unknown[]) {
    if (typeof segment !== 'string' || segment.trim() === '') {
      throw new ConfigurationError(`${where} must be a non-empty array of non-empty claim names`);
    }
    names.push(segment);
  }
  return Object.freeze(names);
}

function ownValue(holder: unknown, key: string): unknown {
  if (typeof holder !== 'object' || holder === null || Array.isArray(holder)) return undefined;
  return Object.hasOwn(holder, key) ? (holder as Record<string, unknown>)[key] : undefined;
}

function readPath(claims: Readonly<Record<string, unknown>>, segments: readonly string[]): unknown {
  if (segments.length === 1) {
    const whole = segments[0] ?? '';
    const direct = ownValue(claims, whole);
    if (direct !== undefined || !whole.includes('.')) return direct;
    return readPath(claims, whole.split('.'));
  }
  let value: unknown = claims;
  for (const segment of segments) value = ownValue(value, segment);
  return value;
}

/** A claim value as a list of strings: an array of strings, or a space-delimited string. */
// Frozen like every other list of a principal: a principal that is frozen all through is taken
// as it is by `setPrincipal`, instead of being copied on every call.
const NO_ITEMS: readonly string[] = Object.freeze([]);

function stringList(value: unknown): readonly string[] {
  let items: unknown[];
  if (typeof value === 'string') items = value.split(' ');
  else if (Array.isArray(value)) items = value as unknown[];
  else return NO_ITEMS;
  const out = new Set<string>();
  for (const item of items) {
    if (typeof item === 'string' && item !== '' && item.length <= MAX_ITEM_LENGTH) out.add(item);
    if (out.size >= MAX_ENTRIES) break;
  }
  return Object.freeze([...out]);
}

/**
 * Builds the {@link Principal} of verified JWT claims: `subject` from `sub`, roles from the
 * configured claim path (an array of strings, or a space-delimited string), scopes from `scope`
 * (space-delimited, RFC 8693) or else `scp` (array or string). Entries that are not non-empty
 * strings are dropped; lists are capped at 256 entries. `authenticatedBy` is `jwt` and
 * `certificate` is undefined (mTLS merges its identity later).
 *
 * Call it only with claims whose signature was verified.
 *
 * @throws SecurityError `unauthenticated` (reason `missing_subject`) without a non-empty `sub`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): claimsToPrincipal
 * const p = claimsToPrincipal({ sub: 'alice', realm_access: { roles: ['artifacts.reader'] }, scope: 'read write' },
 *   { rolesClaim: 'realm_access.roles' });
 * p.roles;  // ['artifacts.reader']
 * p.scopes; // ['read', 'write']
 * ```
 */
export function claimsToPrincipal(
  claims: Readonly<Record<string, unknown>>,
  options: ClaimsToPrincipalOptions = {},
): Principal {
  const segments = compileClaimPath(options.rolesClaim ?? 'roles', 'claimsToPrincipal: "rolesClaim"');
  // A copy: the caller's object is not ours to freeze.
  return principalFromClaims({ ...claims }, segments);
}

/**
 * {@link claimsToPrincipal} with a path compiled once, for the verifier's hot path. `claims`
 * is handed over: a payload just parsed, which this deep-freezes in place rather than copying.
 */
export function principalFromClaims(claims: Record<string, unknown>, rolesPath: readonly string[]): Principal {
  const sub = ownValue(claims, 'sub');
  if (typeof sub !== 'string' || sub === '' || sub.length > 1024) {
    throw new SecurityError('unauthenticated', { reason: 'missing_subject' });
  }
  const scope = ownValue(claims, 'scope');
  const scopes = stringList(scope !== undefined ? scope : ownValue(claims, 'scp'));
  return freezeSound({
    subject: sub,
    roles: stringList(readPath(claims, rolesPath)),
    scopes,
    claims: deepFreeze(claims),
    certificate: undefined,
    authenticatedBy: 'jwt',
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
