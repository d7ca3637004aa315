import { createHash } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTVerifyOptions } from 'jose';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { MAX_JTI_LENGTH, type Denylist } from '../denylist/denylist.js';
import { DEFAULT_JWT_ALGORITHMS, isAsymmetricAlgorithm, isHmacAlgorithm, type JwsAlgorithm } from './algorithms.js';
import { extractBearerToken } from './bearer.js';
import {
  createLocalJwksSource,
  createPublicKeySource,
  createRemoteJwksSource,
  safeCause,
  type JwksSource,
  type RemoteJwksOptions,
  type VerificationKey,
} from './key-source.js';
import { LruCache } from '../cache/lru.js';
import { compileClaimPath, principalFromClaims, type ClaimPath } from './principal.js';

/**
 * Options of {@link createJwtVerifier}. Exactly one key option is required: `jwks`, `jwksUrl`,
 * `publicKey`, `secret` or `keySource`. `issuer` and `audience` are required: a verifier that
 * accepts any issuer's or any audience's token is the classic hole, so there is no default.
 */
export interface JwtVerifierOptions {
  /** A local JSON Web Key Set (public keys only). */
  readonly jwks?: JSONWebKeySet | undefined;
  /** A remote JWKS endpoint; tuned by `jwksOptions`. */
  readonly jwksUrl?: string | URL | undefined;
  /** Timeout, cooldown, max age of the remote key set. */
  readonly jwksOptions?: Omit<RemoteJwksOptions, 'url'> | undefined;
  /** One PEM public key (SPKI) or X.509 certificate. */
  readonly publicKey?: string | undefined;
  /** An HMAC secret (at least 32 bytes). The only way to allow HS256/HS384/HS512. */
  readonly secret?: string | Uint8Array | undefined;
  /** A key source of the application's own. */
  readonly keySource?: JwksSource | undefined;
  /** Accepted `iss` value(s). Required. */
  readonly issuer: string | readonly string[];
  /** Accepted `aud` value(s): the token must name at least one. Required. */
  readonly audience: string | readonly string[];
  /** Algorithm allowlist. Default RS256, PS256, ES256, EdDSA; with `secret`: HS256. */
  readonly algorithms?: readonly JwsAlgorithm[] | undefined;
  /** Leeway for `exp`, `nbf` and `iat`, in seconds. Default 30. */
  readonly clockToleranceSeconds?: number | undefined;
  /** Refuse a token whose `iat` is older than this (and require `iat`). Default: no limit. */
  readonly maxTokenAgeSeconds?: number | undefined;
  /** Claims that must be present, on top of `exp`, `iss`, `aud` and `sub` (always required). */
  readonly requiredClaims?: readonly string[] | undefined;
  /** The expected `typ` header (e.g. `at+jwt`, RFC 9068). Default: not checked. */
  readonly typ?: string | undefined;
  /** Longest token accepted, checked before any parsing. Default 8192 characters. */
  readonly maxTokenLength?: number | undefined;
  /** Where roles are in the claims. Default `roles`. */
  readonly rolesClaim?: ClaimPath | undefined;
  /** Revoked `jti`s, consulted on every call (cache hits included). */
  readonly denylist?: Denylist | undefined;
  /**
   * Refuse a token without `jti` (reason `missing_jti`). Default false: with a denylist, a
   * token without `jti` is accepted and simply cannot be revoked one by one.
   */
  readonly requireJti?: boolean | undefined;
  /** Verified tokens kept (LRU, keyed by SHA-256 of the token). 0 disables. Default 10 000. */
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
  readonly principal: Principal;
  /** Every claim of the payload (deep-frozen). */
  readonly claims: Readonly<Record<string, unknown>>;
  readonly algorithm: string;
  readonly keyId: string | undefined;
  readonly issuer: string;
  readonly jti: string | undefined;
  /** From `exp`. */
  readonly expiresAt: Date;
}

/**
 * Verifies bearer tokens. Every refusal is a `SecurityError`:
 *
 * - `unauthenticated`, reason for the audit log only: `missing_token`,
 *   `multiple_authorization`, `not_bearer`, `malformed_authorization`, `token_too_long`,
 *   `jwe_not_accepted`, `malformed_token`, `malformed_header`, `alg_none`, `alg_not_allowed`,
 *   `embedded_key` (`jwk`/`jku`/`x5u`/`x5c` in the header), `unknown_crit`, `unknown_kid`,
 *   `key_unusable`, `bad_signature`, `token_expired`, `token_too_old`, `token_not_yet_valid`,
 *   `iat_in_future`, `wrong_issuer`, `wrong_audience`, `wrong_typ`, `missing_claim`,
 *   `malformed_claims`, `missing_subject`, `missing_jti`, `revoked`, `verification_failed`;
 * - `unavailable` (503, the token may be fine but cannot be checked now):
 *   `jwks_unavailable` (no key set was ever loaded from the JWKS URL),
 *   `denylist_unavailable` (the revocation store did not answer).
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

interface VerifierDefaults {
  readonly clockToleranceSeconds: number;
  readonly maxTokenLength: number;
  readonly requireJti: boolean;
  readonly cacheMaxEntries: number;
  readonly requiredClaims: readonly string[];
  readonly rolesClaim: ClaimPath;
  readonly now: () => number;
}

const DEFAULTS: VerifierDefaults = Object.freeze({
  clockToleranceSeconds: 30,
  maxTokenLength: 8192,
  requireJti: false,
  cacheMaxEntries: 10_000,
  requiredClaims: Object.freeze([]),
  rolesClaim: 'roles',
  now: Date.now,
});

const OPTIONAL_KEYS = [
  'jwks',
  'jwksUrl',
  'jwksOptions',
  'publicKey',
  'secret',
  'keySource',
  'issuer',
  'audience',
  'algorithms',
  'maxTokenAgeSeconds',
  'typ',
  'denylist',
] as const;

const KEY_OPTIONS = ['jwks', 'jwksUrl', 'publicKey', 'secret', 'keySource'] as const;
const EMBEDDED_KEY_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;
const PART = /^[A-Za-z0-9_-]*$/;
const MIN_SECRET_BYTES = 32;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

interface CacheEntry {
  readonly token: VerifiedToken;
  readonly version: number;
  readonly exp: number;
  readonly nbf: number | undefined;
  readonly iat: number | undefined;
}

function refuse(reason: string, cause?: unknown): SecurityError {
  return new SecurityError('unauthenticated', cause === undefined ? { reason } : { reason, cause });
}

function stringList(value: unknown, name: string, where: string): readonly string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string' && v !== '')) {
    throw new ConfigurationError(
      `${where}: "${name}" must be a non-empty string or a non-empty array of non-empty strings`,
    );
  }
  return Object.freeze([...(list as string[])]);
}

function nonNegative(value: unknown, name: string, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ConfigurationError(`${where}: "${name}" must be a non-negative number`);
  }
  return value;
}

/**
 * Creates a JWT verifier on jose, with every option checked now rather than per request.
 * Tokens are compact JWS only; the header is inspected before any key lookup, so a token
 * offering its own key (`jwk`, `jku`, `x5u`, `x5c`), claiming `alg: none`, an algorithm off the
 * allowlist or an unknown `crit` extension is refused without touching a key. HS* algorithms
 * are possible only with `secret`, and never together with public keys, so a public key can
 * never be used as an HMAC secret.
 *
 * Verified tokens are cached (bounded LRU keyed by the token's SHA-256); on a hit `exp`, `nbf`
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
  const where = 'createJwtVerifier';
  const opts = resolveOptions(where, DEFAULTS, options as Partial<VerifierDefaults>, OPTIONAL_KEYS);
  const raw = options as Partial<Record<(typeof OPTIONAL_KEYS)[number], unknown>>;

  const issuer = stringList(raw.issuer, 'issuer', where);
  const audience = stringList(raw.audience, 'audience', where);
  const clockTolerance = nonNegative(opts.clockToleranceSeconds, 'clockToleranceSeconds', where);
  const maxTokenAge =
    raw.maxTokenAgeSeconds === undefined ? undefined : nonNegative(raw.maxTokenAgeSeconds, 'maxTokenAgeSeconds', where);
  const maxTokenLength = nonNegative(opts.maxTokenLength, 'maxTokenLength', where);
  if (!Number.isSafeInteger(maxTokenLength) || maxTokenLength < 64) {
    throw new ConfigurationError(`${where}: "maxTokenLength" must be an integer of at least 64`);
  }
  const cacheMaxEntries = nonNegative(opts.cacheMaxEntries, 'cacheMaxEntries', where);
  if (!Number.isSafeInteger(cacheMaxEntries))
    throw new ConfigurationError(`${where}: "cacheMaxEntries" must be an integer`);
  const requiredClaimsInput: unknown = opts.requiredClaims;
  if (
    !Array.isArray(requiredClaimsInput) ||
    !(requiredClaimsInput as unknown[]).every((c) => typeof c === 'string' && c !== '')
  ) {
    throw new ConfigurationError(`${where}: "requiredClaims" must be an array of claim names`);
  }
  if (raw.typ !== undefined && (typeof raw.typ !== 'string' || raw.typ === '')) {
    throw new ConfigurationError(`${where}: "typ" must be a non-empty string`);
  }
  if (typeof opts.requireJti !== 'boolean') throw new ConfigurationError(`${where}: "requireJti" must be a boolean`);
  if (typeof opts.now !== 'function') throw new ConfigurationError(`${where}: "now" must be a function`);
  const denylist = options.denylist;
  if (denylist !== undefined && (typeof denylist.isRevoked !== 'function' || typeof denylist.revoke !== 'function')) {
    throw new ConfigurationError(`${where}: "denylist" must implement isRevoked and revoke`);
  }
  const rolesPath = compileClaimPath(opts.rolesClaim, `${where}: "rolesClaim"`);
  const now = opts.now;

  const { source, algorithms } = keySetup(options, raw, where);

  const joseOptions: Omit<JWTVerifyOptions, 'currentDate'> = {
    algorithms: [...algorithms],
    issuer: [...issuer],
    audience: [...audience],
    clockTolerance,
    requiredClaims: [...new Set(['exp', 'iss', 'aud', 'sub', ...(requiredClaimsInput as string[])])],
    ...(maxTokenAge === undefined ? {} : { maxTokenAge }),
    ...(typeof raw.typ === 'string' ? { typ: raw.typ } : {}),
  };
  const cache = new LruCache<string, CacheEntry>(cacheMaxEntries);

  function inspectHeader(token: string): { alg: string; kid: string | undefined } {
    const parts = token.split('.');
    if (parts.length === 5) throw refuse('jwe_not_accepted');
    if (parts.length !== 3) throw refuse('malformed_token');
    const [encodedHeader = '', encodedPayload = '', signature = ''] = parts;
    if (
      encodedHeader === '' ||
      encodedPayload === '' ||
      !PART.test(encodedHeader) ||
      !PART.test(encodedPayload) ||
      !PART.test(signature)
    ) {
      throw refuse('malformed_token');
    }
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
    if (signature === '') throw refuse('malformed_token');
    return { alg, kid };
  }

  async function verifyWithKeys(token: string, keys: readonly VerificationKey[]): Promise<Record<string, unknown>> {
    let lastError: unknown;
    for (const key of keys) {
      try {
        const { payload } = await jwtVerify(token, key, { ...joseOptions, currentDate: new Date(now()) });
        return payload;
      } catch (err) {
        lastError = err;
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) break;
      }
    }
    throw mapJoseError(lastError);
  }

  async function checkRevoked(token: VerifiedToken): Promise<void> {
    if (denylist === undefined || token.jti === undefined) return;
    let revoked: boolean;
    try {
      revoked = await denylist.isRevoked(token.jti);
    } catch (err) {
      if (err instanceof SecurityError) throw err;
      throw new SecurityError('unavailable', { reason: 'denylist_unavailable', cause: err });
    }
    if (revoked) throw refuse('revoked');
  }

  function checkTimes(entry: CacheEntry): void {
    const t = Math.floor(now() / 1000);
    if (entry.exp <= t - clockTolerance) throw refuse('token_expired');
    if (entry.nbf !== undefined && entry.nbf > t + clockTolerance) throw refuse('token_not_yet_valid');
    if (maxTokenAge !== undefined && entry.iat !== undefined && t - entry.iat - clockTolerance > maxTokenAge) {
      throw refuse('token_too_old');
    }
  }

  async function verify(token: string): Promise<VerifiedToken> {
    // Length first: nothing about an oversized token is parsed, hashed or looked up.
    if (typeof token !== 'string' || token === '') throw refuse('missing_token');
    if (token.length > maxTokenLength) throw refuse('token_too_long');

    const cacheKey = cacheMaxEntries > 0 ? createHash('sha256').update(token).digest('base64url') : '';
    const hit = cacheMaxEntries > 0 ? cache.get(cacheKey) : undefined;
    if (hit !== undefined) {
      if (hit.version === source.version) {
        try {
          checkTimes(hit);
        } catch (err) {
          cache.delete(cacheKey);
          throw err;
        }
        await checkRevoked(hit.token);
        return hit.token;
      }
      cache.delete(cacheKey);
    }

    const header = inspectHeader(token);
    const version = source.version;
    const keys = await source.getKeys(header);
    const claims = await verifyWithKeys(token, keys);

    const jti = claims.jti;
    if (jti !== undefined && (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH)) {
      throw refuse('malformed_claims');
    }
    if (jti === undefined && opts.requireJti) throw refuse('missing_jti');
    const exp = claims.exp as number;
    const iss = claims.iss;
    if (typeof iss !== 'string') throw refuse('wrong_issuer');
    const principal = principalFromClaims(claims, rolesPath);
    const verified: VerifiedToken = Object.freeze({
      principal,
      claims: principal.claims,
      algorithm: header.alg,
      keyId: header.kid,
      issuer: iss,
      jti,
      expiresAt: new Date(exp * 1000),
    });
    if (cacheMaxEntries > 0) {
      // The version read before the key lookup: if keys changed meanwhile, the next call re-verifies.
      cache.set(cacheKey, {
        token: verified,
        version: Math.min(version, source.version),
        exp,
        nbf: typeof claims.nbf === 'number' ? claims.nbf : undefined,
        iat: typeof claims.iat === 'number' ? claims.iat : undefined,
      });
    }
    await checkRevoked(verified);
    return verified;
  }

  return Object.freeze({
    verify,
    async authenticate(call: Pick<CallInfo, 'headers'>): Promise<Principal> {
      return (await verify(extractBearerToken(call.headers))).principal;
    },
    algorithms,
  });
}

function keySetup(
  options: JwtVerifierOptions,
  raw: Partial<Record<string, unknown>>,
  where: string,
): { source: JwksSource; algorithms: readonly JwsAlgorithm[] } {
  const given = KEY_OPTIONS.filter((name) => raw[name] !== undefined);
  if (given.length !== 1) {
    throw new ConfigurationError(
      `${where}: exactly one of ${KEY_OPTIONS.map((k) => `"${k}"`).join(', ')} is required${given.length > 1 ? ` (got ${given.join(', ')})` : ''}`,
    );
  }
  if (options.jwksOptions !== undefined && options.jwksUrl === undefined) {
    throw new ConfigurationError(`${where}: "jwksOptions" applies only with "jwksUrl"`);
  }
  const requested: unknown = raw.algorithms;
  if (requested !== undefined) {
    if (!Array.isArray(requested) || requested.length === 0) {
      throw new ConfigurationError(`${where}: "algorithms" must be a non-empty array`);
    }
    for (const alg of requested as unknown[]) {
      if (!isAsymmetricAlgorithm(alg) && !isHmacAlgorithm(alg)) {
        throw new ConfigurationError(`${where}: algorithm ${JSON.stringify(alg)} is not supported (never "none")`);
      }
    }
  }
  const requestedList = requested as readonly JwsAlgorithm[] | undefined;

  if (options.secret !== undefined) {
    const secret = typeof options.secret === 'string' ? new TextEncoder().encode(options.secret) : options.secret;
    if (!(secret instanceof Uint8Array) || secret.byteLength < MIN_SECRET_BYTES) {
      throw new ConfigurationError(`${where}: "secret" must be at least ${MIN_SECRET_BYTES} bytes`);
    }
    const algorithms = requestedList ?? ['HS256'];
    const asymmetric = algorithms.filter((a) => !isHmacAlgorithm(a));
    if (asymmetric.length > 0) {
      throw new ConfigurationError(
        `${where}: with "secret", only HS256/HS384/HS512 may be allowed (got ${asymmetric.join(', ')})`,
      );
    }
    const key = Uint8Array.from(secret);
    return {
      source: Object.freeze({ version: 1, getKeys: () => Promise.resolve([key]) }),
      algorithms: Object.freeze([...new Set(algorithms)]),
    };
  }

  const algorithms = requestedList ?? DEFAULT_JWT_ALGORITHMS;
  const hmac = algorithms.filter((a) => isHmacAlgorithm(a));
  if (hmac.length > 0) {
    throw new ConfigurationError(
      `${where}: ${hmac.join(', ')} needs an explicit "secret" and is never allowed with public keys (a public key must not double as an HMAC secret)`,
    );
  }
  const unique = Object.freeze([...new Set(algorithms)]);
  if (options.publicKey !== undefined) {
    const source = createPublicKeySource(options.publicKey, `${where}: "publicKey"`);
    const usable = unique.filter((a) => (source.algorithms as readonly string[]).includes(a));
    if (usable.length === 0) {
      throw new ConfigurationError(
        `${where}: "publicKey" can verify ${source.algorithms.join(', ')}, none of which is in "algorithms" (${unique.join(', ')})`,
      );
    }
    return { source, algorithms: Object.freeze(usable) };
  }
  if (options.jwks !== undefined)
    return { source: createLocalJwksSource(options.jwks, `${where}: "jwks"`), algorithms: unique };
  if (options.jwksUrl !== undefined) {
    return { source: createRemoteJwksSource({ ...options.jwksOptions, url: options.jwksUrl }), algorithms: unique };
  }
  const keySource: unknown = options.keySource;
  const shape = (typeof keySource === 'object' && keySource !== null ? keySource : {}) as Partial<
    Record<string, unknown>
  >;
  if (typeof shape.getKeys !== 'function' || typeof shape.version !== 'number') {
    throw new ConfigurationError(`${where}: "keySource" must implement JwksSource`);
  }
  return { source: keySource as JwksSource, algorithms: unique };
}

function mapJoseError(err: unknown): SecurityError {
  if (err instanceof SecurityError) return err;
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
