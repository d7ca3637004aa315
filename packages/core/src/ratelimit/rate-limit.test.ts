import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { compileRbac } from '../rbac/rbac.js';
import { freePort } from '@fluxguard/test-support/redis';
import { createRateLimit, type RateLimitOptions, type RateLimitRule } from './rate-limit.js';
import { createRedisRateLimitStore } from './redis-store.js';
import { RateLimitStoreError, createMemoryRateLimitStore, type RateLimitStore } from './store.js';

const principal = (subject: string, issuer = 'https://id.example'): Principal => ({
  subject,
  roles: [],
  scopes: [],
  claims: { iss: issuer, sub: subject },
  certificate: undefined,
  authenticatedBy: 'jwt',
});

function call(operation = '/pkg.Svc/Get', peerAddress = '203.0.113.9:5000', headers: Record<string, string> = {}) {
  const info: CallInfo = {
    transport: operation.startsWith('/') ? 'grpc' : 'http',
    operation,
    requestId: 'r',
    peerAddress,
    peerCertificate: undefined,
    headers: { get: (name) => headers[name], getAll: (name) => (name in headers ? [headers[name] ?? ''] : []) },
    deadline: undefined,
    signal: new AbortController().signal,
  };
  return info;
}

/** Runs the limits through a real pipeline on a real call state; resolves with the state, or the refusal. */
function limiter(options: RateLimitOptions) {
  const pipeline = createPipeline('test', createRateLimit(options).controls);
  return async (info: CallInfo, subject?: string | Principal): Promise<{ state: CallState; refusal: unknown }> => {
    const state = new CallState({
      requestId: 'r',
      deadline: undefined,
      end: () => undefined,
      onReleaseError: () => undefined,
    });
    if (subject !== undefined) state.setPrincipal(typeof subject === 'string' ? principal(subject) : subject);
    const refusal = await new Promise<void>((resolve) => {
      resolve(pipeline.start(info, state));
    }).then(
      () => undefined,
      (error: unknown) => error,
    );
    return { state, refusal };
  };
}

async function times(run: ReturnType<typeof limiter>, n: number, info: CallInfo, subject?: string) {
  const refusals: unknown[] = [];
  for (let i = 0; i < n; i++) refusals.push((await run(info, subject)).refusal);
  return refusals;
}

/** A store that records the keys it is asked to count: keys are what reaches Redis. */
function recordingStore(): { store: RateLimitStore; keys: string[] } {
  const keys: string[] = [];
  const inner = createMemoryRateLimitStore();
  return {
    keys,
    store: {
      kind: 'recording',
      limiter(spec) {
        const l = inner.limiter(spec);
        return {
          consume: (key, points) => {
            keys.push(key);
            return l.consume(key, points);
          },
          peek: (key) => l.peek(key),
        };
      },
    },
  };
}

const perPeer = (overrides: Partial<RateLimitRule> = {}): RateLimitRule => ({
  name: 'per-peer',
  key: 'peer',
  points: 3,
  durationSeconds: 60,
  ...overrides,
});

describe('createRateLimit', () => {
  it('refuses the call after the last point with rate_limited and when to retry; another key goes on', async () => {
    const run = limiter({ rules: [perPeer()] });
    expect(await times(run, 3, call())).toEqual([undefined, undefined, undefined]);
    const { refusal } = await run(call());
    expect(refusal).toBeInstanceOf(SecurityError);
    const error = refusal as SecurityError;
    expect(error).toMatchObject({ code: 'rate_limited', reason: 'rate_limited' });
    expect(error.details?.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(error.details?.retryAfterSeconds).toBeLessThanOrEqual(60);
    // The audit line names the rule and the kind of key, never the key (an address, an API key).
    expect(error.auditFields).toEqual({ rule: 'per-peer', keyKind: 'peer' });
    // Another port of the same host is the same client; another host is not.
    expect((await run(call('/pkg.Svc/Get', '203.0.113.9:6000'))).refusal).toBeInstanceOf(SecurityError);
    expect((await run(call('/pkg.Svc/Get', '198.51.100.1:5000'))).refusal).toBeUndefined();
  });

  it('counts a caller once across the limits of two transports given one memory store', async () => {
    // One policy, one store, a guard per transport: each once granted the whole allowance.
    const store = createMemoryRateLimitStore();
    const grpc = limiter({ store, rules: [perPeer()] });
    const http = limiter({ store, rules: [perPeer()] });
    const refusals = [];
    for (const [run, operation] of [
      [grpc, '/pkg.Svc/Get'],
      [http, 'GET /v1/items/1'],
      [grpc, '/pkg.Svc/Get'],
      [http, 'GET /v1/items/1'],
    ] as const) {
      refusals.push((await run(call(operation))).refusal);
    }
    expect(refusals.slice(0, 3)).toEqual([undefined, undefined, undefined]);
    expect(refusals[3]).toMatchObject({ code: 'rate_limited' });
  });

  it('applies a rule only to the operations its patterns name, on both transports', async () => {
    const run = limiter({
      rules: [perPeer({ points: 1, operations: ['/pkg.Svc/*', 'PUT /v1/artifacts/*path'] })],
    });
    expect(await times(run, 2, call('/pkg.Svc/Get'))).toEqual([undefined, expect.any(SecurityError)]);
    // Operations of one rule share its count.
    expect((await run(call('PUT /v1/artifacts/a/b.txt'))).refusal).toBeInstanceOf(SecurityError);
    const other = '198.51.100.1:1';
    expect((await run(call('PUT /v1/artifacts/a/b.txt', other))).refusal).toBeUndefined();
    expect((await run(call('PUT /v1/artifacts/c', other))).refusal).toBeInstanceOf(SecurityError);
    // Operations no pattern names are not counted at all.
    expect(await times(run, 5, call('/pkg.Other/Get'))).toEqual(Array(5).fill(undefined));
    expect(await times(run, 5, call('GET /v1/artifacts/a'))).toEqual(Array(5).fill(undefined));
    expect(await times(run, 5, call('/pkg.Svc.Sub/Get'))).toEqual(Array(5).fill(undefined));
  });

  it('tells the pipeline that it matches operations, only when a rule names some', () => {
    expect(createRateLimit({ rules: [perPeer()] }).controls[0]?.matchesOperation).toBe(false);
    expect(createRateLimit({ rules: [perPeer({ operations: ['GET /a'] })] }).controls[0]?.matchesOperation).toBe(true);
  });

  it('charges an operation its cost, the most specific pattern’s first', async () => {
    const run = limiter({
      rules: [
        perPeer({
          points: 10,
          operationCosts: { 'PUT /v1/artifacts/*path': 5, 'PUT /v1/artifacts/big/*path': 10 },
        }),
      ],
    });
    expect(await times(run, 2, call('PUT /v1/artifacts/a'))).toEqual([undefined, undefined]);
    expect((await run(call('PUT /v1/artifacts/a'))).refusal).toBeInstanceOf(SecurityError);
    expect((await run(call('GET /v1/artifacts/a'))).refusal).toBeInstanceOf(SecurityError);

    const big = '198.51.100.1:1';
    expect((await run(call('PUT /v1/artifacts/big/x', big))).refusal).toBeUndefined();
    expect((await run(call('GET /v1/artifacts/a', big))).refusal).toBeInstanceOf(SecurityError);

    const cheap = limiter({ rules: [perPeer({ points: 4, cost: 2 })] });
    expect(await times(cheap, 3, call())).toEqual([undefined, undefined, expect.any(SecurityError)]);
  });

  it('runs peer-keyed rules before authentication and subject-keyed ones after, unless told', () => {
    const stages = (rules: RateLimitRule[]) => createRateLimit({ rules }).controls.map((c) => c.stage);
    expect(stages([perPeer()])).toEqual(['pre-authentication']);
    expect(stages([perPeer({ key: 'header:x-api-key' })])).toEqual(['pre-authentication']);
    expect(stages([perPeer({ key: 'certificate' })])).toEqual(['pre-authentication']);
    expect(stages([perPeer({ key: 'subject' })])).toEqual(['caller-limit']);
    expect(stages([perPeer({ key: () => 'tenant' })])).toEqual(['caller-limit']);
    expect(stages([perPeer({ key: 'certificate', stage: 'caller-limit' })])).toEqual(['caller-limit']);
    expect(stages([perPeer({ key: () => 'tenant', stage: 'pre-authentication' })])).toEqual(['pre-authentication']);
    expect(stages([perPeer({ name: 'a' }), perPeer({ name: 'b', key: 'subject' })])).toEqual([
      'pre-authentication',
      'caller-limit',
    ]);
  });

  it('counts a subject wherever it calls from, and an anonymous caller by its address', async () => {
    const run = limiter({ rules: [perPeer({ name: 'per-user', key: 'subject', points: 2 })] });
    expect((await run(call('/pkg.Svc/Get', '198.51.100.1:1'), 'alice')).refusal).toBeUndefined();
    expect((await run(call('/pkg.Svc/Get', '198.51.100.2:1'), 'alice')).refusal).toBeUndefined();
    expect((await run(call('/pkg.Svc/Get', '198.51.100.3:1'), 'alice')).refusal).toMatchObject({
      code: 'rate_limited',
      auditFields: { rule: 'per-user', keyKind: 'subject' },
      subject: 'alice',
    });
    expect((await run(call('/pkg.Svc/Get', '198.51.100.3:1'), 'bob')).refusal).toBeUndefined();
    expect(await times(run, 3, call('/pkg.Svc/Get', '198.51.100.9:1'))).toEqual([
      undefined,
      undefined,
      expect.any(SecurityError),
    ]);
  });

  it('sends RateLimit-Policy and RateLimit for every rule that counted the call', async () => {
    const pipeline = createPipeline(
      'test',
      createRateLimit({ rules: [perPeer(), perPeer({ name: 'uploads', points: 20, durationSeconds: 30 })] }).controls,
    );
    const state = new CallState({
      requestId: 'r',
      deadline: undefined,
      end: () => undefined,
      onReleaseError: () => undefined,
    });
    await pipeline.start(call(), state);
    expect(state.responseHeaders?.get('ratelimit-policy')).toBe('"per-peer";q=3;w=60, "uploads";q=20;w=30');
    expect(state.responseHeaders?.get('ratelimit')).toMatch(/^"per-peer";r=2;t=(59|60), "uploads";r=19;t=(29|30)$/);
    expect([...(state.responseHeaders?.keys() ?? [])]).toEqual(['ratelimit-policy', 'ratelimit']);
  });

  it('advertises a burst as a policy item of its own, and its state once a call reached it', async () => {
    const run = limiter({ rules: [perPeer({ points: 2, burst: { points: 1, durationSeconds: 10 } })] });
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push(await run(call()));
    for (const { state } of seen) {
      expect(state.responseHeaders?.get('ratelimit-policy')).toBe('"per-peer";q=2;w=60, "per-peer/burst";q=1;w=10');
    }
    const fields = seen.map(({ state }) => state.responseHeaders?.get('ratelimit'));
    expect(fields[0]).toMatch(/^"per-peer";r=1;t=(59|60)$/);
    expect(fields[1]).toMatch(/^"per-peer";r=0;t=(59|60)$/);
    // The third call is the burst's: allowed, and the field says what is left of it. Once the
    // burst is reached, the rule's t is when a call may pass again: the sooner window's end.
    expect(seen[2]?.refusal).toBeUndefined();
    expect(fields[2]).toMatch(/^"per-peer";r=0;t=(9|10), "per-peer\/burst";r=0;t=(9|10)$/);
    expect(seen[3]?.refusal).toBeInstanceOf(SecurityError);
    expect(fields[3]).toMatch(/^"per-peer";r=0;t=(9|10), "per-peer\/burst";r=0;t=(9|10)$/);
  });

  it('sends the headers on the refused call too, and none with headers: false', async () => {
    const run = limiter({ rules: [perPeer({ points: 1 })] });
    await run(call());
    const { state, refusal } = await run(call());
    expect(refusal).toBeInstanceOf(SecurityError);
    expect(state.responseHeaders?.get('ratelimit')).toMatch(/^"per-peer";r=0;t=\d+$/);

    const quiet = limiter({ rules: [perPeer()], headers: false });
    expect((await quiet(call())).state.responseHeaders).toBeUndefined();
  });

  it('counts an API key header by its hash: the raw value never reaches the store', async () => {
    const { store, keys } = recordingStore();
    const run = limiter({ store, rules: [perPeer({ name: 'per-key', key: 'header:X-Api-Key', points: 1 })] });
    const secret = 'sk_live_51H8cYz2eZvKYlo2C0123456789';
    const withKey = (value: string, peer = '203.0.113.9:1') => call('/pkg.Svc/Get', peer, { 'x-api-key': value });
    expect((await run(withKey(secret))).refusal).toBeUndefined();
    // The same key from another address is the same caller.
    expect((await run(withKey(secret, '198.51.100.1:1'))).refusal).toBeInstanceOf(SecurityError);
    expect((await run(withKey('another-key'))).refusal).toBeUndefined();
    // No header: the caller is counted by its address.
    expect((await run(call('/pkg.Svc/Get', '192.0.2.1:1'))).refusal).toBeUndefined();

    expect(keys).toHaveLength(4);
    for (const key of keys) {
      expect(key).not.toContain(secret);
      expect(key).not.toContain('another-key');
    }
    expect(keys[0]).toMatch(/^hdr:x-api-key:[A-Za-z0-9_-]{22}$/);
    expect(keys[1]).toBe(keys[0]);
    expect(keys[2]).not.toBe(keys[0]);
    expect(keys[3]).toBe('ip:192.0.2.1');
  });

  it('bounds the stored key of a long subject', async () => {
    const { store, keys } = recordingStore();
    const run = limiter({ store, rules: [perPeer({ key: 'subject' })] });
    await run(call(), 'alice');
    await run(call(), 'x'.repeat(5_000));
    expect(keys[0]).toBe('sub:tok:18:https://id.example:alice');
    expect(keys[1]?.length).toBeLessThan(64);
  });

  it("counts a subject within its issuer: one issuer's alice is not another's, nor a certificate's", async () => {
    // A verifier may accept several issuers, and a subject is unique only within its issuer:
    // tenant B's alice used up tenant A's alice's allowance.
    const run = limiter({ rules: [perPeer({ points: 1, key: 'subject' })] });
    const asAlice = async (issuer: string) => (await run(call(), principal('alice', issuer))).refusal;
    expect(await asAlice('https://b.example')).toBeUndefined();
    expect(await asAlice('https://b.example')).toBeInstanceOf(SecurityError);
    expect(await asAlice('https://a.example')).toBeUndefined();
    // Nor can an issuer and subject be read as another pair.
    expect(await asAlice('https://a.example:alice')).toBeUndefined();
    const certificateOnly: Principal = {
      ...principal('tok:17:https://a.example:alice'),
      claims: {},
      authenticatedBy: 'mtls',
    };
    expect((await run(call(), certificateOnly)).refusal).toBeUndefined();
    expect((await run(call(), certificateOnly)).refusal).toBeInstanceOf(SecurityError);
  });

  it("counts an application's principal without an issuer apart from a certificate of its subject", async () => {
    // An API key's holder (set by the application's own middleware) named as a workload is.
    const run = limiter({ rules: [perPeer({ points: 1, key: 'subject' })] });
    const workload: Principal = { ...principal('spiffe://example.org/backup'), claims: {}, authenticatedBy: 'mtls' };
    const keyHolder: Principal = { ...workload, authenticatedBy: 'jwt' };
    expect((await run(call(), workload)).refusal).toBeUndefined();
    expect((await run(call(), keyHolder)).refusal).toBeUndefined();
    expect((await run(call(), keyHolder)).refusal).toBeInstanceOf(SecurityError);
  });

  it("never lets a subject that spells another's hashed key take that key", async () => {
    const { store, keys } = recordingStore();
    const run = limiter({ store, rules: [perPeer({ key: 'subject' })] });
    await run(call(), 'y'.repeat(241));
    const hashed = keys[0]?.slice('sub:'.length) ?? '';
    expect(hashed).toMatch(/^#[A-Za-z0-9_-]{22}$/);
    // An identity provider that lets users choose their subject: one picks the other's hashed key.
    await run(call(), hashed);
    expect(keys[1]).not.toBe(keys[0]);
  });

  it('takes a key function; undefined leaves the call out of the rule', async () => {
    const { store, keys } = recordingStore();
    const run = limiter({
      store,
      rules: [perPeer({ points: 1, key: (info) => info.headers.get('x-tenant') })],
    });
    const tenant = call('/pkg.Svc/Get', '203.0.113.9:1', { 'x-tenant': 'acme' });
    expect(await times(run, 2, tenant)).toEqual([undefined, expect.any(SecurityError)]);
    expect(await times(run, 3, call())).toEqual([undefined, undefined, undefined]);
    expect(keys).toEqual(['fn:acme', 'fn:acme']);
  });

  it('keys on the client behind a trusted proxy, and on the socket otherwise', async () => {
    const run = limiter({ rules: [perPeer({ points: 1 })], trustedProxies: ['10.0.0.0/8'] });
    const via = (client: string, peer = '10.0.0.7:443') => call('/pkg.Svc/Get', peer, { 'x-forwarded-for': client });
    expect((await run(via('198.51.100.1'))).refusal).toBeUndefined();
    expect((await run(via('198.51.100.2'))).refusal).toBeUndefined();
    expect((await run(via('198.51.100.1'))).refusal).toBeInstanceOf(SecurityError);
    // A direct client cannot become many clients by rotating the header.
    expect((await run(via('192.0.2.1', '203.0.113.9:1'))).refusal).toBeUndefined();
    expect((await run(via('192.0.2.2', '203.0.113.9:1'))).refusal).toBeInstanceOf(SecurityError);
  });

  it('counts a client certificate by its SPIFFE ID, else its fingerprint, else the address', async () => {
    const { store, keys } = recordingStore();
    const run = limiter({ store, rules: [perPeer({ key: 'certificate' })] });
    const withCertificate = (spiffeId: string | undefined): CallInfo => ({
      ...call(),
      peerCertificate: {
        spiffeId,
        uris: [],
        dnsNames: [],
        commonName: 'backup',
        fingerprint256: 'AB:CD',
        validFrom: new Date(0),
        validTo: new Date(0),
      },
    });
    await run(withCertificate('spiffe://fluxguard.dev/backup'));
    await run(withCertificate(undefined));
    await run(call());
    expect(keys).toEqual(['spiffe:spiffe://fluxguard.dev/backup', 'cert:AB:CD', 'ip:203.0.113.9']);
  });

  it('still counts every call when a flood of distinct paths empties its operation cache', async () => {
    const run = limiter({ rules: [perPeer({ points: 1_500, operations: ['GET /v1/*path'] })] });
    for (let i = 0; i < 1_500; i++) {
      expect((await run(call(`GET /v1/${String(i)}`))).refusal).toBeUndefined();
    }
    expect((await run(call('GET /v1/one-more'))).refusal).toBeInstanceOf(SecurityError);
  });

  it('when several rules refuse, names the one that frees up last', async () => {
    const run = limiter({
      rules: [perPeer({ name: 'short', points: 1, durationSeconds: 5 }), perPeer({ name: 'long', points: 1 })],
    });
    await run(call());
    const { refusal } = await run(call());
    expect(refusal).toMatchObject({ auditFields: { rule: 'long' } });
    expect((refusal as SecurityError).details?.retryAfterSeconds).toBeGreaterThan(5);
  });

  it('refuses with unavailable when a store fails, never with rate_limited', async () => {
    const failing: RateLimitStore = {
      kind: 'failing',
      limiter: () => ({
        consume: () => Promise.reject(new RateLimitStoreError('the rate-limit store failed')),
        peek: () => Promise.reject(new RateLimitStoreError('the rate-limit store failed')),
      }),
    };
    const run = limiter({ store: failing, rules: [perPeer({ storeFailure: 'closed' })] });
    const { refusal } = await run(call());
    expect(refusal).toBeInstanceOf(SecurityError);
    expect(refusal).toMatchObject({
      code: 'unavailable',
      reason: 'ratelimit_store_unavailable',
      auditFields: { rule: 'per-peer', keyKind: 'peer' },
    });
    expect((refusal as SecurityError).cause).toBeInstanceOf(RateLimitStoreError);
  });

  it('lets a bug in a custom store surface as itself, not as a refusal', async () => {
    const bug = new TypeError('store bug');
    const broken: RateLimitStore = {
      kind: 'broken',
      limiter: () => ({ consume: () => Promise.reject(bug), peek: () => Promise.reject(bug) }),
    };
    expect((await limiter({ store: broken, rules: [perPeer()] })(call())).refusal).toBe(bug);
  });
});

describe('createRateLimit over a Redis store that is down', () => {
  let client: Redis;
  beforeAll(async () => {
    // Nothing listens on this port: every count fails as it would with Redis down.
    client = new Redis({
      port: await freePort(),
      host: '127.0.0.1',
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
    });
    client.on('error', () => undefined);
  });
  afterAll(() => {
    client.disconnect();
  });

  it('a closed rule refuses with unavailable; an open rule goes on counting in this process', async () => {
    const store = createRedisRateLimitStore({ client, audit: createAuditLogger({ level: 'silent' }) });
    const run = limiter({
      store,
      rules: [
        perPeer({ name: 'open', points: 2, operations: ['/pkg.Open/*'] }),
        perPeer({ name: 'closed', storeFailure: 'closed', operations: ['/pkg.Closed/*'] }),
      ],
    });
    expect((await run(call('/pkg.Closed/Get'))).refusal).toMatchObject({
      code: 'unavailable',
      reason: 'ratelimit_store_unavailable',
    });
    expect(await times(run, 2, call('/pkg.Open/Get'))).toEqual([undefined, undefined]);
    // Still limited, and the audit line says the count was this process's own.
    expect((await run(call('/pkg.Open/Get'))).refusal).toMatchObject({
      code: 'rate_limited',
      auditFields: { rule: 'open', keyKind: 'peer', store: 'local' },
    });
  });
});

describe('createRateLimit options', () => {
  it('names the peer rules that trust no proxy, for the adapters to warn of behind one', () => {
    const rules = [
      { name: 'per-peer', key: 'peer', points: 5, durationSeconds: 1 },
      { name: 'per-subject', key: 'subject', points: 5, durationSeconds: 1 },
    ] as const;
    const direct = createRateLimit({ rules: [...rules] }).controls;
    expect(direct.flatMap((control) => control.countsSocketAddress ?? [])).toEqual(['per-peer']);
    const proxied = createRateLimit({ rules: [...rules], trustedProxies: ['10.0.0.0/8'] }).controls;
    expect(proxied.flatMap((control) => control.countsSocketAddress ?? [])).toEqual([]);
  });

  const rule = perPeer();
  it.each<[string, unknown, string | RegExp]>([
    ['no rules', { rules: [] }, 'createRateLimit.rules must be a non-empty array'],
    [
      'a rule named as a brute-force counter (it would count into it)',
      { rules: [{ ...rule, name: 'brute-force.peer' }] },
      'createRateLimit.rules[0].name "brute-force.peer": names starting "brute-force." are the brute-force protection\'s',
    ],
    [
      'a misspelt option',
      { rules: [rule], rule: [] },
      /createRateLimit: unknown option "rule" \(did you mean "rules"\?\)/,
    ],
    ['a store that is not one', { rules: [rule], store: {} }, /createRateLimit\.store must be a rate-limit store/],
    [
      'headers that is not a boolean',
      { rules: [rule], headers: 'yes' },
      'createRateLimit.headers must be true or false',
    ],
    [
      'two rules with one name',
      { rules: [rule, { ...rule, key: 'subject' }] },
      'createRateLimit.rules[1].name "per-peer" is used by an earlier rule',
    ],
    ['a name with a space', { rules: [{ ...rule, name: 'per peer' }] }, /createRateLimit\.rules\[0\]\.name must be/],
    [
      'zero points',
      { rules: [{ ...rule, points: 0 }] },
      'createRateLimit.rules[0].points must be a whole number of at least 1',
    ],
    [
      'a fractional duration',
      { rules: [{ ...rule, durationSeconds: 1.5 }] },
      'createRateLimit.rules[0].durationSeconds must be a whole number of at least 1',
    ],
    ['points as a string', { rules: [{ ...rule, points: '10' }] }, /rules\[0\]\.points must be a whole number/],
    ['a negative cost', { rules: [{ ...rule, cost: -1 }] }, /rules\[0\]\.cost must be a whole number/],
    [
      'a zero burst',
      { rules: [{ ...rule, burst: { points: 0, durationSeconds: 1 } }] },
      'createRateLimit.rules[0].burst.points must be a whole number of at least 1',
    ],
    [
      'a misspelt burst field',
      { rules: [{ ...rule, burst: { points: 1, duration: 1 } }] },
      /rules\[0\]\.burst: unknown field "duration"/,
    ],
    [
      'a misspelt rule field',
      { rules: [{ ...rule, point: 3 }] },
      /createRateLimit\.rules\[0\]: unknown field "point" \(did you mean "points"\?\)/,
    ],
    ['an unknown key', { rules: [{ ...rule, key: 'ip' }] }, /createRateLimit\.rules\[0\]\.key must be "peer"/],
    ['a bad header key', { rules: [{ ...rule, key: 'header:' }] }, /rules\[0\]\.key must be/],
    ['a header key with a space', { rules: [{ ...rule, key: 'header:x api' }] }, /rules\[0\]\.key must be/],
    ['a bad stage', { rules: [{ ...rule, stage: 'authorization' }] }, /rules\[0\]\.stage must be/],
    ['a bad storeFailure', { rules: [{ ...rule, storeFailure: 'fail' }] }, /rules\[0\]\.storeFailure must be/],
    ['empty operations', { rules: [{ ...rule, operations: [] }] }, /rules\[0\]\.operations must be a non-empty array/],
    ['a bad pattern', { rules: [{ ...rule, operations: ['get /x'] }] }, /rules\[0\]\.operations\[0\] "get \/x"/],
    [
      'a zero operation cost',
      { rules: [{ ...rule, operationCosts: { 'GET /x': 0 } }] },
      'createRateLimit.rules[0].operationCosts["GET /x"] must be a whole number of at least 1',
    ],
    ['a bad trusted proxy', { rules: [rule], trustedProxies: ['proxy'] }, /createRateLimit\.trustedProxies\[0\]/],
    [
      // The rule never counts PUT: the cost would never apply.
      'an operation cost outside the rule',
      { rules: [{ ...rule, operations: ['GET /v1/*path'], operationCosts: { 'PUT /v1/*path': 5 } }] },
      'createRateLimit.rules[0].operationCosts["PUT /v1/*path"] names no operation of the rule\'s "operations", so its cost would never apply',
    ],
    [
      // Only one cost could apply: each call cost what was written first.
      'two costs for the same operations',
      { rules: [{ ...rule, points: 20, operationCosts: { 'PUT /v1/x': 1, 'PUT /v1/x/': 10 } }] },
      'createRateLimit.rules[0].operationCosts key "PUT /v1/x/" names the operations of "PUT /v1/x", written before it: only one could apply',
    ],
    [
      'two costs for the same operations, parameters named apart',
      { rules: [{ ...rule, operationCosts: { 'PUT /v1/:id': 1, 'PUT /v1/:name': 2 } }] },
      /operationCosts key "PUT \/v1\/:name" names the operations of "PUT \/v1\/:id"/,
    ],
    [
      'an operation named twice',
      { rules: [{ ...rule, operations: ['GET /v1/*path', 'GET /v1/*rest/'] }] },
      /rules\[0\]\.operations\[1\] "GET \/v1\/\*rest\/" names the operations of "GET \/v1\/\*path"/,
    ],
    [
      // No principal is known before authentication: it counted certificates or peer addresses.
      'a subject key before authentication',
      { rules: [{ ...rule, key: 'subject', stage: 'pre-authentication' }] },
      'createRateLimit.rules[0]: key "subject" cannot run at stage "pre-authentication", where no principal is known yet',
    ],
    [
      'a cost above the points',
      { rules: [{ ...rule, points: 3, operationCosts: { 'GET /x': 5 } }] },
      'createRateLimit.rules[0]: a call costs 5 points, more than the rule ever has (3), so every such call would be refused',
    ],
  ])('refuses %s, naming the field', (_label, options, message) => {
    const create = () => createRateLimit(options as RateLimitOptions);
    expect(create).toThrow(ConfigurationError);
    expect(create).toThrow(message);
  });
});

describe('createRateLimit: which operations a rule counts', () => {
  // RBAC decides a call by the rule these operations reach; a limit on the same pattern must
  // count the same calls. A second trailing slash was once dropped here and not there, and a
  // call RBAC refused (no rule) was counted under the limit of another operation.
  const operations = ['GET /v1/x', 'GET /v1/x/', 'GET /v1/x//', 'GET /v1/x/y', 'GET /V1/x', 'POST /v1/x'];

  it.each(operations)('counts %s exactly when RBAC decides it by the rule of the same pattern', async (operation) => {
    const rbac = compileRbac({ 'GET /v1/x': { public: true } });
    const run = limiter({
      rules: [{ name: 'x', key: 'peer', points: 100, durationSeconds: 60, operations: ['GET /v1/x'] }],
    });
    const { state } = await run(call(operation));
    const counted = state.responseHeaders?.get('ratelimit-policy') !== undefined;
    expect(counted).toBe(rbac.ruleFor(operation) === 'GET /v1/x');
  });
});
