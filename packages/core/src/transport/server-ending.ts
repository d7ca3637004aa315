/**
 * Why the server itself ended a connection, and with it the calls it carried: `server_shutdown`
 * at the end of a shutdown's grace (grpc-js's `forceShutdown()`, `closeAllConnections()` of an
 * HTTPS server), `trust_revoked` when a TLS trust reload no longer accepts the connection's
 * client certificate (revoked by a new CRL, or no longer issued by a CA of the bundle, which the
 * recheck does not tell apart), `write_stalled` when the client took none of the bytes waiting
 * in the connection for the write-stall limit (`maxWriteStallMs` of the gRPC adapter): a reader
 * that stopped reading, as a slow-reader attack does, `request_timeout` when an HTTPS server's
 * request timeout (`requestTimeoutMs` of `createSecureServer`) ends a connection whose request
 * is at work while its client still sends it (a trickled body), `connection_cap` when a port
 * at its cap on connections (`maxConnections`) closes one in its TLS handshake or serving
 * nothing to let a new client in: serving nothing, it may still carry a call at work that waits
 * on its client (a body trickling in, a client stream whose next message has not come), and
 * `pipelined_refused` when an HTTPS server closes a connection whose request is at work for what
 * its client pipelined behind that request, refused unanswered (malformed bytes, a `CONNECT`,
 * more requests than Node holds at once): an answer then would pass for that request's. The
 * `reason` of those calls' `request.cancelled` lines; a call whose client left on its own has
 * none.
 *
 * @example
 * ```ts
 * import type { ServerEndReason } from '@fluxguard/core';
 * const cutByUs: ServerEndReason[] = ['server_shutdown', 'trust_revoked', 'request_timeout', 'pipelined_refused'];
 * ```
 */
export type ServerEndReason =
  'server_shutdown' | 'trust_revoked' | 'write_stalled' | 'request_timeout' | 'connection_cap' | 'pipelined_refused';

/**
 * The connections the server is ending, by whatever object an adapter finds again from a call
 * (a TCP or TLS socket, an HTTP/2 session). Weak: a connection gone leaves nothing behind, and
 * nothing is written for a connection the server does not end.
 */
const endings = new WeakMap<object, ServerEndReason>();

/**
 * Notes, just before the server destroys `connection`, why: the calls it carries are then logged
 * as ended by the server (`reason` of their `request.cancelled` line), not as left by their
 * client. The first reason noted stays: it is the cut that ended the calls.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { noteServerEnding } from '@fluxguard/core/adapter';
 * noteServerEnding(socket, 'trust_revoked');
 * socket.destroy();
 * ```
 */
export function noteServerEnding(connection: object, reason: ServerEndReason): void {
  if (!endings.has(connection)) endings.set(connection, reason);
}

/**
 * Why the server ended `connection` ({@link noteServerEnding}), or `undefined` when it did not
 * (its client left, or it is still open). Asked only once a call was cancelled: nothing is
 * looked up for a call that ends otherwise.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { serverEndingOf } from '@fluxguard/core/adapter';
 * audit.recordCancelled(context, undefined, serverEndingOf(req.socket));
 * ```
 */
export function serverEndingOf(connection: object | null | undefined): ServerEndReason | undefined {
  return connection === null || connection === undefined ? undefined : endings.get(connection);
}
