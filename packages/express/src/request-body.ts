import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
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

/**
 * How long a connection closed while its client was still sending a request body goes on
 * reading (and dropping) what arrives after the answer, before it is closed for good.
 *
 * @internal
 */
export const CLOSE_LINGER_MS = 2_000;

/**
 * The most a connection closing under a body still arriving reads and drops after the answer:
 * the body is seen by nothing then, so this and {@link CLOSE_LINGER_MS} alone bound it.
 *
 * @internal
 */
export const CLOSE_LINGER_BYTES = 32 * 1024 * 1024;

type ClosingSocket = Duplex & { destroySoon?: () => void };

/** Connections whose close after the answer lingers, and those already lingering. */
const lingerOnClose = new WeakSet<Duplex>();
const lingering = new WeakSet<Duplex>();

/**
 * Closes the connection once the answer is out (`Connection: close`), without losing that
 * answer to a client still sending its body (see {@link closeLingering}).
 *
 * @internal
 */
export function closeAfterAnswer(req: IncomingMessage, res: ServerResponse): void {
  if (!res.headersSent) res.setHeader('connection', 'close');
  const socket = req.socket as ClosingSocket | null;
  if (socket === null || lingerOnClose.has(socket)) return;
  lingerOnClose.add(socket);
  // Node closes a connection after an answer that says `Connection: close` with `destroySoon`.
  socket.destroySoon = () => {
    closeLingering(socket);
  };
}

/**
 * Half-closes `socket` (the answer, then FIN) and reads and drops what the client still sends
 * for up to {@link CLOSE_LINGER_MS} and {@link CLOSE_LINGER_BYTES}, then closes it, as web
 * servers do (nginx's lingering close). Closed at once, with bytes of the body unread, the
 * kernel resets the connection, and a client that reads its answer only once it has sent its
 * whole body (most HTTP libraries) sees the reset, not the `401`, `408` or `413` it was sent.
 * A request the client pipelines after it is not served: the connection can no longer answer
 * (see {@link answerable}).
 *
 * @internal
 */
export function closeLingering(socket: ClosingSocket): void {
  // Node's close after a `Connection: close` answer and the close of an answered body that
  // may not linger can both come for one connection.
  if (lingering.has(socket)) return;
  lingering.add(socket);
  socket.end();
  const close = (): void => {
    socket.destroy();
  };
  const timer = setTimeout(close, CLOSE_LINGER_MS);
  timer.unref();
  // Counted from outside: a 'data' listener would take the connection from Node's parser,
  // which reads it natively, and stall it.
  const readBefore = bytesReadOf(socket);
  const meter = setInterval(() => {
    if (bytesReadOf(socket) - readBefore > CLOSE_LINGER_BYTES) close();
  }, LINGER_METER_MS);
  meter.unref();
  socket.once('close', () => {
    clearTimeout(timer);
    clearInterval(meter);
  });
  // The client has sent everything and closed its side: nothing is left to reset on.
  socket.once('end', close);
  // Read on, even if a reader had paused the connection: unread bytes are what the kernel
  // resets on.
  socket.resume();
}

/** How often a lingering connection's reads are counted against {@link CLOSE_LINGER_BYTES}. */
const LINGER_METER_MS = 50;

function bytesReadOf(socket: Duplex): number {
  return (socket as Partial<Socket>).bytesRead ?? 0;
}

/**
 * Whether an answer to `req` can still reach its client: not when its connection has ended its
 * side already (a request pipelined behind a body read only to be dropped). Node would run the
 * application on it, and its answer go nowhere.
 *
 * @internal
 */
export function answerable(req: IncomingMessage): boolean {
  return (req.socket as Duplex | null)?.writableEnded !== true;
}
