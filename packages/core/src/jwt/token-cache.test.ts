import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TokenCache } from './token-cache.js';

/** A token-shaped string with a signature of 64 random bytes, as ES256 makes. */
function token(body: string): string {
  return `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(body).toString('base64url')}.${randomBytes(64).toString('base64url')}`;
}

/** The same signature under another payload: what a forger can make of a token it has seen. */
function forgeryOf(original: string, body: string): string {
  const signature = original.slice(original.lastIndexOf('.') + 1);
  return `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(body).toString('base64url')}.${signature}`;
}

/** Offers a token twice, as two verifications do: stored at the second. */
function storeTwice<V>(cache: TokenCache<V>, key: string, value: V): void {
  for (let n = 0; n < 2; n += 1) if (cache.admits(key)) cache.set(key, value);
}

describe('TokenCache', () => {
  it('stores a token at its second verification, not its first', () => {
    const cache = new TokenCache<string>(100);
    const alice = token('{"sub":"alice"}');
    expect(cache.admits(alice)).toBe(false);
    expect(cache.find(alice)).toBeUndefined();
    expect(cache.admits(alice)).toBe(true);
    cache.set(alice, 'alice');
    expect(cache.find(alice)).toBe('alice');
  });

  it("never answers a token that carries a stored token's signature under another payload", () => {
    const cache = new TokenCache<string>(100);
    const alice = token('{"sub":"alice"}');
    storeTwice(cache, alice, 'alice');
    const forged = forgeryOf(alice, '{"sub":"admin"}');
    expect(cache.find(forged)).toBeUndefined();
    // Nor one that differs from it in one character before the signature.
    const flipped = alice.replace('.', '.X');
    expect(cache.find(flipped)).toBeUndefined();
    // Deleting a forgery leaves the real token's entry alone.
    cache.delete(forged);
    expect(cache.find(alice)).toBe('alice');
    cache.delete(alice);
    expect(cache.find(alice)).toBeUndefined();
  });

  it('keeps its bound, evicting the least recently found token', () => {
    const cache = new TokenCache<number>(3);
    const tokens = Array.from({ length: 4 }, (_, n) => token(`{"n":${String(n)}}`));
    for (const [n, t] of tokens.slice(0, 3).entries()) storeTwice(cache, t, n);
    expect(cache.find(tokens[0] ?? '')).toBe(0);
    storeTwice(cache, tokens[3] ?? '', 3);
    expect(tokens.map((t) => cache.find(t))).toEqual([0, undefined, 2, 3]);
  });

  it('stores nothing with room for none', () => {
    const cache = new TokenCache<string>(0);
    const alice = token('{"sub":"alice"}');
    storeTwice(cache, alice, 'alice');
    cache.set(alice, 'alice');
    expect(cache.find(alice)).toBeUndefined();
  });

  it('stays right under a flood of forgeries on one signature and of one-time tokens', () => {
    const cache = new TokenCache<string>(1_000);
    const alice = token('{"sub":"alice"}');
    storeTwice(cache, alice, 'alice');
    for (let n = 0; n < 20_000; n += 1) {
      expect(cache.find(forgeryOf(alice, `{"sub":"admin","n":${String(n)}}`))).toBeUndefined();
      // A verified one-time token is offered once: the doorkeeper keeps it out.
      const once = token(`{"n":${String(n)}}`);
      if (cache.admits(once)) cache.set(once, 'once');
    }
    expect(cache.find(alice)).toBe('alice');
  });
});
