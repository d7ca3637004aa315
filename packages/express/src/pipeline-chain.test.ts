// Two pipelines with message hooks on one request: `fluxguard().before` with an asynchronous
// start hook (a token check, a store), then `controls()` with its own body limit. The second
// must see every body chunk, also those the first held while its start hook waited.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { SecurityError, createContextKey, type Control } from '@fluxguard/core';
import { controls, fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

/** A control that counts body bytes under its own key, refuses past `limit`, and may start slowly. */
function counting(name: string, limit: number, startMs: (headers: { get(n: string): string | undefined }) => number) {
  const key = createContextKey<number>(`${name}.bytes`);
  const seen = new Map<string, number>();
  const control: Control = {
    name,
    stage: 'caller-limit',
    onStart(call) {
      const ms = startMs(call.headers);
      if (ms <= 0) return undefined;
      return new Promise<undefined>((resolve) => {
        setTimeout(() => {
          resolve(undefined);
        }, ms);
      });
    },
    onMessage(chunk, call, context) {
      const total = (context.get(key) ?? 0) + (chunk as Buffer).length;
      context.set(key, total);
      seen.set(call.requestId, total);
      if (total > limit) throw new SecurityError('payload_too_large', { reason: `app.${name}_limit` });
    },
  };
  return { control, seen };
}

const delay =
  (header: string) =>
  (headers: { get(n: string): string | undefined }): number =>
    Number(headers.get(header) ?? '0');

const first = counting('first', 1024 * 1024, delay('x-first-ms'));
const second = counting('second', 100 * 1024, delay('x-second-ms'));
const received = new Map<string, number>();
const audit = captureAudit();
let served: Served;

beforeAll(async () => {
  const app = express();
  const { before, after } = fluxguard({ audit: audit.audit, controls: [first.control] });
  app.use(before, controls('second', [second.control]));
  app.put('/upload', async (req, res) => {
    let bytes = 0;
    for await (const chunk of req) bytes += (chunk as Buffer).length;
    received.set(req.fluxguard.requestId, bytes);
    res.json({ bytes });
  });
  app.get('/answer', (_req, res) => {
    res.json({ ok: true });
  });
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

async function upload(id: string, bytes: number, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${served.url}/upload`, {
    method: 'PUT',
    headers: { 'x-request-id': id, ...headers },
    body: Buffer.alloc(bytes, 7),
  });
}

describe('two pipelines with message hooks on one request', () => {
  it.each([
    ['both synchronous', {}],
    ['the first asynchronous (the body arrives in full while it waits)', { 'x-first-ms': '150' }],
    ['the second asynchronous', { 'x-second-ms': '150' }],
    ['both asynchronous', { 'x-first-ms': '100', 'x-second-ms': '100' }],
  ])('passes a body under both limits to the handler whole, seen by both: %s', async (name, headers) => {
    const id = `chain-ok-${name.replaceAll(/\W/g, '')}`;
    const res = await upload(id, 60 * 1024, headers);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ bytes: 60 * 1024 });
    expect(first.seen.get(id)).toBe(60 * 1024);
    expect(second.seen.get(id)).toBe(60 * 1024);
  });

  it.each([
    ['both synchronous', {}],
    ['the first asynchronous', { 'x-first-ms': '150' }],
    ['both asynchronous', { 'x-first-ms': '100', 'x-second-ms': '100' }],
  ])('refuses with the second pipeline a body over its limit, before the handler has it: %s', async (name, headers) => {
    const id = `chain-big-${name.replaceAll(/\W/g, '')}`;
    const res = await upload(id, 300 * 1024, headers);
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: 'payload_too_large', requestId: id });
    expect(received.has(id)).toBe(false);
    expect(second.seen.get(id)).toBeGreaterThan(100 * 1024);
  });

  it('serves a request without a body through both', async () => {
    const res = await fetch(`${served.url}/answer`, { headers: { 'x-first-ms': '50' } });
    expect(res.status).toBe(200);
  });
});
