// Statuses that grpc-js sends on its own, below every interceptor (an oversized or undecodable
// message, an unknown encoding, an unparsable grpc-timeout, the client's deadline, a response
// over the send limit) or before any interceptor exists (an unknown method). grpc-js's texts
// echo what the client sent and name the server's limits; each must leave with the table's
// neutral text, a request id and an audit line under that id.
import { once } from 'node:events';
import { constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status, type Metadata, type StatusObject } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, getSignal } from './index.js';
import {
  captureAudit,
  metadataValue,
  serialize,
  deserialize,
  startServer,
  testService,
  unaryAnswering,
  withRequestId,
  type Json,
  type Started,
} from './testing/harness.js';
import { h2Frame } from '@fluxguard/test-support/http2-frames';
import {
  CLIENT_PREFACE,
  grpcFrame,
  grpcRequestHeaderBlock,
  openRawSession,
  rawGrpcCall,
  type RawAnswer,
} from './testing/raw-http2.js';

const MAX_RECEIVE = 1024;
const MAX_SEND = 2048;
/** grpc-js's own texts, and what the tests send that must never come back. */
const GRPC_JS_TEXT =
  /larger than|does not implement|unsupported encoding|grpc-timeout value|decompress|Deadline exceeded|serializ|x-evil|passwd|9999/i;

const audit = captureAudit();
let started: Started;
let session: ClientHttp2Session;
let handlerRuns = 0;

beforeAll(async () => {
  started = await startServer(
    fluxguardInterceptors({ audit: audit.audit }),
    (server) => {
      addService(server, testService, {
        ...unaryAnswering({}),
        Unary: async (call) => {
          handlerRuns += 1;
          const request = call.request as { wait?: boolean; answerBytes?: number; deadline?: boolean };
          if (request.deadline === true) {
            // The deadline grpc-js set from the client's grpc-timeout, in whole seconds from now.
            return { deadlineSeconds: Math.round((Number(call.getDeadline()) - Date.now()) / 1_000) };
          }
          if (request.wait === true) {
            const signal = getSignal(call);
            await new Promise((resolve) => {
              signal.addEventListener('abort', resolve, { once: true });
            });
            return {};
          }
          return request.answerBytes === undefined ? { ok: true } : { big: 'x'.repeat(request.answerBytes) };
        },
        // A watch: one message at once, then nothing until the call ends.
        ServerStream: async (call) => {
          call.write({ watching: true });
          const signal = getSignal(call);
          await new Promise((resolve) => {
            signal.addEventListener('abort', resolve, { once: true });
          });
          call.end();
        },
      });
    },
    { 'grpc.max_receive_message_length': MAX_RECEIVE, 'grpc.max_send_message_length': MAX_SEND },
  );
  session = openRawSession(started.address);
});

afterAll(async () => {
  session.destroy();
  await started.close();
});

/** A raw call over the shared session (see `rawGrpcCall`). */
const rawCall = (path: string, headers: OutgoingHttpHeaders, body: Buffer, end = true): Promise<RawAnswer> =>
  rawGrpcCall(session, path, headers, body, end);

const linesOf = (requestId: string | undefined): Json[] =>
  audit.lines().filter((line) => requestId !== undefined && line.requestId === requestId);

/**
 * The most refusal lines of one reason written in full since `before`, begun at `startedAt`:
 * foldRefusals' default writes 50 per client and reason in each 10 s interval, and an interval
 * an earlier test began may end during a flood. Folded lines (`request.denied.folded`) apart.
 */
function fullRefusalLines(before: number, reason: string, startedAt: number): { written: number; most: number } {
  const written = audit
    .lines()
    .slice(before)
    .filter((line) => line.event === 'request.denied' && line.reason === reason).length;
  return { written, most: 50 * (Math.ceil((Date.now() - startedAt) / 10_000) + 1) };
}

/** A grpc-js client call of the test service's Unary method; resolves with its status. */
function unary(request: Json, metadata: Metadata, options: Record<string, unknown> = {}): Promise<StatusObject> {
  return new Promise((resolve) => {
    const call = started.client.makeUnaryRequest(
      testService.Unary.path,
      serialize,
      deserialize,
      request,
      metadata,
      options,
      () => undefined,
    );
    call.on('status', resolve);
  });
}

describe('a request message over grpc.max_receive_message_length', () => {
  it('is refused RESOURCE_EXHAUSTED "The request is too large." with the request id and a message_too_large line', async () => {
    const runs = handlerRuns;
    const status = await unary({ pad: 'p'.repeat(4 * MAX_RECEIVE) }, withRequestId('oversize-plain'));
    expect(status.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(status.details).toBe('The request is too large.');
    expect(metadataValue(status.metadata, 'x-request-id')).toBe('oversize-plain');
    expect(JSON.stringify(status.metadata.toJSON()) + status.details).not.toMatch(GRPC_JS_TEXT);
    expect(handlerRuns).toBe(runs);
    const lines = linesOf('oversize-plain');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ event: 'request.denied', reason: 'message_too_large', code: 'payload_too_large' });
  });
});

interface RawRefusal {
  readonly name: string;
  readonly headers: OutgoingHttpHeaders;
  readonly body: () => Buffer;
  readonly grpcStatus: number;
  readonly message: string;
  readonly field?: string;
  readonly line: Json;
}

const RAW_REFUSALS: readonly RawRefusal[] = [
  {
    name: 'a message small on the wire and too large once decompressed is refused RESOURCE_EXHAUSTED',
    headers: { 'grpc-encoding': 'gzip' },
    body: () => {
      const bomb = grpcFrame(gzipSync(Buffer.from(JSON.stringify({ pad: '0'.repeat(64 * MAX_RECEIVE) }))), true);
      expect(bomb.length).toBeLessThan(MAX_RECEIVE);
      return bomb;
    },
    grpcStatus: Status.RESOURCE_EXHAUSTED,
    message: 'The request is too large.',
    line: { reason: 'message_too_large', code: 'payload_too_large' },
  },
  {
    name: 'a message in an encoding grpc-js does not support is refused UNIMPLEMENTED, the encoding never echoed',
    headers: { 'grpc-encoding': 'x-evil-<script>' },
    body: () => grpcFrame(Buffer.from('{}'), true),
    grpcStatus: Status.UNIMPLEMENTED,
    message: 'The message encoding is not supported.',
    line: { event: 'request.denied', reason: 'message_encoding_unsupported', code: 'unimplemented' },
  },
  {
    name: 'a message that does not decompress is refused INVALID_ARGUMENT',
    headers: { 'grpc-encoding': 'gzip' },
    body: () => grpcFrame(Buffer.from('this is not gzip'), true),
    grpcStatus: Status.INVALID_ARGUMENT,
    message: 'The request is invalid.',
    line: { reason: 'message_decompression_failed', code: 'invalid_argument' },
  },
  {
    name: 'a grpc-timeout grpc-js cannot parse is refused INVALID_ARGUMENT naming the header, never quoting it',
    headers: { 'grpc-timeout': 'never/etc/passwd' },
    body: () => grpcFrame(Buffer.from('{}')),
    grpcStatus: Status.INVALID_ARGUMENT,
    message: 'The request is invalid.',
    field: 'grpc-timeout',
    line: { reason: 'deadline_header_invalid', code: 'invalid_argument' },
  },
  ...[
    // grpc-js alone read this as one second (its pattern is not anchored) ...
    '-1S',
    // ... this as none at all, the call failing at once (nine digits wrap its integer) ...
    '100000000H',
    // ... and these as five seconds.
    '5 S',
    '5S5',
  ].map((timeout) => ({
    name: `a grpc-timeout not in the spec's form (${timeout}) is refused INVALID_ARGUMENT naming the header`,
    headers: { 'grpc-timeout': timeout },
    body: () => grpcFrame(Buffer.from('{}')),
    grpcStatus: Status.INVALID_ARGUMENT,
    message: 'The request is invalid.',
    field: 'grpc-timeout',
    line: { reason: 'deadline_header_invalid', code: 'invalid_argument' },
  })),
];

describe('a request grpc-js cannot read', () => {
  it.each(RAW_REFUSALS)('$name', async (refusal) => {
    const runs = handlerRuns;
    const requestId = `raw-${String(RAW_REFUSALS.indexOf(refusal))}`;
    const answer = await rawCall(
      testService.Unary.path,
      { ...refusal.headers, 'x-request-id': requestId },
      refusal.body(),
    );
    expect(answer.grpcStatus).toBe(refusal.grpcStatus);
    expect(answer.message).toBe(refusal.message);
    expect(answer.field).toBe(refusal.field);
    expect(answer.requestId).toBe(requestId);
    expect(answer.visible).not.toMatch(GRPC_JS_TEXT);
    expect(handlerRuns).toBe(runs);
    expect(linesOf(requestId)).toEqual([expect.objectContaining(refusal.line)]);
  });
});

describe('the client’s own deadline, which grpc-js answers', () => {
  it('leaves with the table’s text and the request id of the deadline_exceeded line', async () => {
    const answer = await rawCall(
      testService.Unary.path,
      { 'grpc-timeout': '300m', 'x-request-id': 'deadline-client' },
      grpcFrame(Buffer.from(JSON.stringify({ wait: true }))),
    );
    expect(answer.grpcStatus).toBe(Status.DEADLINE_EXCEEDED);
    expect(answer.message).toBe('The request took too long.');
    expect(answer.requestId).toBe('deadline-client');
    expect(answer.visible).not.toMatch(GRPC_JS_TEXT);
    expect(linesOf('deadline-client')).toEqual([
      expect.objectContaining({ event: 'request.denied', reason: 'client_deadline', code: 'deadline_exceeded' }),
    ]);
  });
});

describe('a client deadline longer than grpc-js can hold', () => {
  // grpc-js turns a grpc-timeout into a 32-bit integer of milliseconds: past about 24.8 days it
  // wrapped, into a negative number (the call failed at once) or a few hundred ms (4294968S).
  it.each([
    ['2147483S', 2_147_483],
    ['2147484S', 2_147_483],
    ['2592000S', 2_147_483],
    ['4294968S', 2_147_483],
    ['600H', 2_147_483],
    ['35792M', 2_147_483],
    ['99999999H', 2_147_483],
    ['596H', 596 * 3_600],
  ])('%s is served with a deadline of at most about 24.8 days', async (timeout, seconds) => {
    const answer = await rawCall(
      testService.Unary.path,
      { 'grpc-timeout': timeout },
      grpcFrame(Buffer.from(JSON.stringify({ deadline: true }))),
    );
    expect(answer.grpcStatus, answer.visible).toBe(Status.OK);
    const deadline = /deadlineSeconds\W+(\d+)/.exec(answer.visible)?.[1];
    expect(Number(deadline)).toBeGreaterThanOrEqual(seconds - 2);
    expect(Number(deadline)).toBeLessThanOrEqual(seconds);
  });
});

describe('a call the client resets before it has sent its whole request', () => {
  it.each([
    ['with its headers', Buffer.alloc(0), 0],
    ['a moment after its headers', Buffer.alloc(0), 200],
    ['after part of its message', Buffer.from([0, 0, 0, 0, 9, 123, 34]), 0],
  ])('is no invalid request of the client’s: reset %s', async (label, sent, afterMs) => {
    // Raw frames: Node's client ends a stream's request (END_STREAM) before it resets it, and
    // a server can only take that for an empty request; a reset alone is no request at all.
    const requestId = `reset-early-${label.replace(/\W+/g, '-')}`;
    const [host = '', port = ''] = started.address.split(':');
    const socket = netConnect(Number(port), host);
    socket.on('error', () => undefined);
    socket.resume();
    const headers = grpcRequestHeaderBlock(testService.Unary.path, [['x-request-id', requestId]]);
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(constants.NGHTTP2_CANCEL);
    const opening = Buffer.concat([
      CLIENT_PREFACE,
      h2Frame(0x1, 0x4, 1, headers),
      ...(sent.length > 0 ? [h2Frame(0x0, 0, 1, sent)] : []),
    ]);
    const reset = h2Frame(0x3, 0, 1, cancel);
    try {
      await new Promise((resolve) => socket.once('connect', resolve));
      if (afterMs === 0) socket.write(Buffer.concat([opening, reset]));
      else {
        socket.write(opening);
        await new Promise((resolve) => setTimeout(resolve, afterMs));
        socket.write(reset);
      }
      // Give a line, if one were coming, the time to be written.
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      socket.destroy();
    }
    expect(linesOf(requestId).filter((line) => line.reason === 'message_count_invalid')).toEqual([]);
  });
});

describe('the client’s deadline while its answer waits for the client’s window', () => {
  it('is written to the log when the answer goes out after it, the handler’s own status behind it', async () => {
    // The answer waits in flow control past the deadline; once the client opens its window it
    // goes out, grpc-js's deadline status behind it, and the handler's OK comes in as its write
    // completes, before grpc-js reports the cancel: that OK took the deadline's line with it.
    const held = openRawSession(started.address, { settings: { initialWindowSize: 0 } });
    try {
      const answer = rawGrpcCall(
        held,
        testService.Unary.path,
        { 'grpc-timeout': '300m', 'x-request-id': 'deadline-then-answer' },
        grpcFrame(Buffer.from(JSON.stringify({ answerBytes: 1500 }))),
      );
      await new Promise((resolve) => setTimeout(resolve, 600));
      held.settings({ initialWindowSize: 65_535 });
      expect((await answer).grpcStatus).toBe(Status.DEADLINE_EXCEEDED);
      await expect
        .poll(() => linesOf('deadline-then-answer'))
        .toEqual([expect.objectContaining({ code: 'deadline_exceeded', reason: 'client_deadline' })]);
    } finally {
      held.destroy();
    }
  });
});

describe('a response over grpc.max_send_message_length', () => {
  it('fails INTERNAL with the generic text and an error line under the request id', async () => {
    const status = await unary({ answerBytes: 2 * MAX_SEND }, withRequestId('answer-oversize'));
    expect(status.code).toBe(Status.INTERNAL);
    expect(status.details).toBe('An internal error occurred.');
    expect(metadataValue(status.metadata, 'x-request-id')).toBe('answer-oversize');
    expect(status.details + JSON.stringify(status.metadata.toJSON())).not.toMatch(GRPC_JS_TEXT);
    const lines = linesOf('answer-oversize');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ event: 'request.failed', code: 'internal' });
    expect(JSON.stringify(lines[0])).toContain('Sent message larger than max');
  });
});

describe('a method no registered service has', () => {
  it('is refused UNIMPLEMENTED with a neutral text, the client’s request id and a line naming the method', async () => {
    const answer = await rawCall(
      '/fluxguard.test.v1.Missing/Export',
      { 'x-request-id': 'unknown-method' },
      grpcFrame(Buffer.from('{}')),
    );
    expect(answer.grpcStatus).toBe(Status.UNIMPLEMENTED);
    expect(answer.message).toBe('The method is not implemented.');
    expect(answer.requestId).toBe('unknown-method');
    expect(answer.visible).not.toMatch(/Missing|Export|does not implement/);
    expect(linesOf(answer.requestId)).toEqual([
      expect.objectContaining({
        event: 'request.denied',
        reason: 'unimplemented',
        code: 'unimplemented',
        operation: '/fluxguard.test.v1.Missing/Export',
        transport: 'grpc',
      }),
    ]);
    // The method is named once: grpc-js's text, which repeats it, is not the line's cause.
    expect(linesOf(answer.requestId)[0]?.cause).toBeUndefined();
  });

  it('with a path that is no method path is logged as operation "unknown"', async () => {
    const answer = await rawCall('/../../etc/passwd?<b>', {}, grpcFrame(Buffer.from('{}')));
    expect(answer.grpcStatus).toBe(Status.UNIMPLEMENTED);
    expect(answer.visible).not.toMatch(GRPC_JS_TEXT);
    expect(linesOf(answer.requestId)[0]).toMatchObject({ reason: 'unimplemented', operation: 'unknown' });
    // Here the cause is all that tells which path was asked for.
    expect(String(linesOf(answer.requestId)[0]?.cause)).toContain('etc/passwd');
  });
});

describe('a request that is not gRPC', () => {
  it('keeps grpc-js’s HTTP 415, with a request id and a content_type_unsupported line', async () => {
    const stream = session.request({
      ':method': 'POST',
      ':path': testService.Unary.path,
      'content-type': 'text/html',
      'x-request-id': 'not-grpc',
    });
    stream.on('error', () => undefined);
    const [response] = (await once(stream, 'response')) as [IncomingHttpHeaders];
    stream.close();
    expect(response[':status']).toBe(415);
    expect(response['x-request-id']).toBe('not-grpc');
    expect(response['grpc-status']).toBeUndefined();
    expect(linesOf('not-grpc')).toEqual([
      expect.objectContaining({ reason: 'content_type_unsupported', code: 'invalid_argument', transport: 'grpc' }),
    ]);
  });
});

describe('a gRPC request by another method than POST', () => {
  it.each(['GET', 'PUT', 'HEAD'])(
    '%s is answered HTTP 405 with a request id and a method_not_allowed line',
    async (method) => {
      let served = 0;
      const requestId = `method-${method}`;
      const stream = session.request(
        {
          ':method': method,
          ':path': testService.Unary.path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'x-request-id': requestId,
        },
        { endStream: method !== 'PUT' },
      );
      if (method === 'PUT') stream.end(grpcFrame(Buffer.from('{}')));
      stream.on('data', () => {
        served += 1;
      });
      stream.on('error', () => undefined);
      const [response] = (await once(stream, 'response')) as [IncomingHttpHeaders];
      await once(stream, 'close');
      expect(response[':status']).toBe(405);
      expect(response.allow).toBe('POST');
      expect(response['x-request-id']).toBe(requestId);
      expect(response['grpc-status']).toBeUndefined();
      expect(served).toBe(0);
      expect(linesOf(requestId)).toEqual([
        expect.objectContaining({ reason: 'method_not_allowed', code: 'invalid_argument', transport: 'grpc' }),
      ]);
    },
  );
});

describe('an :authority that is no host and port', () => {
  // nghttp2 checks the characters of `:authority` only; grpc-js hands it to `call.getHost()`.
  it.each([
    ['an unclosed IPv6 address', '[::1'],
    ['a port past 65535', 'a:99999'],
    ['two ports', 'a:1:2'],
    ['a percent-encoded space', 'a%20b'],
  ])('%s is refused INVALID_ARGUMENT before any handler, with a malformed_request line', async (_kind, authority) => {
    const runs = handlerRuns;
    const requestId = `authority-${Buffer.from(authority).toString('hex')}`;
    const answer = await rawCall(
      testService.Unary.path,
      { ':authority': authority, 'x-request-id': requestId },
      grpcFrame(Buffer.from('{}')),
    );
    expect(answer.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(answer.message).toBe('The request is invalid.');
    expect(answer.requestId).toBe(requestId);
    expect(answer.visible).not.toContain(authority);
    expect(handlerRuns).toBe(runs);
    expect(linesOf(requestId)).toEqual([
      expect.objectContaining({
        event: 'request.denied',
        reason: 'malformed_request',
        code: 'invalid_argument',
        detail: { headFault: 'host_invalid' },
      }),
    ]);
    expect(JSON.stringify(linesOf(requestId))).not.toContain(authority);
  });

  it('with userinfo never reaches a handler: refused so under Node 20, reset by the nghttp2 of later Node lines', async () => {
    // RFC 9113 forbids userinfo in `:authority`; the nghttp2 of Node 24 and later resets such a
    // stream (PROTOCOL_ERROR) before any JavaScript sees it, Node 20's hands it on.
    const runs = handlerRuns;
    const requestId = 'authority-userinfo';
    const answer = await rawCall(
      testService.Unary.path,
      { ':authority': 'u@a', 'x-request-id': requestId },
      grpcFrame(Buffer.from('{}')),
    ).catch((error: unknown) => (error instanceof Error ? error.message : String(error)));
    expect(handlerRuns).toBe(runs);
    if (typeof answer === 'string') {
      expect(answer).toContain('NGHTTP2_PROTOCOL_ERROR');
      expect(linesOf(requestId)).toEqual([]);
    } else {
      expect(answer.grpcStatus).toBe(Status.INVALID_ARGUMENT);
      expect(linesOf(requestId)).toEqual([
        expect.objectContaining({ reason: 'malformed_request', detail: { headFault: 'host_invalid' } }),
      ]);
    }
  });

  it.each(['localhost', 'api.example:8443', '[::1]:50051', 'a.example.'])('%s is served', async (authority) => {
    const runs = handlerRuns;
    const answer = await rawCall(testService.Unary.path, { ':authority': authority }, grpcFrame(Buffer.from('{}')));
    expect(answer.grpcStatus).toBe(Status.OK);
    expect(handlerRuns).toBe(runs + 1);
  });

  it('keeps serving through a flood of them, its lines folded', async () => {
    const before = audit.lines().length;
    const startedAt = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        rawCall(testService.Unary.path, { ':authority': `a:${String(70_000 + i)}` }, grpcFrame(Buffer.from('{}'))),
      ),
    );
    expect(answers.every((a) => a.grpcStatus === Status.INVALID_ARGUMENT && a.requestId !== undefined)).toBe(true);
    expect((await unary({}, withRequestId('after-authority-flood'))).code).toBe(Status.OK);
    const { written, most } = fullRefusalLines(before, 'malformed_request', startedAt);
    expect(written).toBeLessThanOrEqual(most);
  });
});

describe('floods of what grpc-js refuses', () => {
  /** Runs `count` raw calls, `parallel` at a time, over the shared session. */
  async function flood(count: number, parallel: number, call: (i: number) => Promise<RawAnswer>): Promise<RawAnswer[]> {
    const answers: RawAnswer[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < count) {
        const i = next;
        next += 1;
        answers.push(await call(i));
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    return answers;
  }

  it('answers 2,000 unknown-method calls each with its own request id, logs them folded, and keeps serving', async () => {
    const before = audit.lines().length;
    const startedAt = Date.now();
    const answers = await flood(2000, 50, (i) =>
      rawCall(`/scan.Svc${String(i)}/Method`, {}, grpcFrame(Buffer.from('{}'))),
    );
    expect(
      answers.every((a) => a.grpcStatus === Status.UNIMPLEMENTED && a.message === 'The method is not implemented.'),
    ).toBe(true);
    expect(new Set(answers.map((a) => a.requestId)).size).toBe(2000);
    const { written, most } = fullRefusalLines(before, 'unimplemented', startedAt);
    expect(written).toBeLessThanOrEqual(most);
    const status = await unary({}, withRequestId('after-unknown-flood'));
    expect(status.code).toBe(Status.OK);
  });

  it('refuses 300 oversized messages, logs them folded, and keeps serving', async () => {
    const before = audit.lines().length;
    const startedAt = Date.now();
    const big = grpcFrame(Buffer.from(JSON.stringify({ pad: 'p'.repeat(2 * MAX_RECEIVE) })));
    const answers = await flood(300, 30, () => rawCall(testService.Unary.path, {}, big));
    expect(answers.every((a) => a.grpcStatus === Status.RESOURCE_EXHAUSTED && a.requestId !== undefined)).toBe(true);
    const { written, most } = fullRefusalLines(before, 'message_too_large', startedAt);
    expect(written).toBeLessThanOrEqual(most);
    expect((await unary({}, withRequestId('after-oversize-flood'))).code).toBe(Status.OK);
  });
});

describe('a client that never ends its request', () => {
  it('has its stream closed (NO_ERROR) a moment after a refusal, so that it cannot hold the connection past its idle limit', async () => {
    // A refusal by grpc-js (an unparsable grpc-timeout) and one by safeErrors (an unparsable
    // message), 100 of each, none of them ever half-closed.
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        i % 2 === 0
          ? rawCall(testService.Unary.path, { 'grpc-timeout': 'never' }, grpcFrame(Buffer.from('{}')), false)
          : rawCall(testService.Unary.path, {}, grpcFrame(Buffer.from('not json')), false),
      ),
    );
    expect(answers.every((a) => a.grpcStatus === Status.INVALID_ARGUMENT && a.requestId !== undefined)).toBe(true);
    // Closed by the server (the client never closes them): without it, they stayed open for as
    // long as the client liked, and this test ran into its time limit.
    expect(answers.every((a) => a.rstCode === constants.NGHTTP2_NO_ERROR)).toBe(true);
  }, 20_000);

  it('has it closed even when the client keeps sending a byte now and then (bounded: 20 streams, 8 s)', async () => {
    // Each byte restarted the stream's idle timeout, and nothing reads them after the answer:
    // the stream, and its connection, stayed open for as long as the client kept it up.
    const closed = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const stream = session.request({
          ':method': 'POST',
          ':path': testService.Unary.path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': 'never',
        });
        stream.on('error', () => undefined);
        stream.on('data', () => undefined);
        stream.write(grpcFrame(Buffer.from('{}')));
        const trickle = setInterval(() => {
          if (!stream.closed && !stream.destroyed) stream.write(Buffer.from([0]));
        }, 200);
        const limit = new Promise<'still open'>((resolve) =>
          setTimeout(() => {
            resolve('still open');
          }, 8_000),
        );
        try {
          const outcome = await Promise.race([once(stream, 'close').then(() => 'closed' as const), limit]);
          return { outcome, rstCode: stream.rstCode };
        } finally {
          clearInterval(trickle);
          if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
        }
      }),
    );
    expect(closed).toEqual(
      Array.from({ length: 20 }, () => ({ outcome: 'closed', rstCode: constants.NGHTTP2_NO_ERROR })),
    );
  }, 20_000);
});

describe('the client’s own deadline, under a flood', () => {
  it('is logged as folded refusal lines, never one error line per call', async () => {
    const before = audit.lines().length;
    const startedAt = Date.now();
    // Unary calls with a short deadline, and watches (an answer under way) with one too.
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        i % 2 === 0
          ? rawCall(testService.Unary.path, { 'grpc-timeout': '20m' }, grpcFrame(Buffer.from('{"wait":true}')))
          : rawCall(testService.ServerStream.path, { 'grpc-timeout': '30m' }, grpcFrame(Buffer.from('{}'))),
      ),
    );
    expect(answers.every((a) => a.grpcStatus === Status.DEADLINE_EXCEEDED)).toBe(true);
    const written = audit.lines().slice(before);
    expect(written.filter((line) => line.level === 50)).toEqual([]);
    const full = fullRefusalLines(before, 'client_deadline', startedAt);
    expect(full.written).toBeLessThanOrEqual(full.most);
    expect((await unary({}, withRequestId('after-deadline-flood'))).code).toBe(Status.OK);
  });
});

describe('a unary request without its one message', () => {
  it.each([
    ['no message', Buffer.alloc(0)],
    ['two messages', Buffer.concat([grpcFrame(Buffer.from('{}')), grpcFrame(Buffer.from('{}'))])],
  ])('(%s) is refused INVALID_ARGUMENT, where grpc-js would say UNIMPLEMENTED', async (label, body) => {
    const requestId = `count-${label.replace(' ', '-')}`;
    const answer = await rawCall(testService.Unary.path, { 'x-request-id': requestId }, body);
    expect(answer.grpcStatus).toBe(Status.INVALID_ARGUMENT);
    expect(answer.message).toBe('The request is invalid.');
    expect(answer.visible).not.toMatch(/Received|request message/);
    expect(linesOf(requestId)).toEqual([
      expect.objectContaining({ reason: 'message_count_invalid', code: 'invalid_argument' }),
    ]);
  });
});
