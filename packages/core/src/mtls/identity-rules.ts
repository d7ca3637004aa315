import type { CertificateIdentity, Principal } from '../call/call-info.js';
import { freezeSound, isSoundPrincipal } from '../call/sound-principal.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { isValidPathSegment, isValidTrustDomain, parseSpiffeId } from './spiffe.js';

/**
 * One rule about a verified client certificate. Every field given must match (AND); a list of
 * rules matches when any rule does (OR). At least one of `spiffeId`, `dnsName`, `commonName`,
 * `fingerprint256` is required.
 *
 * - `spiffeId`: exact, or a pattern where a `*` path segment stands for exactly one segment
 *   (`spiffe://example.org/ns/*\/sa/reader`) and a final `**` for one or more segments
 *   (`spiffe://example.org/ns/prod/**`). The trust domain is always literal.
 * - `dnsName`: exact (case-insensitive), or `*.example.com`, where `*` stands for exactly one
 *   label. Matches when any SAN DNS name of the certificate does.
 * - `commonName`: exact, case-sensitive; an identity of last resort.
 * - `fingerprint256`: SHA-256 pin, hex with or without colons, any case.
 * - `roles`: roles granted by {@link principalFromCertificate} when the rule matches.
 *
 * Patterns are compared segment by segment, never turned into regular expressions: `.` and
 * every other character is literal.
 *
 * @example
 * ```ts
 * import type { IdentityRule } from '@fluxguard/core';
 * const rules: IdentityRule[] = [
 *   { spiffeId: 'spiffe://example.org/ns/*\/sa/reader', roles: ['artifacts.reader'] },
 *   { fingerprint256: 'AB:CD:...', roles: ['artifacts.admin'] },
 * ];
 * ```
 */
export interface IdentityRule {
  /**
   * Exact SPIFFE ID, or a pattern: a `*` path segment for exactly one segment, a final `**` for one
   * or more; the trust domain is literal.
   */
  readonly spiffeId?: string;
  /** Exact DNS name (case-insensitive) or `*.example.com` (`*` is one label); matches when any SAN DNS name does. */
  readonly dnsName?: string;
  /** The subject CN, exact and case-sensitive; an identity of last resort. */
  readonly commonName?: string;
  /** SHA-256 pin of the certificate: 64 hex digits, with or without colons, any case. */
  readonly fingerprint256?: string;
  /**
   * Roles granted when the rule matches, in `certificateRoles`; ignored where rules only match (an
   * RBAC `certificate` requirement, `mtls` `allow`).
   */
  readonly roles?: readonly string[];
}

/**
 * A compiled list of {@link IdentityRule}s: true when the identity matches any rule. An absent
 * identity (no verified certificate) never matches.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): compileIdentityRules, IdentityMatcher
 * const allowed: IdentityMatcher = compileIdentityRules([{ dnsName: '*.svc.example.com' }], 'policy.mtls');
 * allowed(call.peerCertificate); // boolean
 * ```
 */
export type IdentityMatcher = (identity: CertificateIdentity | undefined) => boolean;

type Predicate = (identity: CertificateIdentity) => boolean;

interface CompiledRule {
  readonly matches: Predicate;
  readonly roles: readonly string[];
}

const RULE_KEYS: ReadonlySet<string> = new Set(['spiffeId', 'dnsName', 'commonName', 'fingerprint256', 'roles']);
const MATCH_KEYS = ['spiffeId', 'dnsName', 'commonName', 'fingerprint256'] as const;

/**
 * Compiles identity rules once, at start-up, into a matcher for the hot path.
 *
 * @param rules - the rules; OR across rules, AND within a rule.
 * @param where - where the rules come from (e.g. `policy.rbac["/pkg.S/M"].certificate`), named
 *   in every configuration error.
 * @throws ConfigurationError for an empty list, an empty rule, an unknown field or a bad pattern.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): compileIdentityRules
 * const isReader = compileIdentityRules(
 *   [{ spiffeId: 'spiffe://example.org/ns/*\/sa/reader' }],
 *   'policy.rbac.GetArtifact.certificate',
 * );
 * isReader(call.peerCertificate); // true for spiffe://example.org/ns/prod/sa/reader
 * ```
 */
export function compileIdentityRules(rules: readonly IdentityRule[], where: string): IdentityMatcher {
  const compiled = compileRules(rules, where, 'match');
  const predicates = compiled.map((rule) => rule.matches);
  return (identity) => identity !== undefined && predicates.some((matches) => matches(identity));
}

/**
 * A compiled role mapping: the roles of every rule the identity matches, without duplicates.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): compileCertificateRoles
 * const rolesOf = compileCertificateRoles([{ dnsName: 'backup.example.com', roles: ['artifacts.reader'] }], 'policy.mtls');
 * rolesOf(call.peerCertificate); // ['artifacts.reader'] or []
 * ```
 */
export type CertificateRoleMapper = (identity: CertificateIdentity | undefined) => readonly string[];

/**
 * Compiles rules into a {@link CertificateRoleMapper}, once, at start-up.
 *
 * @throws ConfigurationError as {@link compileIdentityRules} does, and for a role that is not a
 *   non-empty string.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): compileCertificateRoles
 * const rolesOf = compileCertificateRoles(
 *   [{ spiffeId: 'spiffe://example.org/ns/prod/sa/backup', roles: ['artifacts.reader'] }],
 *   'policy.mtls.roles',
 * );
 * ```
 */
export function compileCertificateRoles(rules: readonly IdentityRule[], where: string): CertificateRoleMapper {
  const compiled = compileRules(rules, where, 'roles');
  return (identity) => {
    if (identity === undefined) return [];
    const roles = new Set<string>();
    for (const rule of compiled) {
      if (rule.roles.length > 0 && rule.matches(identity)) for (const role of rule.roles) roles.add(role);
    }
    return Object.freeze([...roles]);
  };
}

// Rules given as plain arrays are compiled on first use and remembered per array, so that the
// convenience functions below do no per-request compilation.
const compiledByRules = new WeakMap<readonly IdentityRule[], CertificateRoleMapper>();

function roleMapperFor(rules: readonly IdentityRule[]): CertificateRoleMapper {
  let mapper = compiledByRules.get(rules);
  if (mapper === undefined) {
    mapper = compileCertificateRoles(rules, 'certificate role rules');
    compiledByRules.set(rules, mapper);
  }
  return mapper;
}

/**
 * The roles the rules grant to a verified certificate identity (none for `undefined`). Rules
 * are compiled on first use and cached per array object: pass the same (unmodified) array on
 * every call, or use {@link compileCertificateRoles} directly.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): rolesFromCertificate
 * const RULES = Object.freeze([{ spiffeId: 'spiffe://fluxguard.dev/client', roles: ['artifacts.reader'] }]);
 * rolesFromCertificate(call.peerCertificate, RULES); // ['artifacts.reader']
 * ```
 */
export function rolesFromCertificate(
  identity: CertificateIdentity | undefined,
  rules: readonly IdentityRule[] | CertificateRoleMapper,
): readonly string[] {
  const mapper = typeof rules === 'function' ? rules : roleMapperFor(rules);
  return mapper(identity);
}

/**
 * The subject a certificate identity is known by: its SPIFFE ID, else its first SAN DNS name,
 * else its subject CN, else `sha256:<fingerprint>`. A DNS name or CN with a `:` in it is
 * prefixed with `dns:` or `cn:`: a certificate whose CN read `spiffe://fluxguard.dev/backup`
 * (or `sha256:…`) was the SPIFFE workload's subject, in the audit log and in the per-caller
 * rate limits it shared with it. A DNS name has no `:`, nor has any CN a real name uses.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): certificateSubject
 * certificateSubject(identity); // 'spiffe://fluxguard.dev/client'
 * ```
 */
export function certificateSubject(identity: CertificateIdentity): string {
  if (identity.spiffeId !== undefined) return identity.spiffeId;
  const dnsName = identity.dnsNames[0];
  if (dnsName !== undefined) return dnsName.includes(':') ? `dns:${dnsName}` : dnsName;
  const cn = identity.commonName;
  if (cn !== undefined) return cn.includes(':') ? `cn:${cn}` : cn;
  return `sha256:${identity.fingerprint256}`;
}

/**
 * A {@link Principal} authenticated by its client certificate alone (`authenticatedBy: 'mtls'`),
 * for a service that calls with a certificate and no token. `undefined` when there is no
 * verified certificate. The roles are those of the matching rules (possibly none: RBAC then
 * denies what needs a role).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): principalFromCertificate
 * const RULES = Object.freeze([{ spiffeId: 'spiffe://example.org/ns/*\/sa/backup', roles: ['artifacts.reader'] }]);
 * const principal = principalFromCertificate(call.peerCertificate, RULES);
 * // { subject: 'spiffe://example.org/ns/prod/sa/backup', roles: ['artifacts.reader'], authenticatedBy: 'mtls', ... }
 * ```
 */
export function principalFromCertificate(
  identity: CertificateIdentity | undefined,
  rules: readonly IdentityRule[] | CertificateRoleMapper,
): Principal | undefined {
  if (identity === undefined) return undefined;
  // Not marked sound: the roles may come from a mapper of the application's.
  return Object.freeze({
    subject: certificateSubject(identity),
    roles: rolesFromCertificate(identity, rules),
    scopes: Object.freeze([]),
    claims: Object.freeze({}),
    certificate: identity,
    authenticatedBy: 'mtls',
  });
}

/**
 * Adds a verified certificate identity to a JWT principal: `authenticatedBy` becomes `'both'`.
 * Subject, roles, scopes and claims stay those of the token. Without a certificate identity the
 * JWT principal is returned as it is.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): mergePrincipals
 * const principal = mergePrincipals(jwtPrincipal, call.peerCertificate);
 * principal.authenticatedBy; // 'both' when a verified certificate was presented
 * ```
 */
export function mergePrincipals(jwtPrincipal: Principal, certIdentity: CertificateIdentity | undefined): Principal {
  if (certIdentity === undefined) return jwtPrincipal;
  const last = lastMerged.get(certIdentity);
  if (last?.from === jwtPrincipal) return last.merged;
  const fields: Principal = { ...jwtPrincipal, certificate: certIdentity, authenticatedBy: 'both' };
  // Sound when the token's principal was: its roles and scopes are plain frozen lists of strings.
  const merged = isSoundPrincipal(jwtPrincipal) ? freezeSound(fields) : Object.freeze(fields);
  lastMerged.set(certIdentity, { from: jwtPrincipal, merged });
  return merged;
}

// The last merge made with each certificate identity: a client that reuses its token on a
// connection gets the same frozen principal on every call instead of a copy per call. Keyed by
// the identities the adapters keep per connection or fingerprint, so an entry per client
// certificate, never per call (a new token per call replaces the entry's value).
const lastMerged = new WeakMap<CertificateIdentity, { readonly from: Principal; readonly merged: Principal }>();

/**
 * Normalizes a SHA-256 fingerprint to lowercase hex without separators; `undefined` when the
 * value is not 32 bytes of hex (with or without `:` separators).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): normalizeFingerprint256
 * normalizeFingerprint256('AB:CD:...'); // 'abcd...'
 * ```
 */
export function normalizeFingerprint256(value: string): string | undefined {
  const hex = value.replaceAll(':', '').toLowerCase();
  if (hex.length !== 64) return undefined;
  for (let i = 0; i < hex.length; i++) {
    const c = hex.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return undefined;
  }
  return hex;
}

/**
 * `match`: the rules only say which certificates pass (an RBAC `certificate` requirement, `mtls`
 * `allow`), so `roles` would be read by nothing; `roles`: each rule grants roles, and one
 * without any would map nothing.
 */
type RuleUse = 'match' | 'roles';

function compileRules(rules: readonly IdentityRule[], where: string, use: RuleUse): readonly CompiledRule[] {
  const raw: unknown = rules;
  if (!Array.isArray(raw)) throw new ConfigurationError(`${where}: identity rules must be an array`);
  if (raw.length === 0) {
    throw new ConfigurationError(`${where}: identity rules must not be empty (an empty list would match nothing)`);
  }
  return Object.freeze(
    raw.map((rule: unknown, index) => {
      const at = `${where}[${index}]`;
      const compiled = compileRule(rule, at);
      const given = (rule as { roles?: unknown }).roles !== undefined;
      if (use === 'match' && given) {
        throw new ConfigurationError(
          `${at}.roles: these rules only say which certificates pass; roles are granted by certificateRoles`,
        );
      }
      if (use === 'roles' && compiled.roles.length === 0) {
        throw new ConfigurationError(
          `${at}.roles: a certificate role rule needs at least one role (it would map nothing)`,
        );
      }
      return compiled;
    }),
  );
}

function compileRule(rule: unknown, where: string): CompiledRule {
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) {
    throw new ConfigurationError(`${where}: an identity rule must be an object`);
  }
  // A misspelt field gets its hint; an inherited one (a polluted prototype) is refused.
  checkKnownKeys(rule, [...RULE_KEYS], where, 'field');
  const record = rule as Record<string, unknown>;
  const predicates: Predicate[] = [];
  for (const key of MATCH_KEYS) {
    const value = record[key];
    if (value === undefined) continue;
    if (typeof value !== 'string' || value.length === 0) {
      throw new ConfigurationError(`${where}.${key}: must be a non-empty string`);
    }
    predicates.push(compileField(key, value, `${where}.${key}`));
  }
  if (predicates.length === 0) {
    throw new ConfigurationError(
      `${where}: an identity rule needs at least one of spiffeId, dnsName, commonName, fingerprint256`,
    );
  }
  const roles = compileRoles(record.roles, `${where}.roles`);
  const matches: Predicate =
    predicates.length === 1 && predicates[0] !== undefined
      ? predicates[0]
      : (identity) => predicates.every((p) => p(identity));
  return Object.freeze({ matches, roles });
}

function compileRoles(value: unknown, where: string): readonly string[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value)) throw new ConfigurationError(`${where}: must be an array of role names`);
  for (const role of value) {
    if (typeof role !== 'string' || role.length === 0) {
      throw new ConfigurationError(`${where}: every role must be a non-empty string`);
    }
  }
  return Object.freeze([...(value as string[])]);
}

function compileField(key: (typeof MATCH_KEYS)[number], value: string, where: string): Predicate {
  switch (key) {
    case 'spiffeId':
      return compileSpiffePattern(value, where);
    case 'dnsName':
      return compileDnsPattern(value, where);
    case 'commonName':
      return (identity) => identity.commonName === value;
    case 'fingerprint256': {
      const pin = normalizeFingerprint256(value);
      if (pin === undefined) {
        throw new ConfigurationError(`${where}: must be a SHA-256 fingerprint (64 hex digits, colons allowed)`);
      }
      return (identity) => identity.fingerprint256 === pin;
    }
  }
}

type SegmentPattern =
  { readonly kind: 'literal'; readonly value: string } | { readonly kind: 'one' } | { readonly kind: 'rest' };

function compileSpiffePattern(pattern: string, where: string): Predicate {
  const scheme = 'spiffe://';
  if (!pattern.startsWith(scheme)) {
    throw new ConfigurationError(`${where}: must start with "spiffe://" (got a value of another form)`);
  }
  const rest = pattern.slice(scheme.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (slash < 0 || !isValidTrustDomain(trustDomain)) {
    throw new ConfigurationError(
      `${where}: must be spiffe://<trust-domain>/<path> with a lowercase trust domain (a-z, 0-9, ".", "-", "_") and no wildcard in it`,
    );
  }
  const rawSegments = rest.slice(slash + 1).split('/');
  const segments: SegmentPattern[] = rawSegments.map((segment, index) => {
    if (segment === '*') return { kind: 'one' };
    if (segment === '**') {
      if (index !== rawSegments.length - 1) {
        throw new ConfigurationError(`${where}: "**" is allowed only as the last path segment`);
      }
      return { kind: 'rest' };
    }
    if (!isValidPathSegment(segment)) {
      throw new ConfigurationError(
        `${where}: path segment ${index + 1} is not valid (letters, digits, ".", "-", "_" only; "*" and "**" only as whole segments; no empty segment)`,
      );
    }
    return { kind: 'literal', value: segment };
  });
  return (identity) => {
    const id = identity.spiffeId === undefined ? undefined : parseSpiffeId(identity.spiffeId);
    if (id?.trustDomain !== trustDomain) return false;
    return matchSegments(segments, id.segments);
  };
}

function matchSegments(pattern: readonly SegmentPattern[], actual: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === undefined) return false;
    if (p.kind === 'rest') return actual.length > i; // one or more remaining segments
    const segment = actual[i];
    if (segment === undefined) return false;
    if (p.kind === 'literal' && p.value !== segment) return false;
  }
  return actual.length === pattern.length;
}

function isDnsLabel(label: string): boolean {
  if (label.length === 0 || label.length > 63) return false;
  if (label.startsWith('-') || label.endsWith('-')) return false;
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
    if (!ok) return false;
  }
  return true;
}

function compileDnsPattern(pattern: string, where: string): Predicate {
  const labels = pattern.toLowerCase().split('.');
  const wildcard = labels[0] === '*';
  const fixed = wildcard ? labels.slice(1) : labels;
  if (pattern.length > 253 || !fixed.every(isDnsLabel) || (wildcard && fixed.length < 2)) {
    throw new ConfigurationError(
      `${where}: must be a DNS name or "*.<domain>" with at least two labels after "*" (letters, digits, "-", "_" only)`,
    );
  }
  const suffix = `.${fixed.join('.')}`;
  if (!wildcard) {
    const exact = fixed.join('.');
    return (identity) => identity.dnsNames.some((name) => name.toLowerCase() === exact);
  }
  return (identity) =>
    identity.dnsNames.some((name) => {
      const lower = name.toLowerCase();
      if (!lower.endsWith(suffix)) return false;
      const first = lower.slice(0, lower.length - suffix.length);
      // Exactly one label: not empty, no dot, and not itself a wildcard from the certificate.
      return isDnsLabel(first);
    });
}
