// The HTTPS server's connection budget: TCP connections that never start their TLS handshake
// are closed by the handshake timeout, and connections beyond `maxConnections` are refused at
// once, so that a flood meets a clean refusal instead of running the process out of descriptors.
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { fetch } from 'undici';
import { ConfigurationError } from '@fluxguard/core';
import { createSecureServer } from './index.js';
import {
  floodConnections,
  holdConnection,
  holdConnections,
  type HeldConnection,
} from '@fluxguard/test-support/connections';
import { agentFor, captureAudit, createTestPki, listen, type TestPki } from './testing/tls.js';

const audit = captureAudit();
let pki: TestPki;

beforeAll(async () => {
  pki = await createTestPki();
});
afterAll(async () => {
  await pki.remove();
});

/** A server of `app` (by default one answering `GET /ok`) with per-operation client certificates. */
function serverWith(
  options: {
    handshakeTimeoutMs?: number;
    maxConnections?: number;
    maxConnectionsPerAddress?: number;
    headersTimeoutMs?: number;
  },
  app = express().get('/ok', (_req, res) => {
    res.json({ ok: true });
  }),
) {
  return createSecureServer(app, {
    audit: audit.audit,
    tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, clientCertificates: 'per-operation' },
    reload: false,
    ...options,
  });
}

/** A TLS connection opened by hand from `localAddress`, that sends `first` once its handshake completes. */
interface RawTls {
  readonly closed: () => boolean;
  readonly answers: () => string;
  readonly write: (text: string) => void;
  readonly destroy: () => void;
}

function openTls(port: number, localAddress: string, first = ''): Promise<RawTls> {
  return new Promise((resolve, reject) => {
    let closed = false;
    let answers = '';
    // Passed on to net.connect, whose socket options Node's tls types leave out.
    const options = { host: '127.0.0.1', port, localAddress, ca: pki.ca.certPem, servername: 'localhost' };
    const socket = tlsConnect(options, () => {
      if (first !== '') socket.write(first);
      resolve({
        closed: () => closed,
        answers: () => answers,
        write: (text) => socket.write(text),
        destroy: () => socket.destroy(),
      });
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answers += chunk));
    socket.on('close', () => (closed = true));
    socket.once('error', reject);
  });
}

describe('the HTTPS connection budget', () => {
  it('closes connections that never start their TLS handshake (Node would wait 120 s)', async () => {
    const served = await listen(serverWith({ handshakeTimeoutMs: 300 }));
    try {
      const sockets = Array.from({ length: 100 }, () => holdConnection(served.port, '127.0.0.1'));
      await expect.poll(() => sockets.filter((s) => s.closed()).length, { timeout: 5_000 }).toBe(100);
    } finally {
      await served.close();
    }
  });

  it('closes TLS connections that complete their handshake and never send a request', async () => {
    const served = await listen(serverWith({ headersTimeoutMs: 300 }));
    try {
      const sockets = Array.from({ length: 100 }, () => {
        let closed = false;
        const socket = tlsConnect({
          host: '127.0.0.1',
          port: served.port,
          ca: pki.ca.certPem,
          servername: 'localhost',
        });
        socket.on('error', () => undefined);
        socket.resume();
        socket.on('close', () => {
          closed = true;
        });
        return () => closed;
      });
      await expect.poll(() => sockets.filter((closed) => closed()).length, { timeout: 5_000 }).toBe(100);
      // A connection that does send a request is served, and kept alive past that time.
      const dispatcher = agentFor(pki.ca.certPem);
      try {
        expect((await fetch(`${served.url}/ok`, { dispatcher })).status).toBe(200);
      } finally {
        await dispatcher.close();
      }
    } finally {
      await served.close();
    }
  });

  it('refuses connections beyond maxConnections at once, and serves again once they are gone', async () => {
    const served = await listen(serverWith({ maxConnections: 10, handshakeTimeoutMs: 60_000 }));
    const dispatcher = agentFor(pki.ca.certPem);
    try {
      const held = Array.from({ length: 10 }, () => holdConnection(served.port, '127.0.0.1'));
      // Let the server count them before the next one arrives.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const extra = holdConnection(served.port, '127.0.0.1');
      await expect.poll(extra.closed, { timeout: 2_000 }).toBe(true);
      expect(held.every((s) => !s.closed())).toBe(true);
      for (const s of held) s.socket.destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const res = await fetch(`${served.url}/ok`, { dispatcher });
      expect(res.status).toBe(200);
    } finally {
      await dispatcher.close();
      await served.close();
    }
  });

  it('holds each client address to its share: one address cannot take the whole cap, and the refusal is logged', async () => {
    const served = await listen(
      serverWith({ maxConnections: 100, maxConnectionsPerAddress: 3, handshakeTimeoutMs: 60_000 }),
    );
    try {
      const before = audit.lines().length;
      const held = Array.from({ length: 3 }, () => holdConnection(served.port, '127.0.0.3'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const extra = holdConnection(served.port, '127.0.0.3');
      await expect.poll(extra.closed, { timeout: 2_000 }).toBe(true);
      expect(held.every((s) => !s.closed())).toBe(true);
      // Another address is served meanwhile.
      const answer = await new Promise<string>((resolve, reject) => {
        // Passed on to net.connect, whose socket options Node's tls types leave out.
        const options = {
          host: '127.0.0.1',
          port: served.port,
          localAddress: '127.0.0.4',
          ca: pki.ca.certPem,
          servername: 'localhost',
        };
        const socket = tlsConnect(options, () =>
          socket.write('GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'),
        );
        let text = '';
        socket.on('data', (d: Buffer) => (text += d.toString()));
        socket.on('close', () => {
          resolve(text);
        });
        socket.on('error', reject);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
      expect(audit.lines().slice(before)).toContainEqual(
        expect.objectContaining({
          event: 'connection.refused',
          reason: 'address_connection_limit',
          addresses: ['127.0.0.3'],
        }),
      );
      // A held connection that closes gives its place back.
      held[0]?.socket.destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const again = holdConnection(served.port, '127.0.0.3');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(again.closed()).toBe(false);
      for (const s of [...held, again]) s.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('closes the oldest connection still in its TLS handshake to let a client in at the cap, and logs it', async () => {
    // Two addresses hold the whole cap, each its share, with connections that never start a
    // handshake: no certificate and no cryptography needed.
    const served = await listen(
      serverWith({ maxConnections: 6, maxConnectionsPerAddress: 3, handshakeTimeoutMs: 60_000 }),
    );
    const dispatcher = agentFor(pki.ca.certPem);
    try {
      const before = audit.lines().length;
      const held = await holdConnections(served.port, ['127.0.0.12', '127.0.0.13'], 3);
      expect(held.every((c) => !c.closed())).toBe(true);
      expect((await fetch(`${served.url}/ok`, { dispatcher })).status).toBe(200);
      await expect.poll(() => held[0]?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.slice(1).every((c) => !c.closed())).toBe(true);
      expect(audit.lines().slice(before)).toContainEqual(
        expect.objectContaining({
          event: 'connection.refused',
          reason: 'connection_limit',
          closedInHandshake: 1,
          addresses: ['127.0.0.12'],
        }),
      );
      for (const c of held) c.socket.destroy();
    } finally {
      await dispatcher.close();
      await served.close();
    }
  });

  it('closes the oldest connection serving nothing, of the address holding most, to let a client in at the cap', async () => {
    const served = await listen(
      serverWith({ maxConnections: 4, maxConnectionsPerAddress: 3, headersTimeoutMs: 30_000 }),
    );
    const dispatcher = agentFor(pki.ca.certPem);
    try {
      const before = audit.lines().length;
      // Connections that complete their handshake and send nothing: anyone can make them where
      // client certificates are asked per operation.
      const handshake = { ca: pki.ca.certPem };
      const held = [
        ...(await holdConnections(served.port, ['127.0.0.14'], 1, handshake)),
        ...(await holdConnections(served.port, ['127.0.0.15'], 3, handshake)),
      ];
      expect(held.every((c) => !c.closed())).toBe(true);
      expect((await fetch(`${served.url}/ok`, { dispatcher, signal: AbortSignal.timeout(5_000) })).status).toBe(200);
      // The oldest of the address with three, not the older one of the address with one.
      await expect.poll(() => held[1]?.closed(), { timeout: 2_000 }).toBe(true);
      expect([held[0], ...held.slice(2)].every((c) => c?.closed() === false)).toBe(true);
      expect(audit.lines().slice(before)).toContainEqual(
        expect.objectContaining({
          event: 'connection.refused',
          reason: 'connection_limit',
          closedIdle: 1,
          addresses: ['127.0.0.15'],
        }),
      );
      for (const c of held) c.socket.destroy();
    } finally {
      await dispatcher.close();
      await served.close();
    }
  });

  it('still refuses a new connection at the cap when every connection is writing an answer', async () => {
    const app = express();
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    app.get('/slow', (_req, res, next) => {
      answered.then(() => res.json({ ok: true }), next);
    });
    // Its body is asked for (`100 Continue`) only once the handler reads it: until then the
    // server, not the client, holds the request up.
    app.put('/later', (req, res, next) => {
      answered.then(() => {
        req.resume();
        req.once('end', () => res.json({ ok: true }));
      }, next);
    });
    // Answers as the body arrives: its answer has started while its client still sends.
    app.put('/stream', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('[');
      req.resume();
      req.once('end', () => res.end('{"ok":true}]'));
    });
    const served = await listen(
      serverWith({ maxConnections: 4, maxConnectionsPerAddress: 2, headersTimeoutMs: 30_000 }, app),
    );
    const held: RawTls[] = [];
    try {
      const before = audit.lines().length;
      for (const localAddress of ['127.0.0.14', '127.0.0.15']) {
        held.push(await openTls(served.port, localAddress, 'GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n'));
      }
      const streaming = await openTls(
        served.port,
        '127.0.0.14',
        'PUT /stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n{"',
      );
      held.push(streaming);
      const continued = await openTls(
        served.port,
        '127.0.0.15',
        'PUT /later HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n',
      );
      held.push(continued);
      // The server's side of each handshake ends after the client's, and the request is read then.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const [extra] = await holdConnections(served.port, ['127.0.0.16'], 1);
      await expect.poll(() => extra?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.every((c) => !c.closed())).toBe(true);
      expect(audit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', refusedByPortCap: 1 }),
      );
      expect(
        audit
          .lines()
          .slice(before)
          .some((line) => 'closedIdle' in line),
      ).toBe(false);
      // Every answer is written in full; the body asked for is sent when asked.
      answer();
      await expect.poll(() => continued.answers(), { timeout: 2_000 }).toMatch(/^HTTP\/1\.1 100 Continue/);
      continued.write('{}');
      streaming.write('"}');
      await expect.poll(() => held.every((c) => c.answers().includes('{"ok":true}')), { timeout: 2_000 }).toBe(true);
    } finally {
      answer();
      for (const c of held) c.destroy();
      await served.close();
    }
  });

  it('closes a connection whose request body its client never finishes sending, while those being answered stay', async () => {
    const app = express();
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    app.get('/slow', (_req, res, next) => {
      answered.then(() => res.json({ ok: true }), next);
    });
    app.put('/upload', (req, res) => {
      req.resume();
      req.once('end', () => res.json({ ok: true }));
    });
    const served = await listen(
      serverWith({ maxConnections: 3, maxConnectionsPerAddress: 3, headersTimeoutMs: 30_000 }, app),
    );
    const held: RawTls[] = [];
    const newcomers: HeldConnection[] = [];
    try {
      const before = audit.lines().length;
      // A body declared and never sent whole: nothing is answered until it comes, and it holds a
      // place meanwhile, as a request being answered does.
      const hanging = await openTls(
        served.port,
        '127.0.0.17',
        'PUT /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{"part":',
      );
      held.push(hanging);
      for (let i = 0; i < 2; i++) {
        held.push(await openTls(served.port, '127.0.0.17', 'GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n'));
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      newcomers.push(...(await holdConnections(served.port, ['127.0.0.18'], 1)));
      await expect.poll(() => hanging.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.slice(1).every((c) => !c.closed())).toBe(true);
      expect(newcomers.every((c) => !c.closed())).toBe(true);
      expect(audit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', transport: 'http', closedIdle: 1 }),
      );
      answer();
      await expect
        .poll(() => held.slice(1).every((c) => c.answers().includes('{"ok":true}')), { timeout: 2_000 })
        .toBe(true);
    } finally {
      answer();
      for (const c of held) c.destroy();
      for (const c of newcomers) c.socket.destroy();
      await served.close();
    }
  });

  it("closes first, of one client's connections writing no answer, one that has received nothing since the gate last looked", async () => {
    const served = await listen(
      serverWith({ maxConnections: 3, maxConnectionsPerAddress: 3, headersTimeoutMs: 30_000 }),
    );
    const held: RawTls[] = [];
    const newcomers: HeldConnection[] = [];
    try {
      // One client: a keep-alive connection answered once, one whose request head is arriving,
      // and one that has sent nothing.
      const answered = await openTls(served.port, '127.0.0.61', 'GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await expect.poll(() => answered.answers(), { timeout: 2_000 }).toMatch(/"ok":true/);
      const arriving = await openTls(served.port, '127.0.0.61', 'GET /ok HTTP/1.1\r\n');
      const silent = await openTls(served.port, '127.0.0.61');
      held.push(answered, arriving, silent);
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The first look: only the silent one has received nothing since its handshake.
      newcomers.push(...(await holdConnections(served.port, ['127.0.0.63'], 1)));
      await expect.poll(() => silent.closed(), { timeout: 2_000 }).toBe(true);
      expect(answered.closed() || arriving.closed()).toBe(false);
      // The head goes on arriving; the answered one stays silent: it goes next.
      arriving.write('Host: local');
      await new Promise((resolve) => setTimeout(resolve, 100));
      newcomers.push(...(await holdConnections(served.port, ['127.0.0.64'], 1)));
      await expect.poll(() => answered.closed(), { timeout: 2_000 }).toBe(true);
      expect(arriving.closed()).toBe(false);
      // The head arrives whole, and is answered.
      arriving.write('host\r\n\r\n');
      await expect.poll(() => arriving.answers(), { timeout: 2_000 }).toMatch(/"ok":true/);
      expect(newcomers.every((c) => !c.closed())).toBe(true);
    } finally {
      for (const c of held) c.destroy();
      for (const c of newcomers) c.socket.destroy();
      await served.close();
    }
  });

  it('never closes a connection an upgrade listener took over', async () => {
    const server = serverWith({ maxConnections: 1, maxConnectionsPerAddress: 1, headersTimeoutMs: 30_000 });
    server.on('upgrade', (_req: unknown, socket: { write(text: string): void }) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    });
    const served = await listen(server);
    let upgraded: RawTls | undefined;
    try {
      upgraded = await openTls(
        served.port,
        '127.0.0.65',
        'GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n',
      );
      await expect.poll(() => upgraded?.answers(), { timeout: 2_000 }).toMatch(/^HTTP\/1.1 101/);
      // Quiet since: twice looked at, and still not taken for idle.
      for (const address of ['127.0.0.66', '127.0.0.67']) {
        const [newcomer] = await holdConnections(served.port, [address], 1);
        await expect.poll(() => newcomer?.closed(), { timeout: 2_000 }).toBe(true);
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      expect(upgraded.closed()).toBe(false);
    } finally {
      upgraded?.destroy();
      await served.close();
    }
  });

  it.each([
    { held: 'that never start a handshake', addresses: ['127.0.0.17', '127.0.0.18'], completed: false },
    {
      held: 'that complete their handshake and send nothing',
      addresses: ['127.0.0.19', '127.0.0.20'],
      completed: true,
    },
  ])(
    'lets a client in, call after call, while two addresses flood the port with connections $held',
    async ({ addresses, completed }) => {
      const served = await listen(
        serverWith({
          maxConnections: 6,
          maxConnectionsPerAddress: 3,
          handshakeTimeoutMs: 60_000,
          headersTimeoutMs: 30_000,
        }),
      );
      // Twice each address's share, each opened again as soon as it is closed or refused.
      const flood = floodConnections(served.port, addresses, 6, completed ? { ca: pki.ca.certPem } : undefined);
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        for (let i = 0; i < 5; i++) {
          // A new connection each time, as a client whose connection was closed makes.
          const dispatcher = agentFor(pki.ca.certPem);
          try {
            const answer = await fetch(`${served.url}/ok`, { dispatcher, signal: AbortSignal.timeout(5_000) });
            expect(answer.status).toBe(200);
          } finally {
            await dispatcher.close();
          }
        }
        expect(flood.opened()).toBeGreaterThan(12);
      } finally {
        flood.stop();
        await served.close();
      }
    },
  );

  it('refuses a budget or handshake timeout that is not a positive whole number', () => {
    expect(() => serverWith({ maxConnections: 0 })).toThrow(ConfigurationError);
    expect(() => serverWith({ handshakeTimeoutMs: -1 })).toThrow(ConfigurationError);
    // The port's cap is reached first: a larger share per address would never apply.
    expect(() => serverWith({ maxConnections: 2, maxConnectionsPerAddress: 5 })).toThrow(
      /^createSecureServer: "maxConnectionsPerAddress" \(5\) is above maxConnections \(2\), so it would never apply/,
    );
  });
});
