import { constants as http2Constants, type ServerHttp2Stream } from 'node:http2';

/** How long after its answer a stream the client has not ended may stay open without activity. */
export const LINGER_MS = 1_000;

/**
 * Closes `stream` once it has been idle for {@link LINGER_MS} after its answer, if it is still
 * open then: with NO_ERROR (RFC 9113 §8.1: a server that has answered may ask the client to stop
 * sending), or CANCEL when response bytes still wait for the client. A client that never ends
 * its request would otherwise keep a stream whose call was answered, and with it the
 * connection, past every idle limit.
 *
 * The stream's own timeout, which Node clears when the stream closes: a refusal flood answers
 * thousands of calls a second whose streams close at once, and holding each of them for the
 * wait (a timer or a queue of its own) cost the garbage collector most of a refusal. The
 * timeout restarts on activity; a client that keeps sending is stopped by flow control, since
 * nothing reads what it sends after the answer.
 *
 * @internal
 */
export function closeIfLingering(stream: ServerHttp2Stream): void {
  stream.setTimeout(LINGER_MS);
  stream.on('timeout', closeLingering);
}

function closeLingering(this: ServerHttp2Stream): void {
  if (this.closed || this.destroyed) return;
  this.close(this.writableLength > 0 ? http2Constants.NGHTTP2_CANCEL : http2Constants.NGHTTP2_NO_ERROR);
}
