import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { createJwtVerifier } from '../jwt/verifier.js';
import { AUDIENCE, ISSUER, makeKey, sign, type TestKey } from '../testing/jwt-fixtures.js';
import { startRedis, type RedisUnderTest } from '@fluxguard/test-support/redis';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { createRedisDenylist } from './redis.js';

function client(port: number): Redis {
  const c = new Redis({
    port,
    host: '127.0.0.1',
    commandTimeout: 300,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
  });
  c.on('error', () => undefined);
  return c;
}

// A real redis-server, started here on a free port; the test fails (never skips) without one.
let redis: RedisUnderTest;
let key: TestKey;
const clients: Redis[] = [];

beforeAll(async () => {
  [redis, key] = await Promise.all([startRedis(), makeKey('ES256', 'k1')]);
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis.stop();
});

describe('createRedisDenylist with a real redis-server', () => {
  it('a token revoked through one replica is refused by another replica, cached or not', async () => {
    const [c1, c2] = [client(redis.port), client(redis.port)];
    clients.push(c1, c2);
    const replica1 = createJwtVerifier({
      jwks: { keys: [key.publicJwk] },
      issuer: ISSUER,
      audience: AUDIENCE,
      denylist: createRedisDenylist({ client: c1, keyPrefix: 't1:' }),
    });
    const denylist2 = createRedisDenylist({ client: c2, keyPrefix: 't1:' });
    const replica2 = createJwtVerifier({
      jwks: { keys: [key.publicJwk] },
      issuer: ISSUER,
      audience: AUDIENCE,
      denylist: denylist2,
    });

    const token = await sign(key, { claims: { jti: 'tok-1' } });
    await replica1.verify(token);
    const verified = await replica2.verify(token); // now cached on replica 2
    await createRedisDenylist({ client: c1, keyPrefix: 't1:' }).revoke('tok-1', verified.expiresAt);

    await expect(replica2.verify(token)).rejects.toMatchObject({ code: 'unauthenticated', reason: 'revoked' });
    await expect(replica1.verify(token)).rejects.toMatchObject({ code: 'unauthenticated', reason: 'revoked' });
    // SET with PX: the key expires with the token (plus grace).
    const ttl = await c2.pttl('t1:tok-1');
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(verified.expiresAt.getTime() - Date.now() + 5 * 60_000 + 1000);
    expect(await denylist2.isRevoked('tok-2')).toBe(false);
  });

  it('keeps apart jtis that differ only in lone surrogates, which UTF-8 writes alike', async () => {
    // ioredis wrote each lone surrogate as U+FFFD: revoking one token revoked the others.
    const c = client(redis.port);
    clients.push(c);
    const denylist = createRedisDenylist({ client: c, keyPrefix: 'sur:' });
    const later = new Date(Date.now() + 60_000);
    await denylist.revoke('victim-\ud800', later);
    expect(await denylist.isRevoked('victim-\ud800')).toBe(true);
    for (const other of ['victim-\udc00', 'victim-\ufffd', 'victim-\udfff']) {
      expect(await denylist.isRevoked(other), JSON.stringify(other)).toBe(false);
    }
    // A plain jti keeps its plain key, as before.
    await denylist.revoke('plain-1', later);
    expect(await c.exists('sur:plain-1')).toBe(1);
  });

  it('fails closed when Redis hangs (SIGSTOP): unavailable within the timeout', async () => {
    const c = client(redis.port);
    clients.push(c);
    await c.ping();
    const verifier = createJwtVerifier({
      jwks: { keys: [key.publicJwk] },
      issuer: ISSUER,
      audience: AUDIENCE,
      denylist: createRedisDenylist({ client: c, timeoutMs: 200 }),
    });
    const token = await sign(key, { claims: { jti: 'tok-hang' } });
    await verifier.verify(token);
    redis.pause();
    try {
      const started = Date.now();
      const err: unknown = await verifier.verify(token).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SecurityError);
      expect(err).toMatchObject({ code: 'unavailable', reason: 'denylist_unavailable' });
      expect(Date.now() - started).toBeLessThan(1500);
      // The next lookup does not wait for Redis again.
      const next: unknown = await verifier.verify(token).catch((e: unknown) => e);
      expect(next).toMatchObject({ code: 'unavailable', reason: 'denylist_unavailable' });
      expect(((next as Error).cause as Error).message).toMatch(/did not answer within 200 ms/);
    } finally {
      redis.resume();
    }
  });

  it('fails closed at once beyond maxPendingCommands lookups waiting for a hung Redis', async () => {
    // No commandTimeout: the lookups wait on Redis alone.
    const c = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    clients.push(c);
    await c.ping();
    const denylist = createRedisDenylist({ client: c, timeoutMs: 60_000, maxPendingCommands: 3 });
    redis.pause();
    let waiting: Promise<boolean>[];
    try {
      waiting = ['a', 'b', 'c'].map((jti) => denylist.isRevoked(jti));
      // Settle without Redis or the 60 s deadline (the test would time out otherwise).
      const refused = await Promise.allSettled(Array.from({ length: 100 }, () => denylist.isRevoked('d')));
      expect(refused.every((r) => r.status === 'rejected')).toBe(true);
      expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({
        code: 'unavailable',
        reason: 'denylist_unavailable',
      });
    } finally {
      redis.resume();
    }
    await expect(Promise.all(waiting)).resolves.toEqual([false, false, false]);
    await expect(denylist.isRevoked('d')).resolves.toBe(false);
    expect(() => createRedisDenylist({ client: c, maxPendingCommands: 0 })).toThrow(/"maxPendingCommands" must be/);
    // Every lookup would time out (closed: every call refused), a revoked token back before its
    // verifier stops accepting it, or revocations mixed with every other key in the Redis.
    expect(() => createRedisDenylist({ client: c, timeoutMs: 0.001 })).toThrow(/"timeoutMs" must be a whole number/);
    expect(() => createRedisDenylist({ client: c, graceMs: 60_000 })).toThrow(
      /"graceMs" must be a whole number of ms, from 300000/,
    );
    expect(() => createRedisDenylist({ client: c, keyPrefix: '' })).toThrow(/"keyPrefix" must be a non-empty string/);
    expect(() => createRedisDenylist({ client: c, keyPrefix: 'my app:' })).toThrow(/without spaces/);
  });

  it('refuses a client closed already, which ioredis never reconnects: every lookup would fail', async () => {
    const c = client(redis.port);
    await Promise.all([once(c, 'end'), c.quit()]);
    expect(c.status).toBe('end');
    expect(() => createRedisDenylist({ client: c })).toThrow(
      /^createRedisDenylist: the Redis client is closed \(status "end"\), and ioredis never reconnects one/,
    );
  });

  it('fails closed when Redis is killed: the call is refused with unavailable, never let through', async () => {
    const c = client(redis.port);
    clients.push(c);
    const denylist = createRedisDenylist({ client: c });
    const verifier = createJwtVerifier({
      jwks: { keys: [key.publicJwk] },
      issuer: ISSUER,
      audience: AUDIENCE,
      denylist,
    });
    const token = await sign(key, { claims: { jti: 'tok-2' } });
    await verifier.verify(token);
    await redis.stop();
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      await expect(verifier.verify(token)).rejects.toMatchObject({
        code: 'unavailable',
        reason: 'denylist_unavailable',
      });
      expect(Date.now() - started).toBeLessThan(1500);
    }
    await expect(denylist.revoke('tok-3', new Date(Date.now() + 60_000))).rejects.toMatchObject({
      code: 'unavailable',
    });
  });
});

describe('createRedisDenylist on a Redis that evicts keys', () => {
  /** The process warnings with `code` emitted within a moment of `create`. */
  async function warningsOf(create: () => void, code: string): Promise<string[]> {
    const captured = captureWarnings(code);
    try {
      create();
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      captured.stop();
    }
    return captured.messages();
  }

  it('warns that a revocation may be evicted, and says nothing of a Redis that never evicts', async () => {
    const own = await startRedis();
    const admin = new Redis({ port: own.port, host: '127.0.0.1', lazyConnect: false });
    admin.on('error', () => undefined);
    try {
      const fresh = (): Redis => {
        const c = new Redis({ port: own.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
        c.on('error', () => undefined);
        clients.push(c);
        return c;
      };
      // Default: no maxmemory, nothing is ever evicted.
      expect(await warningsOf(() => createRedisDenylist({ client: fresh() }), 'FLUXGUARD_DENYLIST_EVICTION')).toEqual(
        [],
      );
      await admin.config('SET', 'maxmemory', '64mb');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      expect(await warningsOf(() => createRedisDenylist({ client: fresh() }), 'FLUXGUARD_DENYLIST_EVICTION')).toEqual(
        [],
      );
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const warned = await warningsOf(() => createRedisDenylist({ client: fresh() }), 'FLUXGUARD_DENYLIST_EVICTION');
      expect(warned).toEqual([expect.stringContaining('maxmemory-policy "allkeys-lru"')]);
    } finally {
      admin.disconnect();
      await own.stop();
    }
  });
});
