/** One entry, linked to its neighbours in the order of use. */
interface Node<K, V> {
  readonly key: K;
  value: V;
  /** The entry used just before this one (towards the oldest). */
  older: Node<K, V> | undefined;
  /** The entry used just after this one (towards the newest). */
  newer: Node<K, V> | undefined;
}

/**
 * A bounded LRU map: a `Map` to find an entry, and a doubly linked list through the entries in
 * the order of use, so that a use and an eviction each cost a few pointer writes. Not the
 * `Map`'s own insertion order (re-inserting on a use, evicting `keys().next()`): V8 leaves a
 * deleted entry as a hole until it compacts the table, and every `keys().next()` walks the
 * holes at the front again, so a full map that evicts on every insert, as a flood of new keys
 * makes it, measured 10–110 µs an insert where this costs well under one.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (for adapters: @fluxguard/core/adapter)
 * const cache = new LruCache<string, number>(2);
 * cache.set('a', 1); cache.set('b', 2); cache.get('a'); cache.set('c', 3); // evicts 'b'
 * ```
 */
export class LruCache<K, V> {
  readonly #nodes = new Map<K, Node<K, V>>();
  readonly #maxEntries: number;
  #oldest: Node<K, V> | undefined;
  #newest: Node<K, V> | undefined;

  /** @param maxEntries - at most this many entries are kept; 0 keeps none. */
  constructor(maxEntries: number) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 0) {
      throw new RangeError('LruCache: maxEntries must be a non-negative integer');
    }
    this.#maxEntries = maxEntries;
  }

  /** The number of entries held. */
  get size(): number {
    return this.#nodes.size;
  }

  /** The value for `key`, marking it as the most recently used. */
  get(key: K): V | undefined {
    const node = this.#nodes.get(key);
    if (node === undefined) return undefined;
    this.#moveToNewest(node);
    return node.value;
  }

  /** Stores `value` as the most recently used, evicting the least recently used entry when full. */
  set(key: K, value: V): void {
    if (this.#maxEntries === 0) return;
    const held = this.#nodes.get(key);
    if (held !== undefined) {
      held.value = value;
      this.#moveToNewest(held);
      return;
    }
    if (this.#nodes.size >= this.#maxEntries && this.#oldest !== undefined) this.#remove(this.#oldest);
    const node: Node<K, V> = { key, value, older: undefined, newer: undefined };
    this.#nodes.set(key, node);
    this.#link(node);
  }

  /** Removes one entry. */
  delete(key: K): void {
    const node = this.#nodes.get(key);
    if (node !== undefined) this.#remove(node);
  }

  /** Removes every entry for which `stale` is true, oldest first; the others keep their order. */
  prune(stale: (value: V, key: K) => boolean): void {
    for (let node = this.#oldest; node !== undefined;) {
      const next = node.newer;
      if (stale(node.value, node.key)) this.#remove(node);
      node = next;
    }
  }

  /** Removes every entry. */
  clear(): void {
    this.#nodes.clear();
    this.#oldest = undefined;
    this.#newest = undefined;
  }

  #moveToNewest(node: Node<K, V>): void {
    if (node === this.#newest) return;
    this.#unlink(node);
    this.#link(node);
  }

  #remove(node: Node<K, V>): void {
    this.#unlink(node);
    this.#nodes.delete(node.key);
  }

  /** Appends `node` (not in the list) as the newest. */
  #link(node: Node<K, V>): void {
    node.older = this.#newest;
    node.newer = undefined;
    if (this.#newest === undefined) this.#oldest = node;
    else this.#newest.newer = node;
    this.#newest = node;
  }

  #unlink(node: Node<K, V>): void {
    const { older, newer } = node;
    if (older === undefined) this.#oldest = newer;
    else older.newer = newer;
    if (newer === undefined) this.#newest = older;
    else newer.older = older;
    node.older = undefined;
    node.newer = undefined;
  }
}
