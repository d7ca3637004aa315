import { hash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Doorkeeper } from './doorkeeper.js';

const digest = (n: number): string => hash('sha256', `token-${String(n)}`, 'base64url');

describe('Doorkeeper', () => {
  it('admits a key on its second sighting, not its first', () => {
    const doorkeeper = new Doorkeeper(100);
    expect(doorkeeper.admit(digest(1))).toBe(false);
    expect(doorkeeper.admit(digest(1))).toBe(true);
    expect(doorkeeper.admit(digest(1))).toBe(true);
    expect(doorkeeper.admit(digest(2))).toBe(false);
  });

  it('almost never admits a key it has not seen, even after a flood of one-time keys', () => {
    const doorkeeper = new Doorkeeper(10_000);
    for (let n = 0; n < 200_000; n++) doorkeeper.admit(digest(n));
    let falseAdmissions = 0;
    for (let n = 200_000; n < 300_000; n++) if (doorkeeper.admit(digest(n))) falseAdmissions++;
    // Two fingerprints of 32 bits each: a false "seen" is a 1-in-2^31 event per slot.
    expect(falseAdmissions).toBeLessThan(3);
  });

  it('still admits recent keys that come back while one-time keys stream past', () => {
    const doorkeeper = new Doorkeeper(10_000);
    const regulars = Array.from({ length: 100 }, (_, n) => digest(1_000_000 + n));
    for (const key of regulars) doorkeeper.admit(key);
    // 2,000 one-time keys in between: each takes a free slot of its bucket, or overwrites one.
    for (let n = 0; n < 2_000; n++) doorkeeper.admit(digest(n));
    const admitted = regulars.filter((key) => doorkeeper.admit(key)).length;
    expect(admitted).toBeGreaterThanOrEqual(90);
  });

  it('admits, on their second round, keys used in turn, those that share a slot included', () => {
    // 5,000 regular clients, each reusing its own token: with one slot per key, about 700 of
    // them shared a slot with another and pushed it out on every sighting, never admitted.
    const doorkeeper = new Doorkeeper(10_000);
    const regulars = Array.from({ length: 5_000 }, (_, n) => digest(2_000_000 + n));
    for (const key of regulars) doorkeeper.admit(key);
    // The few left out share a bucket with four others (a cache admits them a sighting later).
    expect(regulars.filter((key) => doorkeeper.admit(key)).length).toBeGreaterThanOrEqual(4_990);
  });

  it('remembers a key while as many new keys as the cache holds arrive, and forgets it after twice as many', () => {
    const entries = 1_000;
    let next = 0;
    const fresh = (): string => digest(3_000_000 + next++);
    // Wherever the key falls in a generation, it outlives entries - 1 new keys after it and not 2 × entries.
    for (const before of [0, 1, 500, 998, 999]) {
      const doorkeeper = new Doorkeeper(entries);
      for (let n = 0; n < before; n++) doorkeeper.admit(fresh());
      const kept = fresh();
      const forgotten = fresh();
      doorkeeper.admit(kept);
      doorkeeper.admit(forgotten);
      for (let n = 0; n < entries - 2; n++) doorkeeper.admit(fresh());
      expect(doorkeeper.admit(kept)).toBe(true);
      for (let n = 0; n < 2 * entries; n++) doorkeeper.admit(fresh());
      expect(doorkeeper.admit(forgotten)).toBe(false);
    }
  });

  it('admits none of a crowd of keys taking turns that is larger than the cache', () => {
    // 30,000 clients taking turns in front of a 10,000-entry cache: admitted on its second call,
    // each token was evicted before its third by the 10,000 admitted after it.
    const doorkeeper = new Doorkeeper(10_000);
    const crowd = Array.from({ length: 30_000 }, (_, n) => digest(4_000_000 + n));
    let admitted = 0;
    for (let round = 0; round < 3; round++) for (const key of crowd) if (doorkeeper.admit(key)) admitted++;
    expect(admitted).toBe(0);
  });

  it('admits keys too short to fingerprint, and refuses a nonsensical size', () => {
    expect(new Doorkeeper(1).admit('short')).toBe(true);
    expect(() => new Doorkeeper(0)).toThrow(RangeError);
    expect(() => new Doorkeeper(1.5)).toThrow(RangeError);
  });
});
