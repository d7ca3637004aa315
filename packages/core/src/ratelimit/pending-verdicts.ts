/**
 * The calls of each key (a client address) that brute-force protection let through and whose
 * verdict (allowed, or refused by authentication) has not come yet, and the calls waiting for
 * one. A check that counts only failures already known lets a burst through whole: every call
 * of it is checked before the first of them fails. Counting the calls still on their way as
 * possible failures, and making the next one wait while they could reach the limit, holds a
 * burst to the limit.
 *
 * @internal
 */
export class PendingVerdicts {
  readonly #pending = new Map<string, number>();
  readonly #waiting = new Map<string, (() => void)[]>();

  /** Calls of `key` let through whose verdict has not come. */
  count(key: string): number {
    return this.#pending.get(key) ?? 0;
  }

  /** Counts a call of `key` let through; the returned function, called once or more, counts its verdict. */
  enter(key: string): () => void {
    this.#pending.set(key, this.count(key) + 1);
    let settled = false;
    return () => {
      if (settled) return;
      settled = true;
      const left = this.count(key) - 1;
      if (left > 0) this.#pending.set(key, left);
      else this.#pending.delete(key);
      const waiting = this.#waiting.get(key);
      if (waiting === undefined) return;
      this.#waiting.delete(key);
      for (const wake of waiting) wake();
    };
  }

  /** Resolves when a verdict of `key` comes, or `signal` aborts (the call ended meanwhile). */
  next(key: string, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const wake = (): void => {
        signal.removeEventListener('abort', wake);
        resolve();
      };
      signal.addEventListener('abort', wake, { once: true });
      const waiting = this.#waiting.get(key);
      if (waiting === undefined) this.#waiting.set(key, [wake]);
      else waiting.push(wake);
    });
  }
}
