// The concurrency limit on real HTTP requests: the request over the limit is refused at once
// (503), and after a race of completed, failed, client-aborted and timed-out requests the count
// of requests in flight is back to zero.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { createConcurrencyLimit } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const LIMIT = 8;
const limit = createConcurrencyLimit({ maxInFlight: LIMIT });
const audit = captureAudit();
let served: Served;

beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({
    audit: audit.audit,
    controls: [limit],
    timeouts: { rules: [{ operation: 'GET /deadline', defaultMs: 50 }] },
  });
  app.use(before);
  app.get('/ok', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/fail', () => {
    throw new Error('boom');
  });
  const hold = async (req: express.Request): Promise<void> => {
    // Never answers: the client, or the deadline, ends it; it stops then, as a handler should.
    const { signal } = req.fluxguard;
    await new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => {
        reject(signal.reason as Error);
      });
    });
  };
  app.get('/hold', hold);
  app.get('/deadline', hold);
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

describe('a concurrency limit on HTTP', () => {
  it('refuses the request over the limit at once with 503, and admits again once one ends', async () => {
    const controllers = Array.from({ length: LIMIT }, () => new AbortController());
    const holding = controllers.map((c) => fetch(`${served.url}/hold`, { signal: c.signal }).catch(() => undefined));
    await expect.poll(() => limit.inFlight()).toBe(LIMIT);
    const refused = await fetch(`${served.url}/ok`);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ code: 'unavailable' });
    controllers[0]?.abort();
    await expect.poll(() => limit.inFlight()).toBe(LIMIT - 1);
    expect((await fetch(`${served.url}/ok`)).status).toBe(200);
    for (const c of controllers) c.abort();
    await Promise.all(holding);
    await expect.poll(() => limit.inFlight()).toBe(0);
  });

  it('is back to zero in flight after 1,000 mixed requests', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 1_000 }, async (_, i) => {
        const what = ['ok', 'fail', 'hold', 'deadline'][i % 4] ?? 'ok';
        const controller = new AbortController();
        if (what === 'hold') {
          setTimeout(() => {
            controller.abort();
          }, 20);
        }
        try {
          const res = await fetch(`${served.url}/${what}`, { signal: controller.signal });
          await res.arrayBuffer();
          return res.status;
        } catch {
          return 0;
        }
      }),
    );
    for (const status of [200, 500, 0, 504]) expect(statuses).toContain(status);
    await expect.poll(() => limit.inFlight(), { timeout: 5_000 }).toBe(0);
  });

  it('gives back the slots of pipelined requests whose answers the closed connection never sent', async () => {
    // The first answer closes the connection (it came before its request's body was read); the
    // requests behind it ran, each taking a slot, and their answers waited for a connection they
    // never get. Node emits no 'close' on such a response: 40 connections like this held an
    // anonymous budget for good.
    const pipelined = `GET /fail HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxx${'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(LIMIT - 1)}`;
    for (let round = 0; round < 3; round++) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(served.port, '127.0.0.1');
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('close', () => {
          resolve(Buffer.concat(chunks).toString('latin1'));
        });
        socket.write(pipelined);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 500 /);
      await expect.poll(() => limit.inFlight(), { timeout: 5_000 }).toBe(0);
    }
    expect((await fetch(`${served.url}/ok`)).status).toBe(200);
  });

  it('keeps the connection of a refused request that has no body: the next one is answered on it', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(served.port, '127.0.0.1');
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (text.split('HTTP/1.1 ').length > 2) socket.end();
      });
      socket.on('error', reject);
      socket.on('close', () => {
        resolve(text);
      });
      socket.write('GET /fail HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(answer).toMatch(/^HTTP\/1\.1 500 /);
    expect(answer).toContain('HTTP/1.1 200 ');
    expect(answer).not.toMatch(/^connection: close/im);
  });
});
