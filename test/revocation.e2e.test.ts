import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/clients.js';
import { startRedis, type RedisUnderTest } from '@fluxguard/test-support/redis';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * Token revocation shared by replicas through one real Redis: a token revoked on one server
 * instance is refused by a second instance, and a Redis that stops answering fails closed.
 */

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

describe.each(TRANSPORTS)('revocation over %s with two replicas and one Redis', (transport) => {
  let redis: RedisUnderTest;
  let a: TransportUnderTest;
  let b: TransportUnderTest;
  beforeAll(async () => {
    redis = await startRedis();
    const env = { FLUXGUARD_REDIS_URL: redis.url };
    a = await startTransport(transport, world, { env });
    b = await startTransport(transport, world, { env });
    const seeded = await b.client.upload('revoke/x.txt', sha256('x'), [Buffer.from('x')]);
    expect(seeded.ok, seeded.exposed).toBe(true);
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    await redis.stop();
  });

  it('refuses on replica B a token revoked on replica A, even after B cached it', async () => {
    const jti = `jti-${transport}-1`;
    const token = await world.token('alice', ['artifacts.reader'], { jti });
    const client = b.clientWith({ cert: world.pki.clients.valid, token });
    expect((await client.get('revoke/x.txt')).ok).toBe(true);

    await a.security.denylist.revoke(jti, new Date(Date.now() + 3_600_000));

    const refused = await client.get('revoke/x.txt');
    expect(refused.status).toBe(client.statusOf({ code: 'unauthenticated' }));
    expect(b.log.textFor(refused.requestId ?? 'none')).toContain('"reason":"revoked"');
    const onA = await a.clientWith({ cert: world.pki.clients.valid, token }).get('revoke/x.txt');
    expect(onA.ok).toBe(false);
  });

  it('keeps accepting tokens that were not revoked', async () => {
    const token = await world.token('bob', ['artifacts.reader'], { jti: `jti-${transport}-2` });
    expect((await b.clientWith({ cert: world.pki.clients.valid, token }).get('revoke/x.txt')).ok).toBe(true);
  });

  it("checks revocations through a failover's write pause, which holds only the counts", async () => {
    // One connection for both: Redis answers a connection's commands in order, so a paused
    // count (a write) held the revocation read behind it, and every token with a jti was refused.
    const admin = new Redis(redis.url);
    const store = a.security.rateLimitStore;
    expect(store).toBeDefined();
    try {
      await admin.call('CLIENT', 'PAUSE', '2000', 'WRITE');
      const held = store
        ?.limiter({ name: 'pause-test', points: 5, durationSeconds: 60, storeFailure: 'open' })
        .consume('ip:192.0.2.1', 1);
      expect(await a.security.denylist.isRevoked(`jti-${transport}-pause`)).toBe(false);
      await held;
    } finally {
      await admin.call('CLIENT', 'UNPAUSE');
      admin.disconnect();
    }
  });

  it('fails closed when Redis stops answering: unavailable, never accepted', async () => {
    const token = await world.token('carol', ['artifacts.reader'], { jti: `jti-${transport}-3` });
    await redis.stop();
    const client = b.clientWith({ cert: world.pki.clients.valid, token });
    const outcome = await client.get('revoke/x.txt');
    expect(outcome.ok).toBe(false);
    expect(outcome.status).toBe(client.statusOf({ code: 'unavailable' }));
    expect(b.log.textFor(outcome.requestId ?? 'none')).toContain('"reason":"denylist_unavailable"');
  });
});

describe.each(TRANSPORTS)('revocations in a Redis of their own over %s', (transport) => {
  let counts: RedisUnderTest;
  let revocations: RedisUnderTest;
  let t: TransportUnderTest;
  beforeAll(async () => {
    [counts, revocations] = await Promise.all([startRedis(), startRedis()]);
    t = await startTransport(transport, world, {
      env: { FLUXGUARD_REDIS_URL: counts.url, FLUXGUARD_DENYLIST_REDIS_URL: revocations.url },
    });
    const seeded = await t.client.upload('apart/x.txt', sha256('x'), [Buffer.from('x')]);
    expect(seeded.ok, seeded.exposed).toBe(true);
  });
  afterAll(async () => {
    await t.close();
    await Promise.all([counts.stop(), revocations.stop()]);
  });

  it('keeps revocations in their Redis and the counts in the other, and refuses a revoked token', async () => {
    const jti = `jti-apart-${transport}`;
    const token = await world.token('dave', ['artifacts.reader'], { jti });
    const client = t.clientWith({ cert: world.pki.clients.valid, token });
    expect((await client.get('apart/x.txt')).ok).toBe(true);
    await t.security.denylist.revoke(jti, new Date(Date.now() + 3_600_000));
    const refused = await client.get('apart/x.txt');
    expect(refused.status).toBe(client.statusOf({ code: 'unauthenticated' }));
    const keysOf = async (server: RedisUnderTest): Promise<string[]> => {
      const redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
      try {
        return await redis.keys('*');
      } finally {
        redis.disconnect();
      }
    };
    expect(await keysOf(revocations)).toEqual([`fluxguard:jti:${jti}`]);
    const counted = await keysOf(counts);
    expect(counted.length).toBeGreaterThan(0);
    expect(counted.some((key) => key.includes(jti))).toBe(false);
  });
});

describe.each(TRANSPORTS)('a denylist Redis that refuses the password, over %s', (transport) => {
  let redis: RedisUnderTest;
  let t: TransportUnderTest;
  const password = 'WRONGsecretPW';
  beforeAll(async () => {
    redis = await startRedis();
    t = await startTransport(transport, world, {
      env: { FLUXGUARD_REDIS_URL: `redis://fluxguard:${password}@127.0.0.1:${String(redis.port)}` },
    });
  });
  afterAll(async () => {
    await t.close();
    await redis.stop();
  });

  it('fails closed for a revocable token, and its log line names the failure, never the password', async () => {
    const token = await world.token('carol', ['artifacts.reader'], { jti: `jti-${transport}-auth` });
    const refused = await t.clientWith({ cert: world.pki.clients.valid, token }).get('revoke/x.txt');
    expect(refused.ok).toBe(false);
    const logged = () => t.log.lines.filter((line) => line.event === 'denylist.redis_error');
    await expect.poll(() => logged().length, { timeout: 5_000 }).toBeGreaterThan(0);
    const text = JSON.stringify(t.log.lines);
    // ioredis's error carries the failed AUTH command, whose arguments are the password.
    expect(text).not.toContain(password);
    expect(JSON.stringify(logged())).toContain('WRONGPASS');
  });
});
