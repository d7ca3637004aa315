import { sensitiveHeaders } from 'node:http2';
import { Metadata } from '@grpc/grpc-js';
import { REQUEST_ID_HEADER } from '@fluxguard/core';
import { storedEntries } from './stored-entries.js';

/**
 * Trailing metadata key naming the offending request field of an `INVALID_ARGUMENT` status.
 *
 * @example
 * ```ts
 * import { FIELD_METADATA_KEY } from '@fluxguard/grpc';
 * call.on('status', (status) => console.log(status.metadata.get(FIELD_METADATA_KEY))); // ['sha256']
 * ```
 */
export const FIELD_METADATA_KEY = 'x-fluxguard-field';

/** The response headers HPACK is told never to index (`http2.sensitiveHeaders` of Node). */
const NEVER_INDEXED: readonly string[] = Object.freeze([REQUEST_ID_HEADER]);

/**
 * Response metadata whose `x-request-id` goes out as an HPACK literal never indexed. An id is
 * new on every call: indexed, each one took a place in the connection's HPACK tables (the
 * server's encoder and the client's decoder) that no later header could use, pushed out the
 * headers that do repeat, and made the encoder compare every id still in its table on each
 * call: 2.6 % of a served call's instructions. grpc-js builds the headers it sends from
 * `toHttp2Headers()` (copying symbol keys along) and clones the metadata of a status first, so
 * both keep the mark.
 */
class ResponseMetadata extends Metadata {
  override toHttp2Headers(): ReturnType<Metadata['toHttp2Headers']> {
    const headers = super.toHttp2Headers();
    (headers as Record<symbol, unknown>)[sensitiveHeaders] = NEVER_INDEXED;
    return headers;
  }

  override clone(): Metadata {
    const copy = new ResponseMetadata(this.getOptions());
    copy.merge(super.clone());
    return copy;
  }
}

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
  const metadata = new ResponseMetadata(from?.getOptions());
  if (from !== undefined && from !== null) metadata.merge(from.clone());
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
  const entries = storedEntries(metadata);
  if (entries !== undefined) entries.set(REQUEST_ID_HEADER, [requestId]);
  else metadata.set(REQUEST_ID_HEADER, requestId);
}
