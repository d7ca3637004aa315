import type { Metadata } from '@grpc/grpc-js';

/**
 * grpc-js's own map of a `Metadata`'s entries (`internalRepr`, declared `protected`: name to
 * values, names lowercase, `-bin` values as Buffers), or `undefined` where a grpc-js keeps them
 * otherwise. Read where the public methods cost too much for every call: `set` tests the name
 * and the value with regular expressions, `toJSON` copies every entry first.
 *
 * @example
 * ```ts
 * const entries = storedEntries(metadata);
 * if (entries !== undefined) entries.set('x-request-id', [requestId]);
 * else metadata.set('x-request-id', requestId);
 * ```
 *
 * @internal
 */
export function storedEntries(metadata: Metadata): Map<string, (string | Buffer)[]> | undefined {
  const stored = (metadata as unknown as { internalRepr?: unknown }).internalRepr;
  return stored instanceof Map ? (stored as Map<string, (string | Buffer)[]>) : undefined;
}
