import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { wholeNumber } from '../options/whole-number.js';
import {
  boundedCommands,
  refuseClosedClient,
  warnOfClientTimeout,
  type CommandsConnection,
} from '../redis/bounded-commands.js';
import { DEFAULT_DENYLIST_GRACE_MS, checkGrace, checkJti, expiryMs, type Denylist } from './denylist.js';
import { isWellFormedText, losslessBytes } from '../text/well-formed.js';

/**
 * What the Redis denylist needs of an ioredis client (a `Redis` instance or a `Cluster` fits).
 * Written out rather than picked from ioredis's types, so that the declarations of
 * `@fluxguard/core` type-check without ioredis installed (without `skipLibCheck`).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import type { RedisDenylistClient } from '@fluxguard/core';
 * const client: RedisDenylistClient = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
 * ```
 */
export interface RedisDenylistClient {
  /** The connection state (ioredis `status`): a lookup while it is not `ready` fails closed. */
  readonly status: string;
  /** How many of the keys exist (ioredis `exists`). */
  exists(...keys: (string | Buffer)[]): Promise<number>;
  /** Sets a key that expires in `milliseconds` (ioredis `set` with `PX`). */
  set(key: string | Buffer, value: string, expiryMode: 'PX', milliseconds: number): Promise<unknown>;
}

/**
 * Options of {@link createRedisDenylist}.
 *
 * @example
 * ```ts
 * import { createRedisDenylist, type RedisDenylistOptions } from '@fluxguard/core';
 * const options: RedisDenylistOptions = { client, keyPrefix: 'artifacts:jti:', timeoutMs: 200 };
 * const denylist = createRedisDenylist(options);
 * ```
 */
export interface RedisDenylistOptions {
  /**
   * An ioredis client, shared by every replica's verifier:
   * `new Redis(url, { maxRetriesPerRequest: 1 })`. Leave its `commandTimeout` unset:
   * `timeoutMs` bounds each lookup, and ioredis's own timer fires when the event loop is busy,
   * taking a loaded server for a slow Redis (a warning says so).
   */
  readonly client: RedisDenylistClient;
  /** Key prefix. Default `fluxguard:jti:`. */
  readonly keyPrefix?: string;
  /** A lookup that takes longer fails (closed). Default 500 ms. */
  readonly timeoutMs?: number;
  /**
   * Lookups sent to Redis and not answered yet, at most; one more fails (closed) at once.
   * ioredis keeps a command until Redis answers, so while Redis hangs every call would leave
   * one behind, also after its own `commandTimeout`. Default 10 000.
   */
  readonly maxPendingCommands?: number;
  /**
   * How long a revocation is kept after its token's expiry, in ms: at least 300 000, the longest
   * clock tolerance a verifier may accept a token with after its expiry. Default 5 minutes.
   */
  readonly graceMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  readonly now?: () => number;
}

const DEFAULTS: Readonly<Required<Omit<RedisDenylistOptions, 'client'>>> = Object.freeze({
  keyPrefix: 'fluxguard:jti:',
  timeoutMs: 500,
  maxPendingCommands: 10_000,
  graceMs: DEFAULT_DENYLIST_GRACE_MS,
  now: Date.now,
});

/**
 * Warns, once the client is ready, when its Redis evicts keys when full (a `maxmemory` and a
 * policy other than `noeviction`): a revocation it evicts lets its token in again, and keys that
 * a flood writes (rate-limit counts, brute-force failures per address) are what fills it. A
 * Redis that refuses `CONFIG` (many managed ones) is not asked again.
 */
function warnIfEvicting(client: unknown, where: string): void {
  const redis = client as { config?: unknown; status?: unknown; once?: unknown };
  if (typeof redis.config !== 'function') return;
  const config = redis.config as (op: 'GET', name: string) => Promise<unknown>;
  const ask = (): void => {
    Promise.all([config.call(client, 'GET', 'maxmemory'), config.call(client, 'GET', 'maxmemory-policy')]).then(
      ([memory, policy]) => {
        const limit = Number((memory as unknown[] | null)?.[1]);
        const evicts = String((policy as unknown[] | null)?.[1]);
        if (limit > 0 && evicts !== 'noeviction') {
          process.emitWarning(
            `${where}: this Redis evicts keys when full (maxmemory-policy "${evicts}"): an evicted revocation lets its token in again; keep revocations in a Redis with maxmemory-policy noeviction, apart from rate-limit counts`,
            { code: 'FLUXGUARD_DENYLIST_EVICTION' },
          );
        }
      },
      () => undefined,
    );
  };
  if (redis.status === 'ready') ask();
  else if (typeof redis.once === 'function')
    (redis.once as (event: string, f: () => void) => void).call(client, 'ready', ask);
}

// While ioredis reconnects, a command would wait in its offline queue: answer at once instead.
const DOWN_STATES: ReadonlySet<string> = new Set(['reconnecting', 'close', 'end']);

/**
 * A denylist in Redis, so a token revoked through one replica is refused by all of them.
 * `revoke` is `SET prefix+jti 1 PX ttl` (the key expires with the token); `isRevoked` is
 * `EXISTS`. It FAILS CLOSED: a Redis error, a lookup slower than `timeoutMs`, a client that
 * is reconnecting, or `maxPendingCommands` lookups already waiting for Redis makes `isRevoked`
 * throw `SecurityError('unavailable')` with reason `denylist_unavailable`, so the call is
 * refused (503), never let through. `revoke` throws the same error when it cannot store the
 * revocation.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { createJwtVerifier, createRedisDenylist } from '@fluxguard/core';
 * const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
 * const denylist = createRedisDenylist({ client, keyPrefix: 'artifacts:jti:' });
 * const verifier = createJwtVerifier({ jwks, issuer: 'https://id.example.com', audience: 'artifacts', denylist });
 * ```
 */
export function createRedisDenylist(options: RedisDenylistOptions): Denylist {
  const where = 'createRedisDenylist';
  const opts = resolveOptions(where, DEFAULTS, options, ['client']);
  const client: unknown = options.client;
  if (
    typeof client !== 'object' ||
    client === null ||
    typeof (client as Partial<RedisDenylistClient>).exists !== 'function' ||
    typeof (client as Partial<RedisDenylistClient>).set !== 'function'
  ) {
    throw new ConfigurationError(`${where}: "client" must be an ioredis client`);
  }
  // Empty, revocations would share the namespace of every other key in the Redis; with white
  // space, as the rate-limit store's, it reads as two words wherever keys are listed.
  if (typeof opts.keyPrefix !== 'string' || opts.keyPrefix === '' || /\s/.test(opts.keyPrefix)) {
    throw new ConfigurationError(`${where}: "keyPrefix" must be a non-empty string without spaces`);
  }
  const timeoutMs = wholeNumber(opts.timeoutMs, `${where}: "timeoutMs"`, { unit: 'ms' });
  const graceMs = checkGrace(opts.graceMs, where);
  if (typeof opts.now !== 'function') throw new ConfigurationError(`${where}: "now" must be a function`);
  const now = opts.now;
  const redis = options.client;
  refuseClosedClient(redis, where);
  const prefix = opts.keyPrefix;
  const commands = boundedCommands(
    timeoutMs,
    wholeNumber(opts.maxPendingCommands, `${where}: "maxPendingCommands"`),
    redis as Partial<CommandsConnection>,
  );
  warnOfClientTimeout(redis, where);
  warnIfEvicting(redis, where);

  async function run<T>(command: () => Promise<T>): Promise<T> {
    if (DOWN_STATES.has(redis.status)) {
      throw new SecurityError('unavailable', {
        reason: 'denylist_unavailable',
        cause: new Error(`Redis client is ${redis.status}`),
      });
    }
    try {
      return await commands.run(command);
    } catch (cause) {
      throw new SecurityError('unavailable', { reason: 'denylist_unavailable', cause });
    }
  }

  // A jti with a lone surrogate is written as bytes no other jti's UTF-8 has: ioredis would write
  // it as U+FFFD, and revoking one token would revoke others (`x\ud800` and `x\udc00`).
  const keyOf = (jti: string): string | Buffer =>
    isWellFormedText(jti) ? prefix + jti : Buffer.concat([Buffer.from(prefix), losslessBytes(jti)]);

  return Object.freeze({
    async isRevoked(jti: string): Promise<boolean> {
      return (await run(() => redis.exists(keyOf(jti)))) > 0;
    },
    async revoke(jti: string, expiresAt: Date): Promise<void> {
      checkJti(jti, 'denylist.revoke');
      const ttl = Math.ceil(expiryMs(expiresAt, graceMs, 'denylist.revoke') - now());
      if (ttl <= 0) return;
      await run(() => redis.set(keyOf(jti), '1', 'PX', ttl));
    },
  });
}
