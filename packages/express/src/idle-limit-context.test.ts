// An idle limit ends a request in the request's own async context: an application that keeps a
// per-request store (AsyncLocalStorage: its trace, its caller) reads the request's own store in
// what the end runs (the signal's listeners, the audit line), though the idle timers of the
// requests started in one turn of the event loop are made together at its end. Requests
// pipelined on one connection start in the same turn.
import { AsyncLocalStorage } from 'node:async_hooks';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { fluxguard } from './index.js';
import { captureAudit } from './testing/tls.js';

/** The application's per-request store: the request id it was given. */
const requests = new AsyncLocalStorage<string>();
/** What each request's store read when its signal aborted, by request id. */
const seenAtAbort = new Map<string, string | undefined>();
const { audit, lines } = captureAudit();
let server: Server;
let port: number;

beforeAll(async () => {
  const app = express();
  const { before, after } = fluxguard({ audit, timeouts: { defaultMs: 10_000, maxMs: 60_000, idleMs: 300 } });
  app.use(before);
  app.post('/upload', (req, res) => {
    const id = req.fluxguard.requestId;
    req.fluxguard.signal.addEventListener('abort', () => {
      seenAtAbort.set(id, requests.getStore());
    });
    req.on('data', () => undefined);
    req.on('end', () => res.json({ ok: true }));
  });
  app.use(after);
  // As tracing does: each request runs in a store of its own from the moment it is emitted.
  server = createServer((req, res) => {
    requests.run(String(req.headers['x-request-id']), () => {
      app(req, res);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const upload = (id: string, declared: number, body: string): string =>
  `POST /upload HTTP/1.1\r\nhost: localhost\r\nx-request-id: ${id}\r\ncontent-length: ${String(declared)}\r\n\r\n${body}`;

describe('the idle limit', () => {
  it('ends a request that stalls in its own async context, not in that of one started in the same turn', async () => {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    try {
      // Both heads in one write: the first request is whole, the second stalls after one byte.
      socket.write(upload('whole-first', 2, 'ab') + upload('stalled-second', 100, 'x'));
      await expect.poll(() => seenAtAbort.has('stalled-second'), { timeout: 3_000 }).toBe(true);
      expect(seenAtAbort.get('stalled-second')).toBe('stalled-second');
      expect(lines().filter((line) => line.requestId === 'stalled-second')).toMatchObject([
        { event: 'request.denied', reason: 'inbound_idle' },
      ]);
    } finally {
      socket.destroy();
    }
  });
});
