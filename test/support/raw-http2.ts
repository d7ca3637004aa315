import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { FLAG, FRAME, PREFACE, h2Frame as frame, hpackLiterals } from '@fluxguard/test-support/http2-frames';

export { rawGrpcStream } from '@fluxguard/test-support/connections';

/**
 * A hand-framed HTTP/2 client for attacks Node's own client will not make: streams opened and
 * reset in a tight loop (rapid reset, CVE-2023-44487) with each HEADERS frame and its RST_STREAM
 * written to the wire together. It reads the server's frames only to see a GOAWAY.
 */
export interface RapidResetResult {
  /** Streams whose HEADERS and RST_STREAM were written. */
  readonly streams: number;
  /** The error code of the server's GOAWAY (11 is ENHANCE_YOUR_CALM), or undefined when none came. */
  readonly goawayCode: number | undefined;
  /** Milliseconds from the first stream to the GOAWAY, or to the end of the loop. */
  readonly elapsedMs: number;
  /** Whether the server closed the connection. */
  readonly closed: boolean;
}

/** RST_STREAM's CANCEL error code (RFC 9113 §7). */
const CANCEL = 0x8;

/**
 * Connects with TLS (ALPN h2, no client certificate) and opens and resets streams on `path`
 * until `maxStreams` are sent, `maxMs` have passed, or the server answers GOAWAY or closes.
 * With `complete`, each stream is a whole call instead (HEADERS, then an empty message that
 * ends it), written 100 at a time without waiting for answers or the server's stream limit.
 */
export async function rapidReset(options: {
  readonly port: number;
  readonly ca: string | Buffer;
  readonly path: string;
  readonly maxStreams: number;
  readonly maxMs: number;
  /** The local address to connect from (another loopback address, say). */
  readonly localAddress?: string;
  readonly contentType?: string;
  readonly complete?: boolean;
}): Promise<RapidResetResult> {
  const socket: TLSSocket = tlsConnect({
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    host: '127.0.0.1',
    port: options.port,
    ca: options.ca,
    servername: 'localhost',
    ALPNProtocols: ['h2'],
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('close', () => {
      reject(new Error('the connection closed before its handshake completed'));
    });
  });
  // Changed by the socket's listeners while the loop below runs.
  const seen: { goawayCode: number | undefined; closed: boolean } = { goawayCode: undefined, closed: false };
  let inbound = Buffer.alloc(0);
  socket.on('data', (data: Buffer) => {
    inbound = Buffer.concat([inbound, data]);
    while (inbound.length >= 9) {
      const length = inbound.readUIntBE(0, 3);
      if (inbound.length < 9 + length) break;
      const type = inbound.readUInt8(3);
      const flags = inbound.readUInt8(4);
      const payload = inbound.subarray(9, 9 + length);
      if (type === FRAME.GOAWAY && payload.length >= 8) seen.goawayCode ??= payload.readUInt32BE(4);
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0 && !socket.destroyed) {
        socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      }
      inbound = inbound.subarray(9 + length);
    }
  });
  const closing = new Promise<void>((resolve) => {
    socket.once('close', () => {
      seen.closed = true;
      resolve();
    });
  });
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));

  const block = hpackLiterals([
    [':method', 'POST'],
    [':scheme', 'https'],
    [':authority', 'localhost'],
    [':path', options.path],
    ['content-type', options.contentType ?? 'application/grpc'],
    ['te', 'trailers'],
  ]);
  const rst = Buffer.alloc(4);
  rst.writeUInt32BE(CANCEL);
  const end = (streamId: number): Buffer =>
    options.complete === true
      ? frame(FRAME.DATA, FLAG.END_STREAM, streamId, Buffer.alloc(5))
      : frame(FRAME.RST_STREAM, 0, streamId, rst);
  const started = performance.now();
  let streams = 0;
  let streamId = 1;
  while (
    streams < options.maxStreams &&
    performance.now() - started < options.maxMs &&
    seen.goawayCode === undefined &&
    !seen.closed &&
    streamId < 0x7fffffff - 400
  ) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100; i++, streamId += 2, streams += 1) {
      batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, streamId, block), end(streamId));
    }
    const flushed = socket.write(Buffer.concat(batch));
    // Lets the server's frames in, and keeps the client's own buffer bounded.
    await Promise.race([
      closing,
      new Promise<void>((resolve) => {
        if (flushed) setImmediate(resolve);
        else socket.once('drain', resolve);
      }),
    ]);
  }
  // A GOAWAY may be on its way as the loop ends.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const elapsedMs = performance.now() - started;
  socket.destroy();
  return { streams, goawayCode: seen.goawayCode, elapsedMs, closed: seen.closed };
}
