import { Doorkeeper } from '../cache/doorkeeper.js';
import { LruCache } from '../cache/lru.js';

/** One cached value, with the whole token it belongs to. */
interface Held<V> {
  readonly token: string;
  readonly value: V;
}

/**
 * The last part of a compact JWS, its signature: the cache's key. Tokens of one issuer share
 * their first hundreds of characters and differ in their signatures, which are a fraction of
 * their length and as evenly spread as a digest. A string without a dot is its own key.
 */
function signatureOf(token: string): string {
  return token.slice(token.lastIndexOf('.') + 1);
}

/**
 * Verified tokens and what the verifier keeps of each, bounded (LRU). A token enters on its
 * second verification, as a {@link Doorkeeper} admits it, so that one-time tokens cost it
 * nothing.
 *
 * Found by the token's signature, and a find answers only when the whole token is the one that
 * was stored: a token that reuses another's signature under another header or payload (a
 * forgery) is a miss, never the other token's value. That costs a look-up of the signature
 * (tens of characters hashed) and one string comparison, less than the SHA-256 of the whole
 * token that was the key before, and it keeps the token in memory beside its value: at most
 * `maxEntries` tokens of the verifier's `maxTokenLength`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the JWT verifier's cache
 * const cache = new TokenCache<string>(10_000);
 * if (cache.admits(token)) cache.set(token, 'alice'); // first verification: not stored
 * if (cache.admits(token)) cache.set(token, 'alice'); // second: stored
 * cache.find(token); // 'alice'
 * ```
 */
export class TokenCache<V> {
  readonly #entries: LruCache<string, Held<V>>;
  readonly #doorkeeper: Doorkeeper | undefined;

  /** @param maxEntries - at most this many tokens are kept; 0 keeps none. */
  constructor(maxEntries: number) {
    this.#entries = new LruCache<string, Held<V>>(maxEntries);
    this.#doorkeeper = maxEntries > 0 ? new Doorkeeper(maxEntries) : undefined;
  }

  /** The value of exactly this token, marking it as the most recently used. */
  find(token: string): V | undefined {
    const held = this.#entries.get(signatureOf(token));
    return held?.token === token ? held.value : undefined;
  }

  /** Forgets this token (and nothing stored for another token). */
  delete(token: string): void {
    const key = signatureOf(token);
    if (this.#entries.get(key)?.token === token) this.#entries.delete(key);
  }

  /**
   * Whether a token just verified should be stored now: `false` on its first verification
   * (remembered by the doorkeeper), `true` from its second on. Ask only for verified tokens,
   * so that forged ones cannot crowd the doorkeeper.
   */
  admits(token: string): boolean {
    return this.#doorkeeper?.admit(signatureOf(token)) === true;
  }

  /** Stores the value of a token, marking it as the most recently used. */
  set(token: string, value: V): void {
    this.#entries.set(signatureOf(token), { token, value });
  }
}
