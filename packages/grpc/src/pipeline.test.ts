// One sample control (a start hook with a release, a message hook, a deadline) through the
// gRPC pipeline, on every call kind: the release runs exactly once however the call ends.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { SecurityError, createContextKey, type Control } from '@fluxguard/core';
import { addService, fluxguardInterceptors, getCallContext, getSignal, type ServerCall } from './index.js';
import {
  KINDS,
  callKind,
  captureAudit,
  metadataValue,
  startServer,
  testService,
  type Json,
  type Started,
} from './testing/harness.js';

const STARTED_AT = createContextKey<number>('sample.startedAt');

/** Counts starts and releases per request id; a second release of one call is recorded as a fault. */
function sampleControl() {
  const releases = new Map<string, number>();
  const seen: Json[] = [];
  let inFlight = 0;
  const control: Control = {
    name: 'sample',
    stage: 'caller-limit',
    onStart(call, context) {
      inFlight += 1;
      context.set(STARTED_AT, Date.now());
      const deadlineMs = Number(call.headers.get('x-sample-deadline-ms') ?? 'NaN');
      if (Number.isFinite(deadlineMs)) context.limitDeadline(Date.now() + deadlineMs);
      if (call.headers.get('x-sample-refuse') === 'yes') {
        inFlight -= 1;
        throw new SecurityError('permission_denied', { reason: 'app.sample_refused' });
      }
      return () => {
        inFlight -= 1;
        releases.set(call.requestId, (releases.get(call.requestId) ?? 0) + 1);
      };
    },
    onMessage(message) {
      if ((message as Json).bad === true) throw new SecurityError('invalid_argument', { details: { field: 'bad' } });
      seen.push(message as Json);
    },
  };
  return { control, releases, seen, inFlight: () => inFlight };
}

const sample = sampleControl();
const audit = captureAudit();
/** The reason each call's signal aborted with, by request id. */
const aborts = new Map<string, string>();
/** Request ids whose handler started, and what the handler read from the context. */
const handlerStarts = new Map<string, { startedAt: number | undefined; deadline: number | undefined }>();
let started: Started;
/** Server-streaming handlers that finished writing after their deadline. */
const lateWriters: string[] = [];

function observe(call: ServerCall): void {
  const context = getCallContext(call);
  handlerStarts.set(context.requestId, { startedAt: context.get(STARTED_AT), deadline: context.deadline });
  getSignal(call).addEventListener('abort', () => {
    aborts.set(context.requestId, (getSignal(call).reason as DOMException).name);
  });
}

/** What a handler does, from the `x-mode` metadata entry: answer, fail, or wait for the end. */
function modeOf(call: ServerCall): string {
  const [mode] = call.metadata.get('x-mode');
  return typeof mode === 'string' ? mode : 'ok';
}

const waitForEnd = (call: ServerCall): Promise<never> =>
  new Promise<never>(() => {
    observe(call);
  });

async function respond(call: ServerCall): Promise<Json> {
  observe(call);
  const mode = modeOf(call);
  if (mode === 'wait') return waitForEnd(call);
  if (mode === 'fail') throw new Error('ENOENT: /srv/secret (internal)');
  return { ok: true };
}

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit, controls: [sample.control] }), (server) => {
    addService(server, testService, {
      Unary: (call, callback) => {
        if (modeOf(call) === 'answer-on-abort') {
          // Answers, synchronously, from its signal's abort listener.
          observe(call);
          const signal = getSignal(call);
          signal.addEventListener('abort', () => {
            callback(signal.reason as Error);
          });
          return undefined;
        }
        return respond(call);
      },
      ClientStream: async (call) => {
        for await (const _message of call) {
          // Drain the stream: every message passed the message hook first.
        }
        return respond(call);
      },
      ServerStream: async (call) => {
        if (modeOf(call) === 'write-on') {
          // Ignores its signal and keeps writing past the deadline.
          observe(call);
          for (let i = 0; i < 40; i++) {
            call.write({ n: i });
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
          call.end();
          lateWriters.push(getCallContext(call).requestId);
          return;
        }
        call.write(await respond(call));
        call.end();
      },
      // Not `for await`: it destroys a duplex stream when the loop ends, response side included.
      Bidi: (call) => {
        call.on('data', () => undefined);
        call.on('end', () => {
          void respond(call).then(
            (answer) => {
              call.write(answer);
              call.end();
            },
            (error: unknown) => call.destroy(error as Error),
          );
        });
      },
    });
  });
});

afterAll(async () => {
  await started.close();
});

function metadata(id: string, entries: Record<string, string> = {}): Metadata {
  const md = new Metadata();
  md.set('x-request-id', id);
  for (const [key, value] of Object.entries(entries)) md.set(key, value);
  return md;
}

async function releasedOnce(id: string): Promise<void> {
  await expect.poll(() => sample.releases.get(id)).toBe(1);
}

describe.each(KINDS)('a sample control on a %s call', (kind) => {
  it('runs before the handler, hands values to it, and releases once when the call completes', async () => {
    const id = `ok-${kind}`;
    const outcome = await callKind(started.client, kind, { n: 1 }, metadata(id));
    expect(outcome.status.code).toBe(Status.OK);
    expect(handlerStarts.get(id)?.startedAt).toBeTypeOf('number');
    expect(sample.seen).toContainEqual({ n: 1 });
    await releasedOnce(id);
  });

  it('releases once when the handler fails', async () => {
    const id = `fail-${kind}`;
    const outcome = await callKind(started.client, kind, {}, metadata(id, { 'x-mode': 'fail' }));
    expect(outcome.status.code).toBe(Status.INTERNAL);
    expect(outcome.status.details).not.toContain('secret');
    await releasedOnce(id);
  });

  it('releases once, and aborts the handler signal, when the client cancels', async () => {
    const id = `cancel-${kind}`;
    const outcome = await callKind(started.client, kind, {}, metadata(id, { 'x-mode': 'wait' }), {}, (call) => {
      const poll = setInterval(() => {
        if (handlerStarts.has(id)) {
          clearInterval(poll);
          call.cancel();
        }
      }, 5);
    });
    expect(outcome.status.code).toBe(Status.CANCELLED);
    await releasedOnce(id);
    expect(aborts.get(id)).toBe('AbortError');
  });

  it('ends the call at the deadline the control set, whatever the handler does', async () => {
    const id = `deadline-${kind}`;
    const before = Date.now();
    const outcome = await callKind(
      started.client,
      kind,
      {},
      metadata(id, { 'x-mode': 'wait', 'x-sample-deadline-ms': '150' }),
    );
    expect(outcome.status.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(metadataValue(outcome.status.metadata, 'x-request-id')).toBe(id);
    expect(handlerStarts.get(id)?.deadline).toBeGreaterThanOrEqual(before + 150);
    await releasedOnce(id);
    expect(aborts.get(id)).toBe('TimeoutError');
    const lines = audit.lines().filter((line) => line.requestId === id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ code: 'deadline_exceeded' });
  });

  it('refuses a message the message hook rejects, before the handler sees it, and releases once', async () => {
    const id = `bad-message-${kind}`;
    const outcome = await callKind(started.client, kind, { bad: true }, metadata(id));
    expect(outcome.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(metadataValue(outcome.status.metadata, 'x-fluxguard-field')).toBe('bad');
    expect(handlerStarts.has(id)).toBe(false);
    await releasedOnce(id);
  });

  it('runs no handler and holds nothing when the start hook refuses', async () => {
    const id = `refused-${kind}`;
    const outcome = await callKind(started.client, kind, {}, metadata(id, { 'x-sample-refuse': 'yes' }));
    expect(outcome.status.code).toBe(Status.PERMISSION_DENIED);
    expect(handlerStarts.has(id)).toBe(false);
    expect(sample.releases.has(id)).toBe(false);
  });
});

describe('a handler that ignores its deadline', () => {
  it('gets its writes dropped once the client has DEADLINE_EXCEEDED, and the server keeps serving', async () => {
    const id = 'write-on-1';
    const outcome = await callKind(
      started.client,
      'serverStream',
      {},
      metadata(id, { 'x-mode': 'write-on', 'x-sample-deadline-ms': '100' }),
    );
    expect(outcome.status.code).toBe(Status.DEADLINE_EXCEEDED);
    const delivered = outcome.messages.length;
    expect(delivered).toBeLessThan(40);
    await expect.poll(() => lateWriters, { timeout: 3_000 }).toContain(id);
    expect((await callKind(started.client, 'unary', {}, metadata('after-write-on'))).status.code).toBe(Status.OK);
  });
});

describe('a handler that answers from its abort listener', () => {
  it('cannot replace the deadline status the client gets', async () => {
    const outcome = await callKind(
      started.client,
      'unary',
      {},
      metadata('answer-on-abort-1', { 'x-mode': 'answer-on-abort', 'x-sample-deadline-ms': '100' }),
    );
    expect(outcome.status.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(aborts.get('answer-on-abort-1')).toBe('TimeoutError');
  });
});

describe('the sample control under a race of mixed calls', () => {
  it('is back to zero in flight after 200 concurrent completed, failed, cancelled and timed-out calls', async () => {
    const modes = ['ok', 'fail', 'cancel', 'deadline'] as const;
    const calls = Array.from({ length: 200 }, (_, i) => {
      const kind = KINDS[i % KINDS.length] ?? 'unary';
      const mode = modes[Math.floor(i / KINDS.length) % modes.length] ?? 'ok';
      const id = `race-${String(i)}`;
      const entries: Record<string, string> =
        mode === 'deadline'
          ? { 'x-mode': 'wait', 'x-sample-deadline-ms': '100' }
          : mode === 'cancel'
            ? { 'x-mode': 'wait' }
            : { 'x-mode': mode };
      return callKind(started.client, kind, {}, metadata(id, entries), {}, (call) => {
        if (mode === 'cancel') {
          setTimeout(() => {
            call.cancel();
          }, 30);
        }
      }).then(() => id);
    });
    const ids = await Promise.all(calls);
    await expect.poll(() => sample.inFlight(), { timeout: 5_000 }).toBe(0);
    for (const id of ids) expect(sample.releases.get(id)).toBe(1);
  });
});
