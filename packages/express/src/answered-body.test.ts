// The body of a request its route answered without reading: Node reads and drops the rest of it
// to keep the connection for the next request. A chunked body declares no end, so a client could
// have the server read 100 MB a second from one connection, past every body limit.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInputLimits, type Control } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const audit = captureAudit();
const LIMIT = 64 * 1024;
/** What a client offers: far more than the limits, and than what the kernel buffers on loopback. */
const OFFERED = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(16 * 1024, 0x61);
const CHUNK_FRAME = Buffer.concat([Buffer.from(`${CHUNK.length.toString(16)}\r\n`), CHUNK, Buffer.from('\r\n')]);

function appWith(controls: readonly Control[]): express.Express {
  const guard = fluxguard({ audit: audit.audit, controls });
  const app = express();
  app.use(guard.before);
  // Answers at once, never reading the body.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use(guard.after);
  return app;
}

/**
 * Sends a request with a chunked body of up to {@link OFFERED} bytes, as fast as the server
 * takes it, and returns how much it sent before the server closed the connection (all of it,
 * when the server went on reading), and what it was answered.
 */
async function offerChunkedBody(port: number): Promise<{ sent: number; answer: string; closed: boolean }> {
  const socket: Socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let answer = '';
  const seen = { closed: false };
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    answer += chunk;
  });
  socket.once('close', () => {
    seen.closed = true;
  });
  await once(socket, 'connect');
  socket.write('GET /healthz HTTP/1.1\r\nHost: fluxguard.test\r\nTransfer-Encoding: chunked\r\n\r\n');
  let sent = 0;
  while (sent < OFFERED && !seen.closed && socket.writable) {
    sent += CHUNK.length;
    if (!socket.write(CHUNK_FRAME)) {
      // Not `once`: it rejects on the write error of a connection the server has closed.
      await new Promise((resolve) => {
        socket.once('drain', resolve);
        socket.once('close', resolve);
      });
    }
  }
  const closed = seen.closed;
  socket.destroy();
  return { sent, answer, closed };
}

describe('the body of a request answered without reading it', () => {
  let limited: Served;
  let unlimited: Served;

  beforeAll(async () => {
    limited = await serve(appWith([createInputLimits({ maxBodyBytes: LIMIT })]));
    unlimited = await serve(appWith([]));
  });

  afterAll(async () => {
    await Promise.all([limited.close(), unlimited.close()]);
  });

  it('closes the connection once answered, instead of reading a chunked body without end (with a body limit)', async () => {
    const { sent, answer, closed } = await offerChunkedBody(limited.port);
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(closed).toBe(true);
    // The limit, what the kernel's buffers on both ends hold, and the chunks in flight.
    expect(sent).toBeLessThan(OFFERED / 4);
  });

  it('closes the connection once answered, instead of reading a chunked body without end (no body limit)', async () => {
    const { sent, answer, closed } = await offerChunkedBody(unlimited.port);
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(closed).toBe(true);
    expect(sent).toBeLessThan(OFFERED / 4);
  });

  it('keeps the connection for a small declared body that ends after the answer', async () => {
    const socket = connect(unlimited.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.setEncoding('latin1');
    let answers = '';
    socket.on('data', (chunk: string) => {
      answers += chunk;
    });
    try {
      await once(socket, 'connect');
      socket.write('GET /healthz HTTP/1.1\r\nHost: fluxguard.test\r\nContent-Length: 10\r\n\r\n');
      await expect.poll(() => answers.includes('{"status":"ok"}')).toBe(true);
      socket.write('0123456789GET /healthz HTTP/1.1\r\nHost: fluxguard.test\r\n\r\n');
      await expect.poll(() => answers.match(/HTTP\/1\.1 200 /g)?.length).toBe(2);
    } finally {
      socket.destroy();
    }
  });
});
