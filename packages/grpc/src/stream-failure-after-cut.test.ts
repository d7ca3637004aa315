// A streaming handler that fails once its call is over (its client cancelled it, the client's own
// deadline passed, or the server's deadline ended it) gets a debug line with the error, as a
// unary handler's failure does, and no second line: whether it awaited its work when the call
// ended or works from the stream's events (it returned at once), and however the call ended.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status, type Server } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, getSignal, type ServerCall } from './index.js';
import { callKind, captureAudit, startServer, testService, unaryAnswering, type Started } from './testing/harness.js';

const audit = captureAudit();
let started: Started;
/** The same service, whose calls the server's own deadline ends after 200 ms. */
let timed: Started;
/** Request ids whose handler has heard its call end. */
const heardEnd = new Set<string>();

/** Fails with the error its test names once the call's signal aborts: from an event, or awaited. */
function failOnAbort(call: ServerCall & { destroy(error: Error): void }): Promise<void> | undefined {
  const requestId = String(call.metadata.get('x-request-id')[0]);
  const signal = getSignal(call);
  const failure = new Error(`failure after the end of ${requestId}`);
  if (call.metadata.get('x-style')[0] === 'events') {
    signal.addEventListener('abort', () => {
      heardEnd.add(requestId);
      call.destroy(failure);
    });
    return undefined;
  }
  return new Promise((_resolve, reject) => {
    signal.addEventListener('abort', () => {
      heardEnd.add(requestId);
      reject(failure);
    });
  });
}

function register(server: Server): void {
  addService(server, testService, {
    ...unaryAnswering({}),
    ServerStream: (call) => {
      call.write({ n: 1 });
      return failOnAbort(call);
    },
    Bidi: (call) => {
      call.on('data', () => undefined);
      return failOnAbort(call);
    },
  });
}

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: false }), register);
  timed = await startServer(
    fluxguardInterceptors({ audit: audit.audit, timeouts: { defaultMs: 200, maxMs: 60_000, idleMs: 0 } }),
    register,
  );
});

afterAll(async () => {
  await started.close();
  await timed.close();
});

const debugLinesOf = (requestId: string) =>
  audit.lines().filter((line) => line.requestId === requestId && line.level === 20);
/** The call's own lines (info and above): what its end wrote, never a second line for the failure. */
const callLinesOf = (requestId: string) =>
  audit
    .lines()
    .filter((line) => line.requestId === requestId && (line.level as number) >= 30)
    .map((line) => [line.event, line.reason].filter((part) => typeof part === 'string').join(' '));

describe.each(['serverStream', 'bidi'] as const)('a %s call', (kind) => {
  it.each([
    ['cancelled by its client', 'events'],
    ['cancelled by its client', 'awaits'],
    ['past its client’s deadline', 'events'],
    ['past its client’s deadline', 'awaits'],
    ['ended by the server’s deadline', 'events'],
    ['ended by the server’s deadline', 'awaits'],
  ] as const)(
    '%s, whose handler %s its signal, logs the handler’s failure afterwards at debug level',
    async (end, style) => {
      const requestId = `${kind}-${end.split(' ').slice(0, 2).join('-')}-${style}`;
      const metadata = new Metadata();
      metadata.set('x-request-id', requestId);
      metadata.set('x-style', style);
      const outcome = await callKind(
        end === 'ended by the server’s deadline' ? timed.client : started.client,
        kind,
        {},
        metadata,
        end === 'past its client’s deadline' ? { deadline: Date.now() + 200 } : {},
        (call) => {
          if (end === 'cancelled by its client') {
            setTimeout(() => {
              call.cancel();
            }, 100);
          }
        },
      );
      expect(outcome.status.code).toBe(end === 'cancelled by its client' ? Status.CANCELLED : Status.DEADLINE_EXCEEDED);
      await expect.poll(() => heardEnd.has(requestId)).toBe(true);
      await expect
        .poll(() => debugLinesOf(requestId))
        .toMatchObject([
          { msg: 'status after the call ended', err: { message: `failure after the end of ${requestId}` } },
        ]);
      // A client that leaves a handler at work gets its cancelled line, whether the handler
      // awaits or works from the stream's events (it returned, its stream still open), as on
      // Express; a deadline, its own line.
      const expected = {
        'cancelled by its client': ['request.cancelled'],
        'past its client’s deadline': ['request.denied client_deadline'],
        'ended by the server’s deadline': ['request.failed deadline_exceeded'],
      }[end];
      expect(callLinesOf(requestId)).toEqual(expected);
    },
  );
});
