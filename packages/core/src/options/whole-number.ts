import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * Node's longest timer, 2^31 − 1 ms (about 24.8 days): a longer `setTimeout` or `setInterval`
 * fires after 1 ms instead, so a duration option above it would turn a limit into a busy loop
 * or an instant timeout.
 *
 * @example
 * ```ts
 * import { MAX_TIMER_MS } from '@fluxguard/core/adapter';
 * setTimeout(onIdle, Math.min(idleMs, MAX_TIMER_MS));
 * ```
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * The bounds of {@link wholeNumber}.
 *
 * @example
 * ```ts
 * import { wholeNumber, type WholeNumberRange } from '@fluxguard/core/adapter';
 * const range: WholeNumberRange = { max: 60_000, unit: 'ms' };
 * const timeoutMs = wholeNumber(options.timeoutMs, 'createStore: "timeoutMs"', range);
 * ```
 */
export interface WholeNumberRange {
  /** Default 1. */
  readonly min?: number;
  /** Default none (up to `Number.MAX_SAFE_INTEGER`); with `unit: 'ms'`, {@link MAX_TIMER_MS}. */
  readonly max?: number;
  /** What the number counts (`ms`, `bytes`), named in the error. `ms` caps it at {@link MAX_TIMER_MS}. */
  readonly unit?: string;
}

/**
 * Checks a numeric option once, at construction: a whole number (a safe integer, never a
 * string, `NaN` or a fraction) within its bounds, else a {@link ConfigurationError} that names
 * the option as `label` gives it and says what is allowed. Every factory of fluxguard checks
 * its counts, sizes and times with it, so that each says the same thing the same way.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { wholeNumber } from '@fluxguard/core/adapter';
 * const maxKeys = wholeNumber(options.maxKeys, 'createStore: "maxKeys"');
 * // 0 -> ConfigurationError: createStore: "maxKeys" must be a whole number of at least 1
 * const timeoutMs = wholeNumber(options.timeoutMs, 'createStore: "timeoutMs"', { max: 60_000, unit: 'ms' });
 * // 0 -> ...: createStore: "timeoutMs" must be a whole number of ms, from 1 to 60000
 * // with unit 'ms' and no max, at most MAX_TIMER_MS (Node's longest timer)
 * ```
 */
export function wholeNumber(value: unknown, label: string, range: WholeNumberRange = {}): number {
  const min = range.min ?? 1;
  const max = range.max ?? (range.unit === 'ms' ? MAX_TIMER_MS : undefined);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || (max !== undefined && value > max)) {
    const bounds = max === undefined ? `at least ${String(min)}` : `from ${String(min)} to ${String(max)}`;
    const what = range.unit !== undefined ? `of ${range.unit}, ${bounds}` : max === undefined ? `of ${bounds}` : bounds;
    throw new ConfigurationError(`${label} must be a whole number ${what}`);
  }
  return value;
}
