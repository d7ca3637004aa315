import { errors as joseErrors, jwtVerify, type JSONWebKeySet } from 'jose';
import type { CallInfo, Principal } from '../call/call-info.js';
import { SecurityError, isSecurityError } from '../errors/security-error.js';
import { MAX_JTI_LENGTH, type Denylist } from '../denylist/denylist.js';
import type { JwsAlgorithm } from './algorithms.js';
import { extractBearerToken, tokenOfAuthorization } from './bearer.js';
import {
  safeCause,
  type JwksSource,
  type RemoteJwksOptions,
  type TokenHeader,
  type VerificationKey,
} from './key-source.js';
import { principalFromClaims, type ClaimPath } from './principal.js';
import { verifyCompactSync, type CompactJws, type FastRefusal } from './signature.js';
import { TokenCache } from './token-cache.js';
import { resolveVerifierSettings, type VerifierSettings } from './verifier-settings.js';

/**
 * Options of {@link createJwtVerifier}. Exactly one key option is required: `jwks`, `jwksUrl`,
 * `publicKey`, `secret` or `keySource`. `issuer` and `audience` are required: a verifier that
 * accepts any issuer's or any audience's token is the classic hole, so there is no default.
 *
 * @example
 * ```ts
 * import type { JwtVerifierOptions } from '@fluxguard/core';
 * const options: JwtVerifierOptions = {
 *   jwksUrl: 'https://id.example.com/.well-known/jwks.json', issuer: 'https://id.example.com', audience: 'artifacts',
 * };
 * ```
 */
export interface JwtVerifierOptions {
  /** A local JSON Web Key Set (public keys only, at least one). */
  readonly jwks?: JSONWebKeySet | undefined;
  /** A remote JWKS endpoint; tuned by `jwksOptions`. */
  readonly jwksUrl?: string | URL | undefined;
  /** Timeout, cooldown, max age of the remote key set. */
  readonly jwksOptions?: Omit<RemoteJwksOptions, 'url'> | undefined;
  /** One PEM public key (SPKI) or X.509 certificate. */
  readonly publicKey?: string | undefined;
  /**
   * An HMAC secret (at least 32 bytes): a string or a `Uint8Array` (a `Buffer`); for a secret
   * `KeyObject`, give `key.export()`. The only way to allow HS256/HS384/HS512. Never a key:
   * a PEM block, a JWK or key set, or a DER public key (raw or base64) is refused, since whoever
   * holds the public key could then sign tokens.
   */
  readonly secret?: string | Uint8Array | undefined;
  /** A key source of the application's own. */
  readonly keySource?: JwksSource | undefined;
  /** Accepted `iss` value(s), compared exactly (no white space around one). Required. */
  readonly issuer: string | readonly string[];
  /** Accepted `aud` value(s), compared exactly: the token must name at least one. Required. */
  readonly audience: string | readonly string[];
  /** Algorithm allowlist. Default RS256, PS256, ES256, EdDSA; with `secret`: HS256. */
  readonly algorithms?: readonly JwsAlgorithm[] | undefined;
  /**
   * Leeway for `exp`, `nbf` and `iat`, in seconds. Default 30, at most 300: a larger leeway
   * would accept tokens long expired (and older than `maxTokenAgeSeconds`), where the fix is a
   * synchronized clock.
   */
  readonly clockToleranceSeconds?: number | undefined;
  /**
   * Refuse a token whose `iat` is older than this (and require `iat`): a whole number of
   * seconds, at most 315 360 000 (ten years). Default: no limit.
   */
  readonly maxTokenAgeSeconds?: number | undefined;
  /** Claims that must be present, on top of `exp`, `iss`, `aud` and `sub` (always required). */
  readonly requiredClaims?: readonly string[] | undefined;
  /** The expected `typ` header (e.g. `at+jwt`, RFC 9068), not blank. Default: not checked. */
  readonly typ?: string | undefined;
  /**
   * Longest token accepted, checked before any parsing: from 64 to 65 536 characters. Default
   * 8192.
   */
  readonly maxTokenLength?: number | undefined;
  /**
   * Where roles are in the claims. Default `roles`. The claim is an array of strings, or one
   * string of space-separated roles (as `scope` is): `"reader writer"` grants both.
   */
  readonly rolesClaim?: ClaimPath | undefined;
  /** Revoked `jti`s, consulted on every call (cache hits included). */
  readonly denylist?: Denylist | undefined;
  /**
   * Refuse a token without `jti` (reason `missing_jti`). Default false: with a denylist, a
   * token without `jti` is accepted and simply cannot be revoked one by one.
   */
  readonly requireJti?: boolean | undefined;
  /**
   * Verified tokens kept (LRU, found by their signature and compared whole), each from its
   * second verification on, so that tokens used once never enter it. Each entry keeps its token
   * (at most `maxTokenLength` characters) beside its claims. 0 disables. Default 10 000.
   */
  readonly cacheMaxEntries?: number | undefined;
  /** The clock, epoch milliseconds. Default `Date.now`. For tests. */
  readonly now?: (() => number) | undefined;
}

/**
 * A token whose signature and claims were verified, with the caller it stands for.
 *
 * @example
 * ```ts
 * const { principal, jti, expiresAt } = await verifier.verify(token);
 * if (jti !== undefined) await denylist.revoke(jti, expiresAt);
 * ```
 */
export interface VerifiedToken {
  /** The caller the token stands for: `sub`, roles from `rolesClaim`, scopes from `scope` or `scp`. */
  readonly principal: Principal;
  /** Every claim of the payload (deep-frozen). */
  readonly claims: Readonly<Record<string, unknown>>;
  /** The `alg` of the token's header, one of the verifier's allowlist. */
  readonly algorithm: string;
  /** The `kid` of the token's header, when it names one. */
  readonly keyId: string | undefined;
  /** The token's `iss`, one of the accepted issuers. */
  readonly issuer: string;
  /** The token's `jti`, when it has one: the value to pass to `denylist.revoke`. */
  readonly jti: string | undefined;
  /** From `exp`. */
  readonly expiresAt: Date;
}

/**
 * Why the JWT verifier (with its bearer extraction, key sources and claim mapping) refused a
 * token, for the audit log only. `jwks_unavailable` comes with `unavailable` (the token may be
 * fine but cannot be checked now: no key set was ever loaded from the JWKS URL); every other
 * reason with `unauthenticated`. A revocation store that does not answer is the denylist's
 * reason (`DenylistReason`), not the verifier's.
 *
 * @example
 * ```ts
 * import type { JwtReason } from '@fluxguard/core';
 * // Forged or tampered tokens, worth an alert rather than a routine denial:
 * const forgery: JwtReason[] = ['alg_none', 'alg_not_allowed', 'embedded_key', 'bad_signature'];
 * ```
 */
export type JwtReason =
  // The Authorization header (extractBearerToken)
  | 'missing_token'
  | 'multiple_authorization'
  | 'not_bearer'
  | 'malformed_authorization'
  // The compact JWS and its header, checked before any key is looked up
  | 'token_too_long'
  | 'jwe_not_accepted'
  | 'malformed_token'
  | 'malformed_header'
  | 'alg_none'
  | 'alg_not_allowed'
  | 'embedded_key'
  | 'unknown_crit'
  // Keys and signature
  | 'unknown_kid'
  | 'key_unusable'
  | 'jwks_unavailable'
  | 'bad_signature'
  | 'verification_failed'
  // Claims, and the `typ` header that jose checks with them
  | 'wrong_typ'
  | 'token_expired'
  | 'token_too_old'
  | 'token_not_yet_valid'
  | 'iat_in_future'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'missing_claim'
  | 'malformed_claims'
  | 'missing_subject'
  | 'missing_jti'
  | 'revoked';

/**
 * Verifies bearer tokens. Every refusal is a `SecurityError` with a {@link JwtReason}
 * (`unauthenticated`; `unavailable` for `jwks_unavailable`), or `unavailable` with reason
 * `denylist_unavailable` when the revocation store did not answer. The `embedded_key` reason
 * covers `jwk`/`jku`/`x5u`/`x5c` in the header.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, type JwtVerifier } from '@fluxguard/core';
 * const verifier: JwtVerifier = createJwtVerifier({ jwks, issuer: 'https://id.example.com', audience: 'artifacts' });
 * const { principal } = await verifier.verify(token);
 * ```
 */
export interface JwtVerifier {
  /**
   * Verifies one compact JWS token.
   *
   * @example
   * ```ts
   * const verified = await verifier.verify(token);
   * verified.principal.subject; // 'alice'
   * ```
   */
  verify(token: string): Promise<VerifiedToken>;
  /**
   * Reads the bearer token of a call ({@link extractBearerToken}) and verifies it.
   *
   * @example
   * ```ts
   * const principal = await verifier.authenticate(call); // call: CallInfo
   * ```
   */
  authenticate(call: Pick<CallInfo, 'headers'>): Promise<Principal>;
  /** The effective algorithm allowlist. */
  readonly algorithms: readonly JwsAlgorithm[];
}

const EMBEDDED_KEY_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;
/**
 * The longest encoded header read: real ones (`alg`, `typ`, a `kid` of at most 256 characters,
 * a thumbprint) take a few hundred characters, and embedded keys are refused anyway. A forged
 * header of 6 KB (600 keys, or objects nested 2,700 deep) cost 200 µs to parse.
 */
const MAX_HEADER_LENGTH = 2_048;
const PART = /^[A-Za-z0-9_-]*$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A verified token as cached, with what is checked again on every hit. */
interface CacheEntry {
  readonly token: VerifiedToken;
  /** The key source version the token was verified under. */
  readonly version: number;
  readonly exp: number;
  readonly nbf: number | undefined;
  readonly iat: number | undefined;
}

/** Headers longer than this skip {@link RecentTokens}, which so holds at most 16 × 2 KiB of them. */
const RECENT_MAX_HEADER_LENGTH = 2048;
const RECENT_SLOTS = 16;
/** How many code units before its end a header's print reads: a token's signature ends there. */
const PRINT_TAIL = 8;

/**
 * A 32-bit print of a header: its length and its last few code units (FNV-1a). Tokens of one
 * issuer share their first hundreds of characters (the same header, the same claim names), and
 * differ at once in their signatures, which end the header.
 */
function headerPrint(header: string): number {
  const end = header.length;
  let print = Math.imul(0x811c9dc5 ^ end, 0x01000193);
  for (let i = end > PRINT_TAIL ? end - PRINT_TAIL : 0; i < end; i++) {
    print = Math.imul(print ^ header.charCodeAt(i), 0x01000193);
  }
  return print;
}

/**
 * The last cache hits, found by comparing the `authorization` header as sent: a client that
 * sends one token on every call (a gRPC channel does) is found without reading the token out of
 * its header or looking it up in the cache. A header maps to one token, so the header stands for
 * it. A scan of a few slots, not a `Map`: a `Map` look-up hashes the whole new string, while a
 * slot is passed over on its print ({@link headerPrint}) and only a slot whose print agrees is
 * compared in full. Without the prints, a call whose header is in no slot (a server with more
 * clients than slots) compared it with all sixteen, each comparison running through the
 * hundreds of characters that tokens of one issuer share: 37 000 instructions a call, an eighth
 * of the call. Bounded by slot count and header length, replaced in turn; an entry is only a
 * pointer to the cache's own, checked again on every hit.
 */
class RecentTokens {
  readonly #prints = new Int32Array(RECENT_SLOTS);
  readonly #headers: (string | undefined)[] = new Array<string | undefined>(RECENT_SLOTS).fill(undefined);
  readonly #entries: (CacheEntry | undefined)[] = new Array<CacheEntry | undefined>(RECENT_SLOTS).fill(undefined);
  #next = 0;

  /** The slot holding `header` (whose print is `print`), or -1. */
  #slotOf(header: string, print: number): number {
    const prints = this.#prints;
    for (let slot = 0; slot < RECENT_SLOTS; slot++) {
      // An empty slot's header is `undefined`, whatever its print.
      if (prints[slot] === print && this.#headers[slot] === header) return slot;
    }
    return -1;
  }

  get(header: string, print: number): CacheEntry | undefined {
    const slot = this.#slotOf(header, print);
    return slot === -1 ? undefined : this.#entries[slot];
  }

  remember(header: string, print: number, entry: CacheEntry): void {
    if (header.length > RECENT_MAX_HEADER_LENGTH || this.#slotOf(header, print) !== -1) return;
    this.#prints[this.#next] = print;
    this.#headers[this.#next] = header;
    this.#entries[this.#next] = entry;
    this.#next = (this.#next + 1) % RECENT_SLOTS;
  }

  forget(header: string, print: number): void {
    const slot = this.#slotOf(header, print);
    if (slot === -1) return;
    this.#headers[slot] = undefined;
    this.#entries[slot] = undefined;
  }
}

function refuse(reason: JwtReason, cause?: unknown): SecurityError {
  return new SecurityError('unauthenticated', cause === undefined ? { reason } : { reason, cause });
}

/**
 * Creates a JWT verifier on jose, with every option checked now rather than per request.
 * Tokens are compact JWS only; the header is inspected before any key lookup, so a token
 * offering its own key (`jwk`, `jku`, `x5u`, `x5c`), claiming `alg: none`, an algorithm off the
 * allowlist or an unknown `crit` extension is refused without touching a key. HS* algorithms
 * are possible only with `secret`, and never together with public keys, so a public key can
 * never be used as an HMAC secret.
 *
 * Verified tokens are cached (bounded LRU, found by signature, compared whole) from their second
 * verification on, so that one-time tokens cost the cache nothing; on a hit `exp`, `nbf`
 * and the maximum age are checked again, the denylist is asked again, and a token verified
 * under a key set that has since changed (rotation) is verified again.
 *
 * @throws ConfigurationError for missing or contradictory options.
 *
 * @example
 * ```ts
 * import { createJwtVerifier } from '@fluxguard/core';
 * const verifier = createJwtVerifier({
 *   jwksUrl: 'https://id.example.com/.well-known/jwks.json',
 *   issuer: 'https://id.example.com',
 *   audience: 'artifacts',
 *   rolesClaim: 'realm_access.roles',
 * });
 * const principal = await verifier.authenticate(call);
 * ```
 */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  const settings = resolveVerifierSettings(options);
  // A token enters the cache on its second verification: one-time tokens cost it nothing.
  const cache = new TokenCache<CacheEntry>(settings.cacheMaxEntries);
  // Verifications under way, by token: concurrent calls with one new token share one.
  const inflight = new Map<string, Promise<VerifiedToken>>();
  const verify = (token: string): Promise<VerifiedToken> => verifyToken(settings, cache, inflight, token);
  const verifier: JwtVerifier = Object.freeze({
    verify,
    async authenticate(call: Pick<CallInfo, 'headers'>): Promise<Principal> {
      return (await verify(extractBearerToken(call.headers))).principal;
    },
    algorithms: settings.algorithms,
  });
  const recent = new RecentTokens();
  settledLookups.set(verifier, (authorization) => settledPrincipal(settings, cache, recent, authorization));
  return verifier;
}

/**
 * The principal of a call whose one `authorization` header is this value, when its token is
 * settled without waiting for anything (see {@link settledPrincipal}); throws the token's
 * refusal when that is decided without waiting too.
 */
export type SettledLookup = (authorization: string) => Principal | undefined;

// Kept off the public interface: only the authenticator of this package takes the shortcut, and
// only with a verifier this module made.
const settledLookups = new WeakMap<JwtVerifier, SettledLookup>();

/**
 * The synchronous cache look-up of a verifier made by {@link createJwtVerifier}, or `undefined`
 * for any other object.
 *
 * @internal
 */
export function settledLookupOf(verifier: JwtVerifier): SettledLookup | undefined {
  return settledLookups.get(verifier);
}

/**
 * Whether `value` is a verifier of {@link createJwtVerifier} (the policy loader makes its own
 * with it). Any other object with `authenticate()` in its place would decide who a caller is
 * without the checks of a verifier: signature, issuer, audience, times, revocation.
 *
 * @internal
 */
export function isJwtVerifier(value: unknown): value is JwtVerifier {
  return typeof value === 'object' && value !== null && settledLookups.has(value as JwtVerifier);
}

/**
 * The principal of the token in a call's one `authorization` header (`header`, as sent) when
 * it is settled without waiting for anything:
 * - a cache hit verified under the current key set, within its times, and no `jti` to ask a
 *   denylist about (the steady state of a client that reuses its token);
 * - a token not in the cache whose key the source knows now (`keysNow`) and whose algorithm the
 *   fast path checks, when there is no denylist: verified here, admitted to the cache as
 *   {@link verifyFresh} does, or refused by throwing the same `SecurityError` it would.
 * Anything else (a malformed header, an oversized token, a stale or expired entry, a key
 * to fetch, jose to run, a denylist to consult) is `undefined`, and `authenticate` decides with
 * every check and refusal it always makes. A header among the last cache hits
 * ({@link RecentTokens}) is neither parsed nor looked up in the cache.
 */
function settledPrincipal(
  settings: VerifierSettings,
  cache: TokenCache<CacheEntry>,
  recent: RecentTokens,
  header: string,
): Principal | undefined {
  const caching = settings.cacheMaxEntries > 0;
  const print = caching ? headerPrint(header) : 0;
  const seen = caching ? recent.get(header, print) : undefined;
  if (seen !== undefined) {
    if (isSettled(settings, seen)) return seen.token.principal;
    recent.forget(header, print);
  }
  // `Bearer <token>`, the form clients send, is looked up before the bearer pattern reads the
  // header: a cached token passed every check of its form, so the pattern would read just it.
  const plain =
    caching && header.startsWith('Bearer ') && header.length - 7 <= settings.maxTokenLength
      ? header.slice(7)
      : undefined;
  const plainHit = plain === undefined ? undefined : cache.find(plain);
  if (plainHit !== undefined) return settledHit(settings, recent, header, print, plainHit);
  const token = tokenOfAuthorization(header);
  if (token === undefined || token.length > settings.maxTokenLength) return undefined;
  const hit = caching && token !== plain ? cache.find(token) : undefined;
  if (hit !== undefined) return settledHit(settings, recent, header, print, hit);
  if (settings.denylist !== undefined) return undefined;
  return verifyFreshSync(settings, cache, token)?.principal;
}

/** The principal of a cache hit that decides its call at once, remembered by its header. */
function settledHit(
  settings: VerifierSettings,
  recent: RecentTokens,
  header: string,
  print: number,
  hit: CacheEntry,
): Principal | undefined {
  if (!isSettled(settings, hit)) return undefined;
  recent.remember(header, print, hit);
  return hit.token.principal;
}

/**
 * A cache entry that decides its call at once: verified under the current key set, within its
 * times, and no `jti` to ask a denylist about.
 */
function isSettled(settings: VerifierSettings, entry: CacheEntry): boolean {
  if (entry.version !== settings.source.version || timeRefusal(settings, entry) !== undefined) return false;
  return settings.denylist === undefined || entry.token.jti === undefined;
}

/**
 * One verification: the cache first (times and revocation checked again), else header, keys,
 * signature and claims. Settings and cache are passed in rather than closed over, so that each
 * step is a plain function of its inputs.
 */
async function verifyToken(
  settings: VerifierSettings,
  cache: TokenCache<CacheEntry>,
  inflight: Map<string, Promise<VerifiedToken>>,
  token: string,
): Promise<VerifiedToken> {
  // Length first: nothing about an oversized token is parsed or looked up.
  if (typeof token !== 'string' || token === '') throw refuse('missing_token');
  if (token.length > settings.maxTokenLength) throw refuse('token_too_long');

  const caching = settings.cacheMaxEntries > 0;
  const hit = caching ? cache.find(token) : undefined;
  if (hit !== undefined) {
    if (hit.version === settings.source.version) {
      try {
        checkTimes(settings, hit);
      } catch (err) {
        cache.delete(token);
        throw err;
      }
      if (settings.denylist !== undefined) await checkRevoked(settings.denylist, hit.token);
      return hit.token;
    }
    cache.delete(token);
  }
  if (!caching) return verifyFresh(settings, cache, token);
  let pending = inflight.get(token);
  if (pending === undefined) {
    pending = verifyFresh(settings, cache, token).finally(() => inflight.delete(token));
    inflight.set(token, pending);
  }
  return pending;
}

/**
 * A token not in the cache: header, keys, signature and claims, then the cache (from the
 * token's second verification on, as the doorkeeper admits it; without one, never) and the
 * denylist. Only a verified token reaches the doorkeeper, so forged ones cannot crowd it.
 */
async function verifyFresh(
  settings: VerifierSettings,
  cache: TokenCache<CacheEntry>,
  token: string,
): Promise<VerifiedToken> {
  const { jws, header } = inspectToken(token, settings.algorithms);
  const source = settings.source;
  const version = source.version;
  // A known key and an algorithm the fast path handles: no promise is awaited on the way.
  const keys = source.keysNow?.(header) ?? (await source.getKeys(header));
  const claims =
    verifyWithKeysSync(settings, jws, header, keys) ?? (await verifyWithKeys(settings, jws, header, keys, 'jose'));
  const verified = remember(settings, cache, token, version, verifiedToken(settings, header, claims));
  if (settings.denylist !== undefined) await checkRevoked(settings.denylist, verified);
  return verified;
}

/**
 * {@link verifyFresh} when nothing needs awaiting (a key the source knows now, an algorithm the
 * fast path checks; the caller has made sure there is no denylist): the verified token, the
 * refusal thrown, or `undefined` when the asynchronous path must decide.
 */
function verifyFreshSync(
  settings: VerifierSettings,
  cache: TokenCache<CacheEntry>,
  token: string,
): VerifiedToken | undefined {
  const source = settings.source;
  if (source.keysNow === undefined) return undefined;
  const { jws, header } = inspectToken(token, settings.algorithms);
  const version = source.version;
  const keys = source.keysNow(header);
  if (keys === undefined) return undefined;
  const claims = verifyWithKeysSync(settings, jws, header, keys);
  if (claims === undefined) return undefined;
  return remember(settings, cache, token, version, verifiedToken(settings, header, claims));
}

/**
 * Caches a freshly verified token from its second verification on (as the doorkeeper admits
 * it; without one, never), under the key-set `version` read before its keys were looked up: if
 * the keys changed meanwhile, the next call verifies again.
 */
function remember(
  settings: VerifierSettings,
  cache: TokenCache<CacheEntry>,
  token: string,
  version: number,
  verified: VerifiedToken,
): VerifiedToken {
  if (!cache.admits(token)) return verified;
  const { claims } = verified;
  cache.set(token, {
    token: verified,
    version: Math.min(version, settings.source.version),
    exp: claims.exp as number,
    nbf: typeof claims.nbf === 'number' ? claims.nbf : undefined,
    iat: typeof claims.iat === 'number' ? claims.iat : undefined,
  });
  return verified;
}

/**
 * {@link verifyWithKeys} when the fast path can decide (it knows the algorithm, which is the
 * same for every key of a token): the claims, or the refusal thrown. `undefined` when jose
 * must decide.
 */
function verifyWithKeysSync(
  settings: VerifierSettings,
  jws: CompactJws,
  header: InspectedHeader,
  keys: readonly VerificationKey[],
): Record<string, unknown> | undefined {
  let refusal: FastRefusal | undefined;
  for (const key of keys) {
    const fast = verifyCompactSync(jws, header, key, settings.claimRules, settings.now());
    if (fast === undefined) return undefined;
    if (fast.ok) return fast.claims;
    refusal = fast.reason;
    if (refusal !== 'bad_signature') break;
  }
  // No key at all: the general path says what that is.
  if (refusal === undefined) return undefined;
  throw refuse(refusal);
}

/** A token split into its parts, and its protected header as checked. */
interface InspectedToken {
  readonly jws: CompactJws;
  readonly header: InspectedHeader;
}

/**
 * Checks the compact JWS form and the protected header before any key is touched: a token
 * offering its own key, `alg: none`, an algorithm off the allowlist or a `crit` extension is
 * refused here.
 */
function inspectToken(token: string, algorithms: readonly JwsAlgorithm[]): InspectedToken {
  const parts = token.split('.');
  if (parts.length === 5) throw refuse('jwe_not_accepted');
  if (parts.length !== 3) throw refuse('malformed_token');
  const [encodedHeader = '', encodedPayload = '', signature = ''] = parts;
  if (encodedHeader === '' || encodedPayload === '' || !PART.test(encodedPayload) || !PART.test(signature)) {
    throw refuse('malformed_token');
  }
  const header = inspectHeader(encodedHeader, algorithms);
  if (signature === '') throw refuse('malformed_token');
  return { jws: { token, header: encodedHeader, payload: encodedPayload, signature }, header };
}

/**
 * Headers that passed every check (the allowlist of the verifier that first saw them included),
 * by their encoded form; at most 64, each no longer than a token may be (see {@link inspectHeader}).
 */
const knownHeaders = new Map<string, InspectedHeader>();
const MAX_KNOWN_HEADERS = 64;

/**
 * The protected header, checked in this order: base64url JSON of an object, an `alg` that is
 * not `none` and is on the allowlist, no key of its own, no `crit`, no `enc`, a sane `kid`.
 * An issuer puts the same header on every token it signs, so a header that passed is kept by
 * its encoded form and only the allowlist (the one check that depends on the verifier) is
 * asked again. Bounded: a flood of distinct valid headers empties the map, and each then costs
 * what it cost before the map existed.
 */
function inspectHeader(encodedHeader: string, algorithms: readonly JwsAlgorithm[]): InspectedHeader {
  const known = knownHeaders.get(encodedHeader);
  if (known !== undefined) {
    if (!(algorithms as readonly string[]).includes(known.alg)) throw refuse('alg_not_allowed');
    return known;
  }
  if (!PART.test(encodedHeader)) throw refuse('malformed_token');
  if (encodedHeader.length > MAX_HEADER_LENGTH) throw refuse('malformed_header');
  let header: unknown;
  try {
    header = JSON.parse(strictUtf8.decode(Buffer.from(encodedHeader, 'base64url')));
  } catch {
    throw refuse('malformed_header');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw refuse('malformed_header');
  const fields = header as Record<string, unknown>;
  const alg = fields.alg;
  if (typeof alg !== 'string' || alg === '') throw refuse('malformed_header');
  if (alg.toLowerCase() === 'none') throw refuse('alg_none');
  if (!(algorithms as readonly string[]).includes(alg)) throw refuse('alg_not_allowed');
  if (EMBEDDED_KEY_HEADERS.some((name) => Object.hasOwn(fields, name))) throw refuse('embedded_key');
  // fluxguard understands no JWS extension, so any `crit` names one it must refuse (RFC 7515 4.1.11).
  if (Object.hasOwn(fields, 'crit')) throw refuse('unknown_crit');
  if (Object.hasOwn(fields, 'enc')) throw refuse('jwe_not_accepted');
  const kid = fields.kid;
  if (kid !== undefined && (typeof kid !== 'string' || kid === '' || kid.length > 256))
    throw refuse('malformed_header');
  const inspected: InspectedHeader = Object.freeze({ alg, kid, typ: fields.typ });
  if (knownHeaders.size >= MAX_KNOWN_HEADERS) knownHeaders.clear();
  knownHeaders.set(encodedHeader, inspected);
  return inspected;
}

/** The header fields the verifier reads: those a key source may look at, and `typ`. */
interface InspectedHeader extends TokenHeader {
  readonly typ: unknown;
}

/**
 * Verifies signature and claims, trying each candidate key in turn: only a bad signature moves
 * on to the next key, any other failure is final. The synchronous `node:crypto` path
 * ({@link verifyWithKeysSync}, which decides as jose does) takes every algorithm it knows; jose's
 * `jwtVerify` the others, and every token when `engine` is `jose` (the differential test).
 */
async function verifyWithKeys(
  settings: VerifierSettings,
  jws: CompactJws,
  header: InspectedHeader,
  keys: readonly VerificationKey[],
  engine: 'fast' | 'jose' = 'fast',
): Promise<Record<string, unknown>> {
  if (engine === 'fast') {
    const claims = verifyWithKeysSync(settings, jws, header, keys);
    if (claims !== undefined) return claims;
  }
  const { joseOptions, now } = settings;
  let lastError: unknown;
  for (const key of keys) {
    try {
      const { payload } = await jwtVerify(jws.token, key, { ...joseOptions, currentDate: new Date(now()) });
      return payload;
    } catch (err) {
      lastError = err;
      if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) break;
    }
  }
  throw mapJoseError(lastError);
}

/**
 * Header, keys, signature and claims of one token, by either engine, without the cache or
 * the checks after them: what the differential test holds jose and the fast path to.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): used by verifier.differential.test.ts
 * const claims = await verifyUncached(resolveVerifierSettings(options), token, 'jose');
 * ```
 */
export async function verifyUncached(
  settings: VerifierSettings,
  token: string,
  engine: 'fast' | 'jose',
): Promise<Record<string, unknown>> {
  const { jws, header } = inspectToken(token, settings.algorithms);
  const keys = await settings.source.getKeys(header);
  return verifyWithKeys(settings, jws, header, keys, engine);
}

/** The checks jose leaves to the verifier (`jti`, `iss` type, subject), and the result. */
function verifiedToken(
  settings: VerifierSettings,
  header: TokenHeader,
  claims: Record<string, unknown>,
): VerifiedToken {
  const jti = claims.jti;
  if (jti !== undefined && (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH)) {
    throw refuse('malformed_claims');
  }
  if (jti === undefined && settings.requireJti) throw refuse('missing_jti');
  // jose has checked `exp`: it is a required claim, and a number. Not that a `Date` can hold it:
  // `1e400` parses as Infinity, and an `exp` past a `Date`'s range made a token that never
  // expired and whose revocation (`denylist.revoke(jti, expiresAt)`) threw on `Invalid Date`.
  const exp = claims.exp as number;
  if (!isNumericDate(exp) || (claims.nbf !== undefined && !isNumericDate(claims.nbf))) throw refuse('malformed_claims');
  if (claims.iat !== undefined && !isNumericDate(claims.iat)) throw refuse('malformed_claims');
  const iss = claims.iss;
  if (typeof iss !== 'string') throw refuse('wrong_issuer');
  const principal = principalFromClaims(claims, settings.rolesPath);
  return Object.freeze({
    principal,
    claims: principal.claims,
    algorithm: header.alg,
    keyId: header.kid,
    issuer: iss,
    jti,
    expiresAt: new Date(exp * 1000),
  });
}

/** The time checks of a cache hit: jose made them when the token was first verified. */
function checkTimes(settings: VerifierSettings, entry: CacheEntry): void {
  const reason = timeRefusal(settings, entry);
  if (reason !== undefined) throw refuse(reason);
}

/** Why a cached token is no longer within its times now, if it is not. */
function timeRefusal(settings: VerifierSettings, entry: CacheEntry): JwtReason | undefined {
  const { clockTolerance, maxTokenAge, now } = settings;
  const t = Math.floor(now() / 1000);
  if (entry.exp <= t - clockTolerance) return 'token_expired';
  if (entry.nbf !== undefined && entry.nbf > t + clockTolerance) return 'token_not_yet_valid';
  if (maxTokenAge !== undefined && entry.iat !== undefined && t - entry.iat - clockTolerance > maxTokenAge) {
    return 'token_too_old';
  }
  return undefined;
}

/** Asks the denylist, if any, about a token with a `jti`; a store that fails is `unavailable`. */
async function checkRevoked(denylist: Denylist | undefined, token: VerifiedToken): Promise<void> {
  if (denylist === undefined || token.jti === undefined) return;
  let revoked: boolean;
  try {
    revoked = await denylist.isRevoked(token.jti);
  } catch (err) {
    if (isSecurityError(err)) throw err;
    throw new SecurityError('unavailable', { reason: 'denylist_unavailable', cause: err });
  }
  if (revoked) throw refuse('revoked');
}

/** The refusal for an error jose threw, by its class and the claim it names. */
function mapJoseError(err: unknown): SecurityError {
  if (isSecurityError(err)) return err;
  const cause = safeCause(err);
  if (err instanceof joseErrors.JWTExpired) {
    return refuse(err.claim === 'iat' ? 'token_too_old' : 'token_expired', cause);
  }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return refuse('missing_claim', cause);
    switch (err.claim) {
      case 'iss':
        return refuse('wrong_issuer', cause);
      case 'aud':
        return refuse('wrong_audience', cause);
      case 'typ':
        return refuse('wrong_typ', cause);
      case 'nbf':
        return refuse(err.reason === 'check_failed' ? 'token_not_yet_valid' : 'malformed_claims', cause);
      case 'iat':
        return refuse(err.reason === 'check_failed' ? 'iat_in_future' : 'malformed_claims', cause);
      default:
        return refuse('malformed_claims', cause);
    }
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return refuse('bad_signature', cause);
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return refuse('alg_not_allowed', cause);
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid)
    return refuse('malformed_token', cause);
  // Anything else (a key of the wrong type, a library TypeError): refused all the same.
  return refuse('verification_failed', cause);
}

/** The greatest number of seconds a `Date` can hold (±8.64e15 ms). */
const MAX_DATE_SECONDS = 8.64e12;

/** A JWT NumericDate a `Date` can hold. */
function isNumericDate(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= MAX_DATE_SECONDS;
}
