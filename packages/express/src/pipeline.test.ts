// One sample control (a start hook with a release, a message hook on body chunks, a deadline)
// through the Express pipeline: the release runs exactly once however the request ends. All of
// it twice: with `fluxguard().before` in the app, and with the app behind `wrap(app)`.
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { SecurityError, createContextKey, type Control } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const BODY_BYTES = createContextKey<number>('sample.bodyBytes');
const BODY_LIMIT = 100 * 1024;
const BIG_ANSWER_BYTES = 32 * 1024 * 1024;

function sampleControl() {
  const releases = new Map<string, number>();
  let inFlight = 0;
  const control: Control = {
    name: 'sample',
    stage: 'caller-limit',
    onStart(call, context) {
      const deadlineMs = Number(call.headers.get('x-sample-deadline-ms') ?? 'NaN');
      if (Number.isFinite(deadlineMs)) context.limitDeadline(Date.now() + deadlineMs);
      if (call.headers.get('x-sample-refuse') === 'yes') throw new SecurityError('permission_denied');
      inFlight += 1;
      const release = (): void => {
        inFlight -= 1;
        releases.set(call.requestId, (releases.get(call.requestId) ?? 0) + 1);
      };
      // An asynchronous start (a token check, a store): body chunks keep arriving meanwhile.
      const slowMs = Number(call.headers.get('x-sample-slow-ms') ?? 'NaN');
      if (Number.isFinite(slowMs)) {
        return new Promise<() => void>((resolve) => {
          setTimeout(() => {
            resolve(release);
          }, slowMs);
        });
      }
      return release;
    },
    onMessage(chunk, _call, context) {
      const total = (context.get(BODY_BYTES) ?? 0) + (chunk as Buffer).length;
      context.set(BODY_BYTES, total);
      if (total > BODY_LIMIT) throw new SecurityError('payload_too_large', { reason: 'app.sample_body_limit' });
    },
  };
  return { control, releases, inFlight: () => inFlight };
}

describe.each(['before', 'wrap'] as const)('mounted with %s', (mounting) => {
  const sample = sampleControl();
  const audit = captureAudit();
  const aborts = new Map<string, string>();
  const handlerStarts = new Set<string>();
  /** Bytes each upload handler received, by request id. */
  const received = new Map<string, number>();
  /** Requests whose handler answered after the deadline had answered them. */
  const lateAnswers: string[] = [];
  let served: Served;

  beforeAll(async () => {
    const app = express();
    const { before, after, wrap } = fluxguard({ audit: audit.audit, controls: [sample.control] });
    app.use(before);
    app.use((req, _res, next) => {
      handlerStarts.add(req.fluxguard.requestId);
      const { signal } = req.fluxguard;
      signal.addEventListener('abort', () => {
        aborts.set(req.fluxguard.requestId, (signal.reason as DOMException).name);
      });
      next();
    });
    app.get('/answer', (_req, res) => {
      res.json({ ok: true });
    });
    app.get('/fail', () => {
      throw new Error('ENOENT: /srv/secret (internal)');
    });
    app.get('/wait', () => {
      // Never answers: the deadline or the client ends it.
    });
    app.get('/late', (req, res) => {
      // Ignores its signal and answers after the deadline, from a timer (outside Express's reach).
      setTimeout(() => {
        res.setHeader('x-late', 'yes');
        res.json({ late: true, requestId: req.fluxguard.requestId });
        lateAnswers.push(req.fluxguard.requestId);
      }, 200);
    });
    app.get('/stream', (req, res) => {
      res.write('first\n');
      const timer = setInterval(() => res.write('more\n'), 10);
      req.fluxguard.signal.addEventListener('abort', () => {
        clearInterval(timer);
      });
    });
    app.get('/abort-throws', async (req) => {
      // Waits for its signal and rethrows its reason, as a read given the signal does.
      const { signal } = req.fluxguard;
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve);
      });
      throw signal.reason;
    });
    app.get('/big-stream', async (req, res) => {
      // Streamed in 64 KiB chunks as the client takes them, the signal passed on: at the
      // deadline `pipeline` destroys the response, as a download handler's would.
      const chunk = Buffer.alloc(64 * 1024);
      const chunks = Readable.from(Array.from({ length: BIG_ANSWER_BYTES / chunk.length }, () => chunk));
      await pipeline(chunks, res, { signal: req.fluxguard.signal }).catch(() => undefined);
    });
    app.get('/big', (_req, res) => {
      // Written whole at once: far more than the socket buffers take from a client that never reads.
      res.send(Buffer.alloc(BIG_ANSWER_BYTES));
    });
    app.put('/upload', async (req, res) => {
      let bytes = 0;
      for await (const chunk of req) bytes += (chunk as Buffer).length;
      received.set(req.fluxguard.requestId, bytes);
      res.json({ bytes });
    });
    app.use(after);
    served = await serve(mounting === 'wrap' ? wrap(app) : app);
  });

  afterAll(async () => {
    await served.close();
  });

  // An answer left unread is cut a second after its deadline: the poll waits longer than that.
  async function releasedOnce(id: string): Promise<void> {
    await expect.poll(() => sample.releases.get(id), { timeout: 3_000 }).toBe(1);
  }

  describe('a sample control in the Express pipeline', () => {
    it('releases once when the request completes', async () => {
      const res = await fetch(`${served.url}/answer`, { headers: { 'x-request-id': 'ok-1' } });
      expect(res.status).toBe(200);
      await releasedOnce('ok-1');
    });

    it('releases once when the handler fails', async () => {
      const res = await fetch(`${served.url}/fail`, { headers: { 'x-request-id': 'fail-1' } });
      expect(res.status).toBe(500);
      expect(await res.text()).not.toContain('secret');
      await releasedOnce('fail-1');
    });

    it('releases once, and aborts the signal, when the client leaves a streamed answer', async () => {
      const controller = new AbortController();
      const res = await fetch(`${served.url}/stream`, {
        headers: { 'x-request-id': 'cancel-1' },
        signal: controller.signal,
      });
      expect(res.status).toBe(200);
      controller.abort();
      await releasedOnce('cancel-1');
      expect(aborts.get('cancel-1')).toBe('AbortError');
    });

    it('answers 504 at the deadline the control set, with the request id, and releases once', async () => {
      const res = await fetch(`${served.url}/wait`, {
        headers: { 'x-request-id': 'deadline-1', 'x-sample-deadline-ms': '150' },
      });
      expect(res.status).toBe(504);
      expect(res.headers.get('x-request-id')).toBe('deadline-1');
      expect(await res.json()).toMatchObject({ code: 'deadline_exceeded', requestId: 'deadline-1' });
      await releasedOnce('deadline-1');
      expect(aborts.get('deadline-1')).toBe('TimeoutError');
      expect(audit.lines().filter((line) => line.requestId === 'deadline-1')).toHaveLength(1);
    });

    it('logs a client that leaves as one info line, not as an internal error, though the handler throws', async () => {
      const socket = connect(served.port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write('GET /abort-throws HTTP/1.1\r\nhost: localhost\r\nx-request-id: leaver-1\r\n\r\n');
      await expect.poll(() => handlerStarts.has('leaver-1')).toBe(true);
      socket.destroy();
      await releasedOnce('leaver-1');
      await expect
        .poll(() => audit.lines().filter((line) => line.requestId === 'leaver-1'))
        .toMatchObject([
          { event: 'request.cancelled', outcome: 'cancelled', level: 30 },
          { msg: 'failure after the request was cancelled', level: 20, err: { name: 'AbortError' } },
        ]);
    });

    it('cuts off, at the deadline, an answer the client never reads, and releases once', async () => {
      const socket = connect(served.port, '127.0.0.1');
      // The reset can be reported before anything is read (Node 24 does): an error is expected.
      socket.on('error', () => undefined);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      await once(socket, 'connect');
      // Reads nothing: the whole answer stays queued on the server's side of the connection.
      socket.pause();
      socket.write(
        'GET /big HTTP/1.1\r\nhost: localhost\r\nx-request-id: slow-reader-1\r\nx-sample-deadline-ms: 300\r\n\r\n',
      );
      try {
        await releasedOnce('slow-reader-1');
        expect(aborts.get('slow-reader-1')).toBe('TimeoutError');
        // The client's doing, not the server's: a refusal line, not an error with a stack.
        expect(audit.lines().filter((line) => line.requestId === 'slow-reader-1')).toMatchObject([
          { code: 'deadline_exceeded', reason: 'answer_unread', event: 'request.denied' },
        ]);
        // The server let go of the connection with a reset, which drops what its kernel still
        // held for the client (megabytes, which a graceful close would go on trying to deliver
        // for as long as the client kept the connection): reading now finds only what the
        // client's own receive buffer took, well under a MiB, then the end.
        let bytes = 0;
        socket.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
        });
        socket.resume();
        await closed;
        expect(bytes).toBeLessThan(1024 * 1024);
      } finally {
        socket.destroy();
      }
    });

    it.each([
      ['written whole', '/big'],
      ['streamed', '/big-stream'],
    ])(
      'leaves the deadline the server’s when the client was reading an answer %s',
      async (_label, path) => {
        const requestId = `steady-reader${path.replaceAll('/', '-')}`;
        const socket = connect(served.port, '127.0.0.1');
        await once(socket, 'connect');
        let bytes = 0;
        // Reads steadily, with a pause after each chunk: the 32 MiB outlast the 100 ms deadline.
        socket.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          socket.pause();
          setTimeout(() => socket.resume(), 1);
        });
        socket.on('error', () => undefined);
        socket.write(
          `GET ${path} HTTP/1.1\r\nhost: localhost\r\nx-request-id: ${requestId}\r\nx-sample-deadline-ms: 100\r\n\r\n`,
        );
        try {
          // The answer was too big for the deadline, not left unread: the server's to look at. The
          // line comes once the reader is done with the answer, which a busy machine slows down.
          await expect
            .poll(() => audit.lines().filter((line) => line.requestId === requestId), { timeout: 20_000 })
            .toMatchObject([{ code: 'deadline_exceeded', reason: 'deadline_exceeded', event: 'request.failed' }]);
          expect(bytes).toBeGreaterThan(0);
        } finally {
          socket.destroy();
        }
      },
      30_000,
    );

    it('drops what a handler writes after the deadline answered, without failing the process', async () => {
      const res = await fetch(`${served.url}/late`, {
        headers: { 'x-request-id': 'late-1', 'x-sample-deadline-ms': '50' },
      });
      expect(res.status).toBe(504);
      expect(res.headers.get('x-late')).toBeNull();
      expect(await res.json()).toMatchObject({ code: 'deadline_exceeded' });
      await expect.poll(() => lateAnswers).toContain('late-1');
      // The server still serves: the late answer threw nothing (vitest fails on an uncaught error).
      expect((await fetch(`${served.url}/answer`)).status).toBe(200);
    });

    it('refuses at the start without running the handler or holding anything', async () => {
      const res = await fetch(`${served.url}/answer`, {
        headers: { 'x-request-id': 'refused-1', 'x-sample-refuse': 'yes' },
      });
      expect(res.status).toBe(403);
      expect(handlerStarts.has('refused-1')).toBe(false);
      expect(sample.releases.has('refused-1')).toBe(false);
    });

    it('sees every body chunk as it arrives, and answers 413 before the client has sent it all', async () => {
      const chunk = Buffer.alloc(64 * 1024, 1);
      const status = await new Promise<{ status: number; sentBeforeAnswer: number }>((resolve, reject) => {
        let sent = 0;
        const req = httpRequest(`${served.url}/upload`, {
          method: 'PUT',
          headers: {
            'x-request-id': 'upload-big',
            'content-type': 'application/octet-stream',
            'transfer-encoding': 'chunked',
          },
        });
        req.on('response', (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, sentBeforeAnswer: sent });
          req.destroy();
        });
        req.on('error', (err) => {
          if (sent === 0) reject(err);
        });
        // 64 KiB at a time, up to 1 MiB, never ending the request: only the limit can answer it.
        const send = (): void => {
          if (sent >= 1024 * 1024 || req.destroyed) return;
          sent += chunk.length;
          req.write(chunk, () => setTimeout(send, 5));
        };
        send();
      });
      expect(status.status).toBe(413);
      expect(status.sentBeforeAnswer).toBeLessThan(1024 * 1024);
      // The handler never received the refused chunk, nor anything after it.
      expect(received.has('upload-big')).toBe(false);
      await releasedOnce('upload-big');
    });

    it('never lets a handler see a clean end of a body cut off by a refused chunk', async () => {
      // Three quick chunks, the third over the limit, then the end of the body: the handler,
      // reading as they come, must fail, not store the first two as if they were all.
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${served.url}/upload`, {
          method: 'PUT',
          headers: {
            'x-request-id': 'upload-cut',
            'content-type': 'application/octet-stream',
            'transfer-encoding': 'chunked',
          },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.write(Buffer.alloc(40 * 1024, 5));
        req.write(Buffer.alloc(40 * 1024, 5));
        req.end(Buffer.alloc(40 * 1024, 5));
      });
      expect(status).toBe(413);
      await releasedOnce('upload-cut');
      expect(received.has('upload-cut')).toBe(false);
    });

    it('inspects the body chunks that arrive while an asynchronous start hook waits', async () => {
      // The whole body is on the wire before the start hook lets the request go on.
      const res = await fetch(`${served.url}/upload`, {
        method: 'PUT',
        headers: { 'x-request-id': 'upload-during-start', 'x-sample-slow-ms': '200' },
        body: Buffer.alloc(300 * 1024, 3),
      });
      expect(res.status).toBe(413);
      expect(received.has('upload-during-start')).toBe(false);
      await releasedOnce('upload-during-start');
    });

    it('passes a body under the limit through unchanged, also after an asynchronous start', async () => {
      const res = await fetch(`${served.url}/upload`, {
        method: 'PUT',
        headers: { 'x-request-id': 'upload-small-slow', 'x-sample-slow-ms': '100' },
        body: Buffer.alloc(60 * 1024, 4),
      });
      expect(await res.json()).toEqual({ bytes: 60 * 1024 });
    });

    it('passes a body under the limit through unchanged', async () => {
      const res = await fetch(`${served.url}/upload`, {
        method: 'PUT',
        headers: { 'x-request-id': 'upload-small' },
        body: Buffer.alloc(50 * 1024, 2),
      });
      expect(await res.json()).toEqual({ bytes: 50 * 1024 });
      await releasedOnce('upload-small');
    });

    it('is back to zero in flight after 200 concurrent completed, failed, cancelled and timed-out requests', async () => {
      const kinds = ['answer', 'fail', 'cancel', 'deadline'] as const;
      const ids = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const kind = kinds[i % kinds.length] ?? 'answer';
          const id = `race-${String(i)}`;
          const controller = new AbortController();
          const path = kind === 'cancel' ? '/stream' : kind === 'deadline' ? '/wait' : `/${kind}`;
          const headers: Record<string, string> = { 'x-request-id': id };
          if (kind === 'deadline') headers['x-sample-deadline-ms'] = '100';
          try {
            const res = await fetch(`${served.url}${path}`, { headers, signal: controller.signal });
            if (kind === 'cancel') controller.abort();
            else await res.arrayBuffer();
          } catch {
            // The cancelled ones reject: that is the point.
          }
          return id;
        }),
      );
      await expect.poll(() => sample.inFlight(), { timeout: 5_000 }).toBe(0);
      for (const id of ids) expect(sample.releases.get(id)).toBe(1);
    });
  });
});

describe('a client that leaves many requests while their handlers work', () => {
  const folding = captureAudit({ foldRefusals: { after: 3, intervalMs: 300 } });
  const REQUESTS = 20;
  let served: Served;
  let running = 0;

  beforeAll(async () => {
    const app = express();
    const { before, after } = fluxguard({ audit: folding.audit });
    app.use(before);
    app.get('/abort-throws', async (req) => {
      // Works until its client leaves, then throws its signal's reason, as a read given it does.
      const { signal } = req.fluxguard;
      running += 1;
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve);
      });
      running -= 1;
      throw signal.reason;
    });
    app.use(after);
    served = await serve(app);
  });

  afterAll(async () => {
    await served.close();
  });

  it('writes the first cancellations in full and folds the rest into one line', async () => {
    const sockets = await Promise.all(
      Array.from({ length: REQUESTS }, async () => {
        const socket = connect(served.port, '127.0.0.1');
        await once(socket, 'connect');
        socket.write('GET /abort-throws HTTP/1.1\r\nhost: localhost\r\n\r\n');
        return socket;
      }),
    );
    await expect.poll(() => running).toBe(REQUESTS);
    for (const socket of sockets) socket.destroy();
    await expect.poll(() => running).toBe(0);
    await expect
      .poll(() => folding.lines().filter((line) => line.event === 'request.cancelled.folded'))
      .toEqual([
        expect.objectContaining({
          level: 30,
          outcome: 'cancelled',
          transport: 'http',
          peer: '127.0.0.1',
          operation: 'GET /abort-throws',
          count: REQUESTS - 3,
        }),
      ]);
    const written = folding.lines().filter((line) => line.event === 'request.cancelled');
    expect(written).toHaveLength(3);
    expect(written[0]).toMatchObject({ transport: 'http' });
    expect(written[0]).not.toHaveProperty('error');
  });
});
