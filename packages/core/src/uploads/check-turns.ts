import { performance } from 'node:perf_hooks';

/**
 * Checking done per turn of the event loop before I/O and timers run again. One slice of a
 * compressed upload may cost far more (a 12 KB gzip bomb inflates 8 MiB in one step, about
 * 50 ms): the budget bounds how many slices run back to back, not what one costs.
 */
export const TURN_BUDGET_MS = 10;

/**
 * A queue of checking work that takes turns with the rest of the process: the work queued is run
 * after the I/O of the current turn, one piece after another until `budgetMs` have passed, and
 * the rest in later turns, with I/O and timers between. A caller that queues its next piece only
 * once the last one ran (as `updateInSlices` does) has at most one piece waiting, so callers
 * take turns with each other in the order they queued.
 *
 * Without it, uploads whose chunks arrived together were checked back to back: twenty 12 KB
 * gzip bombs on twenty gRPC connections held the event loop for more than a second, every other
 * call of the server waiting.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: every upload check of the process shares UPLOAD_CHECK_TURNS
 * await UPLOAD_CHECK_TURNS.run(() => upload.update(slice));
 * ```
 *
 * @internal
 */
export class CheckTurns {
  readonly #budgetMs: number;
  readonly #now: () => number;
  /** Work not run yet, oldest first: one piece per caller, so as many as the uploads being checked. */
  readonly #waiting: (() => void)[] = [];
  #scheduled = false;

  constructor(budgetMs: number = TURN_BUDGET_MS, now: () => number = () => performance.now()) {
    this.#budgetMs = budgetMs;
    this.#now = now;
  }

  /** Runs `work` in a later turn, when its place in the queue comes; settles as it returns or throws. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#waiting.push(() => {
        try {
          resolve(work());
        } catch (err) {
          // As thrown: a signal's reason may be any value, and the caller awaits that reason.
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
          reject(err);
        }
      });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(this.#drain);
      }
    });
  }

  /** Pieces of work waiting for their turn. */
  get waiting(): number {
    return this.#waiting.length;
  }

  readonly #drain = (): void => {
    const started = this.#now();
    // Work queued while this runs (none from `updateInSlices`, which queues its next piece from
    // a promise reaction, after this returns) waits for a later turn, after I/O.
    const queued = this.#waiting.length;
    let ran = 0;
    while (ran < queued) {
      const work = this.#waiting[ran];
      ran += 1;
      work?.();
      if (this.#now() - started >= this.#budgetMs) break;
    }
    this.#waiting.splice(0, ran);
    if (this.#waiting.length > 0) setImmediate(this.#drain);
    else this.#scheduled = false;
  };
}

/** The turns every upload check of the process takes (`updateInSlices`). */
export const UPLOAD_CHECK_TURNS = new CheckTurns();
