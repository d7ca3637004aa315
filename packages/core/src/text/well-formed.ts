// A lone surrogate: JSON may hold one (`"\ud800"`), and a UTF-8 encoder (ioredis's, a hash's)
// writes each as U+FFFD, so `v\ud800`, `v\udfff` and `v\ufffd` would become the same bytes.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Whether `value` encodes to UTF-8 as itself: it holds no lone surrogate (`String.prototype.isWellFormed`).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): isWellFormedText
 * isWellFormedText('alice'); // true
 * isWellFormedText('v\ud800'); // false
 * ```
 *
 * @internal
 */
export function isWellFormedText(value: string): boolean {
  return !LONE_SURROGATE.test(value);
}

/**
 * Bytes that tell apart every string, lone surrogates included, and equal no string's UTF-8:
 * a 0xFF (never in UTF-8), then the string's UTF-16 code units.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): losslessBytes
 * losslessBytes('v\ud800').equals(losslessBytes('v\ufffd')); // false
 * ```
 *
 * @internal
 */
export function losslessBytes(value: string): Buffer {
  return Buffer.concat([Buffer.of(0xff), Buffer.from(value, 'utf16le')]);
}
