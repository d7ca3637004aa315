import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TokenMinter } from './fixtures.js';
import type { TokenPlan } from './load.js';

/**
 * Pre-minted tokens in a file, one per line, that generators cycle through (minting during the
 * run would cost the generator's CPU, not the server's).
 *
 * The pool must be larger than the verified-token cache (10 000 by default): a token comes back
 * only after every other token of the pool, long after a least-recently-used cache dropped it.
 * The cursor carries on where the previous run stopped, so a round never starts on tokens the
 * previous round has just put in the cache.
 */
export class TokenPool {
  readonly file: string;
  readonly size: number;
  #cursor = 0;

  constructor(directory: string, name: string, tokens: readonly string[]) {
    this.file = join(directory, `${name}.tokens`);
    this.size = tokens.length;
    writeFileSync(this.file, tokens.join('\n') + '\n');
  }

  static mint(directory: string, name: string, minter: TokenMinter, count: number): TokenPool {
    return new TokenPool(directory, name, minter.many(count));
  }

  plan(): TokenPlan {
    return { kind: 'pool', file: this.file, start: this.#cursor };
  }

  /** Starts again from the first token (for a fresh server, which has seen none of them). */
  rewind(): void {
    this.#cursor = 0;
  }

  /** After a run: `used` tokens were sent (the answered ones plus those still in flight at the end). */
  advance(used: number): void {
    this.#cursor = (this.#cursor + used) % this.size;
  }
}
