// The operation's message limit (the input limits' maxMessageBytes) handed to grpc-js for each
// call: a larger message is refused as its length prefix arrives or as decompression passes
// the limit, not after the server buffered and decompressed it up to its own, larger limit.
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { createInputLimits } from '@fluxguard/core';
import { addService, fluxguardInterceptors } from './index.js';
import { captureAudit, startServer, testService, unaryAnswering, type Json, type Started } from './testing/harness.js';
import { grpcFrame, grpcPrefix, openRawSession, rawGrpcCall, type RawAnswer } from './testing/raw-http2.js';

const LIMIT = 1024;
const BOMB_BYTES = 3 * 1024 * 1024;

const audit = captureAudit();
let started: Started;
let session: ClientHttp2Session;

beforeAll(async () => {
  started = await startServer(
    fluxguardInterceptors({
      audit: audit.audit,
      controls: [createInputLimits({ rules: [{ operation: testService.Unary.path, maxMessageBytes: LIMIT }] })],
    }),
    (server) => {
      addService(server, testService, unaryAnswering({ ok: true }));
    },
  );
  session = openRawSession(started.address);
});

afterAll(async () => {
  session.destroy();
  await started.close();
});

/** Sends `body` to the limited method on a raw stream of the shared session. */
const send = (headers: OutgoingHttpHeaders, body: Buffer, end = true): Promise<RawAnswer> =>
  rawGrpcCall(session, testService.Unary.path, headers, body, end);

const lineOf = (requestId: string | undefined): Json | undefined =>
  audit.lines().find((line) => requestId !== undefined && line.requestId === requestId);

/** A message of `bytes` zeros, gzipped: about a thousandth of its size on the wire. */
function gzipBomb(bytes = BOMB_BYTES): Buffer {
  const compressed = gzipSync(Buffer.from(JSON.stringify({ pad: '0'.repeat(bytes) })));
  return grpcFrame(compressed, true);
}

describe('a message over the operation’s limit', () => {
  it('is refused as soon as its length prefix declares too much, without waiting for the rest', async () => {
    // 3 MiB declared (under the server's 4 MiB), 2 KB of it sent, the stream never ended: the
    // server would otherwise wait for the other 3 MiB for as long as the client liked.
    const answer = await send(
      { 'x-request-id': 'declared-too-much' },
      Buffer.concat([grpcPrefix(BOMB_BYTES), Buffer.alloc(2048, 0x20)]),
      false,
    );
    expect(answer.grpcStatus).toBe(Status.RESOURCE_EXHAUSTED);
    expect(answer.requestId).toBe('declared-too-much');
    expect(lineOf('declared-too-much')).toMatchObject({ reason: 'message_too_large', code: 'payload_too_large' });
  }, 20_000);

  it('is refused while it decompresses, once it passes the limit', async () => {
    // Under the limit on the wire, 512 KiB once decompressed.
    const bomb = gzipBomb(512 * 1024);
    expect(bomb.length).toBeLessThan(LIMIT);
    const answer = await send({ 'grpc-encoding': 'gzip', 'x-request-id': 'bomb-one' }, bomb);
    expect(answer.grpcStatus).toBe(Status.RESOURCE_EXHAUSTED);
    // grpc-js stopped at this call's limit, not at its own 4 MiB after all of it.
    expect(JSON.stringify(lineOf('bomb-one'))).toContain(`decompresses to a size larger than ${String(LIMIT)}`);
  });

  it('under a flood of gzip bombs costs the server little memory, and it keeps serving', async () => {
    const bomb = gzipBomb();
    global.gc?.();
    const before = process.memoryUsage().rss;
    const answers = await Promise.all(Array.from({ length: 100 }, () => send({ 'grpc-encoding': 'gzip' }, bomb)));
    const grown = process.memoryUsage().rss - before;
    expect(answers.every((a) => a.grpcStatus === Status.RESOURCE_EXHAUSTED)).toBe(true);
    console.log(`100 gzip bombs of ${String(BOMB_BYTES)} bytes each: RSS grew ${(grown / 1024 / 1024).toFixed(1)} MB`);
    // Decompressed whole, 100 bombs would take 300 MB and more.
    expect(grown).toBeLessThan(100 * 1024 * 1024);
    const ok = await send({}, grpcFrame(Buffer.from('{}')));
    expect(ok.grpcStatus).toBe(Status.OK);
  });
});

describe('a message within the operation’s limit', () => {
  it('is served', async () => {
    const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(LIMIT - 20) }));
    const answer = await send({}, grpcFrame(body));
    expect(answer.grpcStatus).toBe(Status.OK);
  });
});
