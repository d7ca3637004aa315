import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/**
 * What a store is asked to count for one rule: `points` per `durationSeconds` for each key, an
 * optional second allowance for bursts, and an optional block once a key goes over.
 *
 * @example
 * ```ts
 * import type { LimiterSpec } from '@fluxguard/core';
 * const uploads: LimiterSpec = { name: 'uploads', points: 20, durationSeconds: 60, burst: { points: 5, durationSeconds: 10 } };
 * ```
 */
export interface LimiterSpec {
  /** The rule's name: part of every stored key, so rules never share counts. */
  readonly name: string;
  readonly points: number;
  readonly durationSeconds: number;
  /** Extra points a key may use once `points` are spent (rate-limiter-flexible's bursty limiter). */
  readonly burst?: { readonly points: number; readonly durationSeconds: number } | undefined;
  /** Once over the limit, the key is refused for this long (brute-force blocks). */
  readonly blockSeconds?: number | undefined;
  /**
   * While the store is unreachable: `open` counts in this process instead (an in-memory
   * insurance limiter, so a replica still limits on its own), `closed` fails every call with
   * {@link RateLimitStoreError}.
   */
  readonly storeFailure: 'open' | 'closed';
}

/**
 * The outcome of one count: allowed or not, the points left, and when the window resets.
 *
 * @example
 * ```ts
 * import type { LimiterResult } from '@fluxguard/core';
 * const retryAfterSeconds = (r: LimiterResult) => Math.ceil(r.resetMs / 1000);
 * ```
 */
export interface LimiterResult {
  readonly allowed: boolean;
  readonly remaining: number;
  /** Milliseconds until the key's window (or block) ends. */
  readonly resetMs: number;
  /** Counted by the in-memory insurance limiter because the shared store was down. */
  readonly local?: boolean | undefined;
}

/**
 * A store's counter for one rule.
 *
 * @example
 * ```ts
 * const result = await limiter.consume('peer:203.0.113.9', 1);
 * if (!result.allowed) refuse(result.resetMs);
 * ```
 */
export interface StoreLimiter {
  /** Counts `points` for `key`. Rejects only when the store failed ({@link RateLimitStoreError}), never for "over the limit". */
  consume(key: string, points: number): Promise<LimiterResult>;
  /** The key's state without counting (`undefined`: nothing counted). Rejects only when the store failed. */
  peek(key: string): Promise<LimiterResult | undefined>;
}

/**
 * Where rate limits count: {@link createMemoryRateLimitStore} (one process) or
 * `createRedisRateLimitStore` (shared by replicas). A narrow interface, so that another
 * backend is one small object.
 *
 * @example
 * ```ts
 * import { createMemoryRateLimitStore, createRateLimit } from '@fluxguard/core';
 * const limits = createRateLimit({ store: createMemoryRateLimitStore(), rules: [...] });
 * ```
 */
export interface RateLimitStore {
  /** `memory`, `redis`, or a name of your own, for logs. */
  readonly kind: string;
  limiter(spec: LimiterSpec): StoreLimiter;
}

/**
 * The store could not answer (down, too slow, not ready): never reported as "rate limited".
 *
 * @example
 * ```ts
 * import { RateLimitStoreError } from '@fluxguard/core';
 * try { await limiter.consume(key, 1); } catch (e) { if (e instanceof RateLimitStoreError) failClosed(); }
 * ```
 */
export class RateLimitStoreError extends Error {
  override readonly name = 'RateLimitStoreError';
}

/**
 * The default store: rate-limiter-flexible's `RateLimiterMemory`, counting in this process.
 * Each key is dropped when its window (or block) ends, so memory follows the keys active in
 * the last window.
 *
 * @example
 * ```ts
 * import { createMemoryRateLimitStore } from '@fluxguard/core';
 * const store = createMemoryRateLimitStore();
 * ```
 */
export function createMemoryRateLimitStore(): RateLimitStore {
  return Object.freeze({
    kind: 'memory',
    limiter: (spec: LimiterSpec) => flexibleLimiter(spec, (opts) => new RateLimiterMemory(opts)),
  });
}

/** The options both rate-limiter-flexible limiters of a spec take. */
export interface FlexibleOptions {
  readonly keyPrefix: string;
  readonly points: number;
  readonly duration: number;
  readonly blockDuration: number;
}

/**
 * A {@link StoreLimiter} over rate-limiter-flexible limiters made by `make` (memory, Redis),
 * bursty when the spec says so. rate-limiter-flexible rejects with a `RateLimiterRes` when the
 * limit is hit and with an `Error` when its store fails: the two are kept apart here.
 *
 * @internal
 */
export function flexibleLimiter(
  spec: LimiterSpec,
  make: (options: FlexibleOptions) => RateLimiterAbstract,
): StoreLimiter & { readonly points: number } {
  const main = make({
    keyPrefix: `fg:${spec.name}`,
    points: spec.points,
    duration: spec.durationSeconds,
    blockDuration: spec.blockSeconds ?? 0,
  });
  const limiter =
    spec.burst === undefined
      ? main
      : new BurstyRateLimiter(
          main,
          make({
            keyPrefix: `fg:${spec.name}:burst`,
            points: spec.burst.points,
            duration: spec.burst.durationSeconds,
            blockDuration: 0,
          }),
        );
  const points = spec.points + (spec.burst?.points ?? 0);
  return {
    points,
    consume: (key, cost) =>
      limiter.consume(key, cost).then(
        (res) => result(res, true),
        (rejection: unknown) => {
          if (rejection instanceof RateLimiterRes) return result(rejection, false);
          throw new RateLimitStoreError('the rate-limit store failed', { cause: rejection });
        },
      ),
    peek: (key) =>
      main.get(key).then(
        (res) => (res === null ? undefined : result(res, res.consumedPoints <= spec.points)),
        (cause: unknown) => {
          throw new RateLimitStoreError('the rate-limit store failed', { cause });
        },
      ),
  };
}

function result(res: RateLimiterRes, allowed: boolean): LimiterResult {
  return { allowed, remaining: res.remainingPoints, resetMs: Math.max(0, res.msBeforeNext) };
}
