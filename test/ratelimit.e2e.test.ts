// Rate limits and brute-force protection, end to end against both reference servers: a burst
// over a limit, another caller, the window's end, two servers sharing one Redis (and a Redis
// Cluster of three nodes), Redis stopped and restarted mid-test, bad tokens from one client
// address, X-Forwarded-For from trusted and untrusted peers, and a flood of made-up API keys.
// Windows are 2 s so that the recovery rows stay short; the limits come from a copy of the
// reference policy.
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryDenylist, createRedisRateLimitStore } from '@fluxguard/core';
import type { ArtifactClient, Outcome } from './support/clients.js';
import { captureLog } from './support/log-capture.js';
import {
  startRedis,
  startRedisCluster,
  type RedisClusterUnderTest,
  type RedisUnderTest,
} from '@fluxguard/test-support/redis';
import {
  TRANSPORTS,
  createE2eEnvironment,
  spawnReferenceServer,
  startTransport,
  type E2eEnvironment,
  type ServerProcess,
  type StartOptions,
  type TransportName,
  type TransportUnderTest,
} from './support/servers.js';

const GET_OPERATIONS = ['/fluxguard.example.v1.ArtifactStore/GetArtifact', 'GET /v1/artifacts/*path'];
const LIST_OPERATIONS = ['/fluxguard.example.v1.ArtifactStore/ListArtifacts', 'GET /v1/artifacts'];
const WINDOW_MS = 2_000;

/** `reads` fails open (counts locally while Redis is down), `lists` fails closed. */
const RATE_LIMITS = {
  rules: [
    { name: 'reads', key: 'subject', points: 5, durationSeconds: WINDOW_MS / 1000, operations: GET_OPERATIONS },
    {
      name: 'lists',
      key: 'subject',
      points: 3,
      durationSeconds: WINDOW_MS / 1000,
      operations: LIST_OPERATIONS,
      storeFailure: 'closed',
    },
  ],
  bruteForce: { peer: { maxFailures: 3, windowSeconds: 60, blockSeconds: WINDOW_MS / 1000 } },
};

/** A rule keyed by a value the client chooses, for the flood of made-up keys. */
const API_KEY_LIMITS = { rules: [{ name: 'per-api-key', key: 'header:x-api-key', points: 3, durationSeconds: 60 }] };
const MAX_KEYS = 50;

/** One list a minute, and a burst of one more. */
const BURST_LIMITS = {
  rules: [
    {
      name: 'lists',
      key: 'subject',
      points: 1,
      durationSeconds: 60,
      burst: { points: 1, durationSeconds: 30 },
      operations: LIST_OPERATIONS,
    },
  ],
};

let world: E2eEnvironment;
let trustedPolicy: string;
let untrustedPolicy: string;
let apiKeyPolicy: string;
let burstPolicy: string;

beforeAll(async () => {
  world = await createE2eEnvironment();
  const write = (name: string, rateLimits: object): string =>
    world.writePolicy(name, (reference) => ({ ...reference, rateLimits }));
  // The test's clients connect from 127.0.0.1: trusted, their X-Forwarded-For names the client.
  trustedPolicy = write('trusted-proxy', { ...RATE_LIMITS, trustedProxies: ['127.0.0.1'] });
  untrustedPolicy = write('untrusted', RATE_LIMITS);
  apiKeyPolicy = write('api-keys', API_KEY_LIMITS);
  burstPolicy = write('burst', BURST_LIMITS);
});

afterAll(() => {
  world.cleanup();
});

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function start(transport: TransportName, policy: string, options: StartOptions = {}): Promise<TransportUnderTest> {
  return startTransport(transport, world, { ...options, env: { FLUXGUARD_POLICY: policy, ...options.env } });
}

async function readerClient(t: TransportUnderTest, subject: string): Promise<ArtifactClient> {
  return t.clientWith({ cert: world.pki.clients.valid, token: await world.token(subject, ['artifacts.reader']) });
}

/** A token whose signature does not verify: a failed authentication. */
async function forgedToken(): Promise<string> {
  const token = await world.token('mallory', ['artifacts.admin']);
  return `${token.slice(0, -6)}${token.endsWith('AAAAAA') ? 'BBBBBB' : 'AAAAAA'}`;
}

async function forgedClient(t: TransportUnderTest): Promise<ArtifactClient> {
  return t.clientWith({ cert: world.pki.clients.valid, token: await forgedToken() });
}

/**
 * `n` GETs with a forged token and `headers`, sent together on `n` connections that have each
 * served a call already: the burst reaches the server at one moment, every guess checked
 * before any answer is read. Resolves with each call's status (HTTP status, gRPC code).
 */
async function burstOnWarmConnections(
  t: TransportUnderTest,
  n: number,
  headers: Record<string, string>,
): Promise<number[]> {
  const forged = await forgedToken();
  if (t.transport === 'grpc') {
    // Streams of warm channels (grpc-js may share one connection between them: then the burst
    // arrives in one read), warmed by a call from another address.
    const clients = Array.from({ length: n }, () => t.clientWith({ cert: world.pki.clients.valid, token: forged }));
    await Promise.all(clients.map((c) => c.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': '198.51.100.80' })));
    const outcomes = await Promise.all(clients.map((c) => c.getWithHeaders('demo/missing.txt', headers)));
    return outcomes.map((o) => o.status);
  }
  const { cert, key } = world.pki.clients.valid;
  const agent = new HttpsAgent({
    keepAlive: true,
    maxSockets: n,
    ca: world.pki.ca,
    cert,
    key,
    servername: 'localhost',
  });
  const get = (path: string, extra: Record<string, string>): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: t.port, path, agent, headers: extra }, (res) => {
        res.resume();
        res.on('end', () => {
          resolve(res.statusCode ?? 0);
        });
      });
      req.on('error', reject);
      req.end();
    });
  try {
    await Promise.all(Array.from({ length: n }, () => get('/healthz', {})));
    return await Promise.all(
      Array.from({ length: n }, () =>
        get('/v1/artifacts/demo/missing.txt', { ...headers, authorization: `Bearer ${forged}` }),
      ),
    );
  } finally {
    agent.destroy();
  }
}

function expectRateLimited(client: ArtifactClient, outcome: Outcome): void {
  expect(outcome.ok).toBe(false);
  expect(outcome.status).toBe(client.statusOf({ code: 'rate_limited' }));
  expect(outcome.exposed).toMatch(/retry-after/i);
  if (client.transport === 'grpc') expect(outcome.exposed).toContain('grpc-status-details-bin');
}

function deniedLines(t: TransportUnderTest, reason: string): Record<string, unknown>[] {
  return t.log.lines.filter((line) => line.event === 'request.denied' && line.reason === reason);
}

describe.each(TRANSPORTS)('rate limits over %s (memory store)', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await start(transport, trustedPolicy);
  });
  afterAll(async () => {
    await t.close();
  });

  it('refuses a burst over the limit with the status and retry hint; another caller is not affected; the window ends', async () => {
    const alice = await readerClient(t, 'alice');
    const bob = await readerClient(t, 'bob');
    const first = await alice.list('demo/');
    expect(first.ok).toBe(true);
    // HTTP sends the fields on every counted request; gRPC with a refusal only.
    if (transport === 'http') expect(first.exposed).toMatch(/"ratelimit":"\\"lists\\";r=2;t=[12]"/);
    else expect(first.exposed).not.toContain('ratelimit');
    for (let i = 1; i < 5; i++) expect((await alice.list('demo/')).ok).toBe(i < 3);
    // `lists` allows 3 per window: the 4th and 5th were refused; gets have a rule of their own.
    const refused = await alice.list('demo/');
    expectRateLimited(alice, refused);
    // The fields of the IETF draft, as headers (HTTP) or metadata (gRPC); `exposed` is JSON text.
    expect(refused.exposed).toMatch(/"ratelimit-policy":\[?"\\"lists\\";q=3;w=2"/);
    expect(refused.exposed).toMatch(/"ratelimit":\[?"\\"lists\\";r=0;t=[12]"/);
    expect((await bob.list('demo/')).ok).toBe(true);

    const line = deniedLines(t, 'rate_limited').find((l) => l.requestId === refused.requestId);
    expect(line).toMatchObject({
      code: 'rate_limited',
      subject: 'alice',
      detail: { rule: 'lists', keyKind: 'subject' },
    });
    expect(JSON.stringify(line)).not.toContain('eyJ');

    await wait(WINDOW_MS + 300);
    expect((await alice.list('demo/')).ok).toBe(true);
  });

  it('blocks a client address after failed authentications, valid token included, until the block ends; another address is not blocked', async () => {
    const mallory = await forgedClient(t);
    const carol = await readerClient(t, 'carol');
    const from = (ip: string) => ({ 'x-forwarded-for': ip });
    for (let i = 0; i < 3; i++) {
      const failed = await mallory.getWithHeaders('demo/missing.txt', from('203.0.113.7'));
      expect(failed.status).toBe(mallory.statusOf({ code: 'unauthenticated' }));
    }
    const blocked = await carol.getWithHeaders('demo/missing.txt', from('203.0.113.7'));
    expectRateLimited(carol, blocked);
    expect(deniedLines(t, 'brute_force_blocked').some((l) => l.requestId === blocked.requestId)).toBe(true);
    // No token was verified for the blocked call: the line names no subject.
    expect(
      deniedLines(t, 'brute_force_blocked').find((l) => l.requestId === blocked.requestId)?.subject,
    ).toBeUndefined();

    const elsewhere = await carol.getWithHeaders('demo/missing.txt', from('203.0.113.8'));
    expect(elsewhere.status).toBe(carol.statusOf({ code: 'not_found' }));
    // A call of the blocked address that presents no credential guesses nothing: the block does
    // not hold it (a health check behind a shared address), and RBAC answers it.
    const anonymous = t.clientWith({ cert: null, token: null });
    const bare = await anonymous.getWithHeaders('demo/missing.txt', from('203.0.113.7'));
    expect(bare.status).toBe(anonymous.statusOf({ code: 'unauthenticated' }));
    anonymous.close();

    await wait(WINDOW_MS + 300);
    const after = await carol.getWithHeaders('demo/missing.txt', from('203.0.113.7'));
    expect(after.status).toBe(carol.statusOf({ code: 'not_found' }));
  });

  it('stays cheap under a flood of bad tokens: once blocked, no token is verified, the log stays bounded, others are served', async () => {
    const mallory = await forgedClient(t);
    const carol = await readerClient(t, 'carol-flood');
    const from = { 'x-forwarded-for': '203.0.113.66' };
    const before = t.log.lines.length;
    const started = Date.now();
    const statuses: number[] = [];
    const verifiedSince = (from: number): number =>
      t.log.lines.slice(from).filter((l) => l.reason === 'bad_signature').length;
    let firstBatchVerified = 0;
    for (let batch = 0; batch < 25; batch++) {
      const [served, ...flood] = await Promise.all([
        carol.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': '203.0.113.67' }),
        ...Array.from({ length: 40 }, () => mallory.getWithHeaders('demo/missing.txt', from)),
      ]);
      // Carol's reads are 5 per window: check her only while she has points left.
      if (batch < 5) expect(served.status).toBe(carol.statusOf({ code: 'not_found' }));
      statuses.push(...flood.map((o) => o.status));
      if (batch === 0) firstBatchVerified = verifiedSince(before);
    }
    const lines = t.log.lines.slice(before);
    // Each failure is counted as it happens, before the next call is checked: of the first
    // batch's 40 concurrent guesses, only maxFailures reach the verifier; then maxFailures
    // more each time the 2 s block ends while the flood goes on.
    expect(firstBatchVerified).toBe(3);
    const blocks = Math.ceil((Date.now() - started) / WINDOW_MS) + 1;
    expect(verifiedSince(before)).toBeLessThanOrEqual(3 * blocks);
    expect(statuses.filter((s) => s === mallory.statusOf({ code: 'rate_limited' })).length).toBeGreaterThanOrEqual(960);
    // 1,000 refusals, at most 50 full lines per 10 s interval the flood touched (on a loaded
    // machine it can last longer than one): the rest are folded into a count, whose own line
    // (`request.denied.folded`, same reason) is not one of them.
    const intervals = Math.ceil((Date.now() - started) / 10_000) + 1;
    const full = lines.filter((l) => l.event === 'request.denied' && l.reason === 'brute_force_blocked');
    expect(full.length).toBeLessThanOrEqual(50 * intervals);
  });

  it('holds a burst of guesses sent at one moment on warm connections to maxFailures', async () => {
    const statuses = await burstOnWarmConnections(t, 30, { 'x-forwarded-for': '203.0.113.80' });
    const unauthenticated = t.client.statusOf({ code: 'unauthenticated' });
    const limited = t.client.statusOf({ code: 'rate_limited' });
    // Each failure counts before the next guess is checked, though no answer has been read yet.
    expect(statuses.filter((s) => s === unauthenticated)).toHaveLength(3);
    expect(statuses.filter((s) => s === limited)).toHaveLength(27);
  });

  it('counts a missing token as no attempt: anonymous calls never block an address', async () => {
    const anonymous = t.clientWith({ cert: world.pki.clients.valid, token: null });
    // 4 calls: over the block's 3, under the 5 reads that the client certificate's key allows.
    for (let i = 0; i < 4; i++) {
      const outcome = await anonymous.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': '203.0.113.20' });
      expect(outcome.status).toBe(anonymous.statusOf({ code: 'unauthenticated' }));
    }
    const carol = await readerClient(t, 'carol-2');
    const allowed = await carol.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': '203.0.113.20' });
    expect(allowed.status).toBe(carol.statusOf({ code: 'not_found' }));
  });
});

describe.each(TRANSPORTS)('a rule with a burst over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await start(transport, burstPolicy);
  });
  afterAll(async () => {
    await t.close();
  });

  it('advertises the burst as a policy item of its own, and tells what is left of it once reached', async () => {
    const alice = await readerClient(t, 'alice');
    const first = await alice.list('demo/');
    const second = await alice.list('demo/');
    expect([first.ok, second.ok]).toEqual([true, true]);
    if (transport === 'http') {
      expect(first.exposed).toMatch(/"ratelimit":"\\"lists\\";r=0;t=(5[0-9]|60)"/);
      // The second list is the burst's.
      expect(second.exposed).toMatch(
        /"ratelimit":"\\"lists\\";r=0;t=(2[0-9]|30), \\"lists\/burst\\";r=0;t=(2[0-9]|30)"/,
      );
    }
    const refused = await alice.list('demo/');
    expectRateLimited(alice, refused);
    expect(refused.exposed).toMatch(/"ratelimit-policy":\[?"\\"lists\\";q=1;w=60, \\"lists\/burst\\";q=1;w=30"/);
    expect(refused.exposed).toMatch(
      /"ratelimit":\[?"\\"lists\\";r=0;t=(2[0-9]|30), \\"lists\/burst\\";r=0;t=(2[0-9]|30)"/,
    );
  });
});

describe.each(TRANSPORTS)('a flood of made-up API keys over %s (memory store of 50 keys a rule)', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await start(transport, apiKeyPolicy, { env: { FLUXGUARD_RATE_LIMIT_MAX_KEYS: String(MAX_KEYS) } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('holds the rule to its bound: a key in use keeps its count, a key gone quiet is forgotten', async () => {
    // No token: a call the rule allows goes on to be refused as unauthenticated, one it refuses is rate limited.
    const anonymous = t.clientWith({ cert: world.pki.clients.valid, token: null });
    const call = (key: string) => anonymous.getWithHeaders('demo/missing.txt', { 'x-api-key': key });
    const counted = anonymous.statusOf({ code: 'unauthenticated' });
    for (const key of ['victim', 'early']) {
      for (let i = 0; i < 3; i++) expect((await call(key)).status).toBe(counted);
      expectRateLimited(anonymous, await call(key));
    }
    // 200 keys through a rule that holds 50, while the victim's client keeps calling.
    for (let batch = 0; batch < 20; batch++) {
      const [victim, ...flood] = await Promise.all([
        call('victim'),
        ...Array.from({ length: 10 }, (_, i) => call(`made-up-${String(batch)}-${String(i)}`)),
      ]);
      expectRateLimited(anonymous, victim);
      expect(flood.map((o) => o.status)).toEqual(flood.map(() => counted));
    }
    expectRateLimited(anonymous, await call('victim'));
    // Forgotten: it counts afresh.
    expect((await call('early')).status).toBe(counted);
  });
});

describe.each(TRANSPORTS)('X-Forwarded-For from an untrusted peer over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await start(transport, untrustedPolicy);
  });
  afterAll(async () => {
    await t.close();
  });

  it('does not change the key: the socket peer is blocked whatever address the header claims', async () => {
    const mallory = await forgedClient(t);
    for (let i = 0; i < 3; i++) {
      // A new claimed address for every try: if the header were believed, no key would reach 3.
      await mallory.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': `198.51.100.${String(i + 1)}` });
    }
    const carol = await readerClient(t, 'carol');
    const blocked = await carol.getWithHeaders('demo/missing.txt', { 'x-forwarded-for': '198.51.100.200' });
    expectRateLimited(carol, blocked);
  });
});

describe.each(TRANSPORTS)('rate limits shared through Redis over %s', (transport) => {
  let redis: RedisUnderTest;
  let a: TransportUnderTest;
  let b: TransportUnderTest;
  beforeAll(async () => {
    redis = await startRedis();
    // Two replicas: their own stores and Redis connections, one Redis. Their denylists stay in
    // memory: a Redis denylist fails closed, which would hide what the limits do without Redis.
    const options = { env: { FLUXGUARD_REDIS_URL: redis.url } };
    a = await start(transport, trustedPolicy, { ...options, denylist: createMemoryDenylist() });
    b = await start(transport, trustedPolicy, { ...options, denylist: createMemoryDenylist() });
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    await redis.stop();
  });

  it('holds a burst of guesses sent at one moment to maxFailures, though each check waits for Redis', async () => {
    // Every guess is checked before the first of them fails: the ones past the limit wait for
    // the verdicts of those on their way, then meet the block.
    const statuses = await burstOnWarmConnections(a, 30, { 'x-forwarded-for': '203.0.113.81' });
    expect(statuses.filter((s) => s === a.client.statusOf({ code: 'unauthenticated' }))).toHaveLength(3);
    expect(statuses.filter((s) => s === a.client.statusOf({ code: 'rate_limited' }))).toHaveLength(27);
  });

  it('holds one limit between two servers', async () => {
    const onA = await readerClient(a, 'dora');
    const onB = await readerClient(b, 'dora');
    expect((await onA.list('x/')).ok).toBe(true);
    expect((await onB.list('x/')).ok).toBe(true);
    expect((await onA.list('x/')).ok).toBe(true);
    expectRateLimited(onB, await onB.list('x/'));
    expectRateLimited(onA, await onA.list('x/'));
  });

  it('survives Redis stopping: no false 429, open rules count locally, closed rules answer unavailable; limits are shared again once Redis is back', async () => {
    await redis.stop();
    const erin = await readerClient(a, 'erin');
    // Fail-open `reads`: served (404: no such artifact) through the in-memory insurance, which still limits.
    const reads: number[] = [];
    for (let i = 0; i < 6; i++) reads.push((await erin.get('x/missing.txt')).status);
    const notFound = erin.statusOf({ code: 'not_found' });
    expect(reads.slice(0, 5)).toEqual([notFound, notFound, notFound, notFound, notFound]);
    expect(reads[5]).toBe(erin.statusOf({ code: 'rate_limited' }));
    // Fail-closed `lists`: refused as unavailable, never as rate limited.
    const list = await erin.list('x/');
    expect(list.status).toBe(erin.statusOf({ code: 'unavailable' }));
    expect((await erin.health()).ok).toBe(true);
    expect(a.log.lines.some((l) => l.event === 'ratelimit.store_unavailable')).toBe(true);
    expect(a.log.lines.some((l) => l.reason === 'ratelimit_store_unavailable')).toBe(true);

    await redis.restart();
    // ioredis reconnects on its own within a few seconds.
    const frank = await readerClient(a, 'frank');
    let back = false;
    for (let i = 0; i < 100 && !back; i++) {
      back = (await frank.list('x/')).ok;
      if (!back) await wait(100);
    }
    expect(back).toBe(true);
    const onA = await readerClient(a, 'gina');
    const onB = await readerClient(b, 'gina');
    // Both servers must be reconnected before the shared count means anything.
    for (let i = 0; i < 100 && !(await readerClient(b, `probe-${String(i)}`).then((c) => c.list('x/'))).ok; i++) {
      await wait(100);
    }
    expect((await onA.list('x/')).ok).toBe(true);
    expect((await onB.list('x/')).ok).toBe(true);
    expect((await onA.list('x/')).ok).toBe(true);
    expectRateLimited(onB, await onB.list('x/'));
    expect(a.log.lines.some((l) => l.event === 'ratelimit.store_recovered')).toBe(true);
  });

  it('answers while Redis hangs: a call waits out the store deadline once, the calls after it do not wait for Redis', async () => {
    const hank = await readerClient(a, 'hank');
    const notFound = hank.statusOf({ code: 'not_found' });
    expect((await hank.get('x/missing.txt')).status).toBe(notFound);
    redis.pause();
    const statuses: number[] = [];
    let elapsedMs: number;
    try {
      const started = performance.now();
      for (let i = 0; i < 4; i++) statuses.push((await hank.get('x/missing.txt')).status);
      for (let i = 0; i < 4; i++) statuses.push((await hank.list('x/')).status);
      elapsedMs = performance.now() - started;
    } finally {
      redis.resume();
    }
    const unavailable = hank.statusOf({ code: 'unavailable' });
    expect(statuses).toEqual([...Array<number>(4).fill(notFound), ...Array<number>(4).fill(unavailable)]);
    // Each call checks two counts (the peer's failures, the caller's rule) with a 250 ms deadline
    // each: waiting for every one would take at least 4 s; only the first count waits.
    expect(elapsedMs).toBeLessThan(2_000);
    const waited = a.log.lines.filter((l) => l.event === 'ratelimit.store_unavailable');
    expect(waited.some((l) => String(l.cause).includes('took longer than 250 ms'))).toBe(true);
    // Once Redis answers again, a count goes to it as a probe at the latest a second after the
    // last deadline, and its call waits for the answer: the first call is served, not refused
    // by the closed rule while Redis has counted it.
    await wait(1_100);
    expect((await hank.list('x/')).ok).toBe(true);
    expect((await hank.list('x/')).ok).toBe(true);
  });
});

describe.each(TRANSPORTS)('two %s server processes sharing one Redis', (transport) => {
  let redis: RedisUnderTest;
  let processes: ServerProcess[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    const env = { FLUXGUARD_POLICY: trustedPolicy, FLUXGUARD_REDIS_URL: redis.url };
    processes = await Promise.all([
      spawnReferenceServer(transport, world, env),
      spawnReferenceServer(transport, world, env),
    ]);
    // A process listens before its Redis connection is ready, and `lists` fails closed meanwhile:
    // wait until each one answers a list (with a subject of its own, not counted below).
    const probe = await world.token('probe', ['artifacts.reader']);
    for (const p of processes) {
      const client = p.clientWith(probe);
      for (let i = 0; i < 50 && !(await client.list('x/')).ok; i++) await wait(100);
    }
  }, 60_000);
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.close()));
    await redis.stop();
  });

  it('hold one limit between them', async () => {
    const token = await world.token('ivy', ['artifacts.reader']);
    const [onA, onB] = processes.map((p) => p.clientWith(token)) as [ArtifactClient, ArtifactClient];
    expect((await onA.list('x/')).ok).toBe(true);
    expect((await onB.list('x/')).ok).toBe(true);
    expect((await onA.list('x/')).ok).toBe(true);
    expectRateLimited(onB, await onB.list('x/'));
    expectRateLimited(onA, await onA.list('x/'));
  });
});

describe('rate limits in a Redis Cluster of three nodes', () => {
  let cluster: RedisClusterUnderTest;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    client = new Cluster([...cluster.nodes], { redisOptions: { maxRetriesPerRequest: 1 } });
    client.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      client.once('ready', resolve);
      client.once('end', () => {
        reject(new Error('the cluster client could not connect'));
      });
    });
  }, 60_000);
  afterAll(async () => {
    client.disconnect();
    await cluster.stop();
  });

  it.each(TRANSPORTS)('holds a limit between two %s servers, its keys spread over the nodes', async (transport) => {
    const store = () =>
      createRedisRateLimitStore({ client, audit: captureLog().audit, keyPrefix: 'fluxguard:cluster' });
    const a = await start(transport, trustedPolicy, { rateLimitStore: store() });
    const b = await start(transport, trustedPolicy, { rateLimitStore: store() });
    try {
      for (const subject of ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((s) => `${transport}-${s}`)) {
        const onA = await readerClient(a, subject);
        const onB = await readerClient(b, subject);
        expect((await onA.list('x/')).ok).toBe(true);
        expect((await onB.list('x/')).ok).toBe(true);
        expect((await onA.list('x/')).ok).toBe(true);
        expectRateLimited(onB, await onB.list('x/'));
      }
      const perNode = await Promise.all(client.nodes('master').map((node) => node.dbsize()));
      expect(perNode.filter((keys) => keys > 0).length).toBeGreaterThan(1);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
