/**
 * Runs the Redis commands of one store with a deadline each and a cap on those still waiting
 * for Redis. ioredis keeps a command until Redis answers, whatever the caller's deadline, so a
 * Redis that hangs (its process stopped, a full network buffer) while calls keep coming would
 * hold a command, and its memory, for each of them. A command counts as waiting until Redis
 * answers it, not until its deadline; once `maxPending` wait, the next fails at once.
 *
 * @internal
 */
export interface BoundedCommands {
  /** Runs `command`; rejects when it fails, outlasts the deadline, or too many already wait. */
  run<T>(command: () => Promise<T>): Promise<T>;
  /** Commands sent that Redis has not answered yet. */
  readonly pending: number;
}

/**
 * Commands of one store, `timeoutMs` each, at most `maxPending` waiting at once.
 *
 * @example
 * ```ts
 * const commands = boundedCommands(250, 1_000);
 * const exists = await commands.run(() => redis.exists('fluxguard:jti:abc'));
 * ```
 *
 * @internal
 */
export function boundedCommands(timeoutMs: number, maxPending: number): BoundedCommands {
  let pending = 0;
  const answered = (): void => {
    pending -= 1;
  };
  return {
    get pending() {
      return pending;
    },
    run<T>(command: () => Promise<T>): Promise<T> {
      if (pending >= maxPending) {
        return Promise.reject(new Error(`${String(maxPending)} Redis commands are already waiting for an answer`));
      }
      let answer: Promise<T>;
      try {
        answer = command();
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error('the Redis command failed'));
      }
      pending += 1;
      answer.then(answered, answered);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          // An answer that came while the event loop was busy is read in this turn's poll phase,
          // which runs before setImmediate callbacks: only a Redis that really is slow fails.
          setImmediate(() => {
            reject(new Error(`Redis took longer than ${String(timeoutMs)} ms`));
          });
        }, timeoutMs);
        answer.then(
          (value) => {
            clearTimeout(timer);
            resolve(value);
          },
          (error: unknown) => {
            clearTimeout(timer);
            reject(error instanceof Error ? error : new Error('the Redis command failed'));
          },
        );
      });
    },
  };
}
