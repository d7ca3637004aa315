import type { ServerInterceptingCallInterface } from '@grpc/grpc-js';

/** What this module reads of grpc-js's own call object (`BaseServerInterceptingCall`, untyped). */
interface GrpcJsCallLimits {
  maxReceiveMessageSize?: unknown;
  decoder?: { maxReadMessageLength?: unknown } | null;
}

/**
 * Lowers, for one call, grpc-js's own limit on a request message (`grpc.max_receive_message_length`,
 * one value for the whole server) to `bytes`, the operation's limit from the controls (see
 * `Control.maxMessageBytes`). grpc-js then refuses a larger message as soon as its length
 * prefix arrives, or as decompression passes the limit, where it would otherwise buffer up to
 * the server's limit and decompress all of it before fluxguard could count it: a gzip bomb of
 * a few kilobytes would cost the server megabytes for every call in flight. The refusal is
 * grpc-js's `RESOURCE_EXHAUSTED`, which safeErrors answers and logs as `message_too_large`.
 *
 * `call` must be grpc-js's own call object (the one below the first interceptor); anything
 * else, or a grpc-js whose call has no such fields, is left alone and the limit is still
 * checked on every message by the control.
 *
 * @internal
 */
export function limitReceivedMessages(call: ServerInterceptingCallInterface, bytes: number): void {
  const own = call as unknown as GrpcJsCallLimits;
  const current = own.maxReceiveMessageSize;
  if (typeof current !== 'number' || (current !== -1 && current <= bytes)) return;
  const decoder = own.decoder;
  if (typeof decoder !== 'object' || decoder === null || typeof decoder.maxReadMessageLength !== 'number') return;
  own.maxReceiveMessageSize = bytes;
  decoder.maxReadMessageLength = bytes;
}
