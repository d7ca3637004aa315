// A connection keeps the certificate it was verified with for its whole life: a reload that
// changes the CA bundle or the CRL must end the connections made before it, or a revoked client
// that keeps its connection busy is served on.
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import express from 'express';
import { createAuditLogger, type AuditLogger } from '@fluxguard/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSecureServer } from './index.js';
import { captureAudit, clientTlsOptions, createTestPki, listen, type TestPki } from './testing/tls.js';

let pki: TestPki;
let crlFile: string;
beforeAll(async () => {
  pki = await createTestPki();
  crlFile = join(pki.dir, 'ca.crl');
  await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
});
afterAll(async () => {
  await pki.remove();
});

function clientConnection(port: number): Promise<TLSSocket> {
  const socket = connect(clientTlsOptions(port, pki));
  socket.on('error', () => undefined);
  return once(socket, 'secureConnect').then(() => socket);
}

/**
 * `app` behind the test PKI and its CRL file, reloaded every 50 ms. The keep-alive timeout is
 * by default far longer than the tests: only the reload can end a connection.
 */
function serveReloading(app: express.Express, audit: AuditLogger, keepAliveTimeoutMs = 60_000) {
  return listen(
    createSecureServer(app, {
      audit,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, crlFile, clientCertificates: 'strict' },
      reloadIntervalMs: 50,
      keepAliveTimeoutMs,
    }),
  );
}

/**
 * An audit logger whose lines the test reads back, calling `onLine` as each is written: the
 * server writes `tls.connections_closed` right after it acted on its connections, so a client
 * can act in that same turn of the event loop, before any close of the server reaches it.
 */
function auditWatching(onLine: (line: Record<string, unknown>) => void) {
  const lines: Record<string, unknown>[] = [];
  const destination = {
    write(text: string) {
      for (const part of text.split('\n')) {
        if (part.trim() === '') continue;
        const line = JSON.parse(part) as Record<string, unknown>;
        lines.push(line);
        onLine(line);
      }
    },
  };
  return { audit: createAuditLogger({ destination, level: 'debug' }), lines: () => [...lines] };
}

interface Answer {
  readonly status: number | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Whether the request went out on a connection an earlier request had used. */
  readonly reusedSocket: boolean;
  readonly socket: Socket;
}

/** One request through `agent` (Node's own keep-alive client). */
function send(agent: Agent, port: number, method: string, path: string, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers =
      body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) };
    const req = request({ host: '127.0.0.1', port, servername: 'localhost', method, path, agent, headers }, (res) => {
      // Read now: Node lets go of it once the answer has ended.
      const socket = res.socket;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: text,
          reusedSocket: req.reusedSocket,
          socket,
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('createSecureServer: a reload that changes the CRL', () => {
  it("ends the connections made before it: a revoked client's open connection is served no more", async () => {
    const { audit, lines } = captureAudit();
    const app = express();
    app.get('/hello', (_req, res) => {
      res.json({ hello: true });
    });
    const served = await serveReloading(app, audit);
    try {
      const socket = await clientConnection(served.port);
      let answers = '';
      socket.on('data', (d: Buffer) => (answers += d.toString()));
      let closed = false;
      socket.once('close', () => (closed = true));
      socket.write('GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await expect.poll(() => answers).toContain('{"hello":true}');

      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [pki.client.serialNumber] }));
      await expect.poll(() => closed, { timeout: 5_000 }).toBe(true);
      expect(lines().some((l) => l.event === 'tls.connections_closed')).toBe(true);
      // And a new connection of that client is refused: no answer comes on it.
      const again = connect(clientTlsOptions(served.port, pki));
      again.on('error', () => undefined);
      let refusedText = '';
      again.on('data', (d: Buffer) => (refusedText += d.toString()));
      again.once('secureConnect', () => {
        again.write('GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      });
      await once(again, 'close');
      expect(refusedText).not.toContain('hello');
      // The refusal at the handshake makes no request; it has a line all the same.
      await expect
        .poll(() => lines().find((l) => l.event === 'tls.handshake_failed'))
        .toMatchObject({ reason: 'handshake_failed', addresses: ['127.0.0.1'] });
    } finally {
      await served.close();
    }
  });
});

describe('createSecureServer: a reload that revokes a client in the middle of an answer', () => {
  it('cuts the revoked client’s answer at once, and lets another client’s answer finish', async () => {
    const { audit, lines } = captureAudit();
    const other = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/other' });
    await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    // A long download: the first chunk at once, the rest when the test releases it.
    const release: (() => void)[] = [];
    const app = express();
    app.get('/download', (_req, res) => {
      res.write('first;');
      release.push(() => res.end('last'));
    });
    app.get('/hello', (_req, res) => {
      res.json({ hello: true });
    });
    const served = await serveReloading(app, audit);
    try {
      const download = async (cert: { certPem: string; keyPem: string }) => {
        const socket = connect({ ...clientTlsOptions(served.port, pki), cert: cert.certPem, key: cert.keyPem });
        socket.on('error', () => undefined);
        await once(socket, 'secureConnect');
        const seen = { text: '', closed: false, socket };
        socket.on('data', (d: Buffer) => (seen.text += d.toString()));
        socket.once('close', () => (seen.closed = true));
        socket.write('GET /download HTTP/1.1\r\nHost: localhost\r\n\r\n');
        await expect.poll(() => seen.text).toContain('first;');
        return seen;
      };
      const revoked = await download(pki.client);
      const kept = await download(other);
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [pki.client.serialNumber] }));
      await expect.poll(() => revoked.closed, { timeout: 5_000 }).toBe(true);
      expect(kept.closed).toBe(false);
      expect(lines().find((l) => l.event === 'tls.connections_closed')).toMatchObject({ connections: 2, revoked: 1 });
      for (const end of release) end();
      await expect.poll(() => kept.text).toContain('last');
      expect(revoked.text).not.toContain('last');
      // The kept connection is not closed behind its client's back: its next answer closes it.
      kept.socket.write('GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await expect.poll(() => kept.closed, { timeout: 5_000 }).toBe(true);
      expect(kept.text).toContain('{"hello":true}');
      expect(kept.text).toMatch(/\r\nconnection: close\r\n/i);
    } finally {
      await served.close();
    }
  });
});

describe('createSecureServer: a reload that changes the trust and still trusts a client', () => {
  it('answers the request the client sends on its kept-alive connection just then, with `connection: close`', async () => {
    await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    const revokedClient = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/revoked' });
    let whenClosing = (): void => undefined;
    const { audit, lines } = auditWatching((line) => {
      if (line.event === 'tls.connections_closed') whenClosing();
    });
    const app = express();
    app.get('/hello', (_req, res) => {
      res.json({ hello: true });
    });
    app.post('/echo', express.text(), (req, res) => {
      res.type('text/plain').send(`echo:${String(req.body)}`);
    });
    const served = await serveReloading(app, audit);
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: pki.ca.certPem,
      cert: pki.client.certPem,
      key: pki.client.keyPem,
    });
    try {
      const first = await send(agent, served.port, 'GET', '/hello');
      expect(first).toMatchObject({ status: 200, reusedSocket: false });
      expect(first.headers.connection).toBe('keep-alive');
      // Another client, whose certificate the reload revokes, with a connection open too.
      const revoked = connect({
        ...clientTlsOptions(served.port, pki),
        cert: revokedClient.certPem,
        key: revokedClient.keyPem,
      });
      revoked.on('error', () => undefined);
      await once(revoked, 'secureConnect');
      let revokedClosed = false;
      revoked.once('close', () => (revokedClosed = true));

      // The POST leaves on the kept-alive connection in the very turn the server acts on its
      // connections: a close at that moment would reach the client after its request was sent.
      const posted = new Promise<Answer>((resolve, reject) => {
        whenClosing = () => {
          send(agent, served.port, 'POST', '/echo', 'hello').then(resolve, reject);
        };
      });
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [revokedClient.serialNumber] }));
      const second = await posted;
      expect(second).toMatchObject({ status: 200, body: 'echo:hello', reusedSocket: true });
      expect(second.socket).toBe(first.socket);
      // Its last answer: the connection closes after it, and the next request handshakes again.
      expect(second.headers.connection).toBe('close');
      await expect.poll(() => second.socket.destroyed).toBe(true);
      const third = await send(agent, served.port, 'GET', '/hello');
      expect(third).toMatchObject({ status: 200, reusedSocket: false });
      expect(third.headers.connection).toBe('keep-alive');
      // The revoked client's connection was cut at once.
      expect(revokedClosed).toBe(true);
      expect(lines().filter((l) => l.event === 'tls.connections_closed')).toMatchObject([
        { connections: 2, revoked: 1 },
      ]);
    } finally {
      agent.destroy();
      await served.close();
    }
  });

  it('leaves a connection that stays idle to the keep-alive timeout its answer announced', async () => {
    await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    const other = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/other' });
    let whenClosing = (): void => undefined;
    const { audit, lines } = auditWatching((line) => {
      if (line.event === 'tls.connections_closed') whenClosing();
    });
    const app = express();
    app.get('/hello', (_req, res) => {
      res.json({ hello: true });
    });
    const served = await serveReloading(app, audit, 1_500);
    try {
      const socket = await clientConnection(served.port);
      let answers = '';
      socket.on('data', (d: Buffer) => (answers += d.toString()));
      let closedAt: number | undefined;
      socket.once('close', () => (closedAt = Date.now()));
      socket.write('GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await expect.poll(() => answers).toContain('{"hello":true}');
      const answeredAt = Date.now();
      expect(answers).toMatch(/\r\nKeep-Alive: timeout=1\r\n/i);
      let openAtReload: boolean | undefined;
      whenClosing = () => {
        openAtReload = closedAt === undefined;
      };
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [other.serialNumber] }));
      await expect.poll(() => openAtReload, { timeout: 5_000 }).toBe(true);
      await expect.poll(() => closedAt, { timeout: 5_000 }).toBeDefined();
      // Not before the time its answer gave the client: a client that sends its next request
      // within it is answered.
      expect((closedAt ?? 0) - answeredAt).toBeGreaterThanOrEqual(1_500);
      expect(answers.match(/HTTP\/1\.1 /g)).toHaveLength(1);
      expect(lines().filter((l) => l.event === 'tls.connections_closed')).toMatchObject([
        { connections: 1, revoked: 0 },
      ]);
    } finally {
      await served.close();
    }
  });
});

describe('createSecureServer: a reload that changes the trust, on a connection an upgrade took over', () => {
  it('ends it: such a connection has no next answer to carry `connection: close`', async () => {
    await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    const other = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/other' });
    const { audit, lines } = captureAudit();
    const server = createSecureServer(express(), {
      audit,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, crlFile, clientCertificates: 'strict' },
      reloadIntervalMs: 50,
      keepAliveTimeoutMs: 60_000,
    });
    // The application's own protocol from here on: it echoes what comes.
    server.on('upgrade', (_req, socket: Duplex) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
      socket.pipe(socket);
    });
    const served = await listen(server);
    try {
      const socket = await clientConnection(served.port);
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      let closed = false;
      socket.once('close', () => (closed = true));
      socket.write('GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
      await expect.poll(() => text).toContain('101 Switching Protocols');
      socket.write('ping;');
      await expect.poll(() => text).toContain('ping;');
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [other.serialNumber] }));
      await expect.poll(() => closed, { timeout: 5_000 }).toBe(true);
      expect(lines().filter((l) => l.event === 'tls.connections_closed')).toMatchObject([
        { connections: 1, revoked: 0 },
      ]);
    } finally {
      await served.close();
    }
  });
});
