import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Denylist } from '../denylist/denylist.js';
import { ConfigurationError, isConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { MAX_TIMER_MS } from '../options/whole-number.js';
import { checkNonEmptyString, checkStringOrList, frozenCopy, isPolicyObject } from '../policy/fields.js';
import { isAsymmetricAlgorithm, type AsymmetricAlgorithm } from './algorithms.js';
import type { JwtVerifierOptions } from './verifier.js';
import { MAX_CLOCK_TOLERANCE_SECONDS } from './verifier-settings.js';

/**
 * The `jwt` section of a `SecurityPolicy`. Exactly one of `jwksUrl`, `jwksFile`,
 * `publicKeyFile`. HMAC secrets do not belong in a policy file: configure `secret` in code.
 *
 * @example
 * ```ts
 * import type { JwtPolicy } from '@fluxguard/core';
 * const jwt: JwtPolicy = { issuer: 'https://id.example.com', audience: 'artifacts', jwksUrl: 'https://id.example.com/jwks' };
 * ```
 */
export interface JwtPolicy {
  /** Accepted `iss` value(s), compared exactly (no white space around one). Required. */
  readonly issuer: string | readonly string[];
  /** Accepted `aud` value(s), compared exactly: the token must name at least one. Required. */
  readonly audience: string | readonly string[];
  /** Algorithm allowlist, asymmetric only (HS* needs a `secret` in code). Default RS256, PS256, ES256, EdDSA. */
  readonly algorithms?: readonly AsymmetricAlgorithm[];
  /** A remote JWKS endpoint: `https:`, or `http:` on a loopback host. */
  readonly jwksUrl?: string;
  /** Path of a local `jwks.json`; relative to the policy file when loaded with `loadSecurityPolicy`. */
  readonly jwksFile?: string;
  /** Path of a PEM public key; relative like `jwksFile`. */
  readonly publicKeyFile?: string;
  /** With `jwksUrl` only: abort a key-set fetch after this many milliseconds. Default 5000. */
  readonly jwksTimeoutMs?: number;
  /**
   * With `jwksUrl` only: at most one key-set fetch per this many milliseconds, whatever triggers
   * it. Default 30 000, at least 1 000.
   */
  readonly jwksCooldownMs?: number;
  /**
   * With `jwksUrl` only: a key set older than this many milliseconds is refreshed in the
   * background. Default 600 000.
   */
  readonly jwksMaxAgeMs?: number;
  /** Where roles are in the claims: a dotted path, or an array of path segments. Default `roles`. */
  readonly rolesClaim?: string | readonly string[];
  /** Leeway for `exp`, `nbf` and `iat`, in seconds. Default 30, at most 300. */
  readonly clockToleranceSeconds?: number;
  /** Refuse a token whose `iat` is older than this many seconds (and require `iat`). Default: no limit. */
  readonly maxTokenAgeSeconds?: number;
  /** Claims that must be present, on top of `exp`, `iss`, `aud` and `sub` (always required). */
  readonly requiredClaims?: readonly string[];
  /** The expected `typ` header (e.g. `at+jwt`). Default: not checked. */
  readonly typ?: string;
  /** Longest token accepted, in characters, checked before any parsing. Default 8192, at least 64. */
  readonly maxTokenLength?: number;
  /** Refuse a token without `jti`. Default false. */
  readonly requireJti?: boolean;
  /** Verified tokens kept in the verifier's cache; 0 disables it. Default 10 000. */
  readonly cacheMaxEntries?: number;
}

const JWT_KEYS = [
  'issuer',
  'audience',
  'algorithms',
  'jwksUrl',
  'jwksFile',
  'publicKeyFile',
  'jwksTimeoutMs',
  'jwksCooldownMs',
  'jwksMaxAgeMs',
  'rolesClaim',
  'clockToleranceSeconds',
  'maxTokenAgeSeconds',
  'requiredClaims',
  'typ',
  'maxTokenLength',
  'requireJti',
  'cacheMaxEntries',
] as const;
const NUMBER_KEYS = [
  'jwksTimeoutMs',
  'jwksCooldownMs',
  'jwksMaxAgeMs',
  'clockToleranceSeconds',
  'maxTokenAgeSeconds',
  'maxTokenLength',
  'cacheMaxEntries',
] as const;
const REMOTE_ONLY_KEYS = ['jwksTimeoutMs', 'jwksCooldownMs', 'jwksMaxAgeMs'] as const;
// The verifier's and the key set's own lower bounds: a fetch that times out at once, a token
// limit no token meets, or a fraction of an entry. And a policy is for service: a cooldown under
// a second let every token with a made-up `kid` fetch the key set again (the code API keeps 0
// for tests).
const NUMBER_MINIMA: Partial<Record<(typeof NUMBER_KEYS)[number], number>> = {
  jwksTimeoutMs: 1,
  jwksCooldownMs: 1_000,
  jwksMaxAgeMs: 1,
  maxTokenLength: 64,
  cacheMaxEntries: 0,
};
// Timers longer than Node's fire after 1 ms; a larger leeway accepts tokens long expired.
const NUMBER_MAXIMA: Partial<Record<(typeof NUMBER_KEYS)[number], number>> = {
  jwksTimeoutMs: MAX_TIMER_MS,
  jwksCooldownMs: MAX_TIMER_MS,
  jwksMaxAgeMs: MAX_TIMER_MS,
  clockToleranceSeconds: MAX_CLOCK_TOLERANCE_SECONDS,
};

/**
 * Checks the `jwt` section of a policy and returns it typed (the same object). Errors name the
 * bad field by its path, e.g. `policy.jwt.algorithms[0] must be an asymmetric JWS algorithm`.
 *
 * @throws ConfigurationError naming the bad field.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseJwtPolicy
 * const jwt = parseJwtPolicy({ issuer: 'https://id.example.com', audience: 'artifacts', jwksFile: 'jwks.json' }, 'policy.jwt');
 * ```
 */
export function parseJwtPolicy(value: unknown, where: string): JwtPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(value, JWT_KEYS, where, 'field');
  checkClaimValues(value.issuer, `${where}.issuer`);
  checkClaimValues(value.audience, `${where}.audience`);
  const sources = (['jwksUrl', 'jwksFile', 'publicKeyFile'] as const).filter((k) => value[k] !== undefined);
  if (sources.length !== 1) {
    throw new ConfigurationError(`${where} must have exactly one of jwksUrl, jwksFile, publicKeyFile`);
  }
  for (const k of sources) checkNonEmptyString(value[k], `${where}.${k}`);
  if (value.algorithms !== undefined) {
    if (!Array.isArray(value.algorithms) || value.algorithms.length === 0) {
      throw new ConfigurationError(`${where}.algorithms must be a non-empty array`);
    }
    (value.algorithms as unknown[]).forEach((alg, i) => {
      if (!isAsymmetricAlgorithm(alg)) {
        throw new ConfigurationError(
          `${where}.algorithms[${i}] must be an asymmetric JWS algorithm (RS256, PS256, ES256, EdDSA, ...); HS* needs a secret configured in code`,
        );
      }
    });
  }
  for (const k of NUMBER_KEYS) {
    const n = value[k];
    const max = NUMBER_MAXIMA[k];
    if (n !== undefined && (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || (max !== undefined && n > max))) {
      throw new ConfigurationError(
        `${where}.${k} must be a non-negative number${max === undefined ? '' : `, at most ${String(max)}`}`,
      );
    }
    // What the verifier would refuse later, under its own option's name: said here, by the field's.
    const least = NUMBER_MINIMA[k];
    if (least !== undefined && n !== undefined && (!Number.isSafeInteger(n) || n < least)) {
      throw new ConfigurationError(`${where}.${k} must be a whole number, at least ${String(least)}`);
    }
  }
  // Settings of a remote key set, next to a file: read by nothing, so refused.
  if (value.jwksUrl === undefined) {
    const remoteOnly = REMOTE_ONLY_KEYS.find((k) => value[k] !== undefined);
    if (remoteOnly !== undefined) {
      throw new ConfigurationError(
        `${where}.${remoteOnly} applies to jwksUrl only, and this section reads its keys from a file`,
      );
    }
  }
  if (value.rolesClaim !== undefined) checkStringOrList(value.rolesClaim, `${where}.rolesClaim`);
  if (value.requiredClaims !== undefined) {
    if (!Array.isArray(value.requiredClaims)) throw new ConfigurationError(`${where}.requiredClaims must be an array`);
    (value.requiredClaims as unknown[]).forEach((c, i) => {
      checkNonEmptyString(c, `${where}.requiredClaims[${i}]`);
    });
  }
  if (value.typ !== undefined) checkNonEmptyString(value.typ, `${where}.typ`);
  if (value.requireJti !== undefined && typeof value.requireJti !== 'boolean') {
    throw new ConfigurationError(`${where}.requireJti must be a boolean`);
  }
  return frozenCopy(value) as unknown as JwtPolicy;
}

/**
 * Run-time parts of a verifier that a policy file cannot hold.
 *
 * @example
 * ```ts
 * import { createMemoryDenylist } from '@fluxguard/core';
 * // internal to @fluxguard/core (not exported): JwtPolicyExtras; an application gives the same
 * // denylist and baseDir to createGuardFromPolicy
 * const extras: JwtPolicyExtras = { denylist: createMemoryDenylist(), baseDir: '/etc/fluxguard' };
 * ```
 */
export interface JwtPolicyExtras {
  readonly denylist?: Denylist;
  /** Directory for relative `jwksFile`/`publicKeyFile`. Default: the working directory. */
  readonly baseDir?: string;
  /**
   * Called with each failed fetch of a remote key set (`jwksUrl`); the last good set stays in
   * service meanwhile. `createGuardFromPolicy` writes it to the audit log.
   */
  readonly onJwksRefreshError?: (error: Error) => void;
}

/**
 * An `issuer` or `audience`: a non-empty string or list of them, each compared exactly with the
 * token's claim, so white space around one would match no token.
 */
function checkClaimValues(value: unknown, where: string): void {
  checkStringOrList(value, where);
  const values = (Array.isArray(value) ? value : [value]) as string[];
  values.forEach((v, i) => {
    if (v !== v.trim()) {
      const at = Array.isArray(value) ? `${where}[${String(i)}]` : where;
      throw new ConfigurationError(`${at} must not start or end with white space (remove it)`);
    }
  });
}

/**
 * Turns a policy's `jwt` section into `createJwtVerifier` options, reading `jwksFile` or
 * `publicKeyFile` now (at start-up).
 *
 * @throws ConfigurationError for an unreadable or invalid key file.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, loadSecurityPolicy } from '@fluxguard/core';
 * // jwtVerifierOptionsFromPolicy is internal to @fluxguard/core (createGuardFromPolicy calls it)
 * const policy = await loadSecurityPolicy('policy.json');
 * if (policy.jwt) { const verifier = createJwtVerifier(jwtVerifierOptionsFromPolicy(policy.jwt)); }
 * ```
 */
export function jwtVerifierOptionsFromPolicy(jwt: JwtPolicy, extras: JwtPolicyExtras = {}): JwtVerifierOptions {
  const read = (p: string, name: string): string => {
    const path = resolve(extras.baseDir ?? '.', p);
    try {
      return readFileSync(path, 'utf8');
    } catch (cause) {
      throw new ConfigurationError(`policy.jwt.${name}: cannot read ${path}`, { cause });
    }
  };
  let keys: Pick<JwtVerifierOptions, 'jwks' | 'jwksUrl' | 'jwksOptions' | 'publicKey'>;
  if (jwt.jwksFile !== undefined) {
    try {
      keys = { jwks: JSON.parse(read(jwt.jwksFile, 'jwksFile')) as NonNullable<JwtVerifierOptions['jwks']> };
    } catch (cause) {
      if (isConfigurationError(cause)) throw cause;
      throw new ConfigurationError(`policy.jwt.jwksFile: ${jwt.jwksFile} is not valid JSON`, { cause });
    }
  } else if (jwt.publicKeyFile !== undefined) {
    keys = { publicKey: read(jwt.publicKeyFile, 'publicKeyFile') };
  } else {
    keys = {
      jwksUrl: jwt.jwksUrl,
      jwksOptions: {
        ...(jwt.jwksTimeoutMs === undefined ? {} : { timeoutMs: jwt.jwksTimeoutMs }),
        ...(jwt.jwksCooldownMs === undefined ? {} : { cooldownMs: jwt.jwksCooldownMs }),
        ...(jwt.jwksMaxAgeMs === undefined ? {} : { maxAgeMs: jwt.jwksMaxAgeMs }),
        ...(extras.onJwksRefreshError === undefined ? {} : { onRefreshError: extras.onJwksRefreshError }),
      },
    };
  }
  return {
    ...keys,
    issuer: jwt.issuer,
    audience: jwt.audience,
    algorithms: jwt.algorithms,
    rolesClaim: jwt.rolesClaim,
    clockToleranceSeconds: jwt.clockToleranceSeconds,
    maxTokenAgeSeconds: jwt.maxTokenAgeSeconds,
    requiredClaims: jwt.requiredClaims,
    typ: jwt.typ,
    maxTokenLength: jwt.maxTokenLength,
    requireJti: jwt.requireJti,
    cacheMaxEntries: jwt.cacheMaxEntries,
    denylist: extras.denylist,
  };
}
