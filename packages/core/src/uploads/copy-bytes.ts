/**
 * Copies `source[from, to)` into `target` at `at`. A few bytes go by a loop: the call of
 * `set` or `copy` costs more than the bytes, and the scans copy a few bytes per item of a flood.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's gathering of small chunks
 * copyBytes(gathered, gatheredBytes, chunk, 0, chunk.byteLength);
 * ```
 *
 * @internal
 */
export function copyBytes(target: Uint8Array, at: number, source: Uint8Array, from: number, to: number): void {
  if (to - from <= 64) {
    for (let i = from; i < to; i++) target[at + i - from] = source[i] ?? 0;
  } else {
    target.set(source.subarray(from, to), at);
  }
}
