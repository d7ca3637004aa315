// A call whose own deadline has passed by the time the controls allow it (`grpc-timeout: 0S`,
// or `1n`) is answered DEADLINE_EXCEEDED: its handler must not run. grpc-js's timer for such a
// deadline fires only on a later turn, after a handler (a delete, say) had done its work for a
// call its client was told failed.
import { once } from 'node:events';
import { connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { fluxguardInterceptors } from './index.js';
import { captureAudit, type Json } from './testing/harness.js';
import { grpcFrame } from './testing/raw-http2.js';
import {
  createTestPki,
  handlerStarts,
  perOperationCredentials,
  startTlsServer,
  type TestPki,
  type TestServer,
} from './testing/tls.js';

let pki: TestPki;
let server: TestServer;
let lines: () => Json[];

beforeAll(async () => {
  pki = await createTestPki();
  const captured = captureAudit();
  lines = captured.lines;
  server = await startTlsServer(
    perOperationCredentials(pki, captured.audit),
    fluxguardInterceptors({ audit: captured.audit }),
  );
});

afterAll(async () => {
  await server.close();
  await pki.cleanup();
});

/** A unary call over raw HTTP/2 with TLS, with `grpc-timeout: timeout`: its response headers. */
async function callWithTimeout(timeout: string, requestId: string): Promise<Record<string, unknown>> {
  const session = connect(`https://${server.address}`, { ca: pki.ca.certPem, servername: 'localhost' });
  session.on('error', () => undefined);
  try {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/fluxguard.test.v1.Secure/Public',
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': timeout,
      'x-request-id': requestId,
    });
    stream.on('error', () => undefined);
    stream.resume();
    stream.end(grpcFrame(Buffer.from('{}')));
    const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
    await once(stream, 'close');
    return headers;
  } finally {
    session.close();
  }
}

describe('a call whose own deadline has already passed', () => {
  for (const timeout of ['0S', '1n']) {
    it(`(grpc-timeout ${timeout}) is refused DEADLINE_EXCEEDED before its handler runs, with one client_deadline line`, async () => {
      const starts = handlerStarts.count;
      const requestId = `expired-${timeout}`;
      const headers = await callWithTimeout(timeout, requestId);
      expect(headers['grpc-status']).toBe(String(Status.DEADLINE_EXCEEDED));
      expect(headers['x-request-id']).toBe(requestId);
      expect(handlerStarts.count).toBe(starts);
      expect(lines().filter((line) => line.requestId === requestId)).toEqual([
        expect.objectContaining({ event: 'request.denied', reason: 'client_deadline', code: 'deadline_exceeded' }),
      ]);
    });
  }

  it('is served when it has time left', async () => {
    const starts = handlerStarts.count;
    const headers = await callWithTimeout('10S', 'with-time');
    expect(headers['grpc-status']).toBeUndefined();
    expect(handlerStarts.count).toBe(starts + 1);
  });
});
