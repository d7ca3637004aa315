// A call whose own deadline has passed by the time the controls allow it (`grpc-timeout: 0S`,
// or `1n`) is answered DEADLINE_EXCEEDED: its handler must not run. grpc-js's timer for such a
// deadline fires only on a later turn, after a handler (a delete, say) had done its work for a
// call its client was told failed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { fluxguardInterceptors } from './index.js';
import { handlerStarts, op, startSecureServer, type SecureServer } from './testing/tls.js';

let secure: SecureServer;

beforeAll(async () => {
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit }));
});

afterAll(() => secure.close());

/** A unary call over raw HTTP/2 with TLS, with `grpc-timeout: timeout`: its response headers. */
async function callWithTimeout(timeout: string, requestId: string): Promise<Record<string, unknown>> {
  return (await secure.rawCall(op('Public'), { 'grpc-timeout': timeout, 'x-request-id': requestId })).headers;
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
      expect(secure.lines().filter((line) => line.requestId === requestId)).toEqual([
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
