// Who is to blame when a deadline or an idle limit ends a request whose client is still sending
// its body: the client (408, a refusal line) when nothing it sent has waited long for the
// handler, even if a burst it sent a moment before the deadline still sits in the request
// stream; the handler (504, an error line, reason `request_unread`) when bytes have waited
// unread for a second or more, or through the whole idle pause, because it stopped reading.
import { IncomingMessage } from 'node:http';
import { Socket, connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express, { type Request } from 'express';
import { UNREAD_REQUEST_MS } from '@fluxguard/core/adapter';
import { isRequestLateLine, isRequestUnreadLine } from '@fluxguard/test-support/log-lines';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const DEADLINE_MS = 1_500;
const IDLE_MS = 500;
const BURST = 4 * 1024 * 1024;
const HOLD_MS = 1_100;

const audit = captureAudit();
let served: Served;

/** Takes the first chunk, then stops reading for good. */
function readFirst(req: Request): void {
  req.once('data', () => {
    req.pause();
  });
}

beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({
    audit: audit.audit,
    timeouts: {
      defaultMs: DEADLINE_MS,
      maxMs: 60_000,
      idleMs: 0,
      rules: [{ operation: 'PUT /idle/*rest', idleMs: IDLE_MS }],
    },
  });
  app.use(before);
  // Takes every chunk, each after a short wait (a write to a slow destination): while a burst
  // arrives, some of it always waits in the request stream for a few ms.
  app.put(['/reads-slowly', '/idle/reads-slowly'], async (req, res) => {
    for await (const _chunk of req) await delay(15);
    res.json({ ok: true });
  });
  app.put(['/read-first', '/idle/read-first'], readFirst);
  app.put(['/read-nothing', '/idle/read-nothing'], () => undefined);
  // Reads the whole body as it comes, then never answers.
  app.put('/reads-all', async (req) => {
    for await (const _chunk of req);
  });
  // Reads nothing for a while, so that the client cannot send, then the whole body; never answers.
  app.put('/holds-then-reads', async (req) => {
    await delay(HOLD_MS);
    for await (const _chunk of req);
  });
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

interface Send {
  readonly atMs: number;
  readonly bytes: number;
}

/**
 * A PUT declaring `length` bytes, whose body goes out as `sends` say (ms after the head), in
 * full only if they add up to `length`; resolves with the status of the answer, or 0 when the connection ended
 * without one.
 */
function unfinishedUpload(path: string, requestId: string, length: number, sends: readonly Send[]): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect(served.port, '127.0.0.1');
    const timers: NodeJS.Timeout[] = [];
    let head = '';
    const done = (status: number): void => {
      for (const timer of timers) clearTimeout(timer);
      socket.destroy();
      resolve(status);
    };
    socket.on('error', () => {
      done(0);
    });
    socket.on('close', () => {
      done(0);
    });
    socket.on('data', (data: Buffer) => {
      head += data.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3}) /.exec(head);
      if (match !== null) done(Number(match[1]));
    });
    socket.write(
      `PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${String(length)}\r\nx-request-id: ${requestId}\r\n\r\n`,
    );
    for (const { atMs, bytes } of sends) {
      timers.push(
        setTimeout(() => {
          if (!socket.destroyed) socket.write(Buffer.alloc(bytes, 0x61));
        }, atMs),
      );
    }
  });
}

function linesOf(requestId: string): Record<string, unknown>[] {
  return audit.lines().filter((line) => line.requestId === requestId && line.code === 'deadline_exceeded');
}

describe('a deadline or idle limit while the client is still sending its body', () => {
  it('blames the client for a burst sent just before the deadline, even while the handler takes it', async () => {
    // Three at once: each burst is mid-way through the handler when the deadline comes, some
    // of it waiting in the request stream (for a few ms only) on every one of them.
    const ids = ['late-burst-1', 'late-burst-2', 'late-burst-3'];
    const statuses = await Promise.all(
      ids.map((id) =>
        unfinishedUpload('/reads-slowly', id, 2 * BURST, [
          { atMs: 0, bytes: 16 },
          { atMs: DEADLINE_MS - 250, bytes: BURST },
        ]),
      ),
    );
    expect(statuses).toEqual([408, 408, 408]);
    for (const id of ids) {
      await expect
        .poll(() => linesOf(id))
        .toMatchObject([{ event: 'request.denied', level: 40, reason: 'request_unfinished' }]);
    }
  });

  it.each([
    ['the deadline', 'first', ''],
    ['the deadline', 'nothing', ''],
    ['the idle limit', 'first', '/idle'],
    ['the idle limit', 'nothing', '/idle'],
  ])(
    'blames the handler at %s when it read %s and what the client sent waited unread',
    async (_limit, reads, prefix) => {
      expect(DEADLINE_MS - 100).toBeGreaterThan(UNREAD_REQUEST_MS);
      // What is not taken (more than the stream holds) waits from 100 ms on, and the client,
      // which has 4 MiB more to send, cannot send it.
      const requestId = `read-${reads}${prefix.replace('/', '-')}`;
      const startedAt = Date.now();
      const status = await unfinishedUpload(`${prefix}/read-${reads}`, requestId, 2 * BURST, [
        { atMs: 0, bytes: 16 },
        { atMs: 100, bytes: BURST },
      ]);
      expect(status).toBe(504);
      // The idle limit's rows end before the deadline could have: the idle limit ended them.
      const before = prefix === '/idle' ? startedAt + DEADLINE_MS : Infinity;
      await expect.poll(() => linesOf(requestId).map((line) => isRequestUnreadLine(line, before))).toEqual([true]);
    },
  );

  it('leaves the idle limit the client’s when it stops sending and the handler has read everything', async () => {
    const status = await unfinishedUpload('/idle/reads-slowly', 'stops-sending', 1_000, [{ atMs: 0, bytes: 16 }]);
    expect(status).toBe(408);
    await expect
      .poll(() => linesOf('stops-sending'))
      .toMatchObject([{ event: 'request.denied', level: 40, reason: 'inbound_idle' }]);
  });

  it.each([
    ['the deadline', '', 'request_unfinished'],
    ['the idle limit', '/idle', 'inbound_idle'],
  ])(
    'blames the client at %s when it sent a few bytes and stopped, to a handler that reads nothing',
    async (_limit, prefix, reason) => {
      // The bytes wait unread, but far below what the stream holds: the client could have sent
      // more and chose not to, and a handler that has not read yet cannot be blamed for it.
      const requestId = `few-bytes${prefix.replace('/', '-')}`;
      const status = await unfinishedUpload(`${prefix}/read-nothing`, requestId, 1_000, [{ atMs: 0, bytes: 16 }]);
      expect(status).toBe(408);
      await expect.poll(() => linesOf(requestId)).toMatchObject([{ event: 'request.denied', level: 40, reason }]);
    },
  );

  it('blames the client when it was sending slowly and nothing waited for the handler', async () => {
    const sends = Array.from({ length: 14 }, (_, i) => ({ atMs: i * 100, bytes: 16 }));
    const status = await unfinishedUpload('/reads-slowly', 'slow-sender', 1_000, sends);
    expect(status).toBe(408);
    await expect
      .poll(() => linesOf('slow-sender'))
      .toMatchObject([{ event: 'request.denied', level: 40, reason: 'request_unfinished' }]);
  });
});

describe('a deadline just after the client finished sending its body', () => {
  it('blames the client when its body ended less than a second before the deadline, the handler keeping up', async () => {
    const status = await unfinishedUpload('/reads-all', 'ended-late', 1_000, [
      { atMs: 0, bytes: 16 },
      { atMs: DEADLINE_MS - 200, bytes: 984 },
    ]);
    expect(status).toBe(408);
    await expect
      .poll(() => linesOf('ended-late').map((line) => isRequestLateLine(line, UNREAD_REQUEST_MS)))
      .toEqual([true]);
  });

  it('blames the client whose first write filled the request’s buffer, taken at once, and who then paused', async () => {
    // Exactly what the request's buffer holds, in one write: Node's parser stops reading the
    // socket for a moment only, and the pause after it is the client's, not the handler's.
    const first = new IncomingMessage(new Socket()).readableHighWaterMark;
    const status = await unfinishedUpload('/reads-all', 'filled-then-paused', first + 100, [
      { atMs: 0, bytes: first },
      { atMs: DEADLINE_MS - 200, bytes: 100 },
    ]);
    expect(status).toBe(408);
    await expect
      .poll(() => linesOf('filled-then-paused').map((line) => isRequestLateLine(line, UNREAD_REQUEST_MS)))
      .toEqual([true]);
  });

  it.each([
    ['ended in time for the handler', 'ended-early', '/reads-all', 1_000],
    ['ended late because the handler held it back', 'held-back', '/holds-then-reads', BURST],
  ])('keeps the deadline the server’s for a body that %s', async (_label, requestId, path, length) => {
    expect(DEADLINE_MS - HOLD_MS).toBeLessThan(UNREAD_REQUEST_MS);
    const status = await unfinishedUpload(path, requestId, length, [{ atMs: 0, bytes: length }]);
    expect(status).toBe(504);
    await expect.poll(() => linesOf(requestId)).toMatchObject([{ level: 50, reason: 'deadline_exceeded' }]);
  });
});
