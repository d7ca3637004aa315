// Cross-check with Debian's openssl binary: what a client other than Node sees of our settings.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevPki } from '../dev-pki/dev-pki.js';
import { run } from '@fluxguard/test-support/commands';
import { SERVER_GREETING, startTlsServer, type TestServer } from '../testing/handshake.js';
import { createTlsSettings } from './tls-settings.js';

let dir: string;
let srv: TestServer;
let paths: { ca: string; caKey: string; clientCert: string; clientKey: string };

beforeAll(async () => {
  const version = await run('openssl', ['version']);
  expect(version.stdout, 'openssl is required by this test').toMatch(/^OpenSSL 3\./);
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-openssl-'));
  const pki = await createDevPki();
  const files = {
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
  };
  paths = {
    ca: files.caFile,
    caKey: join(dir, 'ca.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
  writeFileSync(paths.caKey, pki.ca.keyPem, { mode: 0o600 });
  writeFileSync(files.certFile, pki.server.certPem);
  writeFileSync(files.keyFile, pki.server.keyPem, { mode: 0o600 });
  writeFileSync(files.caFile, pki.ca.certPem);
  writeFileSync(paths.clientCert, pki.client.certPem);
  writeFileSync(paths.clientKey, pki.client.keyPem, { mode: 0o600 });
  srv = await startTlsServer(createTlsSettings({ ...files, clientCertificates: 'strict' }).serverOptions);
});

afterAll(async () => {
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * `-ign_eof` keeps s_client reading until the server closes, so a refusal the server sends
 * after the client's side of a TLS 1.3 handshake (certificate required) is seen too.
 */
function sClient(...extra: string[]) {
  return run('openssl', [
    's_client',
    '-connect',
    `127.0.0.1:${srv.port}`,
    '-servername',
    'localhost',
    '-CAfile',
    paths.ca,
    '-verify_return_error',
    '-ign_eof',
    ...extra,
  ]);
}

/** The s_client arguments offering the trusted client certificate. */
const clientCertificate = (): string[] => ['-cert', paths.clientCert, '-key', paths.clientKey];

describe('openssl s_client against the strict settings', () => {
  it('negotiates TLS 1.3 with a client certificate', async () => {
    const result = await sClient('-tls1_3', ...clientCertificate());
    expect(result.stdout).toContain(SERVER_GREETING);
    expect(result.stdout).toMatch(/Protocol\s*:\s*TLSv1\.3|New, TLSv1\.3/);
  });

  it('negotiates TLS 1.2 with an ECDHE AEAD suite', async () => {
    const result = await sClient('-tls1_2', ...clientCertificate());
    expect(result.stdout).toContain(SERVER_GREETING);
    expect(result.stdout).toMatch(/Cipher is ECDHE-ECDSA-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)/);
  });

  it('refuses a TLS 1.3 handshake without a client certificate', async () => {
    const result = await sClient('-tls1_3');
    expect(result.stdout).not.toContain(SERVER_GREETING);
    expect(result.stderr).toMatch(/alert certificate required/);
  });

  it('refuses a TLS 1.2 handshake without a client certificate', async () => {
    const result = await sClient('-tls1_2');
    expect(result.stdout).not.toContain(SERVER_GREETING);
    expect(result.code).not.toBe(0);
  });

  // SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1/1.0 at all, so the refusal is the server's own
  // (a protocol_version alert), not the client's policy.
  it.each([
    ['1.1', '-tls1_1'],
    ['1.0', '-tls1'],
  ])('refuses TLS %s (server-side protocol_version alert)', async (_version, flag) => {
    const result = await sClient(flag, '-cipher', 'DEFAULT@SECLEVEL=0', ...clientCertificate());
    expect(result.stdout).not.toContain(SERVER_GREETING);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/alert protocol version/);
  });

  // Signed by the trusted CA, with the SPIFFE ID and usages of a real client: only the key's
  // size or the signature's digest differs. Node's own default (security level 1) accepts the
  // 1024-bit RSA key; OpenSSL 3 refuses SHA-1 at either level. The first row shows that a
  // certificate made this way is otherwise a good one.
  const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  it.each([
    { label: 'a P-256 key and a SHA-256 signature', keyArgs: P256, digest: '-sha256', accepted: true },
    { label: 'an RSA key of 1024 bits', keyArgs: ['-newkey', 'rsa:1024'], digest: '-sha256', accepted: false },
    { label: 'a SHA-1 signature', keyArgs: P256, digest: '-sha1', accepted: false },
  ])('client certificate with $label: accepted $accepted', async ({ label, keyArgs, digest, accepted }) => {
    const name = label.replace(/\W+/g, '-');
    const file = (ext: string): string => join(dir, `${name}.${ext}`);
    writeFileSync(
      file('ext'),
      [
        'subjectAltName = URI:spiffe://fluxguard.dev/client',
        'basicConstraints = critical, CA:FALSE',
        'keyUsage = critical, digitalSignature',
        'extendedKeyUsage = clientAuth',
      ].join('\n'),
    );
    const made = await run('openssl', [
      'req',
      '-new',
      ...keyArgs,
      '-nodes',
      '-keyout',
      file('key'),
      '-subj',
      '/CN=client',
      '-out',
      file('csr'),
    ]);
    expect(made.code, made.stderr).toBe(0);
    const signed = await run('openssl', [
      'x509',
      '-req',
      '-in',
      file('csr'),
      '-CA',
      paths.ca,
      '-CAkey',
      paths.caKey,
      '-set_serial',
      '7',
      '-days',
      '1',
      digest,
      '-extfile',
      file('ext'),
      '-out',
      file('crt'),
    ]);
    expect(signed.code, signed.stderr).toBe(0);
    // The client allows anything (SECLEVEL=0), so a refusal is the server's.
    const result = await sClient('-cipher', 'DEFAULT@SECLEVEL=0', '-cert', file('crt'), '-key', file('key'));
    if (accepted) {
      expect(result.stdout).toContain(SERVER_GREETING);
      return;
    }
    expect(result.stdout).not.toContain(SERVER_GREETING);
    // TLS 1.3: the server closes once it has read the client's certificate.
    expect(result.stderr).toMatch(/alert|unexpected eof/);
  });

  it('refuses a TLS 1.2 CBC suite', async () => {
    const result = await sClient('-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA256', ...clientCertificate());
    expect(result.stdout).not.toContain(SERVER_GREETING);
    expect(result.stderr).toMatch(/alert handshake failure/);
  });
});
