import { SecurityError } from '@fluxguard/core';
import { wholeNumber } from '@fluxguard/core/adapter';

/**
 * How many bytes of `GetArtifact` answers the gRPC server holds at once: in all, and for one
 * caller. gRPC sends an artifact as one message, held whole in memory from the read until the
 * client has taken it (or the deadline resets the stream): without a bound, a few readers each
 * within their own 32 calls in flight, asking for large artifacts and reading nothing, made the
 * server hold gigabytes (4 readers x 32 calls x 16 MiB: 2.6 GB). HTTP streams the file instead.
 * An answer that does not fit is refused at once with `UNAVAILABLE` (audit reason
 * `app.answer_budget`); its bytes are given back when its call ends in any way. The process
 * holds up to about twice the budget: the bytes read, and the message grpc-js encodes from them.
 *
 * @example
 * ```ts
 * await startGrpcServer({ dataDir, security, answerBudget: { totalBytes: 256 << 20, perCallerBytes: 128 << 20 } });
 * ```
 */
export interface AnswerBudgetLimits {
  /** Bytes of answers held at once, all callers. */
  readonly totalBytes: number;
  /** Bytes of answers held at once for one caller: at least the largest artifact. */
  readonly perCallerBytes: number;
}

/**
 * The reference server's budget: 512 MiB in all, 128 MiB (two of the largest artifacts) per caller.
 *
 * @example
 * ```ts
 * const limits = { ...ANSWER_BUDGET, totalBytes: 1 << 30 };
 * ```
 */
export const ANSWER_BUDGET: AnswerBudgetLimits = Object.freeze({
  totalBytes: 512 * 1024 * 1024,
  perCallerBytes: 128 * 1024 * 1024,
});

/**
 * The bytes of answers held now, by caller; see {@link AnswerBudgetLimits}.
 *
 * @example
 * ```ts
 * const release = budget.reserve(subject, artifact.size); // throws unavailable when it does not fit
 * signal.addEventListener('abort', release, { once: true });
 * ```
 */
export class AnswerBudget {
  readonly #limits: AnswerBudgetLimits;
  readonly #byCaller = new Map<string, number>();
  #total = 0;

  constructor(limits: AnswerBudgetLimits) {
    for (const [name, value] of Object.entries(limits))
      wholeNumber(value, `answer budget: "${name}"`, { unit: 'bytes' });
    this.#limits = limits;
  }

  /**
   * Takes `bytes` for `caller`, and returns the function that gives them back (once, however
   * often it is called). Throws `unavailable` (reason `app.answer_budget`) when they do not fit.
   */
  reserve(caller: string, bytes: number): () => void {
    const held = this.#byCaller.get(caller) ?? 0;
    if (this.#total + bytes > this.#limits.totalBytes || held + bytes > this.#limits.perCallerBytes) {
      // Clients fill it at will (large reads they do not take): a refusal line, not a server error.
      throw new SecurityError('unavailable', { reason: 'app.answer_budget', clientCaused: true });
    }
    this.#total += bytes;
    this.#byCaller.set(caller, held + bytes);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#total -= bytes;
      const left = (this.#byCaller.get(caller) ?? bytes) - bytes;
      if (left > 0) this.#byCaller.set(caller, left);
      else this.#byCaller.delete(caller);
    };
  }

  /** Bytes held now, all callers. */
  get heldBytes(): number {
    return this.#total;
  }
}
