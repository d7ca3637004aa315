import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import express from 'express';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const DEADLINE_MS = 500;
const audit = captureAudit();
let served: Served;
beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({ audit: audit.audit, timeouts: { defaultMs: DEADLINE_MS, maxMs: 60_000, idleMs: 0 } });
  app.use(before);
  app.put('/up', async (req, res) => {
    for await (const _c of req) await delay(1);
    res.json({ ok: true });
  });
  app.use(after);
  served = await serve(app);
});
afterAll(async () => { await served.close(); });

function blocking(burstAt: number, size: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(served.port, '127.0.0.1');
    let got = '';
    socket.pause();
    socket.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    socket.on('error', (e: NodeJS.ErrnoException) => { resolve(`error ${e.code ?? ''} got=${got.slice(0, 12)}`); });
    socket.on('close', () => { resolve(`close got=${got.slice(0, 12)}`); });
    socket.write(`PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: ${String(size * 2)}\r\n\r\n`);
    socket.write('x'.repeat(16));
    setTimeout(() => {
      // A blocking writer: reads nothing until its write is done.
      socket.write(Buffer.alloc(size, 0x61), () => { socket.resume(); });
      setTimeout(() => socket.resume(), 3000);
    }, burstAt);
  });
}

it('scratch', async () => {
  const out = await Promise.all(Array.from({ length: 8 }, (_, i) => blocking(DEADLINE_MS + 5 + i * 5, 16 * 1024 * 1024)));
  console.log('OUT', JSON.stringify(out));
  expect(out.length).toBe(8);
}, 20_000);
