import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Status,
  type ServerDuplexStream,
  type ServerInterceptor,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { ConfigurationError, SecurityError, createAuditLogger } from '@fluxguard/core';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import {
  addService,
  fluxguardInterceptors,
  getCallContext,
  getPrincipal,
  getRequestId,
  getSignal,
  rejectCall,
  safeErrors,
  setPrincipal,
  wrapImplementation,
  type ServerCall,
} from './index.js';
import {
  KINDS,
  callKind,
  captureAudit,
  metadataValue,
  startServer,
  testService,
  visibleText,
  type Json,
  type Kind,
  type Outcome,
  type Started,
} from './testing/harness.js';

const SECRET_DIR = '/srv/fluxguard-secret/data';
/** Anything of this in a response is a leak: the path, errno names, grpc-js texts, stack frames. */
const LEAK =
  /fluxguard-secret|EISDIR|ENOENT|EACCES|errno|DATA_LOSS|Server method handler|\bat \S+ \(|node:internal|\.ts:\d+/;

function fsError(): Error {
  return Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${SECRET_DIR}/x'`), {
    code: 'EISDIR',
    errno: -21,
    syscall: 'read',
    path: `${SECRET_DIR}/x`,
  });
}

/** Modes whose failure is a status or a SecurityError, handed to grpc-js as an error. */
type StatusMode = 'status-not-found' | 'status-data-loss' | 'status-unimplemented' | 'security' | 'rate-limited';

type Mode =
  | StatusMode
  | 'ok'
  | 'context'
  | 'throw'
  | 'reject'
  | 'callback'
  | 'destroy'
  | 'emit-unhandled'
  | 'emit-heard'
  | 'await-signal'
  | 'set-principal-late'
  | 'empty'
  | 'own-trailer';

const delay = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

/** Errors the handlers' own `error` listeners heard (mode `emit-heard`). */
const heardByHandlers: unknown[] = [];

/** Abort reasons seen by handlers, by request id. */
const observedAborts = new Map<string, string>();

async function awaitAbort(call: ServerCall): Promise<never> {
  const signal = getSignal(call);
  await new Promise((resolve) => {
    signal.addEventListener('abort', resolve);
  });
  const reason: unknown = signal.reason;
  observedAborts.set(getRequestId(call), reason instanceof DOMException ? reason.name : 'other');
  throw reason;
}

function modeOf(call: ServerCall): Mode {
  return (metadataValue(call.metadata, 'x-test-mode') ?? 'ok') as Mode;
}

function contextReply(call: ServerCall): Json {
  const ctx = getCallContext(call);
  return {
    requestId: getRequestId(call),
    principal: getPrincipal(call) ?? null,
    aborted: getSignal(call).aborted,
    operation: ctx.operation,
    peer: ctx.peer,
  };
}

/** What each failure mode throws, rejects or passes to grpc-js. */
function failureFor(mode: StatusMode): unknown {
  switch (mode) {
    case 'status-not-found':
      return { code: Status.NOT_FOUND, details: `ENOENT: no such file, open '${SECRET_DIR}/y'` };
    case 'status-data-loss':
      return { code: Status.DATA_LOSS, details: `EACCES ${SECRET_DIR}/z` };
    case 'status-unimplemented':
      return { code: Status.UNIMPLEMENTED, details: `not here: ${SECRET_DIR}` };
    case 'security':
      return new SecurityError('invalid_argument', {
        details: { field: 'path' },
        reason: 'path_traversal',
        cause: fsError(),
      });
    case 'rate-limited':
      return new SecurityError('rate_limited', { details: { retryAfterSeconds: 3 }, reason: 'app.too_many' });
  }
}

async function unaryLike(
  call: ServerUnaryCall<Json, Json> | ServerReadableStream<Json, Json>,
  callback: sendUnaryData<Json>,
  respondWith: () => Json,
): Promise<Json | undefined> {
  const mode = modeOf(call);
  switch (mode) {
    case 'ok':
    case 'empty':
      callback(null, respondWith());
      return undefined;
    case 'own-trailer':
      callback(null, respondWith(), handlersTrailer());
      return undefined;
    case 'context':
      return contextReply(call);
    case 'throw':
      throw fsError();
    case 'reject':
      await delay(5);
      throw fsError();
    case 'callback':
      callback(fsError());
      return undefined;
    case 'destroy':
      if ('destroy' in call) call.destroy(fsError());
      else call.emit('error', fsError());
      return undefined;
    case 'emit-unhandled':
      // A listener-less emit would throw from a timer and crash the process.
      setTimeout(() => call.emit('error', fsError()), 5);
      return undefined;
    case 'emit-heard':
      // The handler's own listener hears the error too.
      call.on('error', (error: unknown) => heardByHandlers.push(error));
      setTimeout(() => call.emit('error', fsError()), 5);
      return undefined;
    case 'await-signal':
      return awaitAbort(call);
    case 'set-principal-late':
      setAnyPrincipal(call.metadata);
      return {};
    case 'status-not-found':
    case 'status-data-loss':
    case 'status-unimplemented':
    case 'security':
    case 'rate-limited':
      callback(failureFor(mode) as Parameters<sendUnaryData<Json>>[0]);
      return undefined;
  }
}

/** Trailing metadata a handler sends with its answer, with an `x-request-id` of its own. */
function handlersTrailer(): Metadata {
  const trailer = new Metadata();
  trailer.set('x-app', 'kept');
  trailer.set('x-request-id', 'chosen-by-the-handler');
  return trailer;
}

/** Sets a minimal principal: what happens depends on the metadata's fluxguard context. */
function setAnyPrincipal(metadata: Metadata): void {
  setPrincipal(metadata, {
    subject: 'x',
    roles: [],
    scopes: [],
    claims: {},
    certificate: undefined,
    authenticatedBy: 'jwt',
  });
}

async function streamLike(call: ServerWritableStream<Json, Json> | ServerDuplexStream<Json, Json>): Promise<void> {
  const mode = modeOf(call);
  switch (mode) {
    case 'ok':
      call.write({ n: 1 });
      call.write({ n: 2 });
      call.end();
      return;
    case 'empty':
      call.end();
      return;
    case 'own-trailer':
      call.write({ n: 1 });
      call.end(handlersTrailer());
      return;
    case 'context':
      call.write(contextReply(call));
      call.end();
      return;
    case 'throw':
      call.write({ n: 1 });
      throw fsError();
    case 'reject':
      call.write({ n: 1 });
      await delay(5);
      throw fsError();
    case 'callback':
      call.write({ n: 1 });
      call.emit('error', fsError());
      return;
    case 'destroy':
      call.destroy(fsError());
      return;
    case 'emit-unhandled':
      setTimeout(() => call.emit('error', fsError()), 5);
      return;
    case 'emit-heard':
      call.on('error', (error: unknown) => heardByHandlers.push(error));
      setTimeout(() => call.emit('error', fsError()), 5);
      return;
    case 'await-signal':
      return awaitAbort(call);
    case 'set-principal-late':
      setAnyPrincipal(call.metadata);
      call.end();
      return;
    case 'status-not-found':
    case 'status-data-loss':
    case 'status-unimplemented':
    case 'security':
    case 'rate-limited':
      call.emit('error', failureFor(mode));
      return;
  }
}

const handlers = wrapImplementation(testService, {
  Unary: (call, callback) => unaryLike(call, callback, () => ({ echo: call.request })),
  ClientStream: async (call, callback) => {
    const received: Json[] = [];
    if (modeOf(call) === 'ok') {
      for await (const message of call) received.push(message as Json);
      // Node destroys the finished request stream with an AbortError meanwhile: not a failure.
      await delay(20);
    }
    return unaryLike(call, callback, () => ({ received }));
  },
  ServerStream: (call) => streamLike(call),
  Bidi: (call) => {
    call.on('data', () => undefined);
    return streamLike(call);
  },
});

let started: Started;
let log: ReturnType<typeof captureAudit>;
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  log = captureAudit();
  started = await startServer(fluxguardInterceptors({ audit: log.audit }), (server) => {
    server.addService(testService, handlers);
  });
});

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await started.close();
});

afterEach(() => {
  expect(unhandled).toEqual([]);
});

function withMode(mode: Mode, extra: Record<string, string> = {}): Metadata {
  const metadata = new Metadata();
  metadata.set('x-test-mode', mode);
  for (const [key, value] of Object.entries(extra)) metadata.set(key, value);
  return metadata;
}

function linesFor(requestId: string | undefined): Json[] {
  expect(requestId).toBeDefined();
  return log.lines().filter((line) => line.requestId === requestId && line.level !== 20);
}

/** The client saw nothing internal, and the one audit line with the same request id has the cause. */
function expectSafeFailure(outcome: Outcome, expected: { code: Status; details: string; kind: Kind }): Json {
  expect(outcome.status.code).toBe(expected.code);
  expect(outcome.status.details).toBe(expected.details);
  expect(visibleText(outcome)).not.toMatch(LEAK);
  const requestId = metadataValue(outcome.status.metadata, 'x-request-id');
  const lines = linesFor(requestId);
  expect(lines).toHaveLength(1);
  const line = lines[0] ?? {};
  expect(line).toMatchObject({
    transport: 'grpc',
    operation: testService[capitalise(expected.kind)].path,
    requestId,
  });
  expect(line.peer).toMatch(/^127\.0\.0\.1:\d+$/);
  return line;
}

function capitalise(kind: Kind): 'Unary' | 'ClientStream' | 'ServerStream' | 'Bidi' {
  return kind === 'unary'
    ? 'Unary'
    : kind === 'clientStream'
      ? 'ClientStream'
      : kind === 'serverStream'
        ? 'ServerStream'
        : 'Bidi';
}

describe.each(KINDS)('%s calls', (kind) => {
  it('succeed with the request id in the initial metadata, not repeated in the trailers', async () => {
    const outcome = await callKind(
      started.client,
      kind,
      { a: 1 },
      withMode('ok', { 'x-request-id': 'trace-abc.123_X' }),
    );
    expect(outcome.status.code).toBe(Status.OK);
    expect(outcome.messages.length).toBeGreaterThan(0);
    expect(metadataValue(outcome.initialMetadata, 'x-request-id')).toBe('trace-abc.123_X');
    expect(outcome.status.metadata.get('x-request-id')).toEqual([]);
    expect(linesFor('trace-abc.123_X')).toHaveLength(0);
  });

  it("keep a handler's trailers on success, with the call's request id in place of its own", async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('own-trailer', { 'x-request-id': `own-${kind}` }));
    expect(outcome.status.code).toBe(Status.OK);
    expect(metadataValue(outcome.status.metadata, 'x-app')).toBe('kept');
    expect(outcome.status.metadata.get('x-request-id')).toEqual([`own-${kind}`]);
    expect(metadataValue(outcome.initialMetadata, 'x-request-id')).toBe(`own-${kind}`);
  });

  it('carry the request id in the trailers of a success sent without initial metadata', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('empty', { 'x-request-id': `empty-${kind}` }));
    expect(outcome.status.code).toBe(Status.OK);
    // A stream that sent no message answers with trailers only; a unary answer has headers.
    const where = outcome.messages.length === 0 ? outcome.status.metadata : outcome.initialMetadata;
    expect(metadataValue(where, 'x-request-id')).toBe(`empty-${kind}`);
  });

  it('give the handler the same context the interceptor created (Metadata object shared)', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('context', { 'x-request-id': `ctx-${kind}` }));
    expect(outcome.status.code).toBe(Status.OK);
    expect(outcome.messages[0]).toMatchObject({
      requestId: `ctx-${kind}`,
      principal: null,
      aborted: false,
      operation: testService[capitalise(kind)].path,
    });
    expect(outcome.messages[0]?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('replace a malformed or oversized incoming request id', async () => {
    for (const bad of ['has space', 'a'.repeat(201), '{"forged":1}']) {
      const outcome = await callKind(started.client, kind, {}, withMode('ok', { 'x-request-id': bad }));
      const returned = metadataValue(outcome.initialMetadata, 'x-request-id');
      expect(returned).toMatch(/^[0-9a-f-]{36}$/);
      expect(returned).not.toBe(bad);
    }
  });

  it.each(['throw', 'reject', 'callback', 'destroy', 'emit-unhandled', 'emit-heard'] as const)(
    'turn a leaking failure (%s) into INTERNAL and log its cause once',
    async (mode) => {
      const heardBefore = heardByHandlers.length;
      const outcome = await callKind(started.client, kind, {}, withMode(mode));
      // A stream's listener hears the failure's status too, which ends the stream.
      const heard = heardByHandlers.length - heardBefore;
      if (mode === 'emit-heard') expect(heard).toBeGreaterThanOrEqual(1);
      else expect(heard).toBe(0);
      const line = expectSafeFailure(outcome, { code: Status.INTERNAL, details: 'An internal error occurred.', kind });
      expect(line).toMatchObject({
        outcome: 'error',
        event: 'request.failed',
        code: 'internal',
        reason: 'unhandled_error',
      });
      const err = JSON.stringify(line.err);
      expect(err).toContain(SECRET_DIR);
      expect(err).toContain('EISDIR');
      expect(err).toMatch(/\bat /);
    },
  );

  it('keep a mapped status code from a handler but replace its details', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('status-not-found'));
    const line = expectSafeFailure(outcome, { code: Status.NOT_FOUND, details: 'Not found.', kind });
    expect(line).toMatchObject({ outcome: 'denied', code: 'not_found', reason: 'handler_status' });
    // An expected refusal: its cause in one line, no stack.
    expect(line.cause).toContain(`${SECRET_DIR}/y`);
    expect(line.err).toBeUndefined();
  });

  it('turn an unmapped status code from a handler into INTERNAL', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('status-data-loss'));
    const line = expectSafeFailure(outcome, { code: Status.INTERNAL, details: 'An internal error occurred.', kind });
    expect(JSON.stringify(line.err)).toContain('EACCES');
  });

  it('keep UNIMPLEMENTED with a neutral text', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('status-unimplemented'));
    expect(outcome.status.code).toBe(Status.UNIMPLEMENTED);
    expect(outcome.status.details).toBe('The method is not implemented.');
    expect(visibleText(outcome)).not.toMatch(LEAK);
  });

  it('map a SecurityError to its code, public message and field, logging the cause', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('security'));
    const line = expectSafeFailure(outcome, {
      code: Status.INVALID_ARGUMENT,
      details: 'The request is invalid.',
      kind,
    });
    expect(metadataValue(outcome.status.metadata, 'x-fluxguard-field')).toBe('path');
    expect(line).toMatchObject({
      outcome: 'denied',
      event: 'request.denied',
      reason: 'path_traversal',
      code: 'invalid_argument',
    });
    expect(line.cause).toContain(SECRET_DIR);
    expect(line.err).toBeUndefined();
  });

  it('send retry-after for a rate-limited SecurityError', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('rate-limited'));
    expectSafeFailure(outcome, { code: Status.RESOURCE_EXHAUSTED, details: 'Too many requests.', kind });
    expect(metadataValue(outcome.status.metadata, 'retry-after')).toBe('3');
  });

  it('ignore principal-looking metadata sent by the client', async () => {
    const outcome = await callKind(
      started.client,
      kind,
      {},
      withMode('context', {
        'x-fluxguard-principal': JSON.stringify({ subject: 'admin', roles: ['artifacts.admin'] }),
        'x-principal': 'admin',
        'x-user': 'admin',
      }),
    );
    expect(outcome.status.code).toBe(Status.OK);
    expect(outcome.messages[0]?.principal).toBeNull();
  });

  it('refuse setPrincipal from a handler (only interceptors may set it)', async () => {
    const outcome = await callKind(started.client, kind, {}, withMode('set-principal-late'));
    expectSafeFailure(outcome, { code: Status.INTERNAL, details: 'An internal error occurred.', kind });
  });

  it('abort the signal when the deadline passes, and log the timeout', async () => {
    const outcome = await callKind(
      started.client,
      kind,
      {},
      withMode('await-signal', { 'x-request-id': `deadline-${kind}` }),
      {
        deadline: Date.now() + 150,
      },
    );
    expect(outcome.status.code).toBe(Status.DEADLINE_EXCEEDED);
    await delay(50);
    const lines = linesFor(`deadline-${kind}`);
    expect(lines).toHaveLength(1);
    // The client's own deadline: its budget, a folded refusal line rather than an error.
    expect(lines[0]).toMatchObject({ code: 'deadline_exceeded', reason: 'client_deadline', event: 'request.denied' });
    // Named though the call's stream may be gone by the time the line is written.
    expect(lines[0]?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(observedAborts.get(`deadline-${kind}`)).toBe('TimeoutError');
  });

  it('abort the signal when the client cancels, with one cancellation line and no failure line', async () => {
    const outcome = await callKind(
      started.client,
      kind,
      {},
      withMode('await-signal', { 'x-request-id': `cancel-${kind}` }),
      {},
      (call) => {
        setTimeout(() => {
          call.cancel();
        }, 50);
      },
    );
    expect(outcome.status.code).toBe(Status.CANCELLED);
    await delay(50);
    // As the Express error handler writes for a request whose client left: info, no error.
    expect(linesFor(`cancel-${kind}`)).toMatchObject([{ event: 'request.cancelled', outcome: 'cancelled', level: 30 }]);
    expect(linesFor(`cancel-${kind}`)[0]?.err).toBeUndefined();
    expect(observedAborts.get(`cancel-${kind}`)).toBe('AbortError');
    // What the handler threw after the cut (its aborted signal), on every kind of call: a debug
    // line with the error, as on Express, not a second line.
    expect(log.lines().filter((line) => line.requestId === `cancel-${kind}` && line.level === 20)).toMatchObject([
      { msg: 'status after the call ended', err: { message: expect.stringContaining('cancelled the call') as unknown } },
    ]);
  });
});

describe('safeErrors without handler wrapping', () => {
  let bare: Started;
  let bareLog: ReturnType<typeof captureAudit>;

  beforeAll(async () => {
    bareLog = captureAudit();
    bare = await startServer([safeErrors({ audit: bareLog.audit })], (server) => {
      // Plain grpc-js handlers: the interceptor alone must still keep the text in.
      server.addService(testService, {
        Unary: (_call: ServerUnaryCall<Json, Json>, callback: sendUnaryData<Json>) => {
          const err = Object.assign(fsError(), { metadata: leakyMetadata() });
          callback(err);
        },
        ServerStream: (call: ServerWritableStream<Json, Json>) => {
          call.emit('error', { code: Status.NOT_FOUND, details: `ENOENT ${SECRET_DIR}` });
        },
        ClientStream: (_call: ServerReadableStream<Json, Json>, callback: sendUnaryData<Json>) => {
          throw Object.assign(fsError(), { callback });
        },
        // Bidi is left out: grpc-js answers UNIMPLEMENTED through the interceptors.
      });
    });
  });

  afterAll(async () => {
    await bare.close();
  });

  function leakyMetadata(): Metadata {
    const md = new Metadata();
    md.set('x-debug-path', SECRET_DIR);
    return md;
  }

  it('replaces callback(err) text and drops the trailing metadata the error carried', async () => {
    const outcome = await callKind(bare.client, 'unary', {});
    expect(outcome.status.code).toBe(Status.INTERNAL);
    expect(outcome.status.details).toBe('An internal error occurred.');
    expect(visibleText(outcome)).not.toMatch(LEAK);
    const requestId = metadataValue(outcome.status.metadata, 'x-request-id');
    const lines = bareLog.lines().filter((l) => l.requestId === requestId);
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines[0]?.err)).toContain('EISDIR');
  });

  it('keeps a mapped status code with the neutral text', async () => {
    const outcome = await callKind(bare.client, 'serverStream', {});
    expect(outcome.status.code).toBe(Status.NOT_FOUND);
    expect(outcome.status.details).toBe('Not found.');
    expect(visibleText(outcome)).not.toMatch(LEAK);
  });

  it("turns grpc-js's UNKNOWN for a synchronous throw into INTERNAL", async () => {
    const outcome = await callKind(bare.client, 'clientStream', {});
    expect(outcome.status.code).toBe(Status.INTERNAL);
    expect(visibleText(outcome)).not.toMatch(LEAK);
  });

  it('lets UNIMPLEMENTED for a method without a handler through, with a neutral text', async () => {
    const outcome = await callKind(bare.client, 'bidi', {});
    expect(outcome.status.code).toBe(Status.UNIMPLEMENTED);
    expect(outcome.status.details).toBe('The method is not implemented.');
    expect(metadataValue(outcome.status.metadata, 'x-request-id')).toBeDefined();
  });
});

describe('interceptors after safeErrors', () => {
  let chained: Started;
  let chainedLog: ReturnType<typeof captureAudit>;

  /** A stand-in for jwtAuth: trusts a test header, the way a verifier would trust a token. */
  const fakeAuth: ServerInterceptor = (_method, call) =>
    new ServerInterceptingCall(
      call,
      new ResponderBuilder()
        .withStart((next) => {
          next(
            new ServerListenerBuilder()
              .withOnReceiveMetadata((metadata, nextMetadata) => {
                const token = metadataValue(metadata, 'x-test-token');
                if (token !== 'valid') {
                  rejectCall(
                    call,
                    metadata,
                    new SecurityError('unauthenticated', {
                      reason: 'missing_token',
                      cause: new Error(`token was ${String(token)}`),
                    }),
                  );
                  return;
                }
                setPrincipal(metadata, {
                  subject: 'alice',
                  roles: ['artifacts.reader'],
                  scopes: [],
                  claims: { sub: 'alice' },
                  certificate: undefined,
                  authenticatedBy: 'jwt',
                });
                nextMetadata(metadata);
              })
              .build(),
          );
        })
        .build(),
    );

  beforeAll(async () => {
    chainedLog = captureAudit();
    chained = await startServer([...fluxguardInterceptors({ audit: chainedLog.audit }), fakeAuth], (server) => {
      addService(server, testService, {
        Unary: (call) => contextReply(call),
        ServerStream: (call) => {
          call.write(contextReply(call));
          call.end();
        },
      });
    });
  });

  afterAll(async () => {
    await chained.close();
  });

  it('hands the principal set by an interceptor to the handler; client metadata cannot alter it', async () => {
    for (const kind of ['unary', 'serverStream'] as const) {
      const outcome = await callKind(
        chained.client,
        kind,
        {},
        withMode('context', {
          'x-test-token': 'valid',
          'x-user': 'mallory',
          'x-fluxguard-principal': '{"subject":"mallory"}',
        }),
      );
      expect(outcome.status.code).toBe(Status.OK);
      expect(outcome.messages[0]?.principal).toMatchObject({ subject: 'alice', roles: ['artifacts.reader'] });
    }
  });

  it('logs a refusal by a later interceptor once, with its reason, and returns the request id', async () => {
    const outcome = await callKind(chained.client, 'unary', {}, withMode('context', { 'x-request-id': 'refused-1' }));
    expect(outcome.status.code).toBe(Status.UNAUTHENTICATED);
    expect(outcome.status.details).toBe('Authentication is required.');
    expect(metadataValue(outcome.status.metadata, 'x-request-id')).toBe('refused-1');
    const lines = chainedLog.lines().filter((l) => l.requestId === 'refused-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ event: 'request.denied', reason: 'missing_token', code: 'unauthenticated' });
  });
});

describe('configuration', () => {
  it('requires an audit logger and refuses unknown options', () => {
    expect(() => safeErrors({} as never)).toThrow(ConfigurationError);
    expect(() => safeErrors({ audit: createAuditLogger({ level: 'silent' }), adit: 1 } as never)).toThrow(
      /unknown option "adit"/,
    );
    expect(() => fluxguardInterceptors({ audit: 'nope' } as never)).toThrow(ConfigurationError);
  });

  it('refuses an implementation naming a method the service lacks', () => {
    expect(() => wrapImplementation(testService, { Nope: () => undefined } as never)).toThrow(/no method "Nope"/);
  });

  it('fails closed without the interceptor: accessors throw, wrapped handlers still answer safely', async () => {
    const captured = captureWarnings();
    const implementation = {
      Unary: (call: Parameters<typeof getRequestId>[0]) => ({ requestId: getRequestId(call) }),
      ServerStream: (call: Parameters<typeof getRequestId>[0] & { write(m: unknown): void; end(): void }) => {
        call.write({ principal: getPrincipal(call) ?? null });
        call.end();
      },
    };
    // fluxguard's addService refuses such a server at start-up.
    await expect(
      startServer([], (server) => {
        addService(server, testService, implementation as never);
      }),
    ).rejects.toThrow('addService: the server runs no fluxguard interceptors');
    // Registered through grpc-js itself, the wrapped handlers still fail closed.
    const lone = await startServer([], (server) => {
      server.addService(testService, wrapImplementation(testService, implementation as never));
    });
    try {
      for (const kind of ['unary', 'serverStream'] as const) {
        const outcome = await callKind(lone.client, kind, {});
        expect(outcome.status.code).toBe(Status.INTERNAL);
        expect(outcome.status.details).toBe('An internal error occurred.');
        expect(outcome.messages).toEqual([]);
        expect(visibleText(outcome)).not.toMatch(/fluxguard context|getRequestId|getPrincipal/);
      }
      await captured.settled();
      expect(captured.messages().some((w) => w.includes('without the safeErrors interceptor'))).toBe(true);
    } finally {
      captured.stop();
      await lone.close();
    }
    expect(() => {
      setAnyPrincipal(new Metadata());
    }).toThrow(/no fluxguard context/);
  });
});
