/**
 * A small bounded LRU map. A `Map` keeps insertion order, so re-inserting on a hit moves an
 * entry to the back and the first key is always the least recently used: no dependency needed
 * for the few lines this takes.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (for adapters: @fluxguard/core/adapter)
 * const cache = new LruCache<string, number>(2);
 * cache.set('a', 1); cache.set('b', 2); cache.get('a'); cache.set('c', 3); // evicts 'b'
 * ```
 */
export class LruCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #maxEntries: number;
  /**
   * The most recently used key, if still held: a hit on it is already in place, and moving it
   * (a delete and an insert, which leave the map a tombstone to compact) would change nothing.
   */
  #newest: K | undefined;
  #hasNewest = false;

  /** @param maxEntries - at most this many entries are kept; 0 keeps none. */
  constructor(maxEntries: number) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 0) {
      throw new RangeError('LruCache: maxEntries must be a non-negative integer');
    }
    this.#maxEntries = maxEntries;
  }

  /** The number of entries held. */
  get size(): number {
    return this.#entries.size;
  }

  /** The value for `key`, marking it as the most recently used. */
  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value === undefined) return undefined;
    if (!this.#hasNewest || this.#newest !== key) {
      this.#entries.delete(key);
      this.#entries.set(key, value);
      this.#markNewest(key);
    }
    return value;
  }

  /** Stores `value`, evicting the least recently used entry when full. */
  set(key: K, value: V): void {
    if (this.#maxEntries === 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, value);
    this.#markNewest(key);
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
  }

  /** Removes one entry. */
  delete(key: K): void {
    this.#entries.delete(key);
    if (this.#hasNewest && this.#newest === key) this.#forgetNewest();
  }

  /** Removes every entry. */
  clear(): void {
    this.#entries.clear();
    this.#forgetNewest();
  }

  #markNewest(key: K): void {
    this.#newest = key;
    this.#hasNewest = true;
  }

  #forgetNewest(): void {
    this.#newest = undefined;
    this.#hasNewest = false;
  }
}
