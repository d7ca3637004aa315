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
});
