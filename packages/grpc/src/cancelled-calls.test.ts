// A client that cancels its call does not get its in-flight slot back while the handler still
// works on it: the concurrency limit holds the slot until the handler stops (it answers, throws
// or its promise settles), at most `holdForHandlerMs`. Without it, a client cancelling calls as
// fast as it opens them (an HTTP/2 reset after each request) keeps any number of handlers at
// work whatever the limit says.
import { connect, constants } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { createConcurrencyLimit } from '@fluxguard/core';
import { addService, fluxguardInterceptors, getSignal, type ServerCall } from './index.js';
import {
  KINDS,
  callKind,
  captureAudit,
  startServer,
  testService,
  unaryAnswering,
  type Json,
  type Started,
} from './testing/harness.js';
import { grpcFrame } from './testing/raw-http2.js';

const LIMIT = 4;
const limit = createConcurrencyLimit({ maxInFlight: LIMIT, holdForHandlerMs: 60_000 });
const audit = captureAudit();
let started: Started;

/** Handlers at work now, the most at once, and those whose call has ended under them. */
const work = { running: 0, most: 0, starts: 0, ended: 0 };
let gate = newGate();

function newGate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** The handler's work: it waits for the gate and does not stop when its call ends. */
async function busy(call: ServerCall): Promise<Json> {
  work.starts += 1;
  work.running += 1;
  work.most = Math.max(work.most, work.running);
  getSignal(call).addEventListener('abort', () => {
    work.ended += 1;
  });
  try {
    // `x-mode: polite` stops when its call ends, as a handler should.
    if (call.metadata.get('x-mode')[0] === 'polite') {
      await Promise.race([
        gate.promise,
        new Promise((_resolve, reject) => {
          getSignal(call).addEventListener('abort', () => {
            reject(new Error('ended'));
          });
        }),
      ]);
    } else {
      await gate.promise;
    }
  } finally {
    work.running -= 1;
  }
  return { ok: true };
}

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit, controls: [limit] }), (server) => {
    addService(server, testService, {
      Unary: (call, callback) => {
        // `x-mode: callback` answers through grpc-js's callback, and returns at once.
        if (call.metadata.get('x-mode')[0] === 'callback') {
          busy(call).then(
            (answer) => {
              callback(null, answer);
            },
            (error: unknown) => {
              callback(error as Error);
            },
          );
          return undefined;
        }
        return busy(call);
      },
      ClientStream: (call) => busy(call),
      ServerStream: async (call) => {
        call.write(await busy(call));
        call.end();
      },
      Bidi: async (call) => {
        call.write(await busy(call));
        call.end();
      },
    });
  });
});

afterAll(async () => {
  gate.open();
  await started.close();
});

function mode(value: string): Metadata {
  const md = new Metadata();
  md.set('x-mode', value);
  return md;
}

/** Starts LIMIT calls, waits until their handlers work, cancels them all, and waits until the server has seen it. */
async function cancelWhileWorking(kind: (typeof KINDS)[number], metadata = new Metadata()): Promise<void> {
  work.ended = 0;
  const calls: { cancel(): void }[] = [];
  const outcomes = Array.from({ length: LIMIT }, () =>
    callKind(started.client, kind, {}, metadata, {}, (call) => calls.push(call)),
  );
  await expect.poll(() => work.running).toBe(LIMIT);
  expect(limit.inFlight()).toBe(LIMIT);
  for (const call of calls) call.cancel();
  for (const outcome of await Promise.all(outcomes)) expect(outcome.status.code).toBe(Status.CANCELLED);
  await expect.poll(() => work.ended).toBe(LIMIT);
}

describe('a call cancelled while its handler works', () => {
  it.each([...KINDS])('%s: keeps its slot until the handler stops', async (kind) => {
    gate = newGate();
    await cancelWhileWorking(kind);
    // The calls have ended, their handlers have not: the limit still counts them.
    expect(work.running).toBe(LIMIT);
    expect(limit.inFlight()).toBe(LIMIT);
    expect((await callKind(started.client, 'unary', {})).status.code).toBe(Status.UNAVAILABLE);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect((await callKind(started.client, kind, {})).status.code).toBe(Status.OK);
  });

  it('writes one request.cancelled line per call its client left while the handler worked', async () => {
    gate = newGate();
    const before = audit.lines().length;
    await cancelWhileWorking('unary', mode('polite'));
    const lines = audit.lines().slice(before);
    expect(lines.filter((line) => line.event === 'request.cancelled')).toHaveLength(LIMIT);
    expect(new Set(lines.map((line) => line.requestId)).size).toBe(LIMIT);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
  });

  it('keeps the slot of a callback-style handler until it calls back', async () => {
    gate = newGate();
    await cancelWhileWorking('unary', mode('callback'));
    expect(limit.inFlight()).toBe(LIMIT);
    expect((await callKind(started.client, 'unary', {})).status.code).toBe(Status.UNAVAILABLE);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
  });

  it('gives the slot back as soon as a handler that stops on its signal has stopped', async () => {
    gate = newGate();
    await cancelWhileWorking('unary', mode('polite'));
    // Long before holdForHandlerMs (60 s): the handlers stopped.
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect(work.running).toBe(0);
    gate.open();
  });

  it('keeps a flood of requests each reset at once (bounded: 3,000 streams or 3 s) to the limit', async () => {
    gate = newGate();
    work.most = 0;
    work.starts = 0;
    const linesBefore = audit.lines().length;
    const attacker = connect(`http://${started.address}`);
    attacker.on('error', () => undefined);
    const seen = { goaway: false };
    attacker.on('goaway', () => {
      seen.goaway = true;
    });
    let sent = 0;
    const until = Date.now() + 3_000;
    while (sent < 3_000 && Date.now() < until && !seen.goaway && !attacker.closed && !attacker.destroyed) {
      for (let i = 0; i < 50; i++, sent++) {
        try {
          const stream = attacker.request({
            ':method': 'POST',
            ':path': testService.Unary.path,
            'content-type': 'application/grpc',
            te: 'trailers',
          });
          stream.on('error', () => undefined);
          // The whole request, then the reset: the handler starts, and the call ends under it.
          stream.end(grpcFrame(Buffer.from('{}')));
          stream.close(constants.NGHTTP2_CANCEL);
        } catch {
          break;
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    attacker.destroy();
    console.log(
      `requests reset at once: ${String(sent)} sent, GOAWAY ${String(seen.goaway)}; handlers started ${String(work.starts)}, at most ${String(work.most)} at once`,
    );
    expect(sent).toBeGreaterThan(LIMIT * 10);
    expect(work.starts).toBeGreaterThan(0);
    expect(work.most).toBeLessThanOrEqual(LIMIT);
    // Only a call whose handler ran has a cancellation line: the flood's log is bounded by the limit.
    const cancelledLines = audit
      .lines()
      .slice(linesBefore)
      .filter((line) => line.event === 'request.cancelled');
    expect(cancelledLines.length).toBeLessThanOrEqual(work.starts);
    gate.open();
    await expect.poll(() => limit.inFlight()).toBe(0);
    expect((await callKind(started.client, 'unary', {})).status.code).toBe(Status.OK);
  });
});

describe('a handler that never stops', () => {
  const short = createConcurrencyLimit({ maxInFlight: 2, holdForHandlerMs: 1_000 });
  let server: Started;
  let ended = 0;

  beforeAll(async () => {
    server = await startServer(fluxguardInterceptors({ audit: audit.audit, controls: [short] }), (s) => {
      addService(s, testService, {
        ...unaryAnswering({}),
        Unary: (call) => {
          getSignal(call).addEventListener('abort', () => {
            ended += 1;
          });
          // Never calls back, never settles.
          return undefined;
        },
      });
    });
  });

  afterAll(async () => {
    await server.close();
  });

  it('holds the slot holdForHandlerMs after its call ended, then gives it back', async () => {
    const calls: { cancel(): void }[] = [];
    const outcomes = [1, 2].map(() => callKind(server.client, 'unary', {}, new Metadata(), {}, (c) => calls.push(c)));
    await expect.poll(() => short.inFlight()).toBe(2);
    for (const call of calls) call.cancel();
    await Promise.all(outcomes);
    await expect.poll(() => ended).toBe(2);
    expect(short.inFlight()).toBe(2);
    await expect.poll(() => short.inFlight(), { timeout: 5_000 }).toBe(0);
  });
});

describe('a client that leaves many calls while their handlers work', () => {
  const folding = captureAudit({ foldRefusals: { after: 3, intervalMs: 300 } });
  const CALLS = 20;
  let server: Started;
  let running = 0;

  beforeAll(async () => {
    server = await startServer(fluxguardInterceptors({ audit: folding.audit }), (s) => {
      addService(s, testService, {
        ...unaryAnswering({}),
        // Works until its call ends.
        Unary: (call) =>
          new Promise<Json>((resolve) => {
            running += 1;
            getSignal(call).addEventListener('abort', () => {
              running -= 1;
              resolve({});
            });
          }),
      });
    });
  });

  afterAll(async () => {
    await server.close();
  });

  it('writes the first cancellations in full and folds the rest into one line', async () => {
    const calls: { cancel(): void }[] = [];
    const outcomes = Array.from({ length: CALLS }, () =>
      callKind(server.client, 'unary', {}, new Metadata(), {}, (call) => calls.push(call)),
    );
    await expect.poll(() => running).toBe(CALLS);
    for (const call of calls) call.cancel();
    for (const outcome of await Promise.all(outcomes)) expect(outcome.status.code).toBe(Status.CANCELLED);
    await expect
      .poll(() => folding.lines().filter((line) => line.event === 'request.cancelled.folded'))
      .toEqual([
        expect.objectContaining({
          level: 30,
          outcome: 'cancelled',
          transport: 'grpc',
          operation: testService.Unary.path,
          count: CALLS - 3,
        }),
      ]);
    expect(folding.lines().filter((line) => line.event === 'request.cancelled')).toHaveLength(3);
  });
});
