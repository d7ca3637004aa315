// The Redis backends take ioredis 5 or 6 (the peer range): the same contract runs here with a
// client of each major, and with ioredis 6 on both wire protocols (RESP3, its default, and RESP2
// with `protocol: 2`). The other Redis tests use ioredis 6 alone, in more depth.
import { once } from 'node:events';
import { Cluster as Cluster6, Redis as Redis6 } from 'ioredis';
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis-v5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import { createRedisDenylist, type RedisDenylistClient } from '../denylist/redis.js';
import { SecurityError } from '../errors/security-error.js';
import { createRedisRateLimitStore, type RedisRateLimitClient } from '../ratelimit/redis-store.js';
import { RateLimitStoreError, type LimiterSpec } from '../ratelimit/store.js';
import {
  startRedis,
  startRedisCluster,
  type RedisClusterUnderTest,
  type RedisUnderTest,
} from '@fluxguard/test-support/redis';
import { captureLines } from '@fluxguard/test-support/log-lines';

/**
 * What the tests do with a client, whichever major made it: both majors' `Redis` and `Cluster`
 * must fit the interfaces core declares (this file does not compile otherwise).
 */
type AnyClient = RedisRateLimitClient &
  RedisDenylistClient & {
    on(event: 'error', listener: () => void): unknown;
    exists(key: string): Promise<number>;
    pttl(key: string): Promise<number>;
    client(subcommand: 'INFO'): Promise<unknown>;
    quit(): Promise<unknown>;
    disconnect(): void;
  };

interface Major {
  readonly name: string;
  /** Where this client's keys live, apart from the other clients'. */
  readonly prefix: string;
  /** The RESP version the client should have agreed with Redis. */
  readonly resp: 2 | 3;
  readonly connect: (port: number, options?: { lazyConnect?: boolean }) => AnyClient;
  readonly cluster: (nodes: readonly { host: string; port: number }[]) => AnyClient;
}

const base = { host: '127.0.0.1', enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 };

const MAJORS: readonly Major[] = [
  {
    name: 'ioredis 5',
    prefix: 'v5',
    resp: 2,
    connect: (port, options) => new Redis5({ ...base, port, ...options }),
    cluster: (nodes) => new Cluster5([...nodes], { redisOptions: { maxRetriesPerRequest: 1 } }),
  },
  {
    name: 'ioredis 6 (RESP3, its default)',
    prefix: 'v6-resp3',
    resp: 3,
    connect: (port, options) => new Redis6({ ...base, port, ...options }),
    cluster: (nodes) => new Cluster6([...nodes], { redisOptions: { maxRetriesPerRequest: 1 } }),
  },
  {
    name: 'ioredis 6 with protocol: 2',
    prefix: 'v6-resp2',
    resp: 2,
    connect: (port, options) => new Redis6({ ...base, port, protocol: 2, ...options }),
    cluster: (nodes) => new Cluster6([...nodes], { redisOptions: { maxRetriesPerRequest: 1, protocol: 2 } }),
  },
];

const clients: AnyClient[] = [];

function track<T extends AnyClient>(client: T): T {
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

async function ready<T extends AnyClient>(client: T): Promise<T> {
  if (client.status !== 'ready') await once(client as unknown as NodeJS.EventEmitter, 'ready');
  return client;
}

function spec(overrides: Partial<LimiterSpec> = {}): LimiterSpec {
  return { name: 'api', points: 2, durationSeconds: 60, storeFailure: 'closed', ...overrides };
}

const audit = () => createAuditLogger({ destination: captureLines().destination });

let redis: RedisUnderTest;

beforeAll(async () => {
  redis = await startRedis();
  // The teardown: every client made by a test, then the server.
  return async () => {
    for (const c of clients) c.disconnect();
    await redis.stop();
  };
});

describe.each(MAJORS)('with $name', (major) => {
  const { prefix } = major;

  it('speaks the RESP version it should (the contract is checked on that wire)', async () => {
    const c = await ready(track(major.connect(redis.port)));
    // CLIENT INFO names the protocol this connection agreed on.
    const info = String(await c.client('INFO'));
    expect(info).toMatch(new RegExp(`\\bresp=${String(major.resp)}\\b`));
  });

  it('rate limits: counts, refusals and blocks are shared between two replicas', async () => {
    const [c1, c2] = await Promise.all([
      ready(track(major.connect(redis.port))),
      ready(track(major.connect(redis.port))),
    ]);
    const replica1 = createRedisRateLimitStore({ client: c1, audit: audit(), keyPrefix: prefix }).limiter(spec());
    const replica2 = createRedisRateLimitStore({ client: c2, audit: audit(), keyPrefix: prefix }).limiter(spec());
    expect(await replica1.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, remaining: 1 });
    expect(await replica2.consume('ip:203.0.113.9', 1)).toMatchObject({ allowed: true, remaining: 0 });
    const refused = await replica1.consume('ip:203.0.113.9', 1);
    expect(refused).toMatchObject({ allowed: false, remaining: 0 });
    expect(refused.local).toBeUndefined();
    expect(refused.resetMs).toBeGreaterThan(50_000);
    expect(await replica2.peek('ip:203.0.113.9')).toMatchObject({ allowed: false });
    expect(await c1.exists(`${prefix}:fg:api:ip:203.0.113.9`)).toBe(1);

    const blocking = spec({ name: 'bf', points: 1, durationSeconds: 1, blockSeconds: 30 });
    const block1 = createRedisRateLimitStore({ client: c1, audit: audit(), keyPrefix: prefix }).limiter(blocking);
    const block2 = createRedisRateLimitStore({ client: c2, audit: audit(), keyPrefix: prefix }).limiter(blocking);
    await block1.consume('ip:198.51.100.1', 1);
    expect((await block1.consume('ip:198.51.100.1', 1)).allowed).toBe(false);
    expect((await block2.peek('ip:198.51.100.1'))?.resetMs).toBeGreaterThan(20_000);
  });

  it('denylist: a revocation through one replica is seen by another, and expires with the token', async () => {
    const [c1, c2] = await Promise.all([
      ready(track(major.connect(redis.port))),
      ready(track(major.connect(redis.port))),
    ]);
    const replica1 = createRedisDenylist({ client: c1, keyPrefix: `${prefix}:revoked:` });
    const replica2 = createRedisDenylist({ client: c2, keyPrefix: `${prefix}:revoked:` });
    expect(await replica2.isRevoked('tok-1')).toBe(false);
    await replica1.revoke('tok-1', new Date(Date.now() + 60_000));
    expect(await replica2.isRevoked('tok-1')).toBe(true);
    expect(await replica2.isRevoked('tok-2')).toBe(false);
    const ttl = await c2.pttl(`${prefix}:revoked:tok-1`);
    expect(ttl).toBeGreaterThan(60_000);
    expect(ttl).toBeLessThanOrEqual(60_000 + 5 * 60_000 + 1000);
  });

  it('fails closed when Redis hangs: a count and a lookup are refused within their deadlines', async () => {
    const c = await ready(track(major.connect(redis.port)));
    const limiter = createRedisRateLimitStore({ client: c, audit: audit(), keyPrefix: prefix, timeoutMs: 100 }).limiter(
      spec({ name: 'hang' }),
    );
    const denylist = createRedisDenylist({ client: c, keyPrefix: `${prefix}:hang:`, timeoutMs: 100 });
    redis.pause();
    try {
      await expect(limiter.consume('k', 1)).rejects.toBeInstanceOf(RateLimitStoreError);
      const err: unknown = await denylist.isRevoked('tok-hang').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SecurityError);
      expect(err).toMatchObject({ code: 'unavailable', reason: 'denylist_unavailable' });
    } finally {
      redis.resume();
    }
  });

  it('connects a lazyConnect client, and refuses one closed already', async () => {
    const lazy = track(major.connect(redis.port, { lazyConnect: true }));
    expect(lazy.status).toBe('wait');
    const limiter = createRedisRateLimitStore({ client: lazy, audit: audit(), keyPrefix: `${prefix}-lazy` }).limiter(
      spec(),
    );
    await ready(lazy);
    const counted = await limiter.consume('ip:203.0.113.40', 1);
    expect(counted).toMatchObject({ allowed: true, remaining: 1 });
    expect(counted.local).toBeUndefined();

    const closed = await ready(track(major.connect(redis.port)));
    await Promise.all([once(closed as unknown as NodeJS.EventEmitter, 'end'), closed.quit()]);
    expect(() => createRedisRateLimitStore({ client: closed, audit: audit() })).toThrow(/status "end"/);
    expect(() => createRedisDenylist({ client: closed })).toThrow(/status "end"/);
  });
});

describe('in a Redis Cluster of three nodes', () => {
  let cluster: RedisClusterUnderTest;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
  }, 60_000);
  afterAll(async () => {
    await cluster.stop();
  });

  it.each(MAJORS)('with $name, replicas share counts across slots', async (major) => {
    const { prefix } = major;
    const [c1, c2] = await Promise.all([
      ready(track(major.cluster(cluster.nodes))),
      ready(track(major.cluster(cluster.nodes))),
    ]);
    const replica1 = createRedisRateLimitStore({ client: c1, audit: audit(), keyPrefix: prefix }).limiter(spec());
    const replica2 = createRedisRateLimitStore({ client: c2, audit: audit(), keyPrefix: prefix }).limiter(spec());
    // Keys of several callers land in different slots, so on different nodes.
    for (const caller of ['ip:203.0.113.1', 'ip:203.0.113.2', 'sub:alice', 'sub:bob']) {
      expect((await replica1.consume(caller, 1)).allowed).toBe(true);
      expect((await replica2.consume(caller, 1)).allowed).toBe(true);
      expect(await replica1.consume(caller, 1)).toMatchObject({ allowed: false });
    }
    const denylist1 = createRedisDenylist({ client: c1, keyPrefix: `${prefix}:revoked:` });
    const denylist2 = createRedisDenylist({ client: c2, keyPrefix: `${prefix}:revoked:` });
    await denylist1.revoke('tok-c', new Date(Date.now() + 60_000));
    expect(await denylist2.isRevoked('tok-c')).toBe(true);
  });
});
