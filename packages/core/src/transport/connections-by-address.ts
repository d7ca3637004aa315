/**
 * Connections of a port by client address, that the connection gate closes at the cap to make
 * room for a new one: those still in their TLS handshake, and those that serve nothing. The one
 * given up is the oldest of the address holding the most: closing the oldest overall let a flood
 * of new connections from a few addresses close a client whose handshake takes a round trip or
 * two (200 ms away, 5 of 7 attempts failed), since each new connection closed the next oldest.
 * Now a client with one connection here is closed only once every address has at most one too.
 * Each step costs the same however many addresses there are.
 *
 * @example
 * ```ts
 * const waiting = new ConnectionsByAddress<Socket>();
 * waiting.add(socket, '203.0.113.7');
 * const closed = waiting.takeFromBusiest(); // the oldest of the address with the most
 * ```
 */
/** Connections of one address a search looks at, at most (nginx drains 32 idle ones at a time). */
export const SEARCH_PER_ADDRESS = 8;
/** Connections a search looks at in all, at most: what one new connection at the cap costs. */
export const SEARCH_TOTAL = 64;

export class ConnectionsByAddress<T> {
  /** Each address's connections, oldest first (those passed over by a search go last). */
  readonly #byAddress = new Map<string, Set<T>>();
  readonly #addressOf = new Map<T, string>();
  /** The addresses with each number of connections (index: the number). */
  readonly #addressesWith: Set<string>[] = [];
  #most = 0;

  /** Connections held now. */
  get size(): number {
    return this.#addressOf.size;
  }

  has(connection: T): boolean {
    return this.#addressOf.has(connection);
  }

  add(connection: T, address: string): void {
    if (this.#addressOf.has(connection)) return;
    let held = this.#byAddress.get(address);
    if (held === undefined) {
      held = new Set();
      this.#byAddress.set(address, held);
    }
    this.#move(address, held.size, held.size + 1);
    held.add(connection);
    this.#addressOf.set(connection, address);
  }

  /** Takes `connection` out (its handshake ended, or it closed): its address, or `undefined` if it was not here. */
  delete(connection: T): string | undefined {
    const address = this.#addressOf.get(connection);
    if (address === undefined) return undefined;
    this.#addressOf.delete(connection);
    const held = this.#byAddress.get(address);
    if (held === undefined) return address;
    held.delete(connection);
    this.#move(address, held.size + 1, held.size);
    if (held.size === 0) this.#byAddress.delete(address);
    return address;
  }

  /**
   * Takes out and returns the oldest connection of the address holding the most, or with
   * `accept`, the first that `accept` takes in that order (addresses by how many they hold, each
   * address's oldest first), looking at no more than {@link SEARCH_PER_ADDRESS} of each address
   * and {@link SEARCH_TOTAL} in all. Those passed over go last, each in its address and each
   * address among those holding as many, so that the next search looks at others first: a pool
   * busy for long never hides the rest for good.
   */
  takeFromBusiest(accept?: (connection: T) => boolean): T | undefined {
    const passedOver: T[] = [];
    const addressesPassedOver: string[] = [];
    let found: T | undefined;
    search: for (let count = this.#most; count > 0; count--) {
      for (const address of this.#addressesWith[count] ?? []) {
        let looked = 0;
        for (const connection of this.#byAddress.get(address) ?? []) {
          if (accept === undefined || accept(connection)) {
            found = connection;
            break search;
          }
          passedOver.push(connection);
          if (++looked >= SEARCH_PER_ADDRESS || passedOver.length >= SEARCH_TOTAL) break;
        }
        addressesPassedOver.push(address);
        if (passedOver.length >= SEARCH_TOTAL) break search;
      }
    }
    // Moved after the search: a Set visits again what is added to it while it is read.
    for (const connection of passedOver) {
      const address = this.#addressOf.get(connection);
      const held = address === undefined ? undefined : this.#byAddress.get(address);
      held?.delete(connection);
      held?.add(connection);
    }
    for (const address of addressesPassedOver) {
      const addresses = this.#addressesWith[this.#byAddress.get(address)?.size ?? 0];
      addresses?.delete(address);
      addresses?.add(address);
    }
    if (found !== undefined) this.delete(found);
    return found;
  }

  #move(address: string, from: number, to: number): void {
    if (from > 0) this.#addressesWith[from]?.delete(address);
    if (to > 0) {
      let addresses = this.#addressesWith[to];
      if (addresses === undefined) {
        addresses = new Set();
        this.#addressesWith[to] = addresses;
      }
      addresses.add(address);
    }
    if (to > this.#most) this.#most = to;
    while (this.#most > 0 && (this.#addressesWith[this.#most]?.size ?? 0) === 0) this.#most -= 1;
  }
}
