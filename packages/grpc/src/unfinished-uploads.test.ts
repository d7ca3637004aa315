// Who is to blame when a deadline or an idle limit ends a call whose client is still sending its
// messages (no half-close yet): the client (a refusal line) when nothing it sent has waited long
// for the handler, even if a burst it sent a moment before the deadline still sits in the
// stream; the handler (an error line, reason `request_unread`) when bytes have waited unread for
// a second or more, or through the whole idle pause, because it stopped asking for messages.
// The client gets `DEADLINE_EXCEEDED` either way.
import { type ClientHttp2Session } from 'node:http2';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNREAD_REQUEST_MS } from '@fluxguard/core/adapter';
import { isRequestLateLine, isRequestUnreadLine } from '@fluxguard/test-support/log-lines';
import { addService, fluxguardInterceptors } from './index.js';
import { captureAudit, startServer, testService, unaryAnswering, type Started } from './testing/harness.js';
import { grpcFrame, openRawSession } from './testing/raw-http2.js';

const DEADLINE_MS = 1_500;
const IDLE_MS = 500;
const MESSAGE = grpcFrame(Buffer.from(JSON.stringify({ d: 'a'.repeat(16 * 1024) })));
/** 4 MiB of messages in one write. */
const BURST = Buffer.concat(Array.from({ length: 256 }, () => MESSAGE));
const HOLD_MS = 1_100;

const audit = captureAudit();
let started: Started;
let idleStarted: Started;
let sessions: Record<'deadline' | 'idle', ClientHttp2Session>;

/** A server of the test service whose calls have `timeouts`. */
async function startWith(timeouts: { idleMs: number }): Promise<Started> {
  return startServer(
    fluxguardInterceptors({ audit: audit.audit, timeouts: { defaultMs: DEADLINE_MS, maxMs: 60_000, ...timeouts } }),
    (server) => {
      addService(server, testService, {
        ...unaryAnswering({}),
        // Takes every message, each after a short wait (a write to a slow destination).
        ClientStream: async (call, callback) => {
          const reads = call.metadata.get('x-reads')[0];
          // Reads every message as it comes, or only after a while (the client cannot send
          // meanwhile); never answers.
          if (reads === 'all' || reads === 'later') {
            if (reads === 'later') await delay(HOLD_MS);
            for await (const _message of call);
            return;
          }
          try {
            for await (const _message of call) await delay(15);
            callback(null, {});
          } catch {
            // The deadline ended the call.
          }
        },
        // Takes the first message, then stops reading for good; or, asked so, reads nothing.
        Bidi: (call) => {
          if (call.metadata.get('x-reads')[0] === 'nothing') return;
          call.once('data', () => {
            call.pause();
          });
        },
      });
    },
  );
}

beforeAll(async () => {
  started = await startWith({ idleMs: 0 });
  idleStarted = await startWith({ idleMs: IDLE_MS });
  sessions = { deadline: openRawSession(started.address), idle: openRawSession(idleStarted.address) };
});

afterAll(async () => {
  for (const session of Object.values(sessions)) session.destroy();
  await started.close();
  await idleStarted.close();
});

/**
 * A call of `path` whose messages go out as `sends` say (ms after its head), never half-closed
 * but by a send that says `end`; resolves once the server has ended it.
 */
async function unfinishedCall(
  limit: 'deadline' | 'idle',
  path: string,
  requestId: string,
  sends: readonly { atMs: number; data: Buffer; end?: boolean }[],
  reads = 'first',
): Promise<void> {
  const stream = sessions[limit].request({
    ':method': 'POST',
    ':path': path,
    'content-type': 'application/grpc',
    te: 'trailers',
    'x-request-id': requestId,
    'x-reads': reads,
  });
  stream.on('error', () => undefined);
  stream.resume();
  const timers = sends.map(({ atMs, data, end = false }) =>
    setTimeout(() => {
      if (stream.destroyed) return;
      if (end) stream.end(data);
      else stream.write(data);
    }, atMs),
  );
  try {
    // The server resets the stream after its answer (the client never ended it): 'close'
    // comes after an 'error', which `once` would reject on.
    await new Promise((resolve) => stream.once('close', resolve));
  } finally {
    for (const timer of timers) clearTimeout(timer);
    stream.close();
  }
}

function linesOf(requestId: string): Record<string, unknown>[] {
  return audit.lines().filter((line) => line.requestId === requestId && line.code === 'deadline_exceeded');
}

describe('a deadline or idle limit while the client is still sending its messages', () => {
  it('blames the client for a burst sent just before the deadline, even while the handler takes it', async () => {
    // Three at once: each burst is mid-way through the handler when the deadline comes, some
    // of it waiting in the stream (for a few ms only) on every one of them.
    const ids = ['late-burst-1', 'late-burst-2', 'late-burst-3'];
    await Promise.all(
      ids.map((id) =>
        unfinishedCall('deadline', testService.ClientStream.path, id, [
          { atMs: 0, data: MESSAGE },
          { atMs: DEADLINE_MS - 250, data: BURST },
        ]),
      ),
    );
    for (const id of ids) {
      await expect
        .poll(() => linesOf(id))
        .toMatchObject([{ event: 'request.denied', level: 40, reason: 'request_unfinished' }]);
    }
  });

  it.each([
    ['deadline', 'first'],
    ['deadline', 'nothing'],
    ['idle', 'first'],
    ['idle', 'nothing'],
  ] as const)(
    'blames the handler at the %s limit when it read %s and what the client sent waited unread',
    async (limit, reads) => {
      expect(DEADLINE_MS - 100).toBeGreaterThan(UNREAD_REQUEST_MS);
      // What is not taken (more than grpc-js reads ahead) waits from 100 ms on, and the client,
      // which has more to send, cannot send it.
      const requestId = `${limit}-read-${reads}`;
      const startedAt = Date.now();
      await unfinishedCall(
        limit,
        testService.Bidi.path,
        requestId,
        [
          { atMs: 0, data: MESSAGE },
          { atMs: 100, data: BURST },
        ],
        reads,
      );
      // The idle limit's rows end before the deadline could have: the idle limit ended them.
      const before = limit === 'idle' ? startedAt + DEADLINE_MS : Infinity;
      await expect.poll(() => linesOf(requestId).map((line) => isRequestUnreadLine(line, before))).toEqual([true]);
    },
  );

  it('leaves the idle limit the client’s when it stops sending and the handler asked for more', async () => {
    await unfinishedCall('idle', testService.ClientStream.path, 'stops-sending', [{ atMs: 0, data: MESSAGE }]);
    await expect
      .poll(() => linesOf('stops-sending'))
      .toMatchObject([{ event: 'request.denied', level: 40, reason: 'inbound_idle' }]);
  });

  it.each([
    ['deadline', 'request_unfinished'],
    ['idle', 'inbound_idle'],
  ] as const)(
    'blames the client at the %s limit when it sent one message and stopped, to a handler that reads nothing',
    async (limit, reason) => {
      // The message waits unread, but far below what the stream holds: the client could have
      // sent more and chose not to, and a handler that has not read yet cannot be blamed for it.
      const requestId = `${limit}-one-message`;
      const small = grpcFrame(Buffer.from(JSON.stringify({ d: 'a'.repeat(100) })));
      await unfinishedCall(limit, testService.Bidi.path, requestId, [{ atMs: 0, data: small }], 'nothing');
      await expect.poll(() => linesOf(requestId)).toMatchObject([{ event: 'request.denied', level: 40, reason }]);
    },
  );

  it('blames the client when it was sending slowly and nothing waited for the handler', async () => {
    const sends = Array.from({ length: 14 }, (_, i) => ({ atMs: i * 100, data: MESSAGE }));
    await unfinishedCall('deadline', testService.ClientStream.path, 'slow-sender', sends);
    await expect
      .poll(() => linesOf('slow-sender'))
      .toMatchObject([{ event: 'request.denied', level: 40, reason: 'request_unfinished' }]);
  });
});

describe('a deadline just after the client half-closed', () => {
  it('blames the client when it half-closed less than a second before the deadline, the handler keeping up', async () => {
    await unfinishedCall(
      'deadline',
      testService.ClientStream.path,
      'ended-late',
      [
        { atMs: 0, data: MESSAGE },
        { atMs: DEADLINE_MS - 200, data: MESSAGE, end: true },
      ],
      'all',
    );
    await expect
      .poll(() => linesOf('ended-late').map((line) => isRequestLateLine(line, UNREAD_REQUEST_MS)))
      .toEqual([true]);
  });

  it.each([
    ['half-closed in time for the handler', 'ended-early', 'all'],
    ['half-closed late because the handler held it back', 'held-back', 'later'],
  ])('keeps the deadline the server’s for a call that %s', async (_label, requestId, reads) => {
    expect(DEADLINE_MS - HOLD_MS).toBeLessThan(UNREAD_REQUEST_MS);
    await unfinishedCall(
      'deadline',
      testService.ClientStream.path,
      requestId,
      [{ atMs: 0, data: BURST, end: true }],
      reads,
    );
    await expect.poll(() => linesOf(requestId)).toMatchObject([{ level: 50, reason: 'deadline_exceeded' }]);
  });
});
