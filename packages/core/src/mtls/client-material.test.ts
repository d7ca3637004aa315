import 'reflect-metadata';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { CLIENT_TLS_OPTION_NAMES, loadClientTlsMaterial, type ClientTlsOptions } from './client-material.js';
import { TLS_CIPHERS } from './tls-settings.js';

const WHERE = 'createTestClient';

let dir: string;
let ca: DevCertificateAuthority;
let client: IssuedCertificate;
let stranger: IssuedCertificate;
let files: { caFile: string; certFile: string; keyFile: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-client-tls-'));
  ca = await createDevCertificateAuthority();
  client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  const other = await createDevCertificateAuthority({ commonName: 'another CA' });
  stranger = await other.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  files = { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'client.crt'), keyFile: join(dir, 'client.key') };
  writeFileSync(files.caFile, ca.certPem);
  writeFileSync(files.certFile, client.certPem);
  writeFileSync(files.keyFile, client.keyPem, { mode: 0o600 });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The error `loadClientTlsMaterial` throws for these options (fails the test if it does not throw). */
function refusal(options: ClientTlsOptions): ConfigurationError {
  try {
    loadClientTlsMaterial(options, WHERE);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigurationError);
    return err as ConfigurationError;
  }
  throw new Error('expected a ConfigurationError');
}

/** The base64 body of a PEM key, one line: what must never appear in a message. */
function keyBody(pem: string): string {
  return pem.split('\n').find((line) => line !== '' && !line.startsWith('-----')) ?? pem;
}

describe('loadClientTlsMaterial', () => {
  it('loads files: CA, certificate and key, TLS 1.2 minimum, fluxguard cipher suites', () => {
    const material = loadClientTlsMaterial(files, WHERE);
    expect(material.ca.toString()).toBe(ca.certPem);
    expect(material.cert?.toString()).toBe(client.certPem);
    expect(material.key?.toString()).toBe(client.keyPem);
    expect(material.minVersion).toBe('TLSv1.2');
    expect(material.ciphers).toBe(TLS_CIPHERS);
    expect(Object.isFrozen(material)).toBe(true);
  });

  it('loads inline PEM (text or bytes) and only a CA bundle, offering no certificate', () => {
    const inline = loadClientTlsMaterial(
      { ca: Buffer.from(ca.certPem), cert: client.certPem, key: client.keyPem, minVersion: 'TLSv1.3' },
      WHERE,
    );
    expect(inline.ca.toString()).toBe(ca.certPem);
    expect(inline.cert?.toString()).toBe(client.certPem);
    expect(inline.minVersion).toBe('TLSv1.3');
    const caOnly = loadClientTlsMaterial({ caFile: files.caFile }, WHERE);
    expect(caOnly.cert).toBeUndefined();
    expect(caOnly.key).toBeUndefined();
  });

  it('requires the CA bundle: the server is always verified', () => {
    expect(refusal({}).message).toBe(
      `${WHERE}: "caFile" or "ca" is required: the server's certificate is always verified`,
    );
    expect(refusal({ certFile: files.certFile, keyFile: files.keyFile }).message).toMatch(
      /"caFile" or "ca" is required/,
    );
  });

  it('refuses a certificate without its key, and a key without its certificate', () => {
    expect(refusal({ ca: ca.certPem, certFile: files.certFile }).message).toBe(
      `${WHERE}: give the client certificate and its key together, or neither`,
    );
    expect(refusal({ ca: ca.certPem, key: client.keyPem }).message).toMatch(/together, or neither/);
  });

  it('refuses a key that does not match the certificate, without quoting the key', () => {
    const err = refusal({ ca: ca.certPem, cert: client.certPem, key: stranger.keyPem });
    expect(err.message).toBe(`${WHERE}: the private key in "key" does not match the certificate in "cert"`);
    expect(err.message).not.toContain(keyBody(stranger.keyPem));
    const fromFiles = refusal({ ...files, certFile: undefined, cert: stranger.certPem });
    expect(fromFiles.message).toContain(`"keyFile" does not match`);
    expect(fromFiles.message).not.toContain(files.keyFile);
  });

  it("never quotes a key's text given where its path belongs, whole or in part", () => {
    // A key pasted into the variable meant for its path: Node's ENOENT quoted it, cause and all.
    const body = keyBody(client.keyPem);
    const firstLines = client.keyPem.split('\n').slice(0, 3).join('\n');
    expect(refusal({ ca: ca.certPem, cert: client.certPem, keyFile: client.keyPem }).message).toBe(
      `${WHERE}: "keyFile" holds PEM text, not a path: give the file's path, or the text as "key"`,
    );
    expect(refusal({ ca: ca.certPem, cert: client.certPem, keyFile: firstLines }).message).toMatch(/holds PEM text/);
    const allLines = client.keyPem
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('-----'))
      .join('');
    for (const value of [allLines, body]) {
      const err = refusal({ ca: ca.certPem, cert: client.certPem, keyFile: value });
      expect(err.message).toBe(`${WHERE}: cannot read "keyFile" (ENOENT)`);
      expect(JSON.stringify(err, ['message', 'cause', 'stack', 'path'])).not.toContain(value.slice(0, 24));
      expect(String((err.cause as Error).stack)).not.toContain(value.slice(0, 24));
      // Another part's path is shown, unless it looks like such text, spaces and all.
      expect(refusal({ caFile: value }).message).toBe(`${WHERE}: cannot read "caFile" (ENOENT)`);
      const spaced = value.replace(/(.{20})/g, '$1 ');
      expect(refusal({ caFile: spaced }).message).toBe(`${WHERE}: cannot read "caFile" (ENOENT)`);
    }
    for (const path of ['/var/lib/fluxguard/certificates/server/current/ca.pem', `/srv/${'0a'.repeat(20)}/ca.pem`]) {
      expect(refusal({ caFile: path }).message).toBe(`${WHERE}: cannot read "caFile" (${path}) (ENOENT)`);
    }
  });

  it('refuses a key that does not parse, without quoting it', () => {
    const garbled = client.keyPem.replace(keyBody(client.keyPem), 'AAAA' + keyBody(client.keyPem).slice(4));
    const err = refusal({ ca: ca.certPem, cert: client.certPem, key: garbled });
    expect(err.message).toMatch(/"key" does not hold a readable private key/);
    expect(err.message).not.toContain(keyBody(garbled));
  });

  it('names an unreadable file and the reason', () => {
    const missing = join(dir, 'missing.crt');
    expect(refusal({ caFile: missing }).message).toBe(`${WHERE}: cannot read "caFile" (${missing}) (ENOENT)`);
    expect(refusal({ ca: ca.certPem, certFile: dir, keyFile: files.keyFile }).message).toBe(
      `${WHERE}: cannot read "certFile" (${dir}) (EISDIR)`,
    );
    expect(refusal({ caFile: '' }).message).toBe(`${WHERE}: "caFile" must be a non-empty path`);
  });

  it('refuses a part given both inline and as a file', () => {
    expect(refusal({ caFile: files.caFile, ca: ca.certPem }).message).toBe(
      `${WHERE}: give either "caFile" or "ca", not both`,
    );
    expect(refusal({ ...files, key: client.keyPem }).message).toMatch(/give either "keyFile" or "key", not both/);
  });

  it('refuses a CA bundle without a certificate, or with one that does not parse', () => {
    expect(refusal({ ca: 'not a certificate' }).message).toBe(`${WHERE}: "ca" holds no PEM certificate`);
    const broken = `${ca.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`;
    expect(refusal({ ca: broken }).message).toBe(`${WHERE}: certificate 2 in "ca" cannot be parsed`);
  });

  it('refuses TLS versions below 1.2 and values of the wrong type from plain JavaScript', () => {
    expect(refusal({ ca: ca.certPem, minVersion: 'TLSv1.1' as never }).message).toBe(
      `${WHERE}: "minVersion" must be "TLSv1.2" or "TLSv1.3"`,
    );
    expect(refusal({ ca: 42 as never }).message).toBe(`${WHERE}: "ca" must be PEM text or bytes`);
  });

  it('lists its option names, for the calling factory to refuse unknown ones', () => {
    expect([...CLIENT_TLS_OPTION_NAMES].sort()).toEqual(
      ['ca', 'caFile', 'cert', 'certFile', 'key', 'keyFile', 'minVersion'].sort(),
    );
  });
});
