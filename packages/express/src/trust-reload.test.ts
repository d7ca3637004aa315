// A connection keeps the certificate it was verified with for its whole life: a reload that
// changes the CA bundle or the CRL must end the connections made before it, or a revoked client
// that keeps its connection busy is served on.
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import express from 'express';
import type { AuditLogger } from '@fluxguard/core';
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

/** `app` behind the test PKI and its CRL file, reloaded every 50 ms. */
function serveReloading(app: express.Express, audit: AuditLogger) {
  return listen(
    createSecureServer(app, {
      audit,
      tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, crlFile, clientCertificates: 'strict' },
      reloadIntervalMs: 50,
      // Far longer than the tests: only the reload can end a connection.
      keepAliveTimeoutMs: 60_000,
    }),
  );
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
    const served = await serveReloading(app, audit);
    try {
      const download = async (cert: { certPem: string; keyPem: string }) => {
        const socket = connect({ ...clientTlsOptions(served.port, pki), cert: cert.certPem, key: cert.keyPem });
        socket.on('error', () => undefined);
        await once(socket, 'secureConnect');
        const seen = { text: '', closed: false };
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
    } finally {
      await served.close();
    }
  });
});
