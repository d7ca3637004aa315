import { randomUUID } from 'node:crypto';

/** The header (HTTP) and metadata key (gRPC) that carries the request id both ways. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** At most 200 characters of `[A-Za-z0-9._-]`: a request id is written to every log line. */
const WELL_FORMED = /^[A-Za-z0-9._-]{1,200}$/;

/**
 * The request id for a call: the client's own when it is well formed (so that a trace can be
 * followed across services), else a new random one. A client's value that is too long or has
 * any other character is replaced, never cleaned, since it goes into logs.
 *
 * @example
 * ```ts
 * import { resolveRequestId } from '@fluxguard/core';
 * resolveRequestId('abc-123');          // 'abc-123'
 * resolveRequestId('x\n{"forged":1}');  // a fresh UUID
 * ```
 */
export function resolveRequestId(incoming: string | readonly string[] | undefined): string {
  // Several values for one id are ambiguous: keep none of them.
  const value = typeof incoming === 'string' ? incoming : incoming?.length === 1 ? incoming[0] : undefined;
  return value !== undefined && WELL_FORMED.test(value) ? value : randomUUID();
}
