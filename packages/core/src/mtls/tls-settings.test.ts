import 'reflect-metadata';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BasicConstraintsExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  X509CertificateGenerator,
  type Extension,
} from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { startTlsServer, tryConnect, type TestServer } from '../testing/handshake.js';
import { createOpensslCa } from '@fluxguard/test-support/openssl-ca';
import { createTlsSettings, TLS_CIPHERS } from './tls-settings.js';

let dir: string;
let ca: DevCertificateAuthority;
let server: IssuedCertificate;
let client: IssuedCertificate;
let stranger: IssuedCertificate;
let other: DevCertificateAuthority;
let expired: IssuedCertificate;
let notYetValid: IssuedCertificate;
let revoked: IssuedCertificate;
let selfSigned: { certPem: string; keyPem: string };
let files: { certFile: string; keyFile: string; caFile: string; crlFile: string };

async function selfSignedAdmin(extensions: Extension[] = []): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await X509CertificateGenerator.createSelfSigned({
    name: 'CN=admin',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return {
    certPem: cert.toString('pem'),
    keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`,
  };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-tls-'));
  ca = await createDevCertificateAuthority();
  server = await ca.issueServerCertificate();
  client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  expired = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/old', validity: 'expired' });
  notYetValid = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/new', validity: 'not-yet-valid' });
  revoked = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/revoked' });
  other = await createDevCertificateAuthority({ commonName: 'another CA' });
  stranger = await other.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  selfSigned = await selfSignedAdmin();
  files = {
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
    crlFile: join(dir, 'ca.crl'),
  };
  writeFileSync(files.certFile, server.certPem);
  writeFileSync(files.keyFile, server.keyPem, { mode: 0o600 });
  writeFileSync(files.caFile, ca.certPem);
  writeFileSync(files.crlFile, await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] }));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const trust = (): { ca: string } => ({ ca: ca.certPem });
const as = (cert: { certPem: string; keyPem: string }) => ({ ...trust(), cert: cert.certPem, key: cert.keyPem });

describe('createTlsSettings: options', () => {
  it('requires clientCertificates, with no default', () => {
    expect(() => createTlsSettings({ ...files, crlFile: undefined } as never)).toThrow(
      new ConfigurationError(
        'createTlsSettings: "clientCertificates" is required and must be "strict" or "per-operation"',
      ),
    );
  });

  it('refuses TLS versions below 1.2 and unknown options', () => {
    expect(() => createTlsSettings({ ...files, clientCertificates: 'strict', minVersion: 'TLSv1.1' as never })).toThrow(
      /"minVersion" must be "TLSv1.2" or "TLSv1.3"/,
    );
    expect(() => createTlsSettings({ ...files, clientCertificates: 'strict', certfile: 'x' } as never)).toThrow(
      /unknown option "certfile" \(did you mean "certFile"\?\)/,
    );
  });

  it('names the option and file it cannot read', () => {
    const missing = join(dir, 'nope.crt');
    expect(() => createTlsSettings({ ...files, certFile: missing, clientCertificates: 'strict' })).toThrow(
      `createTlsSettings: cannot read "certFile" (${missing}) (ENOENT)`,
    );
  });

  it('refuses a key that does not match the certificate, without quoting the key', () => {
    let caught: unknown;
    try {
      createTlsSettings({ cert: server.certPem, key: client.keyPem, ca: ca.certPem, clientCertificates: 'strict' });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigurationError);
    const message = (caught as Error).message;
    expect(message).toMatch(/private key in "key" does not match the certificate in "cert"/);
    expect(message).not.toContain('PRIVATE KEY');
    expect(message).not.toContain(client.keyPem.split('\n')[1]);
  });

  it('refuses a CA bundle or CRL that does not parse, and both file and contents', () => {
    expect(() =>
      createTlsSettings({ ...files, caFile: undefined, ca: 'not a pem', clientCertificates: 'strict' }),
    ).toThrow(/"ca" holds no PEM certificate/);
    expect(() =>
      createTlsSettings({
        ...files,
        crlFile: undefined,
        crl: '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n',
        clientCertificates: 'strict',
      }),
    ).toThrow(/"crl" does not hold a PEM CRL/);
    expect(() => createTlsSettings({ ...files, cert: server.certPem, clientCertificates: 'strict' })).toThrow(
      /give either "certFile" or "cert", not both/,
    );
    expect(() =>
      createTlsSettings({ keyFile: files.keyFile, caFile: files.caFile, clientCertificates: 'strict' }),
    ).toThrow(/"certFile" \(or "cert"\) is required/);
  });

  it('refuses a certificate in the CA bundle that is neither a CA nor self-signed, naming it', async () => {
    const inline = { ...files, caFile: undefined, clientCertificates: 'strict' } as const;
    // A client's certificate, or a server's full chain given as the bundle: OpenSSL, which takes
    // no partial chain, verifies no client with either.
    expect(() => createTlsSettings({ ...inline, ca: client.certPem })).toThrow(
      /certificate 1 in "ca" is not a CA certificate \(a client's or a server's certificate, which verifies no one\)/,
    );
    expect(() => createTlsSettings({ ...inline, ca: ca.certPem + server.certPem })).toThrow(
      /certificate 2 in "ca" is not a CA certificate/,
    );
    const fullchain = join(dir, 'fullchain.pem');
    writeFileSync(fullchain, server.certPem + ca.certPem);
    expect(() => createTlsSettings({ ...files, caFile: fullchain, clientCertificates: 'strict' })).toThrow(
      /certificate 1 in .*fullchain\.pem.* is not a CA certificate/,
    );
    // Why: handed to Node as it is, a bundle of the client's own certificate lets no client in.
    const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
    for (const [bundle, admitted] of [
      [ca.certPem, true],
      [client.certPem, false],
    ] as const) {
      const srv = await startTlsServer({ ...settings.serverOptions, ca: bundle });
      try {
        expect((await tryConnect(srv.port, as(client))).ok).toBe(admitted);
      } finally {
        await srv.close();
      }
    }
    // A self-signed certificate is its own anchor: the bundle may pin one client so, also one
    // that says it is no CA and may only sign (the common shape of a pinned certificate).
    const leafShaped = await selfSignedAdmin([
      new BasicConstraintsExtension(false, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
    ]);
    for (const pinnedCert of [selfSigned, leafShaped]) {
      const pinned = createTlsSettings({
        certFile: files.certFile,
        keyFile: files.keyFile,
        ca: pinnedCert.certPem,
        clientCertificates: 'strict',
      });
      const srv = await startTlsServer(pinned.serverOptions);
      try {
        expect((await tryConnect(srv.port, as(pinnedCert))).ok).toBe(true);
      } finally {
        await srv.close();
      }
    }
  });

  it('refuses a CA bundle without a root: OpenSSL verifies no one with intermediates alone', async () => {
    const rootCa = await createOpensslCa(join(dir, 'chain-root'), 'ec', 'bundle root');
    const intermediate = await rootCa.issueIntermediate('bundle intermediate');
    expect(() =>
      createTlsSettings({
        ...files,
        caFile: undefined,
        crlFile: undefined,
        ca: intermediate.certPem,
        clientCertificates: 'strict',
      }),
    ).toThrow(/"ca" holds no root \(self-signed\) certificate: OpenSSL takes no partial chain/);
    const client = await intermediate.issueClient('5e');
    const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
    for (const [bundle, admitted] of [
      [intermediate.certPem, false],
      [intermediate.certPem + rootCa.certPem, true],
    ] as const) {
      const srv = await startTlsServer({ ...settings.serverOptions, ca: bundle, crl: [] });
      try {
        const withChain = { ...trust(), cert: client.certPem + intermediate.certPem, key: client.keyPem };
        expect((await tryConnect(srv.port, withChain)).ok).toBe(admitted);
      } finally {
        await srv.close();
      }
    }
  });

  it('builds the same material for Node and for grpc-js', () => {
    const strict = createTlsSettings({ ...files, clientCertificates: 'strict' });
    expect(strict.serverOptions).toMatchObject({
      minVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: true,
      honorCipherOrder: true,
    });
    expect(
      Buffer.concat(strict.serverOptions.crl ?? [])
        .toString()
        .trim(),
    ).toBe(strict.material.crl?.toString().trim());
    expect(strict.grpc.checkClientCertificate).toBe(true);
    expect(strict.grpc.rootCerts.equals(strict.material.ca)).toBe(true);
    expect(strict.grpc.keyCertPairs[0]?.cert_chain.toString()).toBe(server.certPem);
    expect(strict.material.certFingerprint256).toBe(server.fingerprint256);
    const perOp = createTlsSettings({ ...files, crlFile: undefined, clientCertificates: 'per-operation' });
    expect(perOp.serverOptions).toMatchObject({ requestCert: true, rejectUnauthorized: false });
    expect(perOp.serverOptions.crl).toBeUndefined();
    expect(perOp.grpc.checkClientCertificate).toBe(false);
    expect(perOp.secureContextOptions()).toMatchObject({ ciphers: TLS_CIPHERS, minVersion: 'TLSv1.2' });
  });

  it('lists only ECDHE AEAD suites for TLS 1.2, at OpenSSL security level 2', () => {
    const entries = TLS_CIPHERS.split(':');
    for (const suite of entries.filter((s) => !s.startsWith('TLS_') && !s.startsWith('@'))) {
      expect(suite).toMatch(/^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    }
    expect(entries.at(-1)).toBe('@SECLEVEL=2');
  });

  it('refuses a server certificate with a key under 2048 bits at start-up, naming the file', async () => {
    const keys = await webcrypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    );
    const cert = await X509CertificateGenerator.createSelfSigned({
      name: 'CN=localhost',
      keys,
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
    const weak = { certFile: join(dir, 'weak.crt'), keyFile: join(dir, 'weak.key') };
    writeFileSync(weak.certFile, cert.toString('pem'));
    writeFileSync(weak.keyFile, `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
    expect(() => createTlsSettings({ ...files, ...weak, clientCertificates: 'strict' })).toThrow(
      /the certificate in "certFile" \(.*weak\.crt\) is refused at OpenSSL security level 2: its key is too small/,
    );
  });
});

describe('strict mode: real handshakes', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTlsServer(createTlsSettings({ ...files, clientCertificates: 'strict' }).serverOptions);
  });
  afterAll(() => srv.close());

  it('accepts a client certificate from the CA and negotiates TLS 1.3', async () => {
    const result = await tryConnect(srv.port, as(client));
    expect(result).toMatchObject({ ok: true, protocol: 'TLSv1.3', serverFingerprint256: server.fingerprint256 });
    const side = srv.seen.at(-1);
    expect(side?.authorized).toBe(true);
    expect(side?.identity?.spiffeId).toBe('spiffe://fluxguard.dev/client');
    expect(side?.identity?.fingerprint256).toBe(client.fingerprint256);
  });

  it('uses an ECDHE AEAD suite with a TLS 1.2 client', async () => {
    const result = await tryConnect(srv.port, { ...as(client), maxVersion: 'TLSv1.2' });
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.protocol).toBe('TLSv1.2');
      expect(TLS_CIPHERS.split(':')).toContain(result.cipher);
    }
  });

  it('refuses a handshake without a client certificate', async () => {
    expect(await tryConnect(srv.port, trust())).toMatchObject({ ok: false });
  });

  it('refuses a certificate from another CA', async () => {
    expect(await tryConnect(srv.port, as(stranger))).toMatchObject({ ok: false });
  });

  it('refuses an untrusted self-signed certificate', async () => {
    expect(await tryConnect(srv.port, as(selfSigned))).toMatchObject({ ok: false });
  });

  it('refuses an expired and a not-yet-valid certificate', async () => {
    expect(await tryConnect(srv.port, as(expired))).toMatchObject({ ok: false });
    expect(await tryConnect(srv.port, as(notYetValid))).toMatchObject({ ok: false });
  });

  it('refuses a revoked certificate and accepts the others (CRL)', async () => {
    expect(await tryConnect(srv.port, as(revoked))).toMatchObject({ ok: false });
    expect(await tryConnect(srv.port, as(client))).toMatchObject({ ok: true });
  });

  it('refuses TLS 1.1 and TLS 1.0 clients', async () => {
    const v11 = await tryConnect(srv.port, {
      ...as(client),
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    expect(v11.ok).toBe(false);
    const v10 = await tryConnect(srv.port, {
      ...as(client),
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    expect(v10.ok).toBe(false);
  });
});

describe('a server certificate outside its validity', () => {
  it('is refused with the date, expired or not yet valid (every client would refuse it)', async () => {
    const expiredServer = await ca.issueServerCertificate({ validity: 'expired' });
    const futureServer = await ca.issueServerCertificate({ validity: 'not-yet-valid' });
    for (const [certificate, message] of [
      [expiredServer, /the certificate in "cert" expired on .*; renew it/],
      [futureServer, /the certificate in "cert" is not valid before /],
    ] as const) {
      expect(() =>
        createTlsSettings({
          cert: certificate.certPem,
          key: certificate.keyPem,
          ca: ca.certPem,
          clientCertificates: 'strict',
        }),
      ).toThrow(message);
    }
  });
});

describe('a CA bundle of two CAs, with a CRL of each in one file', () => {
  it("reads every CRL: the second CA's clients are verified, and its revoked ones refused", async () => {
    const revokedStranger = await other.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/gone' });
    const caFile = join(dir, 'two-cas.crt');
    const crlFile = join(dir, 'two-cas.crl');
    writeFileSync(caFile, `${ca.certPem}${other.certPem}`);
    writeFileSync(
      crlFile,
      `${await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] })}${await other.createCrl({
        revokedSerialNumbers: [revokedStranger.serialNumber],
      })}`,
    );
    const srv = await startTlsServer(
      createTlsSettings({ ...files, caFile, crlFile, clientCertificates: 'strict' }).serverOptions,
    );
    try {
      // Given the file as one buffer, Node read the first CRL only, and OpenSSL found none for
      // the second CA: none of its clients could be verified.
      expect(await tryConnect(srv.port, as(stranger))).toMatchObject({ ok: true });
      expect(await tryConnect(srv.port, as(client))).toMatchObject({ ok: true });
      expect(await tryConnect(srv.port, as(revokedStranger))).toMatchObject({ ok: false });
      expect(await tryConnect(srv.port, as(revoked))).toMatchObject({ ok: false });
    } finally {
      await srv.close();
    }
  });
});

describe('strict mode with minVersion TLSv1.3', () => {
  it('refuses a TLS 1.2 client', async () => {
    const srv = await startTlsServer(
      createTlsSettings({ ...files, clientCertificates: 'strict', minVersion: 'TLSv1.3' }).serverOptions,
    );
    try {
      expect(await tryConnect(srv.port, { ...as(client), maxVersion: 'TLSv1.2' })).toMatchObject({ ok: false });
      expect(await tryConnect(srv.port, as(client))).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
    } finally {
      await srv.close();
    }
  });
});

describe('per-operation mode: real handshakes', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTlsServer(createTlsSettings({ ...files, clientCertificates: 'per-operation' }).serverOptions);
  });
  afterAll(() => srv.close());

  it('completes the handshake without a certificate, with no identity', async () => {
    expect(await tryConnect(srv.port, trust())).toMatchObject({ ok: true });
    expect(srv.seen.at(-1)).toMatchObject({ authorized: false, identity: undefined });
  });

  it('never turns an untrusted self-signed certificate into an identity (the trap)', async () => {
    expect(await tryConnect(srv.port, as(selfSigned))).toMatchObject({ ok: true });
    const side = srv.seen.at(-1);
    expect(side?.claimedCommonName).toBe('admin'); // what getPeerCertificate() still claims
    expect(side?.authorized).toBe(false);
    expect(side?.identity).toBeUndefined();
  });

  it('does not authorize a certificate from another CA', async () => {
    expect(await tryConnect(srv.port, as(stranger))).toMatchObject({ ok: true });
    expect(srv.seen.at(-1)).toMatchObject({ authorized: false, identity: undefined });
  });

  it('does not authorize an expired or a not-yet-valid certificate', async () => {
    await tryConnect(srv.port, as(expired));
    expect(srv.seen.at(-1)).toMatchObject({
      authorized: false,
      authorizationError: 'CERT_HAS_EXPIRED',
      identity: undefined,
    });
    await tryConnect(srv.port, as(notYetValid));
    expect(srv.seen.at(-1)).toMatchObject({
      authorized: false,
      authorizationError: 'CERT_NOT_YET_VALID',
      identity: undefined,
    });
  });

  it('does not authorize a revoked certificate', async () => {
    await tryConnect(srv.port, as(revoked));
    expect(srv.seen.at(-1)).toMatchObject({
      authorized: false,
      authorizationError: 'CERT_REVOKED',
      identity: undefined,
    });
  });

  it('gives the identity of a verified certificate', async () => {
    await tryConnect(srv.port, as(client));
    expect(srv.seen.at(-1)).toMatchObject({
      authorized: true,
      identity: { spiffeId: 'spiffe://fluxguard.dev/client' },
    });
  });
});
