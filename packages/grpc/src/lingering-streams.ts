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
 * wait cost the garbage collector most of a refusal. That timeout restarts on activity, though,
 * inbound bytes included, and nothing reads them after the answer: a client sending a byte now
 * and then kept the stream, and its connection, for hours before flow control stopped it. So a
 * timer of its own (cleared when the stream closes) also closes it `LINGER_MS` after the answer
 * whatever arrives, once the answer has gone out; while the client is still taking the answer
 * (fewer bytes wait at each look), it looks again a `LINGER_MS` later.
 *
 * @internal
 */
export function closeIfLingering(stream: ServerHttp2Stream): void {
  stream.setTimeout(LINGER_MS);
  stream.on('timeout', closeLingering);
  let waiting = stream.writableLength;
  const bound = setTimeout(() => {
    const now = stream.writableLength;
    if (now > 0 && now < waiting) {
      waiting = now;
      bound.refresh();
    } else closeLingering.call(stream);
  }, LINGER_MS);
  bound.unref();
  stream.once('close', () => {
    clearTimeout(bound);
  });
}

function closeLingering(this: ServerHttp2Stream): void {
  if (this.closed || this.destroyed) return;
  this.close(this.writableLength > 0 ? http2Constants.NGHTTP2_CANCEL : http2Constants.NGHTTP2_NO_ERROR);
}
