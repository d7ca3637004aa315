import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger, type AuditLogger } from '../audit/audit-logger.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { freePort, startRedis, type RedisUnderTest } from '@fluxguard/test-support/redis';
import { createRedisRateLimitStore, type RedisRateLimitStoreOptions } from './redis-store.js';
import { boundedKey } from './store-key.js';
import { RateLimitStoreError, type LimiterSpec, type StoreLimiter } from './store.js';
import { captureLines } from '@fluxguard/test-support/log-lines';

function capture(): { audit: AuditLogger; lines: Record<string, unknown>[] } {
  const { destination, lines } = captureLines();
  return { audit: createAuditLogger({ destination }), lines };
}

const clients: Redis[] = [];

/** A client as the store's documentation asks for: a dead Redis must fail a call at once, not queue it. */
function client(port: number): Redis {
  const c = new Redis({
    port,
    host: '127.0.0.1',
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 50,
  });
  c.on('error', () => undefined);
  clients.push(c);
  return c;
}

async function ready(c: Redis): Promise<Redis> {
  if (c.status !== 'ready') await once(c, 'ready');
  return c;
}

function spec(overrides: Partial<LimiterSpec> = {}): LimiterSpec {
  return { name: 'api', points: 3, durationSeconds: 60, storeFailure: 'open', ...overrides };
}

const events = (lines: Record<string, unknown>[], event: string) => lines.filter((l) => l.event === event);

let redis: RedisUnderTest;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis.stop();
});

describe('createRedisRateLimitStore with a real redis-server', () => {
  it('shares counts between replicas, each with its own client', async () => {
    const { audit } = capture();
    const [c1, c2] = await Promise.all([ready(client(redis.port)), ready(client(redis.port))]);
    const replica1 = createRedisRateLimitStore({ client: c1, audit, keyPrefix: 'shared' }).limiter(spec());
    const replica2 = createRedisRateLimitStore({ client: c2, audit, keyPrefix: 'shared' }).limiter(spec());

    expect(await replica1.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, remaining: 2 });
    expect(await replica2.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, remaining: 1 });
    expect(await replica1.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, remaining: 0 });
    const refused = await replica2.consume('ip:203.0.113.9', 1);
    expect(refused).toMatchObject({ allowed: false, remaining: 0 });
    expect(refused.resetMs).toBeGreaterThan(0);
    expect(refused.local).toBeUndefined();
    expect(await replica1.peek('ip:203.0.113.9')).toMatchObject({ allowed: false });

    // The prefix is part of the stored key, so that services sharing a Redis never share counts.
    expect(await c1.exists('shared:fg:api:ip:203.0.113.9')).toBe(1);
    const otherService = createRedisRateLimitStore({ client: c1, audit, keyPrefix: 'other' }).limiter(spec());
    expect((await otherService.consume('ip:203.0.113.9', 1)).allowed).toBe(true);
  });

  it('keeps apart callers whose identities differ only in lone surrogates or in a cluster hash tag', async () => {
    // ioredis writes a lone surrogate as U+FFFD: a token with sub `v\ud800` spent the allowance
    // of `v\ufffd`. A `{...}` would choose the key's Redis Cluster slot.
    const { audit } = capture();
    const limiter = createRedisRateLimitStore({
      client: await ready(client(redis.port)),
      audit,
      keyPrefix: 'sur',
    }).limiter(spec({ points: 1 }));
    expect((await limiter.consume(`sub:${boundedKey('v\ud800')}`, 1)).allowed).toBe(true);
    expect((await limiter.consume(`sub:${boundedKey('v\ud800')}`, 1)).allowed).toBe(false);
    for (const other of ['v\ufffd', 'v\udfff', 'v\udc00']) {
      expect((await limiter.consume(`sub:${boundedKey(other)}`, 1)).allowed, JSON.stringify(other)).toBe(true);
    }
    expect(boundedKey('alice')).toBe('alice');
    expect(boundedKey('team{a}:b')).toMatch(/^#[A-Za-z0-9_-]{22}$/);
    expect(boundedKey('#' + boundedKey('x'.repeat(300)).slice(1))).not.toBe(boundedKey('x'.repeat(300)));
  });

  it('gives two guards of one process the same limiter for one name, and refuses one name with two allowances', async () => {
    const { audit } = capture();
    const store = createRedisRateLimitStore({ client: await ready(client(redis.port)), audit, keyPrefix: 'guards' });
    const grpc = store.limiter(spec());
    // The same limiter: its insurance limiter, which counts while Redis is down, is shared too.
    expect(store.limiter(spec())).toBe(grpc);
    expect(() => store.limiter(spec({ points: 30 }))).toThrow(ConfigurationError);
    expect(() => store.limiter(spec({ points: 30 }))).toThrow(
      'createRedisRateLimitStore: two limits named "api" ask this store (or another on the same client with the same keyPrefix) for different allowances',
    );
  });

  it('refuses two allowances for one name across two stores on one client and prefix, and shares one limiter', async () => {
    // Two stores (one per transport) on one client and the default prefix counted one name in
    // the same Redis keys against two allowances, and each kept its own count for an outage.
    const { audit } = capture();
    const shared = await ready(client(redis.port));
    const first = createRedisRateLimitStore({ client: shared, audit, keyPrefix: 'two-stores' });
    const second = createRedisRateLimitStore({ client: shared, audit, keyPrefix: 'two-stores' });
    const limiter = first.limiter(spec());
    expect(second.limiter(spec())).toBe(limiter);
    expect(() => second.limiter(spec({ points: 30 }))).toThrow(
      'createRedisRateLimitStore: two limits named "api" ask this store (or another on the same client with the same keyPrefix) for different allowances',
    );
    // Another prefix, or another client, counts in other keys.
    const apart = createRedisRateLimitStore({ client: shared, audit, keyPrefix: 'two-stores-b' });
    expect(apart.limiter(spec({ points: 30 }))).not.toBe(limiter);
  });

  it('shares a burst between replicas, and reports its state once a count reached it', async () => {
    const { audit } = capture();
    const [c1, c2] = await Promise.all([ready(client(redis.port)), ready(client(redis.port))]);
    const bursty = spec({ name: 'bursty', points: 1, burst: { points: 1, durationSeconds: 30 } });
    const replica1 = createRedisRateLimitStore({ client: c1, audit, keyPrefix: 'burst' }).limiter(bursty);
    const replica2 = createRedisRateLimitStore({ client: c2, audit, keyPrefix: 'burst' }).limiter(bursty);
    const first = await replica1.consume('ip:203.0.113.9', 1);
    expect(first).toMatchObject({ allowed: true, remaining: 0 });
    expect(first.burst).toBeUndefined();
    expect(await replica2.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, burst: { remaining: 0 } });
    const refused = await replica1.consume('ip:203.0.113.9', 1);
    expect(refused).toMatchObject({ allowed: false, remaining: 0, burst: { remaining: 0 } });
    expect(refused.burst?.resetMs).toBeGreaterThan(25_000);
    expect(await c1.exists('burst:fg:bursty:burst:ip:203.0.113.9')).toBe(1);
  });

  it('shares a block between replicas', async () => {
    const { audit } = capture();
    const [c1, c2] = await Promise.all([ready(client(redis.port)), ready(client(redis.port))]);
    const blocking = spec({ name: 'bf', points: 1, durationSeconds: 1, blockSeconds: 30 });
    const replica1 = createRedisRateLimitStore({ client: c1, audit, keyPrefix: 'block' }).limiter(blocking);
    const replica2 = createRedisRateLimitStore({ client: c2, audit, keyPrefix: 'block' }).limiter(blocking);
    await replica1.consume('ip:198.51.100.1', 1);
    expect((await replica1.consume('ip:198.51.100.1', 1)).allowed).toBe(false);
    const seen = await replica2.peek('ip:198.51.100.1');
    expect(seen?.allowed).toBe(false);
    expect(seen?.resetMs).toBeGreaterThan(20_000);
  });

  it('counts a slow Redis as a failure: open answers from this process, closed refuses', async () => {
    const { audit, lines } = capture();
    const c = await ready(client(redis.port));
    const store = createRedisRateLimitStore({ client: c, audit, keyPrefix: 'slow', timeoutMs: 100 });
    const open = store.limiter(spec({ name: 'open', points: 1 }));
    const closed = store.limiter(spec({ name: 'closed', storeFailure: 'closed' }));
    redis.pause();
    try {
      expect(await open.consume('k', 1)).toMatchObject({ allowed: true, local: true });
      expect(await open.consume('k', 1)).toMatchObject({ allowed: false, local: true });
      const error: unknown = await Promise.resolve(closed.consume('k', 1)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RateLimitStoreError);
      // The first count waited out the deadline; the next, of any rule, fail without waiting.
      expect(((error as Error).cause as Error).message).toMatch(/did not answer within 100 ms/);
    } finally {
      redis.resume();
    }
    expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(1);
    expect(events(lines, 'ratelimit.store_unavailable')[0]?.cause).toMatch(/took longer than 100 ms/);
  });

  it('reports a slow Redis even with the smallest timeout, never as rate limited', async () => {
    const { audit } = capture();
    const c = await ready(client(redis.port));
    const closed = createRedisRateLimitStore({ client: c, audit, keyPrefix: 'tiny', timeoutMs: 1 }).limiter(
      spec({ storeFailure: 'closed' }),
    );
    redis.pause();
    try {
      await expect(closed.consume('k', 1)).rejects.toBeInstanceOf(RateLimitStoreError);
      await expect(closed.peek('k')).rejects.toBeInstanceOf(RateLimitStoreError);
    } finally {
      redis.resume();
    }
  });
});

describe('createRedisRateLimitStore under a burst while the event loop is busy', () => {
  /** Keeps the event loop busy, as a flood of calls does, for `ms`. */
  function busy(ms: number): void {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      // Nothing else runs meanwhile: no timer, no socket read, no write.
    }
  }

  it('counts a burst in Redis through an auto-pipelining client, with no deadline missed', async () => {
    const { audit, lines } = capture();
    const piped = new Redis({
      port: redis.port,
      host: '127.0.0.1',
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
    });
    piped.on('error', () => undefined);
    clients.push(piped);
    await ready(piped);
    const limiter = createRedisRateLimitStore({ client: piped, audit, keyPrefix: 'piped' }).limiter(
      spec({ name: 'burst', points: 10_000, storeFailure: 'closed' }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    const counts = Array.from({ length: 500 }, (_, i) => Promise.resolve(limiter.consume(`ip:${String(i)}`, 1)));
    // The client writes the burst from setImmediate, once this turn is over: its 400 ms are not Redis's.
    busy(400);
    const results = await Promise.all(counts);
    expect(results.every((r) => r.allowed && r.local !== true)).toBe(true);
    expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(0);
  });

  it("restarts the deadline when the process held its timer back, for a script's EVAL sent after NOSCRIPT", async () => {
    const { audit, lines } = capture();
    const c = await ready(client(redis.port));
    const limiter = createRedisRateLimitStore({ client: c, audit, keyPrefix: 'noscript' }).limiter(
      spec({ name: 'flushed', points: 100, storeFailure: 'closed' }),
    );
    await limiter.consume('k', 1);
    // As after a failover or a restart: the next EVALSHA gets NOSCRIPT, and ioredis sends EVAL.
    await c.script('FLUSH');
    await new Promise((resolve) => setImmediate(resolve));
    redis.pause();
    let counted: Promise<unknown>;
    try {
      counted = Promise.resolve(limiter.consume('k', 1));
      // The deadline's timer is set in this turn's check phase; Redis has not answered yet.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      redis.resume();
    }
    // NOSCRIPT comes while this process is busy and is read after the deadline: the EVAL goes then.
    busy(400);
    await expect(counted).resolves.toMatchObject({ allowed: true, remaining: 98 });
    expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(0);
  });
});

describe('createRedisRateLimitStore while Redis hangs', () => {
  it('holds at most maxPendingCommands counts for Redis; the others are answered at once from this process', async () => {
    const { audit } = capture();
    const c = await ready(client(redis.port));
    const store = createRedisRateLimitStore({
      client: c,
      audit,
      keyPrefix: 'capped',
      timeoutMs: 60_000,
      maxPendingCommands: 10,
    });
    const open = store.limiter(spec({ name: 'open', points: 1_000 }));
    const closed = store.limiter(spec({ name: 'closed', storeFailure: 'closed' }));
    redis.pause();
    let waiting: Promise<unknown>[];
    try {
      waiting = Array.from({ length: 10 }, () => Promise.resolve(open.consume('k', 1)));
      // Settle without Redis or the 60 s deadline (the test would time out otherwise).
      const answered = await Promise.all(Array.from({ length: 300 }, () => Promise.resolve(open.consume('k', 1))));
      expect(answered.every((result) => result.local === true && result.allowed)).toBe(true);
      const refused: unknown = await Promise.resolve(closed.consume('k', 1)).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(RateLimitStoreError);
      expect(((refused as Error).cause as Error).message).toContain('10 Redis commands are already waiting');
    } finally {
      redis.resume();
    }
    // The ten held are Redis's to answer once it is back.
    const shared = (await Promise.all(waiting)) as { local?: boolean }[];
    expect(shared.every((result) => result.local === undefined)).toBe(true);
  });
});

describe('createRedisRateLimitStore when Redis cannot be reached', () => {
  let closedPort: number;
  beforeAll(async () => {
    closedPort = await freePort();
  });

  it('fails open on the in-memory insurance limiter, which still limits', async () => {
    const { audit } = capture();
    const store = createRedisRateLimitStore({ client: client(closedPort), audit });
    const open = store.limiter(spec({ points: 2 }));
    expect(await open.peek('k')).toBeUndefined();
    expect(await open.consume('k', 1)).toMatchObject({ allowed: true, remaining: 1, local: true });
    expect(await open.consume('k', 1)).toMatchObject({ allowed: true, remaining: 0, local: true });
    const refused = await open.consume('k', 1);
    expect(refused).toMatchObject({ allowed: false, local: true });
    expect(refused.resetMs).toBeGreaterThan(0);
    expect(await open.peek('k')).toMatchObject({ allowed: false, local: true });
    expect((await open.consume('other', 1)).allowed).toBe(true);
  });

  it('fails closed with RateLimitStoreError, never with "over the limit"', async () => {
    const { audit } = capture();
    const store = createRedisRateLimitStore({ client: client(closedPort), audit });
    const closed = store.limiter(spec({ storeFailure: 'closed' }));
    for (let i = 0; i < 5; i++) {
      await expect(closed.consume('k', 1)).rejects.toBeInstanceOf(RateLimitStoreError);
    }
    await expect(closed.peek('k')).rejects.toBeInstanceOf(RateLimitStoreError);
  });
});

describe('createRedisRateLimitStore outage reports', () => {
  it('logs one line for a flood of failures, again after reportEveryMs, and one when Redis is back', async () => {
    const own = await startRedis();
    try {
      const { audit, lines } = capture();
      const c = await ready(client(own.port));
      const limiter: StoreLimiter = createRedisRateLimitStore({
        client: c,
        audit,
        keyPrefix: 'outage',
        reportEveryMs: 400,
      }).limiter(spec({ points: 1_000 }));
      expect((await limiter.consume('k', 1)).local).toBeUndefined();
      expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(0);

      await own.stop();
      for (let i = 0; i < 50; i++) expect((await limiter.consume('k', 1)).local).toBe(true);
      const first = events(lines, 'ratelimit.store_unavailable');
      expect(first).toHaveLength(1);
      expect(first[0]).toMatchObject({ level: 50, store: 'redis', rule: 'api', failures: 1 });

      await new Promise((r) => setTimeout(r, 450));
      await limiter.consume('k', 1);
      const again = events(lines, 'ratelimit.store_unavailable');
      expect(again).toHaveLength(2);
      // The calls folded since the first line, and this one.
      expect(again[1]).toMatchObject({ failures: 50 });
      expect(again[1]?.downForMs).toBeGreaterThanOrEqual(400);

      await own.restart();
      await ready(c);
      expect((await limiter.consume('k', 1)).local).toBeUndefined();
      await limiter.consume('k', 1);
      const recovered = events(lines, 'ratelimit.store_recovered');
      expect(recovered).toHaveLength(1);
      expect(recovered[0]).toMatchObject({ level: 40, store: 'redis' });
      expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(2);
    } finally {
      await own.stop();
    }
  });
});

describe('createRedisRateLimitStore with a Redis that answers reads and refuses writes', () => {
  it('logs the outage once: a read that goes through does not end it', async () => {
    const own = await startRedis();
    try {
      const { audit, lines } = capture();
      const c = await ready(client(own.port));
      const limiter = createRedisRateLimitStore({ client: c, audit, keyPrefix: 'readonly' }).limiter(
        spec({ points: 1_000 }),
      );
      await limiter.consume('k', 1);
      // As after a failover to a replica that is behind: writes refused (NOREPLICAS), reads served.
      await c.config('SET', 'min-replicas-to-write', '1');
      for (let i = 0; i < 20; i++) {
        expect((await limiter.peek('k'))?.local).toBeUndefined();
        expect((await limiter.consume('k', 1)).local).toBe(true);
      }
      expect(events(lines, 'ratelimit.store_unavailable')).toHaveLength(1);
      expect(events(lines, 'ratelimit.store_recovered')).toHaveLength(0);
      await c.config('SET', 'min-replicas-to-write', '0');
      expect((await limiter.consume('k', 1)).local).toBeUndefined();
      expect(events(lines, 'ratelimit.store_recovered')).toHaveLength(1);
    } finally {
      await own.stop();
    }
  });
});

describe('createRedisRateLimitStore and the state of its client', () => {
  it('connects a client made with lazyConnect, whose counts else stayed in this process for good', async () => {
    const { audit } = capture();
    const lazy = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false });
    lazy.on('error', () => undefined);
    clients.push(lazy);
    expect(lazy.status).toBe('wait');
    const limiter = createRedisRateLimitStore({ client: lazy, audit, keyPrefix: 'lazy' }).limiter(spec());
    await ready(lazy);
    const counted = await limiter.consume('ip:203.0.113.40', 1);
    expect(counted).toMatchObject({ allowed: true, remaining: 2 });
    expect(counted.local).toBeUndefined();
    expect(await (await ready(client(redis.port))).exists('lazy:fg:api:ip:203.0.113.40')).toBe(1);
  });

  it('refuses a client closed already, which ioredis never reconnects', async () => {
    const { audit } = capture();
    const closed = client(redis.port);
    await ready(closed);
    await Promise.all([once(closed, 'end'), closed.quit()]);
    expect(() => createRedisRateLimitStore({ client: closed, audit })).toThrow(
      /^createRedisRateLimitStore: the Redis client is closed \(status "end"\)/,
    );
  });
});

describe('createRedisRateLimitStore options', () => {
  const { audit } = capture();
  const fake = { status: 'ready', defineCommand: () => undefined };

  it.each<[string, Partial<RedisRateLimitStoreOptions> & Record<string, unknown>, RegExp]>([
    ['no client', { audit }, /"client" must be an ioredis client/],
    ['a client that is not ioredis', { audit, client: { status: 'ready' } as never }, /"client" must be an ioredis/],
    ['no audit logger', { client: fake }, /"audit" is required/],
    ['an empty keyPrefix', { client: fake, audit, keyPrefix: '' }, /"keyPrefix" must be a non-empty string/],
    ['a keyPrefix with a space', { client: fake, audit, keyPrefix: 'my app' }, /"keyPrefix" must be a non-empty/],
    [
      'a zero timeout',
      { client: fake, audit, timeoutMs: 0 },
      /"timeoutMs" must be a whole number of ms, from 1 to 2147483647/,
    ],
    ['a fractional reportEveryMs', { client: fake, audit, reportEveryMs: 1.5 }, /"reportEveryMs" must be/],
    ['no room for a pending count', { client: fake, audit, maxPendingCommands: 0 }, /"maxPendingCommands" must be/],
    [
      'a misspelt option',
      { client: fake, audit, timeoutMS: 100 },
      /unknown option "timeoutMS" \(did you mean "timeoutMs"\?\)/,
    ],
  ])('refuses %s at start-up', (_label, options, message) => {
    const create = () => createRedisRateLimitStore(options as RedisRateLimitStoreOptions);
    expect(create).toThrow(ConfigurationError);
    expect(create).toThrow(message);
  });
});
