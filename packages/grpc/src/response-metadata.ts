import { Metadata } from '@grpc/grpc-js';
import { REQUEST_ID_HEADER } from '@fluxguard/core';

/**
 * New response metadata (headers or trailers) that carries `requestId` under `x-request-id`,
 * with a copy of `from`'s entries when given (`from` itself is left as it is; an `x-request-id`
 * it holds is replaced). Every answer fluxguard sends on gRPC is built here.
 *
 * @example
 * ```ts
 * call.sendMetadata(responseMetadata(requestId, handlersHeaders));
 * ```
 *
 * @internal
 */
export function responseMetadata(requestId: string, from?: Metadata | null): Metadata {
  const metadata = from === undefined || from === null ? new Metadata() : from.clone();
  setRequestId(metadata, requestId);
  return metadata;
}

/**
 * Sets `x-request-id` to `requestId` (one made or checked by `resolveRequestId`: letters,
 * digits, `.`, `_` and `-`) in `metadata`, past grpc-js's checks of the name and the value:
 * `Metadata.set` lowercases the name and tests both with a regular expression on every write,
 * and a served call writes the id three times (the request's metadata, the response headers,
 * the trailers), about 3 % of its instructions. The name is a constant and the id cannot fail
 * those tests. Falls back to `set` where grpc-js keeps its entries otherwise.
 *
 * @example
 * ```ts
 * setRequestId(call.metadata, resolveRequestId(call.metadata.get('x-request-id')));
 * ```
 *
 * @internal
 */
export function setRequestId(metadata: Metadata, requestId: string): void {
  const entries = (metadata as unknown as { internalRepr?: unknown }).internalRepr;
  if (entries instanceof Map) entries.set(REQUEST_ID_HEADER, [requestId]);
  else metadata.set(REQUEST_ID_HEADER, requestId);
}
