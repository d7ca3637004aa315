/** Connections of one address a search looks at, at most (nginx drains 32 idle ones at a time). */
export const SEARCH_PER_ADDRESS = 8;
/** Connections a search looks at in all, at most: what one new connection at the cap costs. */
export const SEARCH_TOTAL = 64;

/**
 * What a search makes of a connection: `take` it, take it `if-must` (when its address has none
 * to take), or `skip` it.
 */
export type Judgement = 'take' | 'if-must' | 'skip';

/** The addresses holding one number of connections, in a list of such buckets by that number. */
interface Bucket {
  readonly count: number;
  /** In the order they came to this number (those passed over by a search go last). */
  readonly addresses: Set<string>;
  higher: Bucket | undefined;
  lower: Bucket | undefined;
}

/**
 * Connections of a port by client address, that the connection gate closes at the cap to make
 * room for a new one (those still in their TLS handshake, and those past it). The one given up
 * is the oldest of the address holding the most: closing the oldest overall let a flood of new
 * connections from a few addresses close a client whose handshake takes a round trip or two
 * (200 ms away, 5 of 7 attempts failed), since each new connection closed the next oldest.
 * Addresses are kept in buckets by how many they hold, linked from most to fewest, so that
 * every step costs the same however many addresses there are and however many each holds.
 *
 * @example
 * ```ts
 * const waiting = new ConnectionsByAddress<Socket>();
 * waiting.add(socket, '203.0.113.7');
 * const oldest = waiting.busiest(); // the oldest of the address holding the most
 * if (oldest !== undefined) waiting.delete(oldest);
 * ```
 */
export class ConnectionsByAddress<T> {
  /** Each address's connections, oldest first (those passed over by a search go last). */
  readonly #byAddress = new Map<string, Set<T>>();
  readonly #addressOf = new Map<T, string>();
  readonly #bucketOf = new Map<string, Bucket>();
  #most: Bucket | undefined;
  #fewest: Bucket | undefined;

  /** Connections held now. */
  get size(): number {
    return this.#addressOf.size;
  }

  has(connection: T): boolean {
    return this.#addressOf.has(connection);
  }

  /** The address `connection` was added with, or `undefined` if it is not here. */
  addressOf(connection: T): string | undefined {
    return this.#addressOf.get(connection);
  }

  add(connection: T, address: string): void {
    if (this.#addressOf.has(connection)) return;
    let held = this.#byAddress.get(address);
    if (held === undefined) {
      held = new Set();
      this.#byAddress.set(address, held);
    }
    held.add(connection);
    this.#addressOf.set(connection, address);
    this.#moveUp(address);
  }

  /** Takes `connection` out (its handshake ended, or it closed): its address, or `undefined` if it was not here. */
  delete(connection: T): string | undefined {
    const address = this.#addressOf.get(connection);
    if (address === undefined) return undefined;
    this.#addressOf.delete(connection);
    const held = this.#byAddress.get(address);
    held?.delete(connection);
    if (held?.size === 0) this.#byAddress.delete(address);
    this.#moveDown(address);
    return address;
  }

  /**
   * The oldest connection of the address holding the most, or with `judge`, the first it takes
   * in that order (addresses by how many they hold, each address's oldest first), else the first
   * it would take if it must, of the first address that has one: an address's connections taken
   * only if they must go before the next address is looked at. Looks at no more than
   * {@link SEARCH_PER_ADDRESS} of each address and {@link SEARCH_TOTAL} in all; what it gives
   * stays here until deleted. Those passed over go last, each in its address and each address
   * among those holding as many, so that the next search looks at others of theirs first.
   */
  busiest(judge?: (connection: T) => Judgement): T | undefined {
    const passedOver: T[] = [];
    const addressesPassedOver: string[] = [];
    let found: T | undefined;
    search: for (let bucket = this.#most; bucket !== undefined; bucket = bucket.lower) {
      for (const address of bucket.addresses) {
        let looked = 0;
        for (const connection of this.#byAddress.get(address) ?? []) {
          const judgement = judge === undefined ? 'take' : judge(connection);
          if (judgement === 'take') {
            found = connection;
            break search;
          }
          if (judgement === 'if-must') found ??= connection;
          else passedOver.push(connection);
          looked += 1;
          if (looked >= SEARCH_PER_ADDRESS || passedOver.length >= SEARCH_TOTAL) break;
        }
        if (found !== undefined) break search;
        addressesPassedOver.push(address);
        if (passedOver.length >= SEARCH_TOTAL) break search;
      }
    }
    // Moved after the search: a Set visits again what is added to it while it is read.
    for (const connection of passedOver) {
      const held = this.#byAddress.get(this.#addressOf.get(connection) ?? '');
      held?.delete(connection);
      held?.add(connection);
    }
    for (const address of addressesPassedOver) {
      const addresses = this.#bucketOf.get(address)?.addresses;
      addresses?.delete(address);
      addresses?.add(address);
    }
    return found;
  }

  /** `address` holds one more: into the bucket above its own. */
  #moveUp(address: string): void {
    const from = this.#bucketOf.get(address);
    const count = (from?.count ?? 0) + 1;
    const above = from === undefined ? this.#fewest : from.higher;
    const to = above?.count === count ? above : this.#link({ count, addresses: new Set(), higher: above, lower: from });
    this.#leave(address, from);
    to.addresses.add(address);
    this.#bucketOf.set(address, to);
  }

  /** `address` holds one fewer: into the bucket below its own, or out when it holds none. */
  #moveDown(address: string): void {
    const from = this.#bucketOf.get(address);
    if (from === undefined) return;
    const count = from.count - 1;
    if (count === 0) {
      this.#leave(address, from);
      this.#bucketOf.delete(address);
      return;
    }
    const below = from.lower;
    const to = below?.count === count ? below : this.#link({ count, addresses: new Set(), higher: from, lower: below });
    this.#leave(address, from);
    to.addresses.add(address);
    this.#bucketOf.set(address, to);
  }

  /** Links a new bucket between its `lower` and `higher` neighbours. */
  #link(bucket: Bucket): Bucket {
    if (bucket.lower === undefined) this.#fewest = bucket;
    else bucket.lower.higher = bucket;
    if (bucket.higher === undefined) this.#most = bucket;
    else bucket.higher.lower = bucket;
    return bucket;
  }

  /** Takes `address` out of `bucket`, and the bucket out of the list once it is empty. */
  #leave(address: string, bucket: Bucket | undefined): void {
    if (bucket === undefined) return;
    bucket.addresses.delete(address);
    if (bucket.addresses.size > 0) return;
    if (bucket.lower === undefined) this.#fewest = bucket.higher;
    else bucket.lower.higher = bucket.higher;
    if (bucket.higher === undefined) this.#most = bucket.lower;
    else bucket.higher.lower = bucket.lower;
  }
}
