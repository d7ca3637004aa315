import { ConfigurationError, FluxguardError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { DEFAULT_DENYLIST_GRACE_MS, checkGrace, checkJti, expiryMs, type Denylist } from './denylist.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Options of {@link createMemoryDenylist}.
 *
 * @example
 * ```ts
 * import { createMemoryDenylist, type MemoryDenylistOptions } from '@fluxguard/core';
 * const options: MemoryDenylistOptions = { maxEntries: 10_000, graceMs: 600_000 };
 * const denylist = createMemoryDenylist(options);
 * ```
 */
export interface MemoryDenylistOptions {
  /** Most revocations held at once. Default 100 000. */
  readonly maxEntries?: number;
  /**
   * How long a revocation is kept after its token's expiry, in ms: at least 300 000, the longest
   * clock tolerance a verifier may accept a token with after its expiry. Default 5 minutes.
   */
  readonly graceMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  readonly now?: () => number;
}

const DEFAULTS: Readonly<Required<MemoryDenylistOptions>> = Object.freeze({
  maxEntries: 100_000,
  graceMs: DEFAULT_DENYLIST_GRACE_MS,
  now: Date.now,
});

/**
 * An in-process denylist: for one replica, or tests. Entries expire with their token. It is
 * bounded, and when full of unexpired entries `revoke` throws (`FluxguardError` code
 * `denylist_full`) rather than silently dropping a revocation. With several replicas use
 * {@link createRedisDenylist}, or a revocation reaches only one of them.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, createMemoryDenylist } from '@fluxguard/core';
 * const denylist = createMemoryDenylist({ maxEntries: 10_000 });
 * const verifier = createJwtVerifier({ jwks, issuer: 'https://id.example.com', audience: 'artifacts', denylist });
 * ```
 */
export function createMemoryDenylist(options?: MemoryDenylistOptions): Denylist {
  const where = 'createMemoryDenylist';
  const opts = resolveOptions(where, DEFAULTS, options);
  const maxEntries = wholeNumber(opts.maxEntries, `${where}: "maxEntries"`);
  const graceMs = checkGrace(opts.graceMs, where);
  if (typeof opts.now !== 'function') throw new ConfigurationError(`${where}: "now" must be a function`);
  const now = opts.now;
  const entries = new Map<string, number>();

  function sweep(): void {
    const t = now();
    for (const [jti, until] of entries) if (until <= t) entries.delete(jti);
  }

  function store(jti: string, expiresAt: Date): void {
    checkJti(jti, 'denylist.revoke');
    const until = expiryMs(expiresAt, graceMs, 'denylist.revoke');
    if (until <= now()) return;
    if (!entries.has(jti) && entries.size >= maxEntries) sweep();
    if (!entries.has(jti) && entries.size >= maxEntries) {
      throw new FluxguardError(
        'denylist_full',
        `${where}: ${maxEntries} unexpired revocations held; raise maxEntries or use Redis`,
      );
    }
    entries.set(jti, Math.max(until, entries.get(jti) ?? 0));
  }

  return Object.freeze({
    isRevoked(jti: string): Promise<boolean> {
      const until = entries.get(jti);
      if (until === undefined) return Promise.resolve(false);
      if (until <= now()) {
        entries.delete(jti);
        return Promise.resolve(false);
      }
      return Promise.resolve(true);
    },
    revoke(jti: string, expiresAt: Date): Promise<void> {
      try {
        store(jti, expiresAt);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error('revoke failed', { cause: err }));
      }
    },
  });
}
