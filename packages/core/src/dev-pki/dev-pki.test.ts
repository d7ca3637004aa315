import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityFromCertificate } from '../mtls/peer-identity.js';
import { run } from '@fluxguard/test-support/commands';
import { createDevCertificateAuthority, createDevPki, DEV_PKI_FILES, ensureDevPki, writeDevPki } from './index.js';

let root: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fluxguard-devpki-'));
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('createDevPki', () => {
  it('issues a server certificate for localhost, 127.0.0.1 and ::1 and a SPIFFE client certificate', async () => {
    const pki = await createDevPki();
    const server = new X509Certificate(pki.server.certPem);
    const ca = new X509Certificate(pki.ca.certPem);
    expect(server.checkHost('localhost')).toBe('localhost');
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(server.checkIP('::1')).toBe('::1');
    expect(server.checkIssued(ca) && server.verify(ca.publicKey)).toBe(true);
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(ca.ca).toBe(true);
    const client = new X509Certificate(pki.client.certPem);
    expect(client.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(identityFromCertificate(client).spiffeId).toBe('spiffe://fluxguard.dev/client');
    expect(pki.client.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/); // PKCS#8
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('issues expired and not-yet-valid certificates on request', async () => {
    const ca = await createDevCertificateAuthority();
    const now = Date.now();
    const expired = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/a', validity: 'expired' });
    expect(expired.notAfter.getTime()).toBeLessThan(now);
    const future = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/a', validity: 'not-yet-valid' });
    expect(future.notBefore.getTime()).toBeGreaterThan(now);
    await expect(ca.issueClientCertificate({ spiffeId: 'spiffe://Bad/a' })).rejects.toThrow(/"spiffeId"/);
    await expect(ca.issueServerCertificate({ ipAddresses: ['localhost'] })).rejects.toThrow(/"ipAddresses"/);
  });

  it('creates a CRL that openssl reads and verifies', async () => {
    const ca = await createDevCertificateAuthority();
    const revoked = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/r' });
    const dir = mkdtempSync(join(root, 'crl-'));
    writeFileSync(join(dir, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir, 'ca.crl'), await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] }));
    const text = await run('openssl', [
      'crl',
      '-in',
      join(dir, 'ca.crl'),
      '-CAfile',
      join(dir, 'ca.crt'),
      '-noout',
      '-text',
    ]);
    expect(text.stderr).toMatch(/verify OK/);
    expect(text.stdout.replaceAll(':', '').toLowerCase()).toContain(`serial number ${revoked.serialNumber}`);
  });
});

describe('ensureDevPki / writeDevPki', () => {
  it('writes exactly the documented names, keys 0600 in a 0700 directory, and openssl agrees', async () => {
    const dir = join(root, 'dev');
    const result = await ensureDevPki(dir);
    expect(result.created).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(['ca.crt', 'client.crt', 'client.key', 'server.crt', 'server.key']);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(result.serverKeyFile).mode & 0o777).toBe(0o600);
    expect(statSync(result.clientKeyFile).mode & 0o777).toBe(0o600);
    expect(result.caFile).toBe(join(dir, DEV_PKI_FILES.ca));
    const verify = await run('openssl', [
      'verify',
      '-CAfile',
      result.caFile,
      result.serverCertFile,
      result.clientCertFile,
    ]);
    expect(verify.stdout).toContain(`${result.serverCertFile}: OK`);
    expect(verify.stdout).toContain(`${result.clientCertFile}: OK`);
    const key = await run('openssl', ['pkey', '-in', result.clientKeyFile, '-noout', '-text']);
    expect(key.stdout).toMatch(/NIST CURVE: P-256/);
  });

  it('keeps existing material, regenerates with force, when expired or when a file is missing', async () => {
    const dir = join(root, 'keep');
    await ensureDevPki(dir);
    const caBefore = readFileSync(join(dir, 'ca.crt'), 'utf8');
    expect((await ensureDevPki(dir)).created).toBe(false);
    expect(readFileSync(join(dir, 'ca.crt'), 'utf8')).toBe(caBefore);

    expect((await ensureDevPki(dir, { force: true })).created).toBe(true);
    const caForced = readFileSync(join(dir, 'ca.crt'), 'utf8');
    expect(caForced).not.toBe(caBefore);

    const pki = await createDevPki();
    const expiredServer = await pki.ca.issueServerCertificate({ validity: 'expired' });
    await writeDevPki(dir, { ...pki, server: expiredServer });
    expect((await ensureDevPki(dir)).created).toBe(true);
    expect(identityFromCertificate(readFileSync(join(dir, 'server.crt'))).validTo.getTime()).toBeGreaterThan(
      Date.now(),
    );

    rmSync(join(dir, 'client.key'));
    expect((await ensureDevPki(dir)).created).toBe(true);
    expect((await ensureDevPki(dir)).created).toBe(false);
  });

  it('generates one PKI when two processes start at once', async () => {
    const dir = join(root, 'race');
    const [a, b] = await Promise.all([ensureDevPki(dir), ensureDevPki(dir)]);
    expect([a.created, b.created].sort()).toEqual([false, true]);
    const verify = await run('openssl', ['verify', '-CAfile', a.caFile, a.serverCertFile, a.clientCertFile]);
    expect(verify.code).toBe(0);
  });

  it('tightens key permissions of kept material', async () => {
    const dir = join(root, 'perm');
    const { serverKeyFile } = await ensureDevPki(dir);
    const { chmodSync } = await import('node:fs');
    chmodSync(serverKeyFile, 0o644);
    expect((await ensureDevPki(dir)).created).toBe(false);
    expect(statSync(serverKeyFile).mode & 0o777).toBe(0o600);
  });
});
