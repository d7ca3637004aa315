// A connection closed while its client is still sending a body (a refusal before the handler,
// a deadline mid-upload) first half-closes and reads and drops what still comes for a moment:
// closed at once, the unread bytes make the kernel reset the connection, and a client that reads
// its answer only once it has sent its whole body (most HTTP libraries) saw a reset, not its
// answer. The moment is bounded, and a request pipelined behind the dropped body is not served.
import { connect, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { SecurityError, type Control } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { CLOSE_LINGER_BYTES, CLOSE_LINGER_MS } from './request-body.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const DEADLINE_MS = 500;
const BODY = 16 * 1024 * 1024;

const audit = captureAudit();
let served: Served;
/** Requests that reached a handler. */
const reached: string[] = [];

/** Refuses every request without `x-api-key: k`, before any handler runs. */
const apiKey: Control = {
  name: 'api-key',
  stage: 'authentication',
  onStart(call) {
    if (call.headers.get('x-api-key') !== 'k') throw new SecurityError('unauthenticated', { reason: 'app.no_key' });
  },
};

beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({
    audit: audit.audit,
    controls: [apiKey],
    timeouts: { defaultMs: DEADLINE_MS, maxMs: 60_000, idleMs: 0 },
  });
  app.use(before);
  app.put('/upload', async (req, res) => {
    reached.push(req.path);
    for await (const _chunk of req) await delay(1);
    res.json({ ok: true });
  });
  app.get('/next', (req, res) => {
    reached.push(req.path);
    res.json({ ok: true });
  });
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

interface Seen {
  /** The status line's code, or 0. */
  readonly status: number;
  /** Everything the client read. */
  readonly text: string;
  /** How the connection ended: closed cleanly, or an error code (`EPIPE`, `ECONNRESET`). */
  readonly ended: string;
}

/**
 * A client that sends the head, then `body` once `atMs` have passed, and reads nothing until
 * its write is done (as most HTTP libraries do); resolves with what it read once the connection
 * ends.
 */
function writeThenRead(head: string, body: Buffer, atMs: number): Promise<Seen> {
  return new Promise((resolve) => {
    const socket = connect(served.port, '127.0.0.1');
    let text = '';
    const done = (ended: string): void => {
      const match = /^HTTP\/1\.1 (\d{3}) /.exec(text);
      resolve({ status: match === null ? 0 : Number(match[1]), text, ended });
    };
    socket.pause();
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      done(err.code ?? 'error');
    });
    socket.on('close', () => {
      done('closed');
    });
    socket.write(head);
    setTimeout(() => {
      socket.write(body, () => {
        socket.resume();
      });
    }, atMs);
  });
}

const uploadHead = (length: number, key = ''): string =>
  `PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${String(length)}\r\n${key}\r\n`;

describe('a connection closed under a body still arriving', () => {
  it('lets a client that reads only after writing see the 401 of a refusal before the handler', async () => {
    const seen = await Promise.all(
      Array.from({ length: 4 }, () => writeThenRead(uploadHead(BODY), Buffer.alloc(BODY, 0x61), 50)),
    );
    for (const { status, text, ended } of seen) {
      expect({ status, ended }).toEqual({ status: 401, ended: 'closed' });
      expect(text).toMatch(/connection: close/i);
    }
    expect(reached).not.toContain('/upload');
  });

  it('lets a client whose body arrives just after the deadline see its 408', async () => {
    const seen = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        writeThenRead(uploadHead(2 * BODY, 'x-api-key: k\r\n'), Buffer.alloc(BODY, 0x61), DEADLINE_MS + 5 + i * 5),
      ),
    );
    for (const { status, ended } of seen) expect({ status, ended }).toEqual({ status: 408, ended: 'closed' });
  });

  it('closes the connection of a client that sends more than it may after the answer', async () => {
    const socket = connect({ port: served.port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    socket.write('PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n');
    // A chunked body sent as fast as the connection takes it, until the server closes it.
    const chunk = Buffer.concat([Buffer.from('100000\r\n'), Buffer.alloc(1_048_576, 0x61), Buffer.from('\r\n')]);
    const started = Date.now();
    const sending = (async () => {
      while (!socket.destroyed) {
        if (socket.write(chunk)) continue;
        // One listener of each at a time: a listener left behind per pass piles up on the socket.
        await new Promise<void>((resolve) => {
          const done = (): void => {
            socket.off('drain', done).off('close', done);
            resolve();
          };
          socket.once('drain', done).once('close', done);
        });
      }
    })();
    await closedWithin(socket, CLOSE_LINGER_MS + 3_000);
    await sending;
    // Closed by the count of bytes, long before the time is up: more than that many is
    // several hundred megabytes a second on a loopback connection.
    expect(Date.now() - started).toBeLessThan(CLOSE_LINGER_MS);
    expect(socket.bytesWritten).toBeGreaterThan(CLOSE_LINGER_BYTES);
  });

  it('closes the connection of a client that keeps sending, once the moment has passed', async () => {
    // Half-open: the server's end of its side does not end the client's, which sends on.
    const socket = connect({ port: served.port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    let answered = false;
    socket.on('data', () => {
      answered = true;
    });
    socket.write('PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n');
    // An endless chunked body, 64 KiB every 10 ms.
    const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(65_536, 0x61), Buffer.from('\r\n')]);
    const timer = setInterval(() => {
      if (!socket.destroyed) socket.write(chunk);
    }, 10);
    const started = Date.now();
    try {
      await closedWithin(socket, CLOSE_LINGER_MS + 3_000);
    } finally {
      clearInterval(timer);
    }
    expect(answered).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(CLOSE_LINGER_MS - 100);
  });

  it('serves no request pipelined behind the dropped body', async () => {
    const before = reached.length;
    const socket = connect({ port: served.port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
    });
    // Refused on its head; its whole body, then a second request, follow after the answer.
    socket.write(uploadHead(1_024));
    await delay(100);
    socket.write(Buffer.alloc(1_024, 0x61));
    socket.write('GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: k\r\n\r\n');
    // Served, it would have reached its handler at once; its answer could go nowhere.
    await delay(500);
    socket.destroy();
    expect(text.match(/^HTTP\/1\.1 /gm)).toHaveLength(1);
    expect(text).toMatch(/^HTTP\/1\.1 401 /);
    expect(reached.slice(before)).toEqual([]);
  });
});

async function closedWithin(socket: Socket, ms: number): Promise<void> {
  if (socket.destroyed) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the connection was still open after ${String(ms)} ms`));
    }, ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
