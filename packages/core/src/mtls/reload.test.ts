import { execFileSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import type { TlsMaterial } from './material.js';
import { startTlsServer, tryConnect, type TestServer } from '../testing/handshake.js';
import { watchTlsMaterial, type TlsMaterialWatcher } from './reload.js';
import { createTlsSettings } from './tls-settings.js';

let dir: string;
let ca: DevCertificateAuthority;
let client: IssuedCertificate;
let revoked: IssuedCertificate;
let first: IssuedCertificate;
let files: { certFile: string; keyFile: string; caFile: string; crlFile: string };

/** Replaces a file the way rotation tools do: write beside it, then rename over it. */
function replace(file: string, contents: string): void {
  const temp = `${file}.new`;
  writeFileSync(temp, contents, { mode: 0o600 });
  renameSync(temp, file);
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!(await condition())) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-reload-'));
  ca = await createDevCertificateAuthority();
  client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  first = await ca.issueServerCertificate();
  revoked = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/revoked' });
  files = {
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
    crlFile: join(dir, 'ca.crl'),
  };
  writeFileSync(files.crlFile, await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] }));
  writeFileSync(files.certFile, first.certPem);
  writeFileSync(files.keyFile, first.keyPem, { mode: 0o600 });
  writeFileSync(files.caFile, ca.certPem);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('watchTlsMaterial with a real server', () => {
  let srv: TestServer;
  let watcher: TlsMaterialWatcher;
  const updates: TlsMaterial[] = [];
  const errors: Error[] = [];
  const asClient = () => ({ ca: ca.certPem, cert: client.certPem, key: client.keyPem });

  beforeAll(async () => {
    const settings = createTlsSettings({ ...files, clientCertificates: 'strict', minVersion: 'TLSv1.3' });
    srv = await startTlsServer(settings.serverOptions);
    watcher = watchTlsMaterial({
      ...files,
      intervalMs: 50,
      onUpdate: (material) => {
        updates.push(material);
        srv.server.setSecureContext(settings.secureContextOptions(material));
      },
      onError: (err) => errors.push(err),
    });
  });

  afterAll(async () => {
    watcher.close();
    await srv.close();
  });

  it('serves a renewed certificate to new connections without a restart', async () => {
    expect(await tryConnect(srv.port, asClient())).toMatchObject({
      ok: true,
      serverFingerprint256: first.fingerprint256,
    });
    expect(watcher.current.certFingerprint256).toBe(first.fingerprint256);

    const second = await ca.issueServerCertificate();
    replace(files.keyFile, second.keyPem);
    replace(files.certFile, second.certPem);
    await waitFor(() => updates.length === 1);

    expect(updates[0]?.certFingerprint256).toBe(second.fingerprint256);
    expect(watcher.current.certFingerprint256).toBe(second.fingerprint256);
    expect(await tryConnect(srv.port, asClient())).toMatchObject({
      ok: true,
      serverFingerprint256: second.fingerprint256,
    });
    expect(errors).toEqual([]);

    // The rebuilt secure context keeps the hardening, not only the new key pair: Node's
    // setSecureContext drops minVersion, ciphers and CRL that are not given again.
    expect(await tryConnect(srv.port, { ...asClient(), maxVersion: 'TLSv1.2' })).toMatchObject({ ok: false });
    expect(await tryConnect(srv.port, { ca: ca.certPem, cert: revoked.certPem, key: revoked.keyPem })).toMatchObject({
      ok: false,
    });
    expect(await tryConnect(srv.port, { ca: ca.certPem })).toMatchObject({ ok: false });
  });

  it('keeps the last good material on a broken file and reports it once', async () => {
    const good = watcher.current.certFingerprint256;
    const before = updates.length;
    replace(files.keyFile, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
    await waitFor(() => errors.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 300)); // several more ticks
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(ConfigurationError);
    expect(errors[0]?.message).toMatch(/"keyFile" does not hold a readable private key/);
    expect(errors[0]?.message).not.toContain('broken');
    expect(updates).toHaveLength(before);
    expect(watcher.current.certFingerprint256).toBe(good);
    expect(await tryConnect(srv.port, asClient())).toMatchObject({ ok: true, serverFingerprint256: good });

    // A different failure is reported too: a valid key that belongs to another certificate.
    const other = await ca.issueServerCertificate();
    replace(files.keyFile, other.keyPem);
    await waitFor(() => errors.length === 2);
    expect(errors[1]?.message).toMatch(/does not match the certificate/);

    // Then a good set again.
    replace(files.certFile, other.certPem);
    await waitFor(() => updates.length === before + 1);
    expect(updates.at(-1)?.certFingerprint256).toBe(other.fingerprint256);
    expect(await tryConnect(srv.port, asClient())).toMatchObject({
      ok: true,
      serverFingerprint256: other.fingerprint256,
    });
  });

  it('reports a missing file once and recovers when it is back', async () => {
    const errorsBefore = errors.length;
    const updatesBefore = updates.length;
    const saved = join(dir, 'ca.saved');
    renameSync(files.caFile, saved);
    await waitFor(() => errors.length === errorsBefore + 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(errors).toHaveLength(errorsBefore + 1);
    expect(errors.at(-1)?.message).toMatch(/cannot read "caFile" .*\(ENOENT\)/);
    renameSync(saved, files.caFile);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Same bytes as the material in use: nothing to update.
    expect(updates).toHaveLength(updatesBefore);
    expect(await tryConnect(srv.port, asClient())).toMatchObject({ ok: true });
  });
});

describe('watchTlsMaterial: a failed set is tried again', () => {
  let srv: TestServer;
  let watcher: TlsMaterialWatcher;
  const errors: Error[] = [];
  const asRevoked = () => ({ ca: ca.certPem, cert: revoked.certPem, key: revoked.keyPem });
  let crlFile: string;

  beforeAll(async () => {
    crlFile = join(dir, 'retry.crl');
    writeFileSync(crlFile, await ca.createCrl({ revokedSerialNumbers: [] }));
    const settings = createTlsSettings({ ...files, crlFile, clientCertificates: 'strict' });
    srv = await startTlsServer(settings.serverOptions);
    watcher = watchTlsMaterial({
      ...files,
      crlFile,
      intervalMs: 50,
      onUpdate: (material) => {
        srv.server.setSecureContext(settings.secureContextOptions(material));
      },
      onError: (err) => errors.push(err),
    });
  });

  afterAll(async () => {
    watcher.close();
    await srv.close();
  });

  it('applies a revoking CRL whose fix changed no size, time or inode (a chmod of an unreadable file)', async () => {
    expect(await tryConnect(srv.port, asRevoked())).toMatchObject({ ok: true });
    const revoking = await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] });
    // First a CRL that does not parse, of the same size, then the real one written over it in
    // place with the same times: the files' signature is the same before and after the fix.
    const broken = `-----BEGIN X509 CRL-----\n${'A'.repeat(revoking.length - 50)}\n-----END X509 CRL-----\n`.slice(
      0,
      revoking.length,
    );
    writeFileSync(crlFile, broken.padEnd(revoking.length, '\n'));
    utimesSync(crlFile, 1_700_000_000, 1_700_000_000);
    await waitFor(() => errors.length === 1);
    writeFileSync(crlFile, revoking);
    utimesSync(crlFile, 1_700_000_000, 1_700_000_000);
    await waitFor(async () => !(await tryConnect(srv.port, asRevoked())).ok);
    expect(errors).toHaveLength(1);
  });

  it("never blocks on a FIFO put in a file's place, and applies the file that replaces it", async () => {
    const errorsBefore = errors.length;
    const fifo = join(dir, 'fifo.crl');
    execFileSync('mkfifo', [fifo]);
    renameSync(fifo, crlFile);
    await waitFor(() => errors.length === errorsBefore + 1);
    expect(errors.at(-1)?.message).toMatch(/cannot read "crlFile" .*\(ENOTREGULAR\)/);
    replace(crlFile, await ca.createCrl({ revokedSerialNumbers: [] }));
    await waitFor(async () => (await tryConnect(srv.port, asRevoked())).ok);
  });
});

describe('watchTlsMaterial options', () => {
  it('refuses an invalid initial set and bad options', () => {
    const noop = (): void => undefined;
    expect(() =>
      watchTlsMaterial({ ...files, keyFile: join(dir, 'missing.key'), onUpdate: noop, onError: noop }),
    ).toThrow(/watchTlsMaterial: cannot read "keyFile"/);
    expect(() => watchTlsMaterial({ ...files, intervalMs: 1, onUpdate: noop, onError: noop })).toThrow(/"intervalMs"/);
    expect(() => watchTlsMaterial({ ...files, onUpdate: noop, onError: noop, onExpired: 'log' as never })).toThrow(
      '"onExpired" must be a function',
    );
    // Node runs a longer interval every millisecond: a reload check in a busy loop.
    expect(() => watchTlsMaterial({ ...files, intervalMs: 2 ** 31, onUpdate: noop, onError: noop })).toThrow(
      /"intervalMs" must be a number of milliseconds, from 20 to 2147483647/,
    );
    expect(() => watchTlsMaterial({ ...files, onUpdate: noop } as never)).toThrow(
      /"onUpdate" and "onError" are required/,
    );
    expect(() => watchTlsMaterial({ ...files, onUpdate: noop, onError: noop, interval: 5 } as never)).toThrow(
      /unknown option "interval"/,
    );
  });

  it('makes no callback after close', async () => {
    const calls: string[] = [];
    const w = watchTlsMaterial({
      ...files,
      intervalMs: 20,
      onUpdate: () => calls.push('update'),
      onError: () => calls.push('error'),
    });
    w.close();
    w.close();
    replace(files.keyFile, 'broken');
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(calls).toEqual([]);
  });
});
