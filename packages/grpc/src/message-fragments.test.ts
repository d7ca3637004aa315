// A request message sent in tiny HTTP/2 DATA frames: grpc-js kept one view (and Node one
// allocation) per frame until the message was complete, about 128 bytes held per byte sent.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
// grpc-js's own decoder (not exported by name): the one every server call reads messages with.
import { StreamDecoder } from '@grpc/grpc-js/build/src/stream-decoder.js';
import { addService, fluxguardInterceptors } from './index.js';
import { compactMessageFragments } from './message-fragments.js';
import { captureAudit, startServer, testService, unaryAnswering, type Started } from './testing/harness.js';
import { h2Frame } from '@fluxguard/test-support/http2-frames';
import {
  CLIENT_PREFACE,
  grpcRequestHeaderBlock,
  grpcFrame,
  openRawSession,
  rawGrpcCall,
} from './testing/raw-http2.js';

/** The decoder's fields these tests read (grpc-js declares them private). */
interface DecoderView {
  write(data: Buffer): Buffer[];
  readPartialMessage: Buffer[];
}

function newDecoder(): DecoderView {
  const decoder = new StreamDecoder(-1) as unknown as DecoderView;
  compactMessageFragments({ decoder });
  return decoder;
}

/** Each byte in a buffer of its own, as Node's HTTP/2 layer hands over one-byte DATA frames. */
function byteByByte(bytes: Buffer): Buffer[] {
  return [...bytes].map((byte) => Buffer.alloc(1, byte));
}

describe("grpc-js's decoder with fragments compacted", () => {
  it('holds a message sent a byte at a time in a few buffers, and hands on the same bytes', () => {
    const decoder = newDecoder();
    const framed = grpcFrame(Buffer.from('m'.repeat(65_000)));
    const pieces = byteByByte(framed);
    const out: Buffer[] = [];
    for (const piece of pieces.slice(0, -1)) out.push(...decoder.write(piece));
    expect(out).toEqual([]);
    // One view a byte, 65 000 of them, before: now one buffer per 16 KiB.
    expect(decoder.readPartialMessage.length).toBeLessThanOrEqual(5);
    out.push(...decoder.write(pieces.at(-1) ?? Buffer.alloc(0)));
    expect(out).toEqual([framed]);
  });

  it('leaves a small piece between large ones as it is: no buffer is added for it', () => {
    const decoder = newDecoder();
    const framed = grpcFrame(Buffer.alloc(40 * 16_484, 0x42));
    // Where reads end: a small piece, then a large one, and so on (an upload in 16 KiB frames).
    const pieces: Buffer[] = [];
    for (let at = 0; at < framed.length - 1;) {
      const size = pieces.length % 2 === 0 ? 100 : 16_384;
      pieces.push(Buffer.from(framed.subarray(at, Math.min(at + size, framed.length - 1))));
      at += size;
    }
    for (const piece of pieces) expect(decoder.write(piece)).toEqual([]);
    // Each piece held as a view of the bytes it came in (the first less the prefix), none copied.
    expect(decoder.readPartialMessage).toHaveLength(pieces.length);
    const sameBytes = (part: Buffer, piece: Buffer | undefined): boolean =>
      part.buffer === piece?.buffer && part.byteOffset + part.length === piece.byteOffset + piece.length;
    expect(decoder.readPartialMessage.every((part, i) => sameBytes(part, pieces[i]))).toBe(true);
  });

  it('hands on the same messages for any way the bytes are cut', () => {
    const messages = [0, 1, 5, 1023, 1024, 1025, 16_383, 16_384, 40_000].map((n, i) =>
      grpcFrame(Buffer.alloc(n, 0x41 + i)),
    );
    const stream = Buffer.concat(messages);
    // Cuts of every scale, from single bytes to whole messages, in a repeating pattern.
    const sizes = [1, 3, 700, 1, 1024, 5000, 2, 16_384, 9, 65_536];
    for (let shift = 0; shift < sizes.length; shift++) {
      const decoder = newDecoder();
      const out: Buffer[] = [];
      let at = 0;
      for (let i = shift; at < stream.length; i++) {
        const size = sizes[i % sizes.length] ?? 1;
        out.push(...decoder.write(stream.subarray(at, at + size)));
        at += size;
      }
      expect(out).toEqual(messages);
    }
  });
});

describe('a server reading messages sent in one-byte DATA frames', () => {
  const audit = captureAudit();
  let started: Started;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    started = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
      addService(server, testService, unaryAnswering({ ok: true }));
    });
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await started.close();
  });

  /** One connection, one call, its message of `bytes` sent one byte per frame, all but its last. */
  async function startSlowMessage(bytes: number): Promise<void> {
    const [host, port] = started.address.split(':');
    const socket = connect(Number(port), host);
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.resume();
    await once(socket, 'connect');
    const headers = grpcRequestHeaderBlock(testService.Unary.path);
    const framed = grpcFrame(Buffer.from(JSON.stringify({ pad: 'p'.repeat(bytes - 10) })));
    const frames = [...framed.subarray(0, -1)].map((byte) => h2Frame(0, 0, 1, Buffer.from([byte])));
    // HEADERS with END_HEADERS (0x4), then the frames; within the initial 64 KiB windows.
    socket.write(Buffer.concat([CLIENT_PREFACE, h2Frame(1, 0x4, 1, headers), ...frames]));
    await new Promise((resolve) => setImmediate(resolve));
  }

  it('holds about the bytes sent, not a hundred times more, and serves meanwhile', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().heapUsed;
    const calls = 6;
    const bytes = 60_000;
    for (let i = 0; i < calls; i++) await startSlowMessage(bytes);
    await expect.poll(() => sockets.every((socket) => socket.writableLength === 0), { timeout: 5_000 }).toBe(true);
    // A call behind them on its own connection is served: the server has read what was sent.
    const session = openRawSession(started.address);
    try {
      const answer = await rawGrpcCall(session, testService.Unary.path, {}, grpcFrame(Buffer.from('{}')));
      expect(answer.grpcStatus).toBe(Status.OK);
    } finally {
      session.destroy();
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    console.log(
      `${String(calls)} messages of ${String(bytes)} bytes in 1-byte frames: heap grew ${(grown / 1024 / 1024).toFixed(1)} MB`,
    );
    // One view a frame held about 80 bytes of heap per byte sent: 28 MB here.
    expect(grown).toBeLessThan(8 * 1024 * 1024);
  });
});
