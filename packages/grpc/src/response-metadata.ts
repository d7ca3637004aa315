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
  metadata.set(REQUEST_ID_HEADER, requestId);
  return metadata;
}
