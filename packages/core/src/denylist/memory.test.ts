import { describe, expect, it } from 'vitest';
import { FluxguardError } from '../errors/fluxguard-error.js';
import { createMemoryDenylist } from './memory.js';

describe('createMemoryDenylist', () => {
  it('remembers a revocation until the token expires (plus grace), then forgets it', async () => {
    let clock = 1_000_000;
    const d = createMemoryDenylist({ graceMs: 300_000, now: () => clock });
    await d.revoke('j1', new Date(clock + 5000));
    expect(await d.isRevoked('j1')).toBe(true);
    expect(await d.isRevoked('j2')).toBe(false);
    clock += 304_999;
    expect(await d.isRevoked('j1')).toBe(true);
    clock += 2;
    expect(await d.isRevoked('j1')).toBe(false);
  });

  it('is bounded and refuses loudly rather than dropping a revocation', async () => {
    let clock = 0;
    const d = createMemoryDenylist({ maxEntries: 2, now: () => clock });
    await d.revoke('a', new Date(100));
    await d.revoke('b', new Date(1000));
    await expect(d.revoke('c', new Date(1000))).rejects.toBeInstanceOf(FluxguardError);
    clock = 300_200; // 'a' expired, with its five minutes of grace: swept to make room
    await d.revoke('c', new Date(1000));
    expect(await d.isRevoked('c')).toBe(true);
  });

  it('validates its input', async () => {
    const d = createMemoryDenylist();
    await expect(d.revoke('', new Date())).rejects.toThrow(/jti/);
    await expect(d.revoke('x', new Date(Number.NaN))).rejects.toThrow(/valid Date/);
    expect(() => createMemoryDenylist({ maxEntries: 0 })).toThrow(/maxEntries/);
  });

  it('keeps a revocation at least as long as a verifier accepts the token after its expiry', () => {
    // A verifier may accept a token up to 300 s after its expiry (clockToleranceSeconds): a
    // revocation dropped sooner let a revoked token back in.
    expect(() => createMemoryDenylist({ graceMs: 0 })).toThrow(
      'createMemoryDenylist: "graceMs" must be a whole number of ms, from 300000 to 2147483647',
    );
    expect(() => createMemoryDenylist({ graceMs: 1e300 })).toThrow(/"graceMs" must be a whole number/);
  });
});
