import { describe, expect, it } from 'vitest';
import { LruCache } from './lru.js';

/** Which of `keys` the cache still holds (reading them marks them used: call it last). */
function held(cache: LruCache<string, number>, keys: readonly string[]): string[] {
  return keys.filter((key) => cache.get(key) !== undefined);
}

describe('LruCache', () => {
  it('evicts the least recently used key, a get counting as a use', () => {
    const cache = new LruCache<string, number>(3);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('c', 3);
    expect(cache.get('a')).toBe(1);
    cache.set('d', 4);
    expect(held(cache, ['a', 'b', 'c', 'd'])).toEqual(['a', 'c', 'd']);
  });

  it('keeps the order when the newest key is read again and again', () => {
    const cache = new LruCache<string, number>(3);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('c', 3);
    expect([cache.get('c'), cache.get('c'), cache.get('c')]).toEqual([3, 3, 3]);
    cache.set('d', 4);
    expect(held(cache, ['a', 'b', 'c', 'd'])).toEqual(['b', 'c', 'd']);
  });

  it('moves an older key to the back on its first read, and keeps it there on the next ones', () => {
    const cache = new LruCache<string, number>(3);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('c', 3);
    cache.get('a');
    cache.get('a');
    cache.set('d', 4);
    cache.set('e', 5);
    expect(held(cache, ['a', 'b', 'c', 'd', 'e'])).toEqual(['a', 'd', 'e']);
  });

  it('forgets a deleted newest key, and treats it as new when set again', () => {
    const cache = new LruCache<string, number>(3);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.get('b');
    cache.delete('b');
    expect(cache.get('b')).toBeUndefined();
    cache.set('c', 3);
    cache.set('b', 20);
    cache.get('a');
    cache.set('d', 4);
    expect(held(cache, ['a', 'b', 'c', 'd'])).toEqual(['a', 'b', 'd']);
    expect(cache.get('b')).toBe(20);
  });

  it('holds one entry with a capacity of 1, none with 0, none after clear', () => {
    const one = new LruCache<string, number>(1);
    one.set('a', 1);
    one.get('a');
    one.set('b', 2);
    expect(held(one, ['a', 'b'])).toEqual(['b']);
    one.clear();
    expect(one.size).toBe(0);
    expect(one.get('b')).toBeUndefined();
    const none = new LruCache<string, number>(0);
    none.set('a', 1);
    expect(none.get('a')).toBeUndefined();
  });

  it('replaces the value of a key set again, and makes it the newest', () => {
    const cache = new LruCache<string, number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('a', 10);
    cache.set('c', 3);
    expect(held(cache, ['a', 'b', 'c'])).toEqual(['a', 'c']);
    expect(cache.get('a')).toBe(10);
  });

  it('holds the last maxEntries keys of a flood of new ones, and a key read during it', () => {
    const cache = new LruCache<string, number>(100);
    cache.set('busy', -1);
    for (let i = 0; i < 100_000; i++) {
      cache.set(`k${String(i)}`, i);
      if (i % 50 === 0) cache.get('busy');
    }
    expect(cache.size).toBe(100);
    expect(cache.get('busy')).toBe(-1);
    expect(held(cache, ['k0', 'k99900', 'k99901', 'k99999'])).toEqual(['k99901', 'k99999']);
  });

  it('prunes the entries a test names, oldest first, and keeps the order of the rest', () => {
    const cache = new LruCache<string, number>(5);
    for (const [i, key] of ['a', 'b', 'c', 'd', 'e'].entries()) cache.set(key, i);
    const seen: string[] = [];
    cache.prune((value, key) => {
      seen.push(key);
      return value % 2 === 0;
    });
    expect(seen).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(cache.size).toBe(2);
    cache.set('f', 5);
    cache.set('g', 6);
    cache.set('h', 7);
    cache.set('i', 8);
    // 'b' was the oldest left, then 'd'.
    expect(held(cache, ['b', 'd', 'f', 'g', 'h', 'i'])).toEqual(['d', 'f', 'g', 'h', 'i']);
    cache.prune(() => true);
    expect(cache.size).toBe(0);
    cache.set('j', 9);
    expect(cache.get('j')).toBe(9);
  });
});
