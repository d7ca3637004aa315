// A header sent twice reaches Node's HTTP/2 layer as two entries, which Node joins into one
// value (`K, V`) that grpc-js kept whole: a rate limit keyed by `x-api-key` counted a new key
// whenever a second value was added, and the header limits counted one entry where the Express
// adapter counts each. The values are now handed on apart, as HTTP reads them.
import { connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHeaderLimits, createRateLimit, type Control } from '@fluxguard/core';
import { addService, fluxguardInterceptors } from './index.js';
import {
  captureAudit,
  rawUnaryStatus,
  startServer,
  testService,
  unaryAnswering,
  type Started,
} from './testing/harness.js';

const audit = captureAudit();
const seen: { first: string | undefined; all: readonly string[] }[] = [];
const probe: Control = {
  name: 'probe',
  stage: 'pre-authentication',
  onStart(call) {
    seen.push({ first: call.headers.get('x-probe'), all: call.headers.getAll('x-probe') });
  },
};
let started: Started;

beforeAll(async () => {
  const limits = createRateLimit({
    rules: [{ name: 'per-key', key: 'header:x-api-key', points: 3, durationSeconds: 60 }],
  });
  const headers = createHeaderLimits({ maxCount: 20, maxTotalBytes: 8192, maxValueBytes: 1024 });
  started = await startServer(
    fluxguardInterceptors({ audit: audit.audit, controls: [probe, ...limits.controls, headers] }),
    (server) => {
      addService(server, testService, unaryAnswering({ ok: true }));
    },
  );
});

afterAll(async () => {
  await started.close();
});

/** The grpc-status of one unary call with these metadata entries (arrays: one entry per value). */
async function statusWith(entries: Readonly<Record<string, string | string[]>>): Promise<string | undefined> {
  const session = connect(`http://${started.address}`);
  session.on('error', () => undefined);
  try {
    return await rawUnaryStatus(session, entries);
  } finally {
    session.close();
  }
}

describe('a repeated header over gRPC', () => {
  it('reads as its first value, every value apart, as on HTTP', async () => {
    expect(await statusWith({ 'x-probe': ['first', 'second'] })).toBe('0');
    expect(seen.at(-1)).toEqual({ first: 'first', all: ['first', 'second'] });
  });

  it('counts a rate limit by its first value: a second value added each call is no new key', async () => {
    const statuses: (string | undefined)[] = [];
    for (let i = 0; i < 5; i++) statuses.push(await statusWith({ 'x-api-key': ['K3', `V${String(i)}`] }));
    expect(statuses).toEqual(['0', '0', '0', '8', '8']);
  });

  it('counts each entry against the header limits', async () => {
    // Each with a key of its own: the rate limit above counts a call without one by its address.
    const thirty = Array.from({ length: 30 }, () => 'v');
    expect(await statusWith({ 'x-api-key': 'limits-1', 'x-a': thirty })).toBe('8');
    expect(await statusWith({ 'x-api-key': 'limits-2', 'grpc-x': thirty })).toBe('8');
    expect(await statusWith({ 'x-api-key': 'limits-3', 'x-b': ['v'.repeat(700), 'v'.repeat(700)] })).toBe('0');
  });

  it('leaves cookie crumbs joined, and binary values as grpc-js splits them', async () => {
    const handed: { cookie: unknown[]; bin: unknown[] }[] = [];
    const server = await startServer(fluxguardInterceptors({ audit: audit.audit }), (s) => {
      addService(s, testService, {
        ...unaryAnswering({}),
        Unary: (call, callback) => {
          handed.push({ cookie: call.metadata.get('cookie'), bin: call.metadata.get('x-data-bin') });
          callback(null, {});
        },
      });
    });
    const session = connect(`http://${server.address}`);
    session.on('error', () => undefined);
    try {
      // HTTP/2 lets a client send a cookie in crumbs, to be joined with `; ` for the application.
      const entries = { cookie: ['a=1', 'b=2'], 'x-data-bin': ['QQ==,Qg==', 'Qw=='] };
      expect(await rawUnaryStatus(session, entries)).toBe('0');
    } finally {
      session.close();
      await server.close();
    }
    expect(handed).toEqual([{ cookie: ['a=1; b=2'], bin: [Buffer.from('A'), Buffer.from('B'), Buffer.from('C')] }]);
  });
});
