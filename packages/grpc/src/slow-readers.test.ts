// Clients that never read an answer (they never open their flow-control window), against a
// server with fluxguard's interceptors: at the deadline, fluxguard's own or the client's, the
// stream is reset and the call's in-flight slot released, instead of the answer waiting in the
// server's memory for as long as the client keeps the connection.
import { once } from 'node:events';
import { constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConcurrencyLimit } from '@fluxguard/core';
import { addService, fluxguardInterceptors } from './index.js';
import { captureAudit, startServer, testService, unaryAnswering, type Started } from './testing/harness.js';
import { grpcFrame, openRawSession } from './testing/raw-http2.js';

const BIG_ANSWER = 'x'.repeat(2 * 1024 * 1024);
const DEFAULT_DEADLINE_MS = 300;

const audit = captureAudit();
const concurrency = createConcurrencyLimit({ maxInFlight: 100 });
let started: Started;
let session: ClientHttp2Session;

beforeAll(async () => {
  started = await startServer(
    fluxguardInterceptors({
      audit: audit.audit,
      controls: [concurrency],
      timeouts: { defaultMs: DEFAULT_DEADLINE_MS, maxMs: 60_000, idleMs: 0 },
    }),
    (server) => {
      addService(server, testService, unaryAnswering({ big: BIG_ANSWER }));
    },
  );
  // A window of 1 KiB that is never opened further: the server can send almost nothing.
  session = openRawSession(started.address, { settings: { initialWindowSize: 1024 } });
});

afterAll(async () => {
  session.destroy();
  await started.close();
});

/** A unary call whose answer is never read; resolves with the RST_STREAM code it ends with. */
function unreadCall(requestId: string, grpcTimeout?: string): { stream: ClientHttp2Stream; closed: Promise<number> } {
  const stream = session.request({
    ':method': 'POST',
    ':path': testService.Unary.path,
    'content-type': 'application/grpc',
    te: 'trailers',
    'x-request-id': requestId,
    ...(grpcTimeout === undefined ? {} : { 'grpc-timeout': grpcTimeout }),
  });
  stream.on('error', () => undefined);
  stream.pause();
  stream.end(grpcFrame(Buffer.from('{}')));
  const closed = once(stream, 'close').then(() => stream.rstCode);
  return { stream, closed };
}

describe('answers a client never reads', () => {
  it.each([
    ['fluxguard’s default deadline', undefined],
    ['the client’s own deadline (grpc-js answers it, fluxguard ends the call after it)', '400m'],
  ])('are reset at %s, and the call releases its slot', async (_label, grpcTimeout) => {
    const requestId = `unread-${grpcTimeout ?? 'default'}`;
    const call = unreadCall(requestId, grpcTimeout);
    await expect.poll(() => concurrency.inFlight()).toBe(1);
    expect(await call.closed).toBe(constants.NGHTTP2_CANCEL);
    expect(concurrency.inFlight()).toBe(0);
    // The client's doing, not the server's: a refusal line, not an error with a stack.
    expect(audit.lines().filter((line) => line.requestId === requestId)).toMatchObject([
      { code: 'deadline_exceeded', reason: 'answer_unread', event: 'request.denied' },
    ]);
  });

  it('leave the deadline the server’s when the client takes the rest within a second after it', async () => {
    const requestId = 'reading-late';
    const { stream, closed } = unreadCall(requestId);
    // Reads nothing until just after the deadline (300 ms), then takes the rest at full speed.
    const timer = setTimeout(() => {
      stream.resume();
    }, DEFAULT_DEADLINE_MS + 100);
    try {
      await closed;
    } finally {
      clearTimeout(timer);
    }
    // The deadline came with the answer waiting, but the client took all of it soon after: the
    // answer was too late or too big for the deadline, which is the server's to look at. The
    // line is written once that is known, a second after the deadline.
    await expect
      .poll(() => audit.lines().filter((line) => line.requestId === requestId), { timeout: 3_000 })
      .toMatchObject([{ code: 'deadline_exceeded', reason: 'deadline_exceeded', event: 'request.failed' }]);
    expect(concurrency.inFlight()).toBe(0);
  });

  it('blame the client for a deadline that comes while it has not sent its whole request', async () => {
    // Headers only: the message and the half-close never come, and the client's deadline passes.
    const stream = session.request({
      ':method': 'POST',
      ':path': testService.Unary.path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'x-request-id': 'headers-only',
      'grpc-timeout': '300m',
    });
    stream.on('error', () => undefined);
    stream.resume();
    // The answer ends the server's side; the client's side stays open, as it never ended it.
    await once(stream, 'end');
    stream.close();
    await expect
      .poll(() => audit.lines().filter((line) => line.requestId === 'headers-only'))
      .toMatchObject([{ code: 'deadline_exceeded', reason: 'request_unfinished', event: 'request.denied' }]);
  });

  it('are reset however many there are: a flood of unread answers leaves nothing in flight', async () => {
    const calls = Array.from({ length: 20 }, (_, i) => unreadCall(`unread-flood-${String(i)}`));
    const codes = await Promise.all(calls.map((c) => c.closed));
    expect(codes.every((code) => code === constants.NGHTTP2_CANCEL)).toBe(true);
    expect(concurrency.inFlight()).toBe(0);
  });
});
