// A client that leaves (closes its connection) does not get its in-flight slot back while the
// handler still works on its request: the concurrency limit holds the slot until the handler
// stops (it ends its answer, or its failure reaches the error handler), at most
// `holdForHandlerMs`. Without it, a client opening and closing connections could keep any
// number of handlers at work whatever the limit says.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express, { type Request, type Response } from 'express';
import { createConcurrencyLimit } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const LIMIT = 4;
const limit = createConcurrencyLimit({ maxInFlight: LIMIT, holdForHandlerMs: 60_000 });
const short = createConcurrencyLimit({ maxInFlight: 2, holdForHandlerMs: 1_000 });
const audit = captureAudit();
let served: Served;
let shortServed: Served;
/** Requests to `/never` that have ended. */
const never = { ended: 0 };

/** Handlers at work now, the most at once, how many started, and those whose request ended under them. */
const work = { running: 0, most: 0, starts: 0, ended: 0 };
let gate = newGate();

function newGate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** The handler's work: it waits for the gate, and stops early only when `stopOnSignal` says so. */
async function busy(req: Request, stopOnSignal = false): Promise<void> {
  work.starts += 1;
  work.running += 1;
  work.most = Math.max(work.most, work.running);
  const { signal } = req.fluxguard;
  signal.addEventListener('abort', () => {
    work.ended += 1;
  });
  try {
    await Promise.race([
      gate.promise,
      new Promise((_resolve, reject) => {
        if (stopOnSignal) {
          signal.addEventListener('abort', () => {
            reject(signal.reason as Error);
          });
        }
      }),
    ]);
  } finally {
    work.running -= 1;
  }
}

const handlers: Record<string, (req: Request, res: Response) => Promise<void>> = {
  // Answers once its work is done, to a client long gone.
  '/answers': async (req, res) => {
    await busy(req);
    res.json({ ok: true });
  },
  // Fails once its work is done: the failure reaches the error handler.
  '/fails': async (req) => {
    await busy(req);
    throw new Error('failed late');
  },
  // Has started its answer, and ends it once its work is done.
  '/streams': async (req, res) => {
    res.write('{"part":1');
    await busy(req);
    res.end('}');
  },
  // Stops when its request ends, as a handler should.
  '/polite': async (req, res) => {
    await busy(req, true);
    res.json({ ok: true });
  },
  // The deadline (100 ms) answers; the handler works on.
  '/deadline': async (req, res) => {
    await busy(req);
    res.json({ ok: true });
  },
  // The deadline (100 ms) answers; the handler fails once its work is done.
  '/deadline-fails': async (req) => {
    await busy(req);
    throw new Error('failed after the deadline');
  },
};

beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({
    audit: audit.audit,
    controls: [limit],
    timeouts: {
      rules: [
        { operation: 'GET /deadline', defaultMs: 100 },
        { operation: 'GET /deadline-fails', defaultMs: 100 },
      ],
    },
  });
  app.use(before);
  for (const [path, handler] of Object.entries(handlers)) app.get(path, handler);
  app.get('/ok', (_req, res) => {
    res.json({ ok: true });
  });
  app.use(after);
  served = await serve(app);

  const stuck = express();
  const guarded = fluxguard({ audit: audit.audit, controls: [short] });
  stuck.use(guarded.before);
  stuck.get('/never', (req) => {
    req.fluxguard.signal.addEventListener('abort', () => {
      never.ended += 1;
    });
    // Never answers, never fails.
  });
  stuck.use(guarded.after);
  shortServed = await serve(stuck);
});

afterAll(async () => {
  gate.open();
  await served.close();
  await shortServed.close();
});

/**
 * Starts `count` requests to `url`, waits until `ready`, then closes their connections and
 * waits until the server has seen `count` more requests end (`ended` counts them).
 */
async function leaveWhile(
  url: string,
  count: number,
  ready: () => boolean,
  ended: { ended: number } = work,
): Promise<void> {
  ended.ended = 0;
  const controllers = Array.from({ length: count }, () => new AbortController());
  const requests = controllers.map((c) =>
    fetch(url, { signal: c.signal })
      .then((r) => r.text())
      .catch(() => undefined),
  );
  await expect.poll(ready).toBe(true);
  for (const c of controllers) c.abort();
  await Promise.all(requests);
  await expect.poll(() => ended.ended).toBe(count);
}

describe('a request whose client leaves while its handler works', () => {
  it.each(['/answers', '/fails', '/streams'])('%s: keeps its slot until the handler stops', async (path) => {
    gate = newGate();
    await leaveWhile(`${served.url}${path}`, LIMIT, () => work.running === LIMIT);
    expect(work.running).toBe(LIMIT);
    expect(limit.inFlight()).toBe(LIMIT);
    const refused = await fetch(`${served.url}/ok`);
    expect(refused.status).toBe(503);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect((await fetch(`${served.url}/ok`)).status).toBe(200);
  });

  it('keeps the slot of a request answered by its deadline until the handler stops', async () => {
    gate = newGate();
    const answers = await Promise.all(
      Array.from({ length: LIMIT }, () => fetch(`${served.url}/deadline`).then((r) => r.status)),
    );
    expect(answers).toEqual(Array.from({ length: LIMIT }, () => 504));
    expect(work.running).toBe(LIMIT);
    expect(limit.inFlight()).toBe(LIMIT);
    expect((await fetch(`${served.url}/ok`)).status).toBe(503);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
  });

  it("records a handler that fails after its deadline answered by the deadline's line alone", async () => {
    gate = newGate();
    const answer = await fetch(`${served.url}/deadline-fails`);
    expect(answer.status).toBe(504);
    await answer.text();
    const requestId = answer.headers.get('x-request-id');
    // The answer is wholly sent before the handler fails.
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
    const lines = audit.lines().filter((line) => line.requestId === requestId);
    expect(lines.filter((line) => Number(line.level) >= 30)).toMatchObject([
      { event: 'request.failed', code: 'deadline_exceeded' },
    ]);
    expect(lines.filter((line) => Number(line.level) < 30)).toMatchObject([
      { msg: 'failure after the request was answered' },
    ]);
  });

  it('gives the slot back as soon as a handler that stops on its signal has stopped', async () => {
    gate = newGate();
    await leaveWhile(`${served.url}/polite`, LIMIT, () => work.running === LIMIT);
    // Long before holdForHandlerMs (60 s): the handlers stopped.
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect(work.running).toBe(0);
    gate.open();
  });

  it('keeps a flood of connections each closed after its request (bounded: 300 connections) to the limit', async () => {
    gate = newGate();
    work.most = 0;
    work.starts = 0;
    const { port } = served;
    await Promise.all(
      Array.from(
        { length: 300 },
        () =>
          new Promise<void>((resolve) => {
            const socket = connect(port, '127.0.0.1', () => {
              socket.write('GET /answers HTTP/1.1\r\nHost: localhost\r\n\r\n');
              setTimeout(() => {
                socket.destroy();
                resolve();
              }, 20);
            });
            socket.on('error', () => {
              resolve();
            });
          }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    console.log(
      `connections closed after their request: 300; handlers started ${String(work.starts)}, at most ${String(work.most)} at once`,
    );
    expect(work.starts).toBeGreaterThan(0);
    expect(work.most).toBeLessThanOrEqual(LIMIT);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect((await fetch(`${served.url}/ok`)).status).toBe(200);
  });

  it('holds the slot of a handler that never stops for holdForHandlerMs, then gives it back', async () => {
    await leaveWhile(`${shortServed.url}/never`, 2, () => short.inFlight() === 2, never);
    expect(short.inFlight()).toBe(2);
    await expect.poll(() => short.inFlight(), { timeout: 5_000 }).toBe(0);
  });
});
