import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import { startRedis, type RedisUnderTest } from '@fluxguard/test-support/redis';
import { createRedisRateLimitStore } from './redis-store.js';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import type { Control } from '../pipeline/control.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { createBruteForceProtection, type BruteForceOptions } from './brute-force.js';
import { RateLimitStoreError, createMemoryRateLimitStore, type RateLimitStore } from './store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A token that claims `sub` and is signed by nobody: the control reads it without verifying. */
function unsignedToken(sub: string): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'ES256', typ: 'JWT' })}.${part({ sub })}.${Buffer.from('not-a-signature').toString('base64url')}`;
}

/** A call from `peerAddress` with a bearer token (an opaque one by default), or none with `null`. */
function call(peerAddress: string, token: string | null = 'opaque-credential'): CallInfo {
  const authorization = token === null ? [] : [`Bearer ${token}`];
  return {
    transport: 'http',
    operation: 'POST /v1/login',
    requestId: 'r',
    peerAddress,
    peerCertificate: undefined,
    headers: {
      get: (name) => (name === 'authorization' ? authorization[0] : undefined),
      getAll: (name) => (name === 'authorization' ? authorization : []),
    },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

const badSignature = () => new SecurityError('unauthenticated', { reason: 'bad_signature' });

/** The state of one call, as an adapter makes it. */
const newState = (): CallState =>
  new CallState({ requestId: 'r', deadline: undefined, end: () => undefined, onReleaseError: () => undefined });

/**
 * One call through the control as an adapter runs it: its start hook, then (when allowed) its
 * verdict, refused with the `outcome` a later control gave or else allowed, noted on the state,
 * then the release once it ends. With `verification: 'a turn later'` the verdict takes a turn,
 * as a verifier that waits does. Resolves with the control's own refusal, if it gave one.
 */
async function attempt(
  control: Control,
  info: CallInfo,
  outcome?: unknown,
  verification: 'at once' | 'a turn later' = 'at once',
): Promise<unknown> {
  const state = newState();
  let release: unknown;
  try {
    release = await control.onStart?.(info, state);
  } catch (refusal) {
    return refusal;
  }
  if (verification === 'a turn later') await new Promise((r) => setImmediate(r));
  if (outcome !== undefined) state.noteRefusal(outcome);
  else state.noteAllowed();
  if (typeof release === 'function') (release as () => void)();
  // A remote store counts off the call's path: let its promise settle.
  await new Promise((r) => setImmediate(r));
  return undefined;
}

const peer = { maxFailures: 3, windowSeconds: 600, blockSeconds: 900 };

describe('createBruteForceProtection', () => {
  it('blocks a peer after maxFailures failed authentications, even with a valid credential', async () => {
    const control = createBruteForceProtection({ peer });
    const attacker = call('203.0.113.9:5000');
    expect(await attempt(control, attacker, badSignature())).toBeUndefined();
    expect(await attempt(control, attacker, badSignature())).toBeUndefined();
    expect(await attempt(control, attacker, badSignature())).toBeUndefined();

    const refusal = await attempt(control, call('203.0.113.9:6000'));
    expect(refusal).toBeInstanceOf(SecurityError);
    expect(refusal).toMatchObject({
      code: 'rate_limited',
      reason: 'brute_force_blocked',
      auditFields: { rule: 'brute-force.peer', keyKind: 'peer' },
    });
    const retryAfter = (refusal as SecurityError).details?.retryAfterSeconds ?? 0;
    expect(retryAfter).toBeGreaterThan(800);
    expect(retryAfter).toBeLessThanOrEqual(900);
    // Another client is not held by the attacker's failures.
    expect(await attempt(control, call('198.51.100.1:5000'))).toBeUndefined();
    // Nor is a call of the blocked address that presents no credential (a health check).
    expect(await attempt(control, call('203.0.113.9:6001', null))).toBeUndefined();
  });

  it('holds a burst of concurrent guesses to maxFailures: each failure counts before the next call is checked', () => {
    const control = createBruteForceProtection({ peer });
    const releases: (() => void)[] = [];
    const outcomes: string[] = [];
    // 20 calls from one address whose answers are all still on their way (no release has run),
    // as a burst on many connections meets the server: start hook, then the verifier's refusal.
    for (let i = 0; i < 20; i++) {
      const state = new CallState({
        requestId: `r${String(i)}`,
        deadline: undefined,
        end: () => undefined,
        onReleaseError: () => undefined,
      });
      try {
        const release = control.onStart?.(call(`203.0.113.50:${String(6000 + i)}`), state);
        if (typeof release === 'function') releases.push(release);
      } catch (refusal) {
        outcomes.push((refusal as SecurityError).reason ?? 'refused');
        continue;
      }
      state.noteRefusal(badSignature());
      outcomes.push('verified');
    }
    expect(outcomes.filter((o) => o === 'verified')).toHaveLength(peer.maxFailures);
    expect(outcomes.filter((o) => o === 'brute_force_blocked')).toHaveLength(20 - peer.maxFailures);
  });

  it('refuses a blocked peer before any later control runs', async () => {
    let verified = 0;
    const authenticator: Control = {
      name: 'fake-jwt',
      stage: 'authentication',
      onStart: () => {
        verified += 1;
        throw badSignature();
      },
    };
    // Listed after the authenticator: the pipeline orders controls by stage.
    const pipeline = createPipeline('test', [authenticator, createBruteForceProtection({ peer })]);
    const run = async () => {
      const state = newState();
      const refusal = await new Promise<void>((resolve) => {
        resolve(pipeline.start(call('203.0.113.9:1'), state));
      }).then(
        () => undefined,
        (error: unknown) => error,
      );
      state.finish('ended');
      await new Promise((r) => setImmediate(r));
      return refusal;
    };
    for (let i = 0; i < 3; i++) expect(await run()).toMatchObject({ reason: 'bad_signature' });
    expect(verified).toBe(3);
    for (let i = 0; i < 5; i++) expect(await run()).toMatchObject({ reason: 'brute_force_blocked' });
    expect(verified).toBe(3);
  });

  it('counts only calls that tried a credential and failed authentication', async () => {
    const control = createBruteForceProtection({ peer });
    const client = call('203.0.113.9:5000');
    for (let i = 0; i < 10; i++) {
      expect(
        await attempt(control, client, new SecurityError('unauthenticated', { reason: 'missing_token' })),
      ).toBeUndefined();
      expect(
        await attempt(control, client, new SecurityError('permission_denied', { reason: 'missing_role' })),
      ).toBeUndefined();
      // A key the server has not fetched yet: an identity provider's new signing key.
      expect(
        await attempt(control, client, new SecurityError('unauthenticated', { reason: 'unknown_kid' })),
      ).toBeUndefined();
      expect(await attempt(control, client, new Error('handler bug'))).toBeUndefined();
      expect(await attempt(control, client)).toBeUndefined();
    }
    await attempt(control, client, new SecurityError('unauthenticated', { reason: 'token_expired' }));
    await attempt(control, client, new SecurityError('unauthenticated', { reason: 'malformed_token' }));
    await attempt(control, client, badSignature());
    expect(await attempt(control, client)).toMatchObject({ reason: 'brute_force_blocked' });
  });

  it('counts every address of one IPv6 /64 as one client', async () => {
    const control = createBruteForceProtection({ peer });
    for (const host of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:abcd::3']) {
      await attempt(control, call(`[${host}]:443`), badSignature());
    }
    expect(await attempt(control, call('[2001:db8:1:2::99]:443'))).toMatchObject({ reason: 'brute_force_blocked' });
    expect(await attempt(control, call('[2001:db8:1:3::1]:443'))).toBeUndefined();
  });

  it('blocks on the first failure with maxFailures 1', async () => {
    const control = createBruteForceProtection({ peer: { ...peer, maxFailures: 1 } });
    expect(await attempt(control, call('203.0.113.9:1'))).toBeUndefined();
    await attempt(control, call('203.0.113.9:1'), badSignature());
    expect(await attempt(control, call('203.0.113.9:1'))).toMatchObject({ reason: 'brute_force_blocked' });
  });

  it('lets the peer in again once blockSeconds have passed', async () => {
    const control = createBruteForceProtection({ peer: { maxFailures: 2, windowSeconds: 60, blockSeconds: 1 } });
    const client = call('203.0.113.9:5000');
    await attempt(control, client, badSignature());
    await attempt(control, client, badSignature());
    expect(await attempt(control, client)).toMatchObject({
      reason: 'brute_force_blocked',
      details: { retryAfterSeconds: 1 },
    });
    await sleep(1_100);
    expect(await attempt(control, client)).toBeUndefined();
    // And the count started again: one more failure does not block.
    await attempt(control, client, badSignature());
    expect(await attempt(control, client)).toBeUndefined();
  });

  it('blocks a claimed subject guessed at from many addresses, when asked to', async () => {
    const control = createBruteForceProtection({
      peer: { maxFailures: 100, windowSeconds: 600, blockSeconds: 900 },
      subject: { maxFailures: 3, windowSeconds: 600, blockSeconds: 900 },
    });
    const alice = unsignedToken('alice');
    for (const host of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
      expect(await attempt(control, call(`${host}:1`, alice), badSignature())).toBeUndefined();
    }
    expect(await attempt(control, call('192.0.2.77:1', alice))).toMatchObject({
      code: 'rate_limited',
      reason: 'brute_force_blocked',
      auditFields: { rule: 'brute-force.subject', keyKind: 'subject' },
    });
    expect(await attempt(control, call('192.0.2.77:1', unsignedToken('bob')))).toBeUndefined();
    expect(await attempt(control, call('192.0.2.77:1'))).toBeUndefined();
  });

  it('gives the longer wait when both the address and the subject are blocked', async () => {
    const control = createBruteForceProtection({
      peer: { maxFailures: 1, windowSeconds: 600, blockSeconds: 60 },
      subject: { maxFailures: 1, windowSeconds: 600, blockSeconds: 900 },
    });
    const alice = unsignedToken('alice');
    expect(await attempt(control, call('198.51.100.1:1', alice), badSignature())).toBeUndefined();
    // The address's minute was given: a client that waited it was refused again, for alice.
    expect(await attempt(control, call('198.51.100.1:1', alice))).toMatchObject({
      reason: 'brute_force_blocked',
      details: { retryAfterSeconds: 900 },
      auditFields: { rule: 'brute-force.subject' },
    });
    expect(await attempt(control, call('198.51.100.1:1'))).toMatchObject({
      details: { retryAfterSeconds: 60 },
      auditFields: { rule: 'brute-force.peer' },
    });
  });

  it('ignores subjects without the subject option, and tokens it cannot read', async () => {
    const peerOnly = createBruteForceProtection({ peer: { maxFailures: 100, windowSeconds: 600, blockSeconds: 900 } });
    for (let i = 0; i < 5; i++)
      await attempt(peerOnly, call(`198.51.100.${String(i)}:1`, unsignedToken('alice')), badSignature());
    expect(await attempt(peerOnly, call('192.0.2.1:1', unsignedToken('alice')))).toBeUndefined();

    const bySubject = createBruteForceProtection({
      peer: { maxFailures: 100, windowSeconds: 600, blockSeconds: 900 },
      subject: { maxFailures: 1, windowSeconds: 600, blockSeconds: 900 },
    });
    for (const token of ['not-a-jwt', 'a.!!!.c', `a.${Buffer.from('[1]').toString('base64url')}.c`]) {
      await attempt(bySubject, call('198.51.100.1:1', token), badSignature());
    }
    expect(await attempt(bySubject, call('192.0.2.1:1', unsignedToken('alice')))).toBeUndefined();
  });

  it('refuses with unavailable when the store fails and the protection fails closed', async () => {
    const failing: RateLimitStore = {
      kind: 'failing',
      limiter: () => ({
        consume: () => Promise.reject(new RateLimitStoreError('down')),
        peek: () => Promise.reject(new RateLimitStoreError('down')),
      }),
    };
    const control = createBruteForceProtection({ peer, store: failing, storeFailure: 'closed' });
    expect(await attempt(control, call('203.0.113.9:1'))).toMatchObject({
      code: 'unavailable',
      reason: 'ratelimit_store_unavailable',
    });
  });

  it.each<[string, unknown, string | RegExp]>([
    ['no peer limit', {}, /createBruteForceProtection\.peer must be an object/],
    ['a misspelt option', { peer, peers: peer }, /unknown option "peers" \(did you mean "peer"\?\)/],
    [
      'zero maxFailures',
      { peer: { ...peer, maxFailures: 0 } },
      'createBruteForceProtection.peer.maxFailures must be a whole number of at least 1',
    ],
    ['a fractional window', { peer: { ...peer, windowSeconds: 0.5 } }, /peer\.windowSeconds must be a whole number/],
    [
      'a misspelt limit field',
      { peer: { ...peer, blockSecond: 1 } },
      /peer: unknown field "blockSecond" \(did you mean "blockSeconds"\?\)/,
    ],
    ['a bad subject limit', { peer, subject: { ...peer, blockSeconds: -1 } }, /subject\.blockSeconds must be/],
    ['a bad storeFailure', { peer, storeFailure: 'ignore' }, /storeFailure must be "open" or "closed"/],
    ['a store that is not one', { peer, store: {} }, /store must be a rate-limit store/],
  ])('refuses %s at start-up', (_label, options, message) => {
    const create = () => createBruteForceProtection(options as BruteForceOptions);
    expect(create).toThrow(ConfigurationError);
    expect(create).toThrow(message);
  });
});

/** {@link attempt} with a verification that takes a turn: 'verified' once the call reached it. */
async function verifiedLater(control: Control, info: CallInfo, refusal?: unknown): Promise<unknown> {
  return (await attempt(control, info, refusal, 'a turn later')) ?? 'verified';
}

describe('createBruteForceProtection while verdicts are on their way', () => {
  it('holds a burst whose verification takes a turn to maxFailures: the rest wait for verdicts, then meet the block', async () => {
    const control = createBruteForceProtection({ peer });
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        verifiedLater(control, call(`203.0.113.60:${String(i)}`, unsignedToken('mallory')), badSignature()),
      ),
    );
    expect(outcomes.filter((o) => o === 'verified')).toHaveLength(peer.maxFailures);
    expect(outcomes.filter((o) => (o as SecurityError).reason === 'brute_force_blocked')).toHaveLength(
      20 - peer.maxFailures,
    );
  });

  it('holds a burst to maxFailures across two guards given one store, one per transport', async () => {
    // Each guard once let maxFailures guesses through: the guesses waiting for a verdict were
    // counted per control, though the failures were counted per store.
    const store = createMemoryRateLimitStore();
    const [grpc, http] = [createBruteForceProtection({ peer, store }), createBruteForceProtection({ peer, store })];
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        verifiedLater(i % 2 === 0 ? grpc : http, call(`203.0.113.61:${String(i)}`), badSignature()),
      ),
    );
    expect(outcomes.filter((o) => o === 'verified')).toHaveLength(peer.maxFailures);
  });

  it('lets an honest burst through whole: calls past the limit only wait for the verdicts before them', async () => {
    const control = createBruteForceProtection({ peer });
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        verifiedLater(control, call(`203.0.113.61:${String(i)}`, unsignedToken('ann'))),
      ),
    );
    expect(outcomes).toEqual(Array(20).fill('verified'));
  });

  it('does not make anonymous calls wait: they cannot fail authentication', () => {
    const control = createBruteForceProtection({ peer });
    for (let i = 0; i < 20; i++) {
      const state = newState();
      // Synchronous: no verdict is awaited, none has come.
      expect(control.onStart?.(call(`203.0.113.62:${String(i)}`, null), state)).toBeUndefined();
    }
  });

  it('stops a waiting call whose client left, and its place goes to the next', async () => {
    const control = createBruteForceProtection({ peer });
    const states = Array.from({ length: peer.maxFailures }, newState);
    const releases = states.map((state, i) => control.onStart?.(call(`203.0.113.63:${String(i)}`, 't.o.k'), state));
    const leaving = new AbortController();
    const waiting = control.onStart?.({ ...call('203.0.113.63:9', 't.o.k'), signal: leaving.signal }, newState());
    expect(waiting).toBeInstanceOf(Promise);
    leaving.abort();
    await expect(waiting).resolves.toBeUndefined();
    // The calls on their way are allowed: a new call enters at once.
    for (const state of states) state.noteAllowed();
    for (const release of releases) if (typeof release === 'function') release();
    expect(typeof control.onStart?.(call('203.0.113.63:10', 't.o.k'), newState())).toBe('function');
  });
});

describe('createBruteForceProtection with a Redis store (a real redis-server)', () => {
  let redis: RedisUnderTest;
  let client: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis({ port: redis.port, host: '127.0.0.1', enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    client.on('error', () => undefined);
    await client.ping().catch(async () => {
      await new Promise((r) => client.once('ready', r));
    });
  });
  afterAll(async () => {
    client.disconnect();
    await redis.stop();
  });

  it('keeps a block this replica counted while Redis hangs, refusing without asking it', async () => {
    const store = createRedisRateLimitStore({
      client,
      audit: createAuditLogger({ level: 'silent' }),
      keyPrefix: 'bf-hang',
      timeoutMs: 60_000,
    });
    const control = createBruteForceProtection({ peer, store, storeFailure: 'open' });
    for (let i = 0; i < peer.maxFailures; i++) {
      expect(await attempt(control, call('203.0.113.77:1'), badSignature())).toBeUndefined();
    }
    expect(await attempt(control, call('203.0.113.77:2'))).toMatchObject({ reason: 'brute_force_blocked' });
    redis.pause();
    try {
      // Answered at once: the store's 60 s deadline would make the test time out.
      expect(await attempt(control, call('203.0.113.77:3'))).toMatchObject({
        code: 'rate_limited',
        reason: 'brute_force_blocked',
      });
    } finally {
      redis.resume();
    }
  });

  it('shares blocks between replicas through Redis, each also counting its own', async () => {
    const audit = createAuditLogger({ level: 'silent' });
    const replica = () =>
      createBruteForceProtection({ peer, store: createRedisRateLimitStore({ client, audit, keyPrefix: 'bf-shared' }) });
    const [one, two] = [replica(), replica()];
    expect(await attempt(one, call('198.51.100.77:1'), badSignature())).toBeUndefined();
    expect(await attempt(two, call('198.51.100.77:2'), badSignature())).toBeUndefined();
    expect(await attempt(one, call('198.51.100.77:3'), badSignature())).toBeUndefined();
    expect(await attempt(two, call('198.51.100.77:4'))).toMatchObject({ reason: 'brute_force_blocked' });
    expect(await attempt(one, call('198.51.100.77:5'))).toMatchObject({ reason: 'brute_force_blocked' });
  });
});
