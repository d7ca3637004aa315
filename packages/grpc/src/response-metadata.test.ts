// The response metadata safeErrors sends: the request id in the headers of every answer (never
// indexed by HPACK) and in the trailers of every failure, next to whatever metadata the handler
// sends itself, which never overrides it.
import type { ClientHttp2Session } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors } from './index.js';
import {
  callKind,
  captureAudit,
  metadataValue,
  serialize,
  startServer,
  testService,
  unaryAnswering,
  withRequestId,
  type Started,
} from './testing/harness.js';
import { grpcFrame, openRawSession, rawGrpcCall, type RawAnswer } from './testing/raw-http2.js';
import { setRequestId } from './response-metadata.js';

const audit = captureAudit();
let started: Started;
let session: ClientHttp2Session;

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
    addService(server, testService, {
      ...unaryAnswering({}),
      Unary: (call, callback) => {
        const { mode } = call.request as { mode?: string };
        if (mode === 'fail') throw new Error('cannot open /srv/secret/key.pem');
        if (mode === 'early-fail') {
          call.sendMetadata(new Metadata());
          throw new Error('cannot open /srv/secret/key.pem');
        }
        if (mode === 'early') {
          const early = new Metadata();
          early.set('x-early', 'sent');
          early.set('x-request-id', 'forged-early');
          call.sendMetadata(early);
        }
        const trailer = new Metadata();
        if (mode === 'trailer') {
          trailer.set('x-custom', 'kept');
          trailer.set('x-request-id', 'forged-trailer');
        }
        callback(null, { ok: true }, trailer);
      },
    });
  });
  session = openRawSession(started.address);
});

afterAll(async () => {
  session.destroy();
  await started.close();
});

const unaryPath = testService.Unary.path;

function raw(path: string, request: object, requestId?: string): Promise<RawAnswer> {
  const headers = requestId === undefined ? {} : { 'x-request-id': requestId };
  return rawGrpcCall(session, path, headers, grpcFrame(serialize(request)));
}

describe('the response metadata of a call', () => {
  it('carries the request id in the headers of an answered call, never indexed, and not again in its trailers', async () => {
    const answer = await raw(unaryPath, {}, 'wire-ok-1');
    expect(answer.grpcStatus).toBe(Status.OK);
    expect(answer.requestIds).toEqual({ headers: 'wire-ok-1', trailers: undefined });
    expect(answer.neverIndexed).toEqual({ headers: ['x-request-id'], trailers: [] });
  });

  it('carries it in the answer of a failed call, which names nothing internal', async () => {
    const answer = await raw(unaryPath, { mode: 'fail' }, 'wire-fail-1');
    expect(answer.grpcStatus).toBe(Status.INTERNAL);
    // A failure before any response message is a trailers-only answer: one header block.
    expect(answer.requestIds.headers).toBe('wire-fail-1');
    expect(answer.neverIndexed.headers).toEqual(['x-request-id']);
    expect(answer.visible).not.toContain('/srv/secret');
    expect(audit.lines().filter((line) => line.requestId === 'wire-fail-1')).toHaveLength(1);
  });

  it('keeps the trailing metadata a handler sends, and the real request id over one it sets', async () => {
    const outcome = await callKind(started.client, 'unary', { mode: 'trailer' }, withRequestId('wire-trailer-1'));
    expect(outcome.status.code).toBe(Status.OK);
    expect(metadataValue(outcome.status.metadata, 'x-custom')).toBe('kept');
    expect(metadataValue(outcome.status.metadata, 'x-request-id')).toBe('wire-trailer-1');
    expect(metadataValue(outcome.initialMetadata, 'x-request-id')).toBe('wire-trailer-1');
  });

  it('keeps the initial metadata a handler sends itself, and the real request id over one it sets', async () => {
    const outcome = await callKind(started.client, 'unary', { mode: 'early' }, withRequestId('wire-early-1'));
    expect(outcome.status.code).toBe(Status.OK);
    expect(metadataValue(outcome.initialMetadata, 'x-early')).toBe('sent');
    expect(metadataValue(outcome.initialMetadata, 'x-request-id')).toBe('wire-early-1');
    expect(outcome.status.metadata.get('x-request-id')).toEqual([]);
  });

  it('gives each of 2 000 calls on one connection, 100 at a time, its own id', async () => {
    // No id may be read back for another call, whatever the connection's HPACK tables hold.
    const ids = Array.from({ length: 2000 }, (_, i) => `wire-flood-${String(i)}`);
    const answers: RawAnswer[] = [];
    for (let i = 0; i < ids.length; i += 100) {
      answers.push(...(await Promise.all(ids.slice(i, i + 100).map((id) => raw(unaryPath, {}, id)))));
    }
    expect(answers.every((answer) => answer.grpcStatus === Status.OK)).toBe(true);
    expect(answers.map((answer) => answer.requestIds.headers)).toEqual(ids);
    expect(answers.every((answer) => answer.requestIds.trailers === undefined)).toBe(true);
  });

  it('gives a call that sent no id a new one', async () => {
    const answer = await raw(unaryPath, {});
    expect(answer.requestIds.headers).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('carries the request id, never indexed, in the trailers of a failure after the headers', async () => {
    const answer = await raw(unaryPath, { mode: 'early-fail' }, 'wire-late-fail-1');
    expect(answer.grpcStatus).toBe(Status.INTERNAL);
    expect(answer.requestIds).toEqual({ headers: 'wire-late-fail-1', trailers: 'wire-late-fail-1' });
    expect(answer.neverIndexed).toEqual({ headers: ['x-request-id'], trailers: ['x-request-id'] });
  });
});

describe('setRequestId', () => {
  it('replaces every x-request-id the metadata holds with the one id, as Metadata.set would', () => {
    const metadata = new Metadata();
    metadata.add('x-request-id', 'first');
    metadata.add('x-request-id', 'second');
    metadata.set('x-other', 'kept');
    setRequestId(metadata, 'req-1');
    expect(metadata.get('x-request-id')).toEqual(['req-1']);
    expect(metadata.toHttp2Headers()).toMatchObject({ 'x-request-id': 'req-1', 'x-other': 'kept' });
    expect(metadata.clone().get('x-request-id')).toEqual(['req-1']);
  });
});
