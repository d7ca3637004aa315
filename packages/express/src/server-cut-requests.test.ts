// A request the server itself cuts (the end of a shutdown's grace, a trust reload that revokes its
// client's certificate, the request timeout under a body still coming, the connection cap closing
// a connection whose request waits on its body) is logged with why
// (`reason` on its `request.cancelled` line): an operator reading the log must tell "the client
// went away" from "we cut it".
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import type { Server } from 'node:https';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import express from 'express';
import type { AuditLogger } from '@fluxguard/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdConnections } from '@fluxguard/test-support/connections';
import { createSecureServer, fluxguard } from './index.js';
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

/**
 * An HTTPS server whose `/slow` handler (`GET` or `PUT`, whose body it does not read) works until
 * its request ends, then throws its signal's reason, as a read given the signal does, and whose
 * `/ignores` handler ignores its signal and answers 200 ms after its request ended; `working`
 * counts the handlers at work. `more` are more of `createSecureServer`'s options.
 */
function slowServer(
  audit: AuditLogger,
  more: {
    requestTimeoutMs?: number;
    headersTimeoutMs?: number;
    connectionsCheckingIntervalMs?: number;
    maxConnections?: number;
    maxConnectionsPerAddress?: number;
  } = {},
): { server: Server; working: () => number } {
  let running = 0;
  const app = express();
  const { before, after } = fluxguard({ audit });
  app.use(before);
  app.get('/ignores', async (req, res) => {
    const { signal } = req.fluxguard;
    running += 1;
    try {
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve);
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      running -= 1;
    }
    res.json({ ok: true });
  });
  app.all('/slow', async (req) => {
    const { signal } = req.fluxguard;
    running += 1;
    try {
      await new Promise((resolve) => {
        signal.addEventListener('abort', resolve);
      });
    } finally {
      running -= 1;
    }
    throw signal.reason;
  });
  app.use(after);
  const server = createSecureServer(app, {
    audit,
    tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, crlFile, clientCertificates: 'strict' },
    reloadIntervalMs: 50,
    keepAliveTimeoutMs: 60_000,
    ...more,
  });
  return { server, working: () => running };
}

/** A client connection that has sent `GET path` (`/slow` by default) with request id `id`. */
async function slowRequest(port: number, id: string, cert = pki.client, path = '/slow'): Promise<TLSSocket> {
  const socket = connect({ ...clientTlsOptions(port, pki), cert: cert.certPem, key: cert.keyPem });
  socket.on('error', () => undefined);
  await once(socket, 'secureConnect');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nx-request-id: ${id}\r\n\r\n`);
  return socket;
}

describe('createSecureServer: requests cut by the server', () => {
  it('logs a request cut at the end of a shutdown’s grace with reason server_shutdown', async () => {
    const { audit, lines } = captureAudit();
    const { server, working } = slowServer(audit);
    const served = await listen(server);
    try {
      const socket = await slowRequest(served.port, 'cut-by-shutdown');
      await expect.poll(working).toBe(1);
      const closed = once(server, 'close');
      // A shutdown: no new connections, then, at the end of the grace, every connection ended.
      server.close();
      server.closeAllConnections();
      await closed;
      await expect.poll(working).toBe(0);
      await expect
        .poll(() => lines().find((line) => line.requestId === 'cut-by-shutdown'))
        .toMatchObject({
          event: 'request.cancelled',
          outcome: 'cancelled',
          reason: 'server_shutdown',
          transport: 'http',
          operation: 'GET /slow',
        });
      socket.destroy();
    } finally {
      await served.close().catch(() => undefined);
    }
  });

  it('logs a request cut at a shutdown once, with reason server_shutdown, though its handler ignores the cut', async () => {
    const { audit, lines } = captureAudit();
    const { server, working } = slowServer(audit);
    const served = await listen(server);
    try {
      const socket = await slowRequest(served.port, 'cut-ignored', pki.client, '/ignores');
      await expect.poll(working).toBe(1);
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
      // The handler answers into the closed response, and never fails.
      await expect.poll(working).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(lines().filter((line) => line.requestId === 'cut-ignored')).toEqual([
        expect.objectContaining({
          event: 'request.cancelled',
          outcome: 'cancelled',
          reason: 'server_shutdown',
          transport: 'http',
          operation: 'GET /ignores',
        }),
      ]);
      socket.destroy();
    } finally {
      await served.close().catch(() => undefined);
    }
  });

  it('logs a request whose client left with no reason, as before', async () => {
    const { audit, lines } = captureAudit();
    const { server, working } = slowServer(audit);
    const served = await listen(server);
    try {
      const socket = await slowRequest(served.port, 'left-by-client');
      await expect.poll(working).toBe(1);
      socket.destroy();
      await expect
        .poll(() => lines().find((line) => line.requestId === 'left-by-client'))
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled' });
      expect(lines().find((line) => line.requestId === 'left-by-client')).not.toHaveProperty('reason');
    } finally {
      await served.close();
    }
  });

  it('logs a request at work cut by the request timeout while its body still comes with reason request_timeout', async () => {
    const { audit, lines } = captureAudit();
    const { server, working } = slowServer(audit, {
      requestTimeoutMs: 1_000,
      headersTimeoutMs: 500,
      connectionsCheckingIntervalMs: 100,
    });
    const served = await listen(server);
    try {
      const socket = connect({
        ...clientTlsOptions(served.port, pki),
        cert: pki.client.certPem,
        key: pki.client.keyPem,
      });
      socket.on('error', () => undefined);
      await once(socket, 'secureConnect');
      // A body of 100 bytes, 3 of them sent: the handler runs, and the request never completes.
      socket.write(
        'PUT /slow HTTP/1.1\r\nHost: localhost\r\nx-request-id: cut-by-timeout\r\nContent-Length: 100\r\n\r\nabc',
      );
      await expect.poll(working).toBe(1);
      await expect
        .poll(() => lines().find((line) => line.requestId === 'cut-by-timeout'), { timeout: 5_000 })
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled', reason: 'request_timeout' });
      // The timeout's own refusal line, under a request id of its own.
      expect(lines()).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            reason: 'request_timeout',
            detail: expect.objectContaining({ answered: 'no: behind a request in flight' }) as unknown,
          }),
        ]),
      );
      socket.destroy();
    } finally {
      await served.close().catch(() => undefined);
    }
  });

  it('logs a request at work whose body still comes, cut by the connection cap for a new client, with reason connection_cap', async () => {
    const { audit, lines } = captureAudit();
    const { server, working } = slowServer(audit, { maxConnections: 1, maxConnectionsPerAddress: 1 });
    const served = await listen(server);
    /** A client connection whose `PUT /slow` (`id`) has sent 3 bytes of its 100-byte body. */
    const trickledPut = async (id: string): Promise<TLSSocket> => {
      const socket = connect(clientTlsOptions(served.port, pki));
      socket.on('error', () => undefined);
      await once(socket, 'secureConnect');
      socket.write(`PUT /slow HTTP/1.1\r\nHost: localhost\r\nx-request-id: ${id}\r\nContent-Length: 100\r\n\r\nabc`);
      return socket;
    };
    try {
      // The handler is at work while the body trickles in: the connection serves nothing else,
      // and the cap closes it for a client of another address.
      const cut = await trickledPut('cut-by-cap');
      await expect.poll(working).toBe(1);
      const [newcomer] = await holdConnections(served.port, ['127.0.0.41'], 1);
      await expect
        .poll(() => lines().find((line) => line.requestId === 'cut-by-cap'), { timeout: 5_000 })
        .toMatchObject({
          event: 'request.cancelled',
          outcome: 'cancelled',
          reason: 'connection_cap',
          transport: 'http',
          operation: 'PUT /slow',
        });
      expect(newcomer?.closed()).toBe(false);
      expect(lines()).toContainEqual(expect.objectContaining({ event: 'connection.refused', closedIdle: 1 }));
      cut.destroy();
      newcomer?.socket.destroy();
      await expect.poll(working).toBe(0);
      // The same request, whose client leaves on its own: no reason.
      const left = await trickledPut('left-while-sending');
      await expect.poll(working).toBe(1);
      left.destroy();
      await expect
        .poll(() => lines().find((line) => line.requestId === 'left-while-sending'))
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled' });
      expect(lines().find((line) => line.requestId === 'left-while-sending')).not.toHaveProperty('reason');
    } finally {
      await served.close().catch(() => undefined);
    }
  });

  it('logs a request cut by a reload that revokes its client’s certificate with reason trust_revoked', async () => {
    const { audit, lines } = captureAudit();
    await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    const other = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/other' });
    const { server, working } = slowServer(audit);
    const served = await listen(server);
    try {
      const revoked = await slowRequest(served.port, 'cut-by-revocation');
      const kept = await slowRequest(served.port, 'kept-after-revocation', other);
      await expect.poll(working).toBe(2);
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [pki.client.serialNumber] }));
      await expect
        .poll(() => lines().find((line) => line.requestId === 'cut-by-revocation'), { timeout: 5_000 })
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled', reason: 'trust_revoked' });
      // The other client's request is still at work: only the revoked one was cut.
      expect(working()).toBe(1);
      expect(lines().find((line) => line.requestId === 'kept-after-revocation')).toBeUndefined();
      revoked.destroy();
      kept.destroy();
    } finally {
      await served.close();
      await writeFile(crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [] }));
    }
  });
});
