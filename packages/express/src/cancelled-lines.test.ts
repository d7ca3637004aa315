// A request cut while its handler works (its client left) gets exactly one `request.cancelled`
// line, written when its connection closes, as gRPC writes it when a call is cancelled: whatever
// the handler does next (returns and answers into the closed response, fails on its aborted
// signal or on something else, never ends), the audit log keeps a trace of the request, and a
// failure afterwards adds a debug line with the error, never a second line.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express, { type Request } from 'express';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

/** Request ids whose handler has started, and those whose handler has stopped. */
const started = new Set<string>();
const stopped = new Set<string>();

function working(req: Request): string {
  const id = req.fluxguard.requestId;
  started.add(id);
  return id;
}

/** Until its signal aborts. */
async function untilAborted(req: Request): Promise<void> {
  const { signal } = req.fluxguard;
  if (signal.aborted) return;
  await new Promise((resolve) => {
    signal.addEventListener('abort', resolve);
  });
}

function guardedApp(audit: ReturnType<typeof captureAudit>['audit']): express.Express {
  const app = express();
  const { before, after } = fluxguard({ audit });
  app.use(before);
  // Ignores its signal: answers 200 ms later, to a client long gone.
  app.get('/ignores', async (req, res) => {
    const id = working(req);
    await sleep(200);
    res.json({ ok: true });
    stopped.add(id);
  });
  // Ignores its signal and ends its response with nothing in it.
  app.get('/ends', async (req, res) => {
    const id = working(req);
    await sleep(200);
    res.end();
    stopped.add(id);
  });
  // Fails with its aborted signal's reason, as a read given the signal does.
  app.get('/abort-throws', async (req) => {
    const id = working(req);
    await untilAborted(req);
    stopped.add(id);
    throw req.fluxguard.signal.reason;
  });
  // Fails with something else once its client has left: a bug, not the abort.
  app.get('/bug-after', async (req) => {
    const id = working(req);
    await untilAborted(req);
    stopped.add(id);
    throw new TypeError('late bug');
  });
  // Never answers, never fails.
  app.get('/never', (req) => {
    working(req);
  });
  app.get('/ok', (_req, res) => {
    res.json({ ok: true });
  });
  app.use(after);
  return app;
}

/** A connection that has sent `GET path` with request id `id`. */
async function send(port: number, path: string, id: string): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(`GET ${path} HTTP/1.1\r\nhost: localhost\r\nx-request-id: ${id}\r\n\r\n`);
  return socket;
}

describe('a request whose client leaves while its handler works', () => {
  const { audit, lines } = captureAudit();
  let served: Served;

  beforeAll(async () => {
    served = await serve(guardedApp(audit));
  });

  afterAll(async () => {
    await served.close();
  });

  /** Sends `path` as `id`, leaves once its handler works, and waits until `done` says so. */
  async function leave(path: string, id: string, done: () => boolean): Promise<void> {
    const socket = await send(served.port, path, id);
    await expect.poll(() => started.has(id)).toBe(true);
    socket.destroy();
    await expect.poll(done).toBe(true);
  }

  const linesOf = (id: string) => lines().filter((line) => line.requestId === id);
  const cancelledOf = (id: string) => linesOf(id).filter((line) => line.event === 'request.cancelled');

  it('writes one line when the handler ignores its signal and answers into the closed response', async () => {
    await leave('/ignores', 'ignores-1', () => stopped.has('ignores-1'));
    // The handler has answered: anything it was to cause is written by now.
    await sleep(50);
    expect(linesOf('ignores-1')).toEqual([
      expect.objectContaining({
        event: 'request.cancelled',
        outcome: 'cancelled',
        level: 30,
        requestId: 'ignores-1',
        operation: 'GET /ignores',
        peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as unknown,
        transport: 'http',
      }),
    ]);
    expect(linesOf('ignores-1')[0]).not.toHaveProperty('reason');
  });

  it('writes one line when the handler ends its response with res.end()', async () => {
    await leave('/ends', 'ends-1', () => stopped.has('ends-1'));
    await sleep(50);
    expect(linesOf('ends-1')).toMatchObject([{ event: 'request.cancelled', requestId: 'ends-1' }]);
  });

  it('writes one line, and the failure at debug level, when the handler fails on its aborted signal', async () => {
    await leave('/abort-throws', 'abort-1', () =>
      linesOf('abort-1').some((line) => line.msg === 'failure after the request was cancelled'),
    );
    await sleep(50);
    expect(cancelledOf('abort-1')).toHaveLength(1);
    expect(cancelledOf('abort-1')[0]).not.toHaveProperty('error');
    expect(linesOf('abort-1').filter((line) => Number(line.level) > 30)).toEqual([]);
    expect(linesOf('abort-1').find((line) => Number(line.level) === 20)).toMatchObject({
      err: { type: 'DOMException', name: 'AbortError' },
    });
  });

  it('keeps a failure that is not the abort, at debug level with its error, beside the one line', async () => {
    await leave('/bug-after', 'bug-1', () =>
      linesOf('bug-1').some((line) => line.msg === 'failure after the request was cancelled'),
    );
    await sleep(50);
    expect(cancelledOf('bug-1')).toHaveLength(1);
    expect(linesOf('bug-1').filter((line) => Number(line.level) > 30)).toEqual([]);
    expect(linesOf('bug-1').find((line) => Number(line.level) === 20)).toMatchObject({
      msg: 'failure after the request was cancelled',
      err: { type: 'TypeError', message: 'late bug' },
    });
  });

  it('writes the line when the handler never ends', async () => {
    await leave('/never', 'never-1', () => cancelledOf('never-1').length > 0);
    await sleep(50);
    expect(linesOf('never-1')).toMatchObject([{ event: 'request.cancelled', operation: 'GET /never' }]);
  });

  it('writes no line for a request answered in full', async () => {
    const res = await fetch(`${served.url}/ok`, { headers: { 'x-request-id': 'served-1' } });
    expect(res.status).toBe(200);
    await res.text();
    await sleep(50);
    expect(linesOf('served-1')).toEqual([]);
  });
});

describe('a flood of requests whose clients leave while their handlers work', () => {
  const REQUESTS = 200;
  const folding = captureAudit({ foldRefusals: { after: 3, intervalMs: 300 } });
  let served: Served;

  beforeAll(async () => {
    served = await serve(guardedApp(folding.audit));
  });

  afterAll(async () => {
    await served.close();
  });

  it('writes the first lines in full, folds the rest, and the server still answers', async () => {
    const ids = Array.from({ length: REQUESTS }, (_, i) => `flood-${i}`);
    const sockets = await Promise.all(ids.map((id) => send(served.port, '/ignores', id)));
    await expect.poll(() => ids.every((id) => started.has(id)), { timeout: 5_000 }).toBe(true);
    for (const socket of sockets) socket.destroy();
    await expect.poll(() => ids.every((id) => stopped.has(id)), { timeout: 5_000 }).toBe(true);
    // Every request is accounted for, by its own line or a folded line's count (one a fold interval).
    const full = () => folding.lines().filter((line) => line.event === 'request.cancelled');
    const folded = () => folding.lines().filter((line) => line.event === 'request.cancelled.folded');
    await expect
      .poll(() => full().length + folded().reduce((sum, line) => sum + Number(line.count), 0), { timeout: 5_000 })
      .toBe(REQUESTS);
    expect(full().length).toBeLessThanOrEqual(10);
    expect(folded()[0]).toMatchObject({
      level: 30,
      outcome: 'cancelled',
      transport: 'http',
      peer: '127.0.0.1',
      operation: 'GET /ignores',
    });
    const res = await fetch(`${served.url}/ok`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });
});
