// Node's HTTP/2 layer resets a stream with more than 128 header fields before any JavaScript sees
// it: a call with 130 metadata entries got RESOURCE_EXHAUSTED with no request id and no audit
// line, where the header limits refuse 101 entries with both. `addService` raises Node's bound,
// so the header limits answer such calls; past the raised bound Node still resets the stream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Metadata, credentials, status as Status } from '@grpc/grpc-js';
import { ConfigurationError, createHeaderLimits } from '@fluxguard/core';
import { DEFAULT_MAX_HEADER_FIELDS } from './server-credentials.js';
import { addService, fluxguardInterceptors, secureServerOptions } from './index.js';
import {
  callKind,
  captureAudit,
  metadataValue,
  startServer,
  testService,
  unaryAnswering,
  type Json,
  type Started,
} from './testing/harness.js';

// Folded as by default (50 full lines per client and reason), over a shorter interval.
const { audit, lines } = captureAudit({ foldRefusals: { after: 50, intervalMs: 2_000 } });
let started: Started;

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit, controls: [createHeaderLimits()] }), (server) => {
    addService(server, testService, unaryAnswering({ ok: true }));
  });
});

afterAll(async () => {
  await started.close();
});

/** `count` metadata entries, each with a name of its own and a one-byte value. */
function entries(count: number): Metadata {
  const metadata = new Metadata();
  for (let i = 0; i < count; i++) metadata.set(`x-e${String(i)}`, 'v');
  return metadata;
}

const denied = (): Json[] => lines().filter((line) => line.event === 'request.denied');
const deniedFolded = (): Json[] => lines().filter((line) => line.event === 'request.denied.folded');

describe('a call with more metadata entries than Node reads by default', () => {
  it('is refused by the header limits, with a request id and an audit line', async () => {
    const before = denied().length;
    const outcome = await callKind(started.client, 'unary', {}, entries(150));
    expect(outcome.status.code).toBe(Status.RESOURCE_EXHAUSTED);
    const requestId = metadataValue(outcome.status.metadata, 'x-request-id');
    expect(requestId).toBeDefined();
    const line = denied()[before];
    expect(line).toMatchObject({ code: 'payload_too_large', reason: 'too_many_headers', requestId });
    expect(denied()).toHaveLength(before + 1);
  });

  it('is refused so up to the raised bound, and reset by Node past it', async () => {
    const before = denied().length;
    const near = await callKind(started.client, 'unary', {}, entries(DEFAULT_MAX_HEADER_FIELDS - 20));
    expect(near.status.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(metadataValue(near.status.metadata, 'x-request-id')).toBeDefined();
    expect(denied()).toHaveLength(before + 1);
    // Past it, Node's reset: what a grpc-js client reads of ENHANCE_YOUR_CALM, and no call.
    const past = await callKind(started.client, 'unary', {}, entries(DEFAULT_MAX_HEADER_FIELDS + 1));
    expect(past.status.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(past.status.details).toBe('Bandwidth exhausted or memory limit exceeded');
    expect(metadataValue(past.status.metadata, 'x-request-id')).toBeUndefined();
    expect(denied()).toHaveLength(before + 1);
  });

  it('keeps the server answering through a flood of such calls', async () => {
    // Four connections, 50 calls each of 200 entries, all at once, and a plain call among them.
    const clients = Array.from({ length: 4 }, () => new Client(started.address, credentials.createInsecure()));
    try {
      const heavy = entries(200);
      const startedAt = performance.now();
      const cpuBefore = process.cpuUsage();
      const flood = clients.flatMap((client) => Array.from({ length: 50 }, () => callKind(client, 'unary', {}, heavy)));
      const plainStart = performance.now();
      const plain = await callKind(started.client, 'unary', {});
      const plainMs = performance.now() - plainStart;
      const outcomes = await Promise.all(flood);
      const elapsedMs = performance.now() - startedAt;
      const cpu = process.cpuUsage(cpuBefore);

      expect(plain.status.code).toBe(Status.OK);
      expect(outcomes.every((outcome) => outcome.status.code === Status.RESOURCE_EXHAUSTED)).toBe(true);
      expect(outcomes.every((outcome) => metadataValue(outcome.status.metadata, 'x-request-id') !== undefined)).toBe(
        true,
      );
      // Client and server in this process: 200 calls of 900 entries took about 0.9 s of CPU
      // for both (the server about 0.45 s), 200 entries much less; the bounds leave room for a
      // slow machine.
      expect(elapsedMs).toBeLessThan(10_000);
      expect(plainMs).toBeLessThan(5_000);
      expect((cpu.user + cpu.system) / 1_000).toBeLessThan(8_000);
    } finally {
      for (const client of clients) client.close();
    }
  });

  it('has every refusal of the flood in the log, most of them counted into folded lines', async () => {
    // The two calls refused before the flood, and its 200.
    const accounted = (): number =>
      denied().filter((line) => line.reason === 'too_many_headers').length +
      deniedFolded()
        .filter((line) => line.reason === 'too_many_headers')
        .reduce((sum, line) => sum + Number(line.count), 0);
    await expect.poll(accounted, { timeout: 8_000, interval: 100 }).toBe(202);
    expect(denied().length).toBeLessThan(150);
  }, 10_000);
});

describe('a server that reads more header fields (maxHeaderFields)', () => {
  let raised: Started;

  beforeAll(async () => {
    raised = await startServer(
      fluxguardInterceptors({ audit, controls: [createHeaderLimits()] }),
      (server) => {
        addService(server, testService, unaryAnswering({ ok: true }));
      },
      secureServerOptions({ maxHeaderFields: 1_000 }),
    );
  });

  afterAll(async () => {
    await raised.close();
  });

  it('refuses with its header limits, request id and line, a call Node resets under the default', async () => {
    const many = entries(900);
    const reset = await callKind(started.client, 'unary', {}, many);
    expect(reset.status.details).toBe('Bandwidth exhausted or memory limit exceeded');
    const before = denied().length;
    const refused = await callKind(raised.client, 'unary', {}, many);
    expect(refused.status.code).toBe(Status.RESOURCE_EXHAUSTED);
    const requestId = metadataValue(refused.status.metadata, 'x-request-id');
    expect(requestId).toBeDefined();
    await expect
      .poll(() => denied().slice(before))
      .toEqual(expect.arrayContaining([expect.objectContaining({ reason: 'too_many_headers', requestId })]));
  });

  it('is refused at start-up below the fields a gRPC call needs of its own', () => {
    expect(() => secureServerOptions({ maxHeaderFields: 8 })).toThrow(ConfigurationError);
    expect(() => secureServerOptions({ maxHeaderFields: 1.5 })).toThrow(ConfigurationError);
  });
});
