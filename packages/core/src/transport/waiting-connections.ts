/**
 * The connections of a port still in their TLS handshake, by client address, that the
 * connection gate closes at the cap to make room for a new one. The one it gives up is the
 * oldest of the address waiting on the most: closing the oldest overall let a flood of new
 * connections from a few addresses close a client whose handshake takes a round trip or two
 * (200 ms away, 5 of 7 attempts failed), since each new connection closed the next oldest.
 * Now such a client, with one connection waiting, is closed only once every address has at
 * most one waiting too. Each step costs the same however many addresses wait.
 *
 * @example
 * ```ts
 * const waiting = new WaitingConnections<Socket>();
 * waiting.add(socket, '203.0.113.7');
 * const closed = waiting.takeFromBusiest(); // the oldest of the address with the most waiting
 * ```
 */
export class WaitingConnections<T> {
  /** Each address's waiting connections, oldest first. */
  readonly #byAddress = new Map<string, Set<T>>();
  readonly #addressOf = new Map<T, string>();
  /** The addresses with each number of waiting connections (index: the number). */
  readonly #addressesWith: Set<string>[] = [];
  #most = 0;

  /** Connections waiting now. */
  get size(): number {
    return this.#addressOf.size;
  }

  add(connection: T, address: string): void {
    if (this.#addressOf.has(connection)) return;
    let waiting = this.#byAddress.get(address);
    if (waiting === undefined) {
      waiting = new Set();
      this.#byAddress.set(address, waiting);
    }
    this.#move(address, waiting.size, waiting.size + 1);
    waiting.add(connection);
    this.#addressOf.set(connection, address);
  }

  /** Takes `connection` out (its handshake ended, or it closed); whether it was waiting. */
  delete(connection: T): boolean {
    const address = this.#addressOf.get(connection);
    if (address === undefined) return false;
    this.#addressOf.delete(connection);
    const waiting = this.#byAddress.get(address);
    if (waiting === undefined) return true;
    waiting.delete(connection);
    this.#move(address, waiting.size + 1, waiting.size);
    if (waiting.size === 0) this.#byAddress.delete(address);
    return true;
  }

  /** Takes out and returns the oldest waiting connection of the address waiting on the most. */
  takeFromBusiest(): T | undefined {
    const address = this.#addressesWith[this.#most]?.values().next().value;
    if (address === undefined) return undefined;
    const oldest = this.#byAddress.get(address)?.values().next().value;
    if (oldest !== undefined) this.delete(oldest);
    return oldest;
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
