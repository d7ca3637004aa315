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

  it('admits keys too short to fingerprint, and refuses a nonsensical size', () => {
    expect(new Doorkeeper(1).admit('short')).toBe(true);
    expect(() => new Doorkeeper(0)).toThrow(RangeError);
    expect(() => new Doorkeeper(1.5)).toThrow(RangeError);
  });
});
