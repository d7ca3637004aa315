import { createPublicKey } from 'node:crypto';
import type { JWTVerifyOptions } from 'jose';
import type { ClaimRules } from './signature.js';
import type { Denylist } from '../denylist/denylist.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { DEFAULT_JWT_ALGORITHMS, isAsymmetricAlgorithm, isHmacAlgorithm, type JwsAlgorithm } from './algorithms.js';
import {
  createLocalJwksSource,
  createPublicKeySource,
  remoteJwksSourceFrom,
  type JwksSource,
  type PublicKeySource,
} from './key-source.js';
import { compileClaimPath, type ClaimPath } from './principal.js';
import type { JwtVerifierOptions } from './verifier.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * A verifier's options once checked: everything `createJwtVerifier` needs per call,
 * computed at start-up so that a request pays for none of it.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported)
 * const settings = resolveVerifierSettings({ jwks, issuer: 'https://id.example.com', audience: 'artifacts' });
 * settings.algorithms; // ['RS256', 'PS256', 'ES256', 'EdDSA']
 * ```
 */
export interface VerifierSettings {
  readonly source: JwksSource;
  /** The effective allowlist: the requested one, narrowed to what a PEM key can verify. */
  readonly algorithms: readonly JwsAlgorithm[];
  /** What jose checks; `currentDate` is added per call from `now`. */
  readonly joseOptions: Omit<JWTVerifyOptions, 'currentDate'>;
  /** The same claim checks, for the synchronous path (`verifyCompactSync`). */
  readonly claimRules: ClaimRules;
  /** Seconds. */
  readonly clockTolerance: number;
  /** Seconds; `undefined` for no limit. */
  readonly maxTokenAge: number | undefined;
  readonly maxTokenLength: number;
  /** 0 disables the cache of verified tokens. */
  readonly cacheMaxEntries: number;
  readonly requireJti: boolean;
  readonly rolesPath: readonly string[];
  readonly denylist: Denylist | undefined;
  /** The clock, epoch milliseconds. */
  readonly now: () => number;
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

/**
 * The largest leeway for `exp`, `nbf` and `iat`: five minutes, the skew Kerberos allows. More
 * accepts tokens long expired, and shortens `maxTokenAgeSeconds` by as much.
 */
export const MAX_CLOCK_TOLERANCE_SECONDS = 300;

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

type RawOptions = Partial<Record<(typeof OPTIONAL_KEYS)[number], unknown>>;

const KEY_OPTIONS = ['jwks', 'jwksUrl', 'publicKey', 'secret', 'keySource'] as const;
const MIN_SECRET_BYTES = 32;
const WHERE = 'createJwtVerifier';

/** The most `maxTokenLength` may be: far above any real token, and still a bound on the work one header costs. */
const MAX_TOKEN_LENGTH = 65_536;

/** The most `maxTokenAgeSeconds` may be: ten years. */
const MAX_TOKEN_AGE_SECONDS = 315_360_000;

/**
 * Checks the options of `createJwtVerifier` and computes its settings. Options also
 * arrive from plain JavaScript and parsed policy files, so every value is checked at run time;
 * the first problem found throws.
 *
 * @throws ConfigurationError for missing, malformed or contradictory options.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported)
 * resolveVerifierSettings({ secret: 'short', issuer: 'i', audience: 'a' });
 * // throws ConfigurationError: createJwtVerifier: "secret" must be at least 32 bytes
 * ```
 */
export function resolveVerifierSettings(options: JwtVerifierOptions): VerifierSettings {
  const opts = resolveOptions(WHERE, DEFAULTS, options as Partial<VerifierDefaults>, OPTIONAL_KEYS);
  const raw = options as RawOptions;

  const issuer = stringList(raw.issuer, 'issuer');
  const audience = stringList(raw.audience, 'audience');
  const clockTolerance = nonNegative(opts.clockToleranceSeconds, 'clockToleranceSeconds', MAX_CLOCK_TOLERANCE_SECONDS);
  // Bounded: a larger value reads as a limit and means none.
  const maxTokenAge =
    raw.maxTokenAgeSeconds === undefined
      ? undefined
      : wholeNumber(raw.maxTokenAgeSeconds, `${WHERE}: "maxTokenAgeSeconds"`, {
          min: 0,
          max: MAX_TOKEN_AGE_SECONDS,
        });
  const maxTokenLength = wholeNumber(opts.maxTokenLength, `${WHERE}: "maxTokenLength"`, {
    min: 64,
    max: MAX_TOKEN_LENGTH,
  });
  const cacheMaxEntries = wholeNumber(opts.cacheMaxEntries, `${WHERE}: "cacheMaxEntries"`, { min: 0 });
  const requiredClaimsInput: unknown = opts.requiredClaims;
  if (
    !Array.isArray(requiredClaimsInput) ||
    !(requiredClaimsInput as unknown[]).every((c) => typeof c === 'string' && c !== '')
  ) {
    throw new ConfigurationError(`${WHERE}: "requiredClaims" must be an array of claim names`);
  }
  // A blank one is no media type: every token would be refused as `wrong_typ`.
  if (raw.typ !== undefined && (typeof raw.typ !== 'string' || raw.typ.trim() === '')) {
    throw new ConfigurationError(`${WHERE}: "typ" must be a non-empty string`);
  }
  if (typeof opts.requireJti !== 'boolean') throw new ConfigurationError(`${WHERE}: "requireJti" must be a boolean`);
  if (typeof opts.now !== 'function') throw new ConfigurationError(`${WHERE}: "now" must be a function`);
  const denylist = options.denylist;
  if (
    denylist !== undefined &&
    (typeof (denylist as Partial<Denylist> | null)?.isRevoked !== 'function' ||
      typeof (denylist as Partial<Denylist> | null)?.revoke !== 'function')
  ) {
    throw new ConfigurationError(`${WHERE}: "denylist" must implement isRevoked and revoke`);
  }
  const rolesPath = compileClaimPath(opts.rolesClaim, `${WHERE}: "rolesClaim"`);

  const { source, algorithms } = keySetup(options, raw);

  const requiredClaims = [...new Set(['exp', 'iss', 'aud', 'sub', ...(requiredClaimsInput as string[])])];
  const typ = typeof raw.typ === 'string' ? raw.typ : undefined;
  return Object.freeze({
    source,
    algorithms,
    joseOptions: {
      algorithms: [...algorithms],
      issuer: [...issuer],
      audience: [...audience],
      clockTolerance,
      requiredClaims,
      ...(maxTokenAge === undefined ? {} : { maxTokenAge }),
      ...(typ === undefined ? {} : { typ }),
    },
    claimRules: Object.freeze({
      issuer,
      audience,
      requiredClaims,
      clockTolerance,
      maxTokenAge,
      typ,
      presentClaims: Object.freeze([
        ...new Set([...requiredClaims, ...(maxTokenAge === undefined ? [] : ['iat']), 'aud', 'iss']),
      ]),
    }),
    clockTolerance,
    maxTokenAge,
    maxTokenLength,
    cacheMaxEntries,
    requireJti: opts.requireJti,
    rolesPath,
    denylist,
    now: opts.now,
  });
}

function stringList(value: unknown, name: string): readonly string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string' && v.trim() !== '')) {
    throw new ConfigurationError(
      `${WHERE}: "${name}" must be a non-empty string or a non-empty array of non-empty strings`,
    );
  }
  // Compared exactly with the token's claim: a stray space matched no token's, and every
  // token was refused as from the wrong issuer or for the wrong audience.
  if ((list as string[]).some((v) => v !== v.trim())) {
    throw new ConfigurationError(`${WHERE}: "${name}" must not start or end with white space (remove it)`);
  }
  return Object.freeze([...(list as string[])]);
}

/**
 * A PEM block, a JWK or a JWKS, or a DER public key (raw or in base64) given as an HMAC secret:
 * public material, by its shape.
 */
function looksLikePublicKey(secret: Uint8Array): boolean {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(secret).trim();
  if (text.includes('-----BEGIN ')) return true;
  if (text.startsWith('{')) {
    try {
      const parsed: unknown = JSON.parse(text);
      return typeof parsed === 'object' && parsed !== null && ('kty' in parsed || 'keys' in parsed);
    } catch {
      return false;
    }
  }
  const der = /^[A-Za-z0-9+/_-]+={0,2}$/.test(text) ? [Buffer.from(text, 'base64'), secret] : [secret];
  return der.some((bytes) => {
    try {
      createPublicKey({ key: Buffer.from(bytes), format: 'der', type: 'spki' });
      return true;
    } catch {
      return false;
    }
  });
}

function nonNegative(value: unknown, name: string, max = Number.MAX_VALUE): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max) {
    throw new ConfigurationError(
      `${WHERE}: "${name}" must be a non-negative number${max === Number.MAX_VALUE ? '' : `, at most ${String(max)}`}`,
    );
  }
  return value;
}

/**
 * The key source and the effective algorithm allowlist. HS* algorithms come only with
 * `secret` and never beside public keys, so that a public key can never double as an HMAC
 * secret.
 */
/** A key source and the algorithms the verifier takes with it. */
interface KeySetting {
  readonly source: JwksSource;
  readonly algorithms: readonly JwsAlgorithm[];
}

function keySetup(options: JwtVerifierOptions, raw: RawOptions): KeySetting {
  const given = KEY_OPTIONS.filter((name) => raw[name] !== undefined);
  if (given.length !== 1) {
    throw new ConfigurationError(
      `${WHERE}: exactly one of ${KEY_OPTIONS.map((k) => `"${k}"`).join(', ')} is required${given.length > 1 ? ` (got ${given.join(', ')})` : ''}`,
    );
  }
  if (options.jwksOptions !== undefined && options.jwksUrl === undefined) {
    throw new ConfigurationError(`${WHERE}: "jwksOptions" applies only with "jwksUrl"`);
  }
  const requested: unknown = raw.algorithms;
  if (requested !== undefined) {
    if (!Array.isArray(requested) || requested.length === 0) {
      throw new ConfigurationError(`${WHERE}: "algorithms" must be a non-empty array`);
    }
    for (const alg of requested as unknown[]) {
      if (!isAsymmetricAlgorithm(alg) && !isHmacAlgorithm(alg)) {
        throw new ConfigurationError(`${WHERE}: algorithm ${JSON.stringify(alg)} is not supported (never "none")`);
      }
    }
  }
  const requestedList = requested as readonly JwsAlgorithm[] | undefined;

  if (options.secret !== undefined) {
    const secret = typeof options.secret === 'string' ? new TextEncoder().encode(options.secret) : options.secret;
    if (!(secret instanceof Uint8Array)) {
      // A KeyObject (createSecretKey) among them: give its bytes, `key.export()`.
      throw new ConfigurationError(
        `${WHERE}: "secret" must be a string or a Uint8Array (a Buffer) of at least ${MIN_SECRET_BYTES} bytes; for a KeyObject, pass key.export()`,
      );
    }
    if (secret.byteLength < MIN_SECRET_BYTES) {
      throw new ConfigurationError(`${WHERE}: "secret" must be at least ${MIN_SECRET_BYTES} bytes`);
    }
    if (looksLikePublicKey(secret)) {
      // Anyone holding the public key could then sign tokens with it.
      throw new ConfigurationError(
        `${WHERE}: "secret" holds a PEM key or a JWK; a key must not double as an HMAC secret (use "publicKey" or "jwks")`,
      );
    }
    const algorithms = requestedList ?? ['HS256'];
    const asymmetric = algorithms.filter((a) => !isHmacAlgorithm(a));
    if (asymmetric.length > 0) {
      throw new ConfigurationError(
        `${WHERE}: with "secret", only HS256/HS384/HS512 may be allowed (got ${asymmetric.join(', ')})`,
      );
    }
    const keys = Object.freeze([Uint8Array.from(secret)]);
    return {
      source: Object.freeze({ version: 1, getKeys: () => Promise.resolve(keys), keysNow: () => keys }),
      algorithms: Object.freeze([...new Set(algorithms)]),
    };
  }

  const algorithms = requestedList ?? DEFAULT_JWT_ALGORITHMS;
  const hmac = algorithms.filter((a) => isHmacAlgorithm(a));
  if (hmac.length > 0) {
    throw new ConfigurationError(
      `${WHERE}: ${hmac.join(', ')} needs an explicit "secret" and is never allowed with public keys (a public key must not double as an HMAC secret)`,
    );
  }
  const unique = Object.freeze([...new Set(algorithms)]);
  // Keys fixed at start-up none of which can verify an allowed algorithm (an EC set with
  // algorithms: ['RS256']) refused every token at run time, each as an unknown key.
  const usableWith = (source: PublicKeySource, option: string): readonly JwsAlgorithm[] => {
    const usable = unique.filter((a) => (source.algorithms as readonly string[]).includes(a));
    if (usable.length === 0) {
      throw new ConfigurationError(
        source.algorithms.length === 0
          ? `${WHERE}: "${option}" verifies no signature: each key is for another use ("use", "key_ops") or another "alg"`
          : `${WHERE}: "${option}" can verify ${source.algorithms.join(', ')}, none of which is in "algorithms" (${unique.join(', ')})`,
      );
    }
    return Object.freeze(usable);
  };
  if (options.publicKey !== undefined) {
    const source = createPublicKeySource(options.publicKey, `${WHERE}: "publicKey"`);
    return { source, algorithms: usableWith(source, 'publicKey') };
  }
  if (options.jwks !== undefined) {
    // Checked, but not narrowed: a token of another algorithm is refused as it was, by its key.
    const source = createLocalJwksSource(options.jwks, `${WHERE}: "jwks"`);
    usableWith(source, 'jwks');
    return { source, algorithms: unique };
  }
  if (options.jwksUrl !== undefined) {
    // A string was spread into "0", "1"... and a number ignored, each without naming jwksOptions.
    const jwksOptions: unknown = options.jwksOptions;
    if (
      jwksOptions !== undefined &&
      (typeof jwksOptions !== 'object' || jwksOptions === null || Array.isArray(jwksOptions))
    ) {
      throw new ConfigurationError(`${WHERE}: "jwksOptions" must be an object (the options of createRemoteJwksSource)`);
    }
    // One place for the address: a second one in jwksOptions was silently overridden.
    if ((options.jwksOptions as { url?: unknown } | undefined)?.url !== undefined) {
      throw new ConfigurationError(`${WHERE}: give the key set's address as "jwksUrl", not "jwksOptions.url"`);
    }
    return {
      source: remoteJwksSourceFrom({ ...options.jwksOptions, url: options.jwksUrl }, `${WHERE}: "jwksUrl"`),
      algorithms: unique,
    };
  }
  const keySource: unknown = options.keySource;
  const shape = (typeof keySource === 'object' && keySource !== null ? keySource : {}) as Partial<
    Record<string, unknown>
  >;
  if (typeof shape.getKeys !== 'function' || typeof shape.version !== 'number') {
    throw new ConfigurationError(`${WHERE}: "keySource" must implement JwksSource`);
  }
  return { source: keySource as JwksSource, algorithms: unique };
}
