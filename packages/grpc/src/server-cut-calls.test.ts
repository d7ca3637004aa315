// A call the server itself cuts at the end of a shutdown's grace (`forceShutdown()`) is logged
// with why (`reason: 'server_shutdown'` on its `request.cancelled` line): an operator reading the
// log must tell "the client went away" from "we cut it". The trust reload's cut is in
// credentials.test.ts.
import { Metadata, status as Status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { addService, fluxguardInterceptors, getSignal, type ServerCall } from './index.js';
import { KINDS, callKind, captureAudit, startServer, testService, type Json, type Started } from './testing/harness.js';

/** A server whose handlers work until their call ends; `working` counts those at work. */
async function slowServer(audit: ReturnType<typeof captureAudit>['audit']) {
  let running = 0;
  const slow = async (call: ServerCall): Promise<Json> => {
    running += 1;
    const signal = getSignal(call);
    try {
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve);
      });
    } finally {
      running -= 1;
    }
    throw signal.reason;
  };
  const started: Started = await startServer(fluxguardInterceptors({ audit }), (server) => {
    addService(server, testService, {
      Unary: (call) => slow(call),
      ClientStream: (call) => slow(call),
      ServerStream: async (call) => {
        call.write(await slow(call));
        call.end();
      },
      Bidi: async (call) => {
        call.write(await slow(call));
        call.end();
      },
    });
  });
  return { started, working: () => running };
}

function withId(id: string): Metadata {
  const metadata = new Metadata();
  metadata.set('x-request-id', id);
  return metadata;
}

describe('a call cut by the server', () => {
  it.each(KINDS)('logs a %s call cut by forceShutdown() with reason server_shutdown', async (kind) => {
    const { audit, lines } = captureAudit();
    const { started, working } = await slowServer(audit);
    const id = `cut-by-shutdown-${kind}`;
    const outcome = callKind(started.client, kind, {}, withId(id));
    await expect.poll(working).toBe(1);
    // A shutdown whose grace ran out with the call still at work.
    const shutDown = new Promise<void>((resolve) => {
      started.server.tryShutdown(() => {
        resolve();
      });
    });
    started.server.forceShutdown();
    await shutDown;
    expect((await outcome).status.code).not.toBe(Status.OK);
    await expect.poll(working).toBe(0);
    await expect
      .poll(() => lines().find((line) => line.requestId === id))
      .toMatchObject({
        event: 'request.cancelled',
        outcome: 'cancelled',
        reason: 'server_shutdown',
        transport: 'grpc',
      });
    started.client.close();
  });

  it('logs a call its client cancelled with no reason, as before', async () => {
    const { audit, lines } = captureAudit();
    const { started, working } = await slowServer(audit);
    try {
      const outcome = callKind(started.client, 'unary', {}, withId('left-by-client'), {}, (call) => {
        void expect
          .poll(working)
          .toBe(1)
          .then(() => {
            call.cancel();
          });
      });
      expect((await outcome).status.code).toBe(Status.CANCELLED);
      await expect
        .poll(() => lines().find((line) => line.requestId === 'left-by-client'))
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled' });
      expect(lines().find((line) => line.requestId === 'left-by-client')).not.toHaveProperty('reason');
    } finally {
      await started.close();
    }
  });
});
