import type { IncomingMessage, ServerResponse } from 'node:http';
import { declaresBody } from '@fluxguard/core/adapter';

/**
 * An HTTP/1 request has a body only when it says so: `Transfer-Encoding`, or a `Content-Length`
 * above 0 (RFC 9112 §6.3). Without one, its inbound side is complete from the start.
 *
 * @internal
 */
export function mayHaveBody(req: IncomingMessage): boolean {
  return declaresBody(req.headers['transfer-encoding'], req.headers['content-length']);
}

/**
 * Whether more of the request's body is still to come. Node marks a request without a body
 * complete only after its handlers have run for the head: a bodyless request refused at once
 * is not one whose connection must close.
 *
 * @internal
 */
export function bodyStillComing(req: IncomingMessage): boolean {
  return !req.complete && mayHaveBody(req);
}

/**
 * Answers `Expect: 100-continue` when the application first reads the body, instead of before
 * any control has run (Node's default): a client refused on its head is never invited to send
 * the body it holds back. Nothing is sent once the answer has started.
 *
 * @internal
 */
export function continueWhenRead(req: IncomingMessage, res: ServerResponse): void {
  // `_read` is what a readable stream calls when its consumer first wants data, whether it
  // reads, pipes or listens for `data`.
  const read = req._read.bind(req);
  req._read = (size: number) => {
    req._read = read;
    if (!res.headersSent && !res.writableEnded) res.writeContinue();
    read(size);
  };
}
