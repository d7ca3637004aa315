import { RateLimiterMemory } from 'rate-limiter-flexible';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { RateLimitStoreError, createMemoryRateLimitStore, flexibleLimiter, type LimiterSpec } from './store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function limiter(spec: Partial<LimiterSpec> = {}, maxKeys?: number) {
  return createMemoryRateLimitStore(maxKeys === undefined ? undefined : { maxKeys }).limiter({
    name: 'test',
    points: 3,
    durationSeconds: 60,
    storeFailure: 'open',
    ...spec,
  });
}

async function spend(l: ReturnType<typeof limiter>, key: string, times: number) {
  const results = [];
  for (let i = 0; i < times; i++) results.push(await l.consume(key, 1));
  return results;
}

describe('createMemoryRateLimitStore', () => {
  it('allows a key until its points are spent, then refuses it with the time to wait', async () => {
    const l = limiter();
    const allowed = await spend(l, 'k', 3);
    expect(allowed.map((r) => [r.allowed, r.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 0],
    ]);
    const refused = await l.consume('k', 1);
    expect(refused).toMatchObject({ allowed: false, remaining: 0 });
    expect(refused.resetMs).toBeGreaterThan(0);
    expect(refused.resetMs).toBeLessThanOrEqual(60_000);
    // Being over the limit is an answer, never a store failure.
    expect(refused.local).toBeUndefined();
  });

  it('counts each key, and each rule, on its own', async () => {
    const store = createMemoryRateLimitStore();
    const a = store.limiter({ name: 'a', points: 1, durationSeconds: 60, storeFailure: 'open' });
    const b = store.limiter({ name: 'b', points: 1, durationSeconds: 60, storeFailure: 'open' });
    expect((await a.consume('k', 1)).allowed).toBe(true);
    expect((await a.consume('k', 1)).allowed).toBe(false);
    expect((await a.consume('other', 1)).allowed).toBe(true);
    expect((await b.consume('k', 1)).allowed).toBe(true);
  });

  it('counts limits of one name together, as a Redis store does: two guards given the store share the allowance', async () => {
    // One guard per transport, one store: each once granted a caller the whole allowance.
    const store = createMemoryRateLimitStore();
    const spec = { name: 'per-peer', points: 3, durationSeconds: 60, storeFailure: 'open' } as const;
    const grpc = store.limiter(spec);
    const http = store.limiter({ ...spec });
    expect(http).toBe(grpc);
    const answers = [];
    for (const l of [grpc, http, grpc, http]) answers.push((await l.consume('10.0.0.1', 1)).allowed);
    expect(answers).toEqual([true, true, true, false]);
  });

  it.each<[string, Partial<LimiterSpec>]>([
    ['points', { points: 4 }],
    ['window', { durationSeconds: 30 }],
    ['burst', { burst: { points: 2, durationSeconds: 60 } }],
    ['block', { blockSeconds: 60 }],
    ['storeFailure', { storeFailure: 'closed' }],
  ])('refuses a second limit of one name with other %s: one count cannot be judged two ways', (_label, other) => {
    const store = createMemoryRateLimitStore();
    const spec: LimiterSpec = { name: 'per-peer', points: 3, durationSeconds: 60, storeFailure: 'open' };
    store.limiter(spec);
    expect(() => store.limiter({ ...spec, ...other })).toThrow(ConfigurationError);
    expect(() => store.limiter({ ...spec, ...other })).toThrow(
      'createMemoryRateLimitStore: two limits named "per-peer" ask this store for different allowances',
    );
    // Another store counts apart, and takes it.
    expect(() => createMemoryRateLimitStore().limiter({ ...spec, ...other })).not.toThrow();
  });

  it('counts a call’s cost, so one expensive call can spend the whole allowance', async () => {
    const l = limiter({ points: 5 });
    expect(await l.consume('k', 5)).toMatchObject({ allowed: true, remaining: 0 });
    expect((await l.consume('k', 1)).allowed).toBe(false);
  });

  it('allows the key again once its window has passed', async () => {
    const l = limiter({ points: 2, durationSeconds: 1 });
    await spend(l, 'k', 2);
    expect((await l.consume('k', 1)).allowed).toBe(false);
    await sleep(1_100);
    expect(await l.consume('k', 1)).toMatchObject({ allowed: true, remaining: 1 });
  });

  it('gives a burst’s extra points once the main points are spent, and no more', async () => {
    const l = limiter({ points: 2, burst: { points: 2, durationSeconds: 60 } });
    const results = await spend(l, 'k', 4);
    expect(results.every((r) => r.allowed)).toBe(true);
    // The burst's state is known once a count reached it, not before.
    expect(results.map((r) => r.burst?.remaining)).toEqual([undefined, undefined, 1, 0]);
    const refused = await l.consume('k', 1);
    expect(refused.allowed).toBe(false);
    expect(refused.resetMs).toBeGreaterThan(0);
    expect(refused.burst).toMatchObject({ remaining: 0 });
    expect(refused.burst?.resetMs).toBeGreaterThan(59_000);
    // Without a burst the third call would already be refused.
    const plain = limiter({ points: 2 });
    await spend(plain, 'k', 2);
    expect((await plain.consume('k', 1)).allowed).toBe(false);
  });

  it('holds a key that went over for blockSeconds, past the end of its window', async () => {
    const l = limiter({ points: 1, durationSeconds: 1, blockSeconds: 3 });
    // Without a block the same key is allowed again once the window ends.
    const unblocked = limiter({ points: 1, durationSeconds: 1 });
    for (const each of [l, unblocked]) await each.consume('k', 1);
    const over = await l.consume('k', 1);
    expect((await unblocked.consume('k', 1)).allowed).toBe(false);
    expect(over.allowed).toBe(false);
    // The block, not the 1 s window, says when to come back.
    expect(over.resetMs).toBeGreaterThan(2_000);
    await sleep(1_100);
    expect((await l.consume('k', 1)).allowed).toBe(false);
    expect((await l.peek('k'))?.allowed).toBe(false);
    expect((await unblocked.consume('k', 1)).allowed).toBe(true);
  });

  it('peek reports a key’s state without counting', async () => {
    const l = limiter({ points: 2 });
    expect(await l.peek('k')).toBeUndefined();
    await l.consume('k', 1);
    for (let i = 0; i < 10; i++) expect(await l.peek('k')).toMatchObject({ allowed: true, remaining: 1 });
    expect((await l.consume('k', 1)).allowed).toBe(true);
    expect((await l.consume('k', 1)).allowed).toBe(false);
    const over = await l.peek('k');
    expect(over).toMatchObject({ allowed: false, remaining: 0 });
    expect(over?.resetMs).toBeGreaterThan(0);
  });
});

describe('createMemoryRateLimitStore with a full rule', () => {
  /** Whether `key` is still counted: its points spent, it is refused. */
  const stillLimited = async (l: ReturnType<typeof limiter>, key: string) => !(await l.consume(key, 1)).allowed;

  it('forgets the key used longest ago to make room, never one in use', async () => {
    const l = limiter({ points: 1 }, 3);
    await l.consume('busy', 1);
    await l.consume('quiet', 1);
    await l.consume('other', 1);
    // 'busy' came first but is used again (refused): 'quiet' is now the one used longest ago.
    expect(await stillLimited(l, 'busy')).toBe(true);
    await l.consume('new', 1);
    expect(await stillLimited(l, 'busy')).toBe(true);
    expect(await stillLimited(l, 'new')).toBe(true);
    // Forgotten: it starts afresh (and takes the place of 'other').
    expect((await l.consume('quiet', 1)).allowed).toBe(true);
  });

  it('holds at most maxKeys under a flood of made-up keys, and the keys in use keep their counts', async () => {
    const maxKeys = 100;
    const l = limiter({ points: 2 }, maxKeys);
    await spend(l, 'victim', 2);
    await spend(l, 'early', 2);
    for (let i = 0; i < 10_000; i++) {
      await l.consume(`made-up-${String(i)}`, 1);
      // The victim keeps calling during the flood, and stays refused all through it.
      if (i % 50 === 0) expect(await stillLimited(l, 'victim')).toBe(true);
    }
    // Only the last maxKeys keys are held: the first made-up ones, and 'early', are forgotten...
    expect((await l.consume('made-up-0', 1)).remaining).toBe(1);
    expect((await l.consume('early', 1)).allowed).toBe(true);
    // ...while the last ones are still counted.
    expect((await l.consume('made-up-9999', 1)).remaining).toBe(0);
  });

  it('keeps a blocked key that keeps asking, as the brute-force control does', async () => {
    const l = limiter({ points: 1, blockSeconds: 60 }, 3);
    await spend(l, 'attacker', 2);
    for (const key of ['a', 'b', 'c', 'd']) {
      expect((await l.peek('attacker'))?.allowed).toBe(false);
      await l.consume(key, 1);
    }
    expect((await l.peek('attacker'))?.allowed).toBe(false);
  });

  it('keeps a quiet blocked key blocked under a flood of keys counted once: only other blocks take its place', async () => {
    const l = limiter({ points: 1, blockSeconds: 60 }, 3);
    await spend(l, 'blocked', 2);
    // More new keys than the rule holds, each counted once, while the blocked key stays quiet.
    for (let i = 0; i < 10; i++) await l.consume(`once-${String(i)}`, 1);
    expect((await l.peek('blocked'))?.allowed).toBe(false);
    expect((await l.consume('blocked', 1)).resetMs).toBeGreaterThan(59_000);
    // Blocks themselves are bounded: more blocked keys than the rule holds take its place.
    for (const key of ['b1', 'b2', 'b3']) await spend(l, key, 2);
    expect((await l.consume('blocked', 1)).allowed).toBe(true);
  });

  it('applies the bound to a burst allowance too', async () => {
    const l = limiter({ points: 1, burst: { points: 1, durationSeconds: 60 } }, 2);
    await spend(l, 'k', 2);
    expect(await stillLimited(l, 'k')).toBe(true);
    // Two other keys spend their main and burst points: 'k' is forgotten in both allowances.
    for (const key of ['x', 'y']) await spend(l, key, 2);
    expect(await spend(l, 'k', 2)).toMatchObject([{ allowed: true }, { allowed: true }]);
  });

  it('refuses a maxKeys that is not a whole number of at least 1, and unknown options', () => {
    for (const maxKeys of [0, -1, 1.5, Number.NaN, Infinity, '100' as unknown as number]) {
      expect(() => createMemoryRateLimitStore({ maxKeys })).toThrow(ConfigurationError);
    }
    expect(() => createMemoryRateLimitStore({ maxkeys: 10 } as never)).toThrow(/maxKeys/);
    expect(() => createMemoryRateLimitStore({ maxKeys: 1 })).not.toThrow();
  });
});

describe('flexibleLimiter', () => {
  it('reports a failing store as RateLimitStoreError, never as over the limit', async () => {
    const down = new Error('connect ECONNREFUSED 127.0.0.1:6379');
    const l = flexibleLimiter({ name: 'x', points: 1, durationSeconds: 60, storeFailure: 'closed' }, (o) => {
      const broken = new RateLimiterMemory(o);
      broken.consume = () => Promise.reject(down);
      broken.get = () => Promise.reject(down);
      return broken;
    });
    const consumed: unknown = await l.consume('k', 1).catch((e: unknown) => e);
    expect(consumed).toBeInstanceOf(RateLimitStoreError);
    expect((consumed as RateLimitStoreError).cause).toBe(down);
    await expect(l.peek('k')).rejects.toBeInstanceOf(RateLimitStoreError);
  });

  it('spends the burst allowance once the main one is spent, then refuses', async () => {
    const l = flexibleLimiter(
      { name: 'x', points: 3, durationSeconds: 60, burst: { points: 2, durationSeconds: 5 }, storeFailure: 'open' },
      (o) => new RateLimiterMemory(o),
    );
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await l.consume('k', 1));
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, true, true, false]);
    expect(results.map((r) => r.remaining)).toEqual([2, 1, 0, 0, 0, 0]);
    expect(results.map((r) => r.burst?.remaining)).toEqual([undefined, undefined, undefined, 1, 0, 0]);
    // The wait is the sooner of the two windows: the burst's 5 s.
    expect(results[5]?.resetMs).toBeLessThanOrEqual(5_000);
    expect(results[5]?.burst?.resetMs).toBeLessThanOrEqual(5_000);
  });
});
