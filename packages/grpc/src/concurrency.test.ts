// The concurrency limit on real gRPC calls: the call over the limit is refused at once, and
// after a race of completed, failed, client-cancelled and timed-out calls of every kind the
// count of calls in flight is back to zero.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { createConcurrencyLimit } from '@fluxguard/core';
import { addService, fluxguardInterceptors, getSignal, type ServerCall } from './index.js';
import { KINDS, callKind, captureAudit, startServer, testService, type Json, type Started } from './testing/harness.js';

const LIMIT = 8;
const limit = createConcurrencyLimit({ maxInFlight: LIMIT });
const audit = captureAudit();
let started: Started;

/** `x-mode`: `ok` answers, `fail` throws, `hold` waits for the end of the call. */
async function respond(call: ServerCall): Promise<Json> {
  const [mode] = call.metadata.get('x-mode');
  if (mode === 'fail') throw new Error('boom');
  if (mode === 'hold') {
    await new Promise((_resolve, reject) => {
      getSignal(call).addEventListener('abort', () => {
        reject(new Error('ended'));
      });
    });
  }
  return { ok: true };
}

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit, controls: [limit] }), (server) => {
    addService(server, testService, {
      Unary: (call) => respond(call),
      ClientStream: async (call) => {
        for await (const _message of call) {
          // Drain.
        }
        return respond(call);
      },
      ServerStream: async (call) => {
        call.write(await respond(call));
        call.end();
      },
      Bidi: (call) => {
        call.on('data', () => undefined);
        call.on('end', () => {
          respond(call).then(
            (answer) => {
              call.write(answer);
              call.end();
            },
            (error: unknown) => {
              call.destroy(error as Error);
            },
          );
        });
      },
    });
  });
});

afterAll(async () => {
  await started.close();
});

const mode = (value: string): Metadata => {
  const md = new Metadata();
  md.set('x-mode', value);
  return md;
};

describe('a concurrency limit on gRPC', () => {
  it('refuses the call over the limit at once with UNAVAILABLE, and admits again once one ends', async () => {
    const held: { cancel(): void }[] = [];
    const holding = Array.from({ length: LIMIT }, () =>
      callKind(started.client, 'unary', {}, mode('hold'), {}, (call) => held.push(call)),
    );
    await expect.poll(() => limit.inFlight()).toBe(LIMIT);
    const refused = await callKind(started.client, 'serverStream', {}, mode('ok'));
    expect(refused.status.code).toBe(Status.UNAVAILABLE);
    held[0]?.cancel();
    await expect.poll(() => limit.inFlight()).toBe(LIMIT - 1);
    expect((await callKind(started.client, 'unary', {}, mode('ok'))).status.code).toBe(Status.OK);
    for (const call of held) call.cancel();
    await Promise.all(holding);
    await expect.poll(() => limit.inFlight()).toBe(0);
  });

  it('is back to zero in flight after 1,000 mixed calls of every kind', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 1_000 }, (_, i) => {
        const kind = KINDS[i % KINDS.length] ?? 'unary';
        const what = ['ok', 'fail', 'cancel', 'deadline'][Math.floor(i / KINDS.length) % 4] ?? 'ok';
        const options = what === 'deadline' ? { deadline: Date.now() + 50 } : {};
        return callKind(
          started.client,
          kind,
          {},
          mode(what === 'ok' || what === 'fail' ? what : 'hold'),
          options,
          (call) => {
            if (what === 'cancel') {
              setTimeout(() => {
                call.cancel();
              }, 20);
            }
          },
        );
      }),
    );
    const codes = new Set(outcomes.map((o) => o.status.code));
    // Every ending was exercised (some calls may also meet the limit while the race runs).
    for (const code of [Status.OK, Status.INTERNAL, Status.CANCELLED, Status.DEADLINE_EXCEEDED])
      expect(codes).toContain(code);
    await expect.poll(() => limit.inFlight(), { timeout: 5_000 }).toBe(0);
  });
});
