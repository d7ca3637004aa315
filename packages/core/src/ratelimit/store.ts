import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { LruCache } from '../cache/lru.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * What a store is asked to count for one rule: `points` per `durationSeconds` for each key, an
 * optional second allowance for bursts, and an optional block once a key goes over.
 *
 * @example
 * ```ts
 * import type { LimiterSpec } from '@fluxguard/core';
 * const uploads: LimiterSpec = {
 *   name: 'uploads',
 *   points: 20,
 *   durationSeconds: 60,
 *   burst: { points: 5, durationSeconds: 10 },
 *   storeFailure: 'open',
 * };
 * ```
 */
export interface LimiterSpec {
  /**
   * The rule's name: part of every stored key. Limits of one name count together in one store
   * (two guards given the store, one per transport, share their counts), and must ask for the
   * same allowance.
   */
  readonly name: string;
  /** Points a key may spend per window (each count adds its cost; past them, refused). */
  readonly points: number;
  /** Length of a key's window, in seconds, from its first count. */
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
  /** Whether the count fits in the allowance (burst included). */
  readonly allowed: boolean;
  /** Points left in the key's window; 0 once spent. */
  readonly remaining: number;
  /** Milliseconds until the key's window (or block) ends. */
  readonly resetMs: number;
  /** Counted by the in-memory insurance limiter because the shared store was down. */
  readonly local?: boolean | undefined;
  /**
   * The burst allowance's state, when this count reached it (the main points were spent):
   * its points left and when its window ends. A count the main points took leaves it unknown.
   */
  readonly burst?: { readonly remaining: number; readonly resetMs: number } | undefined;
}

/**
 * A store's counter for one rule. A store that answers at once (the memory store) returns
 * plain values, so that a call it allows stays on the pipeline's synchronous path; a remote
 * one returns promises.
 *
 * @example
 * ```ts
 * const result = await limiter.consume('peer:203.0.113.9', 1);
 * if (!result.allowed) refuse(result.resetMs);
 * ```
 */
export interface StoreLimiter {
  /**
   * Counts `points` for `key`. Fails (throws or rejects) only when the store failed
   * ({@link RateLimitStoreError}), never for "over the limit".
   */
  consume(key: string, points: number): LimiterResult | Promise<LimiterResult>;
  /** The key's state without counting (`undefined`: nothing counted). Fails only when the store failed. */
  peek(key: string): LimiterResult | undefined | Promise<LimiterResult | undefined>;
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
  /** The counter for one spec; fluxguard asks for it once per rule or brute-force limit, at start-up. */
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
 * Runs one question to a store, answered at once or later, and turns a store failure into the
 * refusal of a rule that fails closed: `unavailable` (reason `ratelimit_store_unavailable`),
 * with `auditFields` naming the rule.
 *
 * @internal
 */
export function askStore<T>(ask: () => T | Promise<T>, auditFields: Readonly<Record<string, string>>): T | Promise<T> {
  let answer: T | Promise<T>;
  try {
    answer = ask();
  } catch (error) {
    return storeUnavailable(error, auditFields);
  }
  return answer instanceof Promise ? answer.catch((error: unknown) => storeUnavailable(error, auditFields)) : answer;
}

/**
 * {@link askStore} for one count, without a closure per call: a rule counts on every call it
 * applies to.
 *
 * @internal
 */
export function consumeFromStore(
  limiter: StoreLimiter,
  key: string,
  cost: number,
  auditFields: Readonly<Record<string, string>>,
): LimiterResult | Promise<LimiterResult> {
  let answer: LimiterResult | Promise<LimiterResult>;
  try {
    answer = limiter.consume(key, cost);
  } catch (error) {
    return storeUnavailable(error, auditFields);
  }
  return answer instanceof Promise ? answer.catch((error: unknown) => storeUnavailable(error, auditFields)) : answer;
}

/** A store failure as the refusal of a rule that fails closed; anything else is thrown as it is. */
function storeUnavailable(error: unknown, auditFields: Readonly<Record<string, string>>): never {
  if (!(error instanceof RateLimitStoreError)) throw error;
  throw new SecurityError('unavailable', { reason: 'ratelimit_store_unavailable', cause: error, auditFields });
}

/**
 * Options of {@link createMemoryRateLimitStore}.
 *
 * @example
 * ```ts
 * import type { MemoryRateLimitStoreOptions } from '@fluxguard/core';
 * const options: MemoryRateLimitStoreOptions = { maxKeys: 500_000 };
 * ```
 */
export interface MemoryRateLimitStoreOptions {
  /**
   * Keys one rule holds at once (a burst allowance holds as many again). Default 100 000,
   * about 22 MB a rule. When a new key comes to a full rule, the key used longest ago is
   * forgotten, and counts afresh if it comes back.
   */
  readonly maxKeys?: number | undefined;
}

const MEMORY_DEFAULTS: Readonly<{ maxKeys: number }> = Object.freeze({ maxKeys: 100_000 });

/**
 * The default store: counts in this process, synchronously. Each rule has fixed windows per key
 * (the same counting as rate-limiter-flexible's `RateLimiterMemory`: a window starts with a
 * key's first count, a cost is counted even when refused, a block starts when a key first goes
 * over), bursts and blocks included. It answers without a promise, so an allowed call costs no
 * asynchronous step; expired keys are swept once per window, with no timer per key.
 *
 * Each rule holds at most `maxKeys` keys, whatever clients send: a rule keyed by a header (an
 * API key) counts values the client chooses, and without a bound a flood of made-up values
 * would grow the process for as long as the window lasts. A full rule forgets the key used
 * longest ago, as nginx's `limit_req` zones do, so a key in use keeps its count and a flood
 * can only make a rule forget keys that have gone quiet.
 *
 * @throws ConfigurationError for unknown options or a `maxKeys` that is not a whole number of
 *   at least 1.
 *
 * @example
 * ```ts
 * import { createMemoryRateLimitStore } from '@fluxguard/core';
 * const store = createMemoryRateLimitStore({ maxKeys: 500_000 });
 * ```
 */
export function createMemoryRateLimitStore(options?: MemoryRateLimitStoreOptions): RateLimitStore {
  const where = 'createMemoryRateLimitStore';
  const maxKeys = wholeNumber(resolveOptions(where, MEMORY_DEFAULTS, options).maxKeys, `${where}: "maxKeys"`);
  return Object.freeze({
    kind: 'memory',
    limiter: limitersByName(where, (spec) => memoryLimiter(spec, maxKeys)),
  });
}

/**
 * A store's `limiter`, made once per name: limits of one name count together, as a Redis store
 * keeps them under one key, so a second spec of a name gets the limiter of the first (two guards
 * given one memory store, one per transport, had each granted a caller the whole allowance).
 * A second spec of a name that asks for another allowance is refused: one count cannot be
 * judged against two. `shared`: stores that count in one place (two Redis stores on one client
 * with one key prefix) keep their limiters in one map, and say which stores in the message.
 *
 * @throws ConfigurationError from the returned function, for a name asked with another allowance.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported)
 * const limiter = limitersByName('createMyStore', (spec) => myLimiter(spec));
 * ```
 *
 * @internal
 */
export function limitersByName(
  where: string,
  make: (spec: LimiterSpec) => StoreLimiter,
  shared?: { readonly made: Map<string, MadeLimiter>; readonly stores: string },
): (spec: LimiterSpec) => StoreLimiter {
  const made = shared?.made ?? new Map<string, MadeLimiter>();
  const stores = shared?.stores ?? 'this store';
  return (spec) => {
    const allowance = JSON.stringify([
      spec.points,
      spec.durationSeconds,
      spec.burst?.points,
      spec.burst?.durationSeconds,
      spec.blockSeconds ?? 0,
      spec.storeFailure,
    ]);
    const known = made.get(spec.name);
    if (known !== undefined) {
      if (known.allowance === allowance) return known.limiter;
      throw new ConfigurationError(
        `${where}: two limits named "${spec.name}" ask ${stores} for different allowances (points, window, burst, block or storeFailure), and limits of one name count together in one store: name them apart, or give each its own store`,
      );
    }
    const limiter = make(spec);
    made.set(spec.name, { allowance, limiter });
    return limiter;
  };
}

/** A limiter {@link limitersByName} made, with the allowance it was made for. */
export interface MadeLimiter {
  readonly allowance: string;
  readonly limiter: StoreLimiter;
}

/** The counts of one key in one window. */
interface Window {
  count: number;
  resetAt: number;
}

/**
 * The fixed windows of one allowance: at most `maxKeys` keys in the order they were last used
 * (a count or a peek is a use; a new key in a full rule takes the place of the one used longest
 * ago), swept of ended windows by one unref'd timer that runs only while keys exist. Blocks are
 * kept apart, at most `maxKeys` of them: a flood of new keys, each counted once, took a blocked
 * key's place among the counts and ended its block early; now only other blocks, each earned by
 * going past the allowance, can.
 */
class MemoryWindows {
  readonly #entries: LruCache<string, Window>;
  /** Until when each blocked key is blocked. */
  readonly #blocks: LruCache<string, number>;
  readonly #points: number;
  readonly #durationMs: number;
  readonly #blockMs: number;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  constructor(points: number, durationSeconds: number, blockSeconds: number, maxKeys: number) {
    this.#entries = new LruCache(maxKeys);
    this.#blocks = new LruCache(maxKeys);
    this.#points = points;
    this.#durationMs = durationSeconds * 1000;
    this.#blockMs = blockSeconds * 1000;
  }

  consume(key: string, cost: number, now: number): LimiterResult {
    const blockedUntil = this.#blockedUntil(key, now);
    if (blockedUntil !== undefined) return { allowed: false, remaining: 0, resetMs: blockedUntil - now };
    let entry = this.#entries.get(key);
    if (entry === undefined || entry.resetAt <= now) {
      entry = { count: 0, resetAt: now + this.#durationMs };
      this.#entries.set(key, entry);
      if (this.#sweeper === undefined) this.#sweeper = this.#startSweeping();
    }
    entry.count += cost;
    const remaining = Math.max(0, this.#points - entry.count);
    if (entry.count <= this.#points) return { allowed: true, remaining, resetMs: entry.resetAt - now };
    if (this.#blockMs > 0 && entry.count - cost <= this.#points) {
      // As rate-limiter-flexible does, the block replaces the window: once it ends, the key starts afresh.
      this.#blocks.set(key, now + this.#blockMs);
      this.#entries.delete(key);
      return { allowed: false, remaining: 0, resetMs: this.#blockMs };
    }
    return { allowed: false, remaining, resetMs: entry.resetAt - now };
  }

  /** The key's state without counting; asking is a use, so a blocked client that keeps calling keeps its block. */
  peek(key: string, now: number): LimiterResult | undefined {
    const blockedUntil = this.#blockedUntil(key, now);
    if (blockedUntil !== undefined) return { allowed: false, remaining: 0, resetMs: blockedUntil - now };
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.resetAt <= now) return undefined;
    return {
      allowed: entry.count <= this.#points,
      remaining: Math.max(0, this.#points - entry.count),
      resetMs: entry.resetAt - now,
    };
  }

  /** When the key's block ends, if it is blocked now. */
  #blockedUntil(key: string, now: number): number | undefined {
    if (this.#blocks.size === 0) return undefined;
    const until = this.#blocks.get(key);
    if (until === undefined) return undefined;
    if (until > now) return until;
    this.#blocks.delete(key);
    return undefined;
  }

  #startSweeping(): ReturnType<typeof setInterval> {
    const timer = setInterval(
      () => {
        const now = Date.now();
        this.#entries.prune((entry) => entry.resetAt <= now);
        this.#blocks.prune((until) => until <= now);
        if (this.#entries.size === 0 && this.#blocks.size === 0) {
          clearInterval(timer);
          this.#sweeper = undefined;
        }
      },
      Math.max(1000, Math.min(this.#durationMs, 60_000)),
    );
    timer.unref();
    return timer;
  }
}

function memoryLimiter(spec: LimiterSpec, maxKeys: number): StoreLimiter {
  const main = new MemoryWindows(spec.points, spec.durationSeconds, spec.blockSeconds ?? 0, maxKeys);
  const burst =
    spec.burst === undefined ? undefined : new MemoryWindows(spec.burst.points, spec.burst.durationSeconds, 0, maxKeys);
  return {
    consume(key, cost) {
      const now = Date.now();
      const result = main.consume(key, cost, now);
      if (result.allowed || burst === undefined) return result;
      // As rate-limiter-flexible's bursty limiter: the burst allowance is spent only once the
      // main one is, and the wait is the sooner of the two.
      const extra = burst.consume(key, cost, now);
      return {
        allowed: extra.allowed,
        remaining: result.remaining,
        resetMs: Math.min(result.resetMs, extra.resetMs),
        burst: { remaining: extra.remaining, resetMs: extra.resetMs },
      };
    },
    peek: (key) => main.peek(key, Date.now()),
  };
}

/** A {@link StoreLimiter} whose answers always come as promises (a remote store). */
export interface AsyncLimiter {
  consume(key: string, points: number): Promise<LimiterResult>;
  peek(key: string): Promise<LimiterResult | undefined>;
}

/** The options both rate-limiter-flexible limiters of a spec take. */
export interface FlexibleOptions {
  readonly keyPrefix: string;
  readonly points: number;
  readonly duration: number;
  readonly blockDuration: number;
}

/**
 * A {@link StoreLimiter} over rate-limiter-flexible limiters made by `make` (the Redis store's),
 * bursty when the spec says so. rate-limiter-flexible rejects with a `RateLimiterRes` when the
 * limit is hit and with an `Error` when its store fails: the two are kept apart here.
 *
 * @internal
 */
export function flexibleLimiter(
  spec: LimiterSpec,
  make: (options: FlexibleOptions) => RateLimiterAbstract,
): AsyncLimiter {
  const main = make({
    keyPrefix: `fg:${spec.name}`,
    points: spec.points,
    duration: spec.durationSeconds,
    blockDuration: spec.blockSeconds ?? 0,
  });
  const burst =
    spec.burst === undefined
      ? undefined
      : make({
          keyPrefix: `fg:${spec.name}:burst`,
          points: spec.burst.points,
          duration: spec.burst.durationSeconds,
          blockDuration: 0,
        });
  const failed = (cause: unknown): never => {
    throw new RateLimitStoreError('the rate-limit store failed', { cause });
  };
  // rate-limiter-flexible's BurstyRateLimiter, step by step: it spends the burst points only
  // once the main ones are spent, as here, but its answer hides the burst's own state.
  const withBurst = (spent: RateLimiterRes, extra: RateLimiterRes, allowed: boolean): LimiterResult => ({
    allowed,
    remaining: spent.remainingPoints,
    resetMs: Math.max(0, Math.min(spent.msBeforeNext, extra.msBeforeNext)),
    burst: { remaining: extra.remainingPoints, resetMs: Math.max(0, extra.msBeforeNext) },
  });
  return {
    consume: (key, cost) =>
      main.consume(key, cost).then(
        (res) => result(res, true),
        (rejection: unknown) => {
          if (!(rejection instanceof RateLimiterRes)) return failed(rejection);
          if (burst === undefined) return result(rejection, false);
          return burst.consume(key, cost).then(
            (extra) => withBurst(rejection, extra, true),
            (refused: unknown) =>
              refused instanceof RateLimiterRes ? withBurst(rejection, refused, false) : failed(refused),
          );
        },
      ),
    peek: (key) =>
      main.get(key).then((res) => (res === null ? undefined : result(res, res.consumedPoints <= spec.points)), failed),
  };
}

function result(res: RateLimiterRes, allowed: boolean): LimiterResult {
  return { allowed, remaining: res.remainingPoints, resetMs: Math.max(0, res.msBeforeNext) };
}
