import { RateLimiterRedis } from 'rate-limiter-flexible';
import type { AuditLogger } from '../audit/audit-logger.js';
import { causeLine } from '../audit/redaction.js';
import { assertAuditLogger } from '../audit/check.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import {
  RateLimitStoreError,
  createMemoryRateLimitStore,
  flexibleLimiter,
  limitersByName,
  type LimiterResult,
  type LimiterSpec,
  type MadeLimiter,
  type RateLimitStore,
  type StoreLimiter,
} from './store.js';
import { wholeNumber } from '../options/whole-number.js';
import {
  boundedCommands,
  refuseClosedClient,
  warnOfClientTimeout,
  type CommandsConnection,
} from '../redis/bounded-commands.js';

/**
 * What the Redis store needs of an ioredis client: a `Redis` (single server or Sentinel) or a
 * `Cluster` fits.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import type { RedisRateLimitClient } from '@fluxguard/core';
 * const client: RedisRateLimitClient = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { enableOfflineQueue: false });
 * ```
 */
export interface RedisRateLimitClient {
  /**
   * The connection state (ioredis `status`): a count while it is not `ready` is a store failure.
   * A closed client (`end`) is refused; one made with `lazyConnect` (`wait`) is connected.
   */
  readonly status: string;
  /** Registers the Lua script each count runs (ioredis `defineCommand`). */
  defineCommand(name: string, definition: { numberOfKeys?: number; lua: string }): void;
}

/**
 * Options of {@link createRedisRateLimitStore}.
 *
 * @example
 * ```ts
 * import type { RedisRateLimitStoreOptions } from '@fluxguard/core';
 * const options: Omit<RedisRateLimitStoreOptions, 'client' | 'audit'> = { keyPrefix: 'artifacts', timeoutMs: 200 };
 * ```
 */
export interface RedisRateLimitStoreOptions {
  /**
   * An ioredis client (`new Redis(url)`, a Sentinel client, or `new Cluster(nodes)`), shared by
   * every replica. Create it so that a dead Redis cannot hold calls:
   * `{ enableOfflineQueue: false, maxRetriesPerRequest: 1 }`, and leave its `commandTimeout`
   * unset: `timeoutMs` bounds each count, and ioredis's own timer fires when the event loop is
   * busy, taking a loaded server for a slow Redis (a warning says so).
   */
  readonly client: RedisRateLimitClient;
  /** Where `ratelimit.store_unavailable` lines go. */
  readonly audit: AuditLogger;
  /** Put before every key, so that services sharing a Redis never share counts. Default `fluxguard`. */
  readonly keyPrefix?: string | undefined;
  /** A count slower than this counts as a store failure. Default 250 ms. */
  readonly timeoutMs?: number | undefined;
  /** How often, at most, a store that stays down is logged again. Default 10 s. */
  readonly reportEveryMs?: number | undefined;
  /**
   * Counts sent to Redis and not answered yet, at most; one more counts as a store failure at
   * once. ioredis keeps a command until Redis answers, so while Redis hangs every call would
   * leave one behind (about 1.5 KB each), also after its own `commandTimeout`. Default 10 000.
   */
  readonly maxPendingCommands?: number | undefined;
}

/** The limiters of the stores on each client, by key prefix (see `createRedisRateLimitStore`). */
const limitersOfClient = new WeakMap<object, Map<string, Map<string, MadeLimiter>>>();

const DEFAULTS: Readonly<Omit<RedisRateLimitStoreOptions, 'client' | 'audit'>> = Object.freeze({
  keyPrefix: 'fluxguard',
  timeoutMs: 250,
  reportEveryMs: 10_000,
  maxPendingCommands: 10_000,
});

/**
 * Rate limits shared by every replica through Redis (rate-limiter-flexible's
 * `RateLimiterRedis`, one atomic Lua script per count): a single server, Sentinel, or a
 * Redis Cluster, whichever ioredis client you pass.
 *
 * When Redis fails, is not ready, answers slower than `timeoutMs` (Redis's time, not this
 * process's: the deadline starts once the current turn is over, an answer that came while the
 * event loop was busy is read before it is declared, and one this process held back starts
 * over), or already has
 * `maxPendingCommands` counts to answer, it is never reported
 * as "rate limited": a rule with `storeFailure: 'open'` counts in this process instead (an
 * in-memory insurance limiter with the rule's own limits), one with `'closed'` refuses the call
 * with `unavailable`. Either way one `ratelimit.store_unavailable` line is logged when it starts,
 * then at most every `reportEveryMs` with the count of calls it touched, and one
 * `ratelimit.store_recovered` line when Redis answers again.
 *
 * @throws ConfigurationError for unknown options, a client that is not an ioredis client, or a
 *   bad timeout.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { createAuditLogger, createRedisRateLimitStore } from '@fluxguard/core';
 * const audit = createAuditLogger();
 * const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
 * const store = createRedisRateLimitStore({ client, audit, keyPrefix: 'artifacts' });
 * ```
 */
export function createRedisRateLimitStore(options: RedisRateLimitStoreOptions): RateLimitStore {
  const where = 'createRedisRateLimitStore';
  const opts = resolveOptions(where, DEFAULTS, options, ['client', 'audit']);
  const client: unknown = options.client;
  if (
    typeof client !== 'object' ||
    client === null ||
    typeof (client as Partial<RedisRateLimitClient>).defineCommand !== 'function' ||
    typeof (client as Partial<RedisRateLimitClient>).status !== 'string'
  ) {
    throw new ConfigurationError(`${where}: "client" must be an ioredis client (Redis or Cluster)`);
  }
  assertAuditLogger(options.audit, where);
  const keyPrefix = opts.keyPrefix;
  if (typeof keyPrefix !== 'string' || keyPrefix === '' || /\s/.test(keyPrefix)) {
    throw new ConfigurationError(`${where}: "keyPrefix" must be a non-empty string without spaces`);
  }
  const timeoutMs = positive(opts.timeoutMs, 'timeoutMs', where);
  const reportEveryMs = positive(opts.reportEveryMs, 'reportEveryMs', where);
  const maxPendingCommands = wholeNumber(opts.maxPendingCommands, `${where}: "maxPendingCommands"`);
  const outage = outageReporter(options.audit, reportEveryMs);
  const storeClient = options.client;
  refuseClosedClient(storeClient, where);
  // A client made with `lazyConnect` waits for a first command to connect, and the limiters send
  // none while it is not ready: every count stayed in this process, for good.
  const lazy = storeClient as { status: string; connect?: () => Promise<unknown> };
  if (lazy.status === 'wait' && typeof lazy.connect === 'function') lazy.connect().catch(() => undefined);
  // One budget for every rule of the store: they share the client and its queue.
  const commands = boundedCommands(timeoutMs, maxPendingCommands, storeClient as Partial<CommandsConnection>);
  warnOfClientTimeout(storeClient, where);

  // Stores on one client with one prefix count in the same keys: they share their limiters, as
  // one store does, so that two limits of one name and two allowances are refused, and one
  // limit has one count to fall back on while Redis is down, not one per store.
  let byPrefix = limitersOfClient.get(storeClient);
  if (byPrefix === undefined)
    limitersOfClient.set(storeClient, (byPrefix = new Map<string, Map<string, MadeLimiter>>()));
  let made = byPrefix.get(keyPrefix);
  if (made === undefined) byPrefix.set(keyPrefix, (made = new Map<string, MadeLimiter>()));

  return Object.freeze({
    kind: 'redis',
    limiter: limitersByName(
      where,
      (spec: LimiterSpec): StoreLimiter => {
        const shared = flexibleLimiter(
          spec,
          (o) =>
            new RateLimiterRedis({
              ...o,
              // One key per script: a Redis Cluster spreads the keys over its nodes.
              keyPrefix: `${keyPrefix}:${o.keyPrefix}`,
              storeClient,
              // A client that is reconnecting would queue the command: answer at once instead.
              rejectIfRedisNotReady: true,
            }),
        );
        const insurance = spec.storeFailure === 'open' ? createMemoryRateLimitStore().limiter(spec) : undefined;
        // Only a count that went through ends an outage: a Redis that answers reads and refuses
        // writes (read-only after a failover, out of memory) had every peek end it and the next
        // count start it again, two lines a call.
        const guarded = <T>(
          op: () => Promise<T>,
          fallback: (() => Promise<T>) | undefined,
          counts: boolean,
        ): Promise<T> =>
          commands.run(op).then(
            (value) => {
              if (counts) outage.up();
              return value;
            },
            (error: unknown) => {
              outage.down(spec.name, error);
              if (fallback !== undefined) return fallback();
              throw new RateLimitStoreError('the rate-limit store failed', { cause: error });
            },
          );
        return {
          consume: (key, points) =>
            guarded(
              () => shared.consume(key, points),
              insurance && (() => Promise.resolve(insurance.consume(key, points)).then(asLocal)),
              true,
            ),
          peek: (key) =>
            guarded(
              () => shared.peek(key),
              insurance && (() => Promise.resolve(insurance.peek(key)).then((r) => (r === undefined ? r : asLocal(r)))),
              false,
            ),
        };
      },
      { made, stores: 'this store (or another on the same client with the same keyPrefix)' },
    ),
  });
}

function asLocal(result: LimiterResult): LimiterResult {
  return { ...result, local: true };
}

function positive(value: unknown, name: string, where: string): number {
  return wholeNumber(value, `${where}: "${name}"`, { unit: 'ms' });
}

/**
 * Logs an outage once when it starts, then at most every `everyMs` with the count of calls it
 * touched, and once when the store answers again: a Redis that is down during a flood must not
 * write a line per call.
 */
function outageReporter(audit: AuditLogger, everyMs: number): { down(rule: string, error: unknown): void; up(): void } {
  let since: number | undefined;
  let lastReport = 0;
  let failures = 0;
  return {
    down(rule, error) {
      failures += 1;
      const now = Date.now();
      if (since !== undefined && now - lastReport < everyMs) return;
      since ??= now;
      lastReport = now;
      const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
      audit.logger.error(
        {
          event: 'ratelimit.store_unavailable',
          store: 'redis',
          rule,
          failures,
          downForMs: now - since,
          cause: cause instanceof Error ? causeLine(cause) : 'unknown',
        },
        'ratelimit.store_unavailable',
      );
      failures = 0;
    },
    up() {
      if (since === undefined) return;
      audit.logger.warn(
        { event: 'ratelimit.store_recovered', store: 'redis', downForMs: Date.now() - since, failures },
        'ratelimit.store_recovered',
      );
      since = undefined;
      failures = 0;
    },
  };
}
