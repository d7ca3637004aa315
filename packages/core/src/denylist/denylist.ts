import { ConfigurationError, FluxguardError } from '../errors/fluxguard-error.js';
import { MAX_CLOCK_TOLERANCE_SECONDS } from '../jwt/verifier-settings.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * A store of revoked token ids (`jti`). The verifier asks it on every call, cached tokens
 * included: a lookup is the price of revocation. An implementation must fail closed: when it
 * cannot answer, `isRevoked` throws (the stores here throw `SecurityError('unavailable')`),
 * it never resolves `false`.
 *
 * @example
 * ```ts
 * import { createMemoryDenylist } from '@fluxguard/core';
 * const denylist = createMemoryDenylist();
 * await denylist.revoke('3f1c…', new Date(payload.exp * 1000));
 * await denylist.isRevoked('3f1c…'); // true
 * ```
 */
export interface Denylist {
  /** True when `jti` was revoked and its entry has not expired. */
  isRevoked(jti: string): Promise<boolean>;
  /**
   * Revokes `jti` until `expiresAt` (pass the token's own `exp`; a grace period is added for
   * clock tolerance). Past that time the token is refused as expired anyway.
   */
  revoke(jti: string, expiresAt: Date): Promise<void>;
}

/**
 * Why a denylist refused to answer: `denylist_unavailable` (with `unavailable`) when the store
 * cannot be reached. Failing closed needs a reason of its own, so that an outage is not read
 * as a revoked token (the verifier's `revoked`).
 *
 * @example
 * ```ts
 * import type { DenylistReason } from '@fluxguard/core';
 * const outage: DenylistReason = 'denylist_unavailable';
 * ```
 */
export type DenylistReason = 'denylist_unavailable';

/**
 * The longest `jti` accepted, in characters; a longer one is refused by the verifier.
 *
 * @example
 * ```ts
 * import { MAX_JTI_LENGTH } from '@fluxguard/core';
 * if (jti.length > MAX_JTI_LENGTH) throw new Error('not a jti this server accepts'); // 256
 * ```
 */
export const MAX_JTI_LENGTH = 256;

/** Default extra retention after `expiresAt`, covering a verifier's clock tolerance. */
export const DEFAULT_DENYLIST_GRACE_MS = 5 * 60_000;

/**
 * A denylist's `graceMs`, checked: at least the longest clock tolerance a verifier may have
 * (300 s), since a verifier accepts a token that long after its expiry, and a revocation
 * dropped before then let the token back in.
 *
 * @internal
 */
export function checkGrace(value: unknown, where: string): number {
  return wholeNumber(value, `${where}: "graceMs"`, { min: MAX_CLOCK_TOLERANCE_SECONDS * 1000, unit: 'ms' });
}

export function checkJti(jti: unknown, where: string): asserts jti is string {
  if (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH) {
    throw new FluxguardError('invalid_jti', `${where}: jti must be a string of 1 to ${MAX_JTI_LENGTH} characters`);
  }
}

export function expiryMs(expiresAt: unknown, graceMs: number, where: string): number {
  if (!(expiresAt instanceof Date) || !Number.isFinite(expiresAt.getTime())) {
    throw new FluxguardError('invalid_expiry', `${where}: expiresAt must be a valid Date`);
  }
  return expiresAt.getTime() + graceMs;
}

export function checkNonNegative(value: unknown, name: string, where: string, max = Number.MAX_VALUE): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max) {
    throw new ConfigurationError(
      `${where}: "${name}" must be a non-negative number${max === Number.MAX_VALUE ? '' : `, at most ${String(max)}`}`,
    );
  }
  return value;
}
