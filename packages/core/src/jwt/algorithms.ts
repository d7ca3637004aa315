/**
 * JWS algorithms a verifier may allow. `none` is not one of them, ever.
 *
 * @example
 * ```ts
 * import type { AsymmetricAlgorithm } from '@fluxguard/core';
 * const algorithms: AsymmetricAlgorithm[] = ['ES256', 'EdDSA'];
 * ```
 */
export type AsymmetricAlgorithm =
  'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA' | 'Ed25519';

/**
 * HMAC algorithms, allowed only with an explicitly configured secret.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, type HmacAlgorithm } from '@fluxguard/core';
 * const algorithms: HmacAlgorithm[] = ['HS256'];
 * const verifier = createJwtVerifier({ secret, algorithms, issuer: 'https://id.example.com', audience: 'artifacts' });
 * ```
 */
export type HmacAlgorithm = 'HS256' | 'HS384' | 'HS512';

/**
 * A JWS algorithm name fluxguard can be told to accept.
 *
 * @example
 * ```ts
 * import type { JwsAlgorithm } from '@fluxguard/core';
 * const algorithms: JwsAlgorithm[] = ['ES256', 'EdDSA'];
 * ```
 */
export type JwsAlgorithm = AsymmetricAlgorithm | HmacAlgorithm;

export const ASYMMETRIC_ALGORITHMS: readonly AsymmetricAlgorithm[] = Object.freeze([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
]);

export const HMAC_ALGORITHMS: readonly HmacAlgorithm[] = Object.freeze(['HS256', 'HS384', 'HS512']);

/**
 * The default allowlist: asymmetric only.
 *
 * @example
 * ```ts
 * import { DEFAULT_JWT_ALGORITHMS } from '@fluxguard/core';
 * DEFAULT_JWT_ALGORITHMS; // ['RS256', 'PS256', 'ES256', 'EdDSA']
 * ```
 */
export const DEFAULT_JWT_ALGORITHMS: readonly AsymmetricAlgorithm[] = Object.freeze([
  'RS256',
  'PS256',
  'ES256',
  'EdDSA',
]);

export function isAsymmetricAlgorithm(value: unknown): value is AsymmetricAlgorithm {
  return typeof value === 'string' && (ASYMMETRIC_ALGORITHMS as readonly string[]).includes(value);
}

export function isHmacAlgorithm(value: unknown): value is HmacAlgorithm {
  return typeof value === 'string' && (HMAC_ALGORITHMS as readonly string[]).includes(value);
}
