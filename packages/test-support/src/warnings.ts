// Process warnings (`process.emitWarning`) a test reads back, as the start-up checks of
// fluxguard's packages say what they found.

/** A process warning: an `Error` with the `code` given to `process.emitWarning`. */
export type ProcessWarning = Error & { readonly code?: string };

/** What {@link captureWarnings} gives: the warnings seen so far, and the end of the capture. */
export interface CapturedWarnings {
  /** Every warning of the code seen so far; the same array grows as warnings come. */
  readonly warnings: ProcessWarning[];
  /** Their messages. */
  messages(): string[];
  /** Resolves once warnings emitted until now are seen: Node emits each on a later tick. */
  settled(): Promise<void>;
  /** Stops listening; call it in a `finally`. */
  stop(): void;
}

/**
 * Listens to the process's warnings of `code` (every warning when it is left out) until
 * `stop()` is called.
 *
 * @example
 * ```ts
 * const captured = captureWarnings('FLUXGUARD_TRUST_PROXY');
 * try {
 *   process.emitWarning('behind a proxy', { code: 'FLUXGUARD_TRUST_PROXY' });
 *   await captured.settled();
 *   captured.messages(); // ['behind a proxy']
 * } finally {
 *   captured.stop();
 * }
 * ```
 */
export function captureWarnings(code?: string): CapturedWarnings {
  const warnings: ProcessWarning[] = [];
  const listener = (warning: ProcessWarning): void => {
    if (code === undefined || warning.code === code) warnings.push(warning);
  };
  process.on('warning', listener);
  return {
    warnings,
    messages: () => warnings.map((warning) => warning.message),
    settled: () =>
      new Promise((resolve) => {
        setImmediate(resolve);
      }),
    stop: () => {
      process.off('warning', listener);
    },
  };
}
