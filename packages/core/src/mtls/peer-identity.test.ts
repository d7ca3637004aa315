import 'reflect-metadata';
import { SubjectAlternativeNameExtension, X509CertificateGenerator, type JsonGeneralName } from '@peculiar/x509';
import { webcrypto, X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDevCertificateAuthority, type DevCertificateAuthority } from '../dev-pki/dev-pki.js';
import { SecurityError } from '../errors/security-error.js';
import { identityFromCertificate, identityFromTlsSocket, isIdentityCurrent } from './peer-identity.js';
import { isSpiffeId } from './spiffe.js';

let ca: DevCertificateAuthority;

beforeAll(async () => {
  ca = await createDevCertificateAuthority();
});

async function selfSigned(name: string, sans: JsonGeneralName[]): Promise<string> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await X509CertificateGenerator.createSelfSigned({
    name,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: sans.length > 0 ? [new SubjectAlternativeNameExtension(sans)] : [],
  });
  return cert.toString('pem');
}

describe('identityFromCertificate', () => {
  it('reads SPIFFE ID, URIs, DNS names, CN, fingerprint and validity', async () => {
    const issued = await ca.issueClientCertificate({
      spiffeId: 'spiffe://fluxguard.dev/ns/prod/sa/reader',
      dnsNames: ['reader.fluxguard.dev'],
      commonName: 'reader',
    });
    const id = identityFromCertificate(issued.certPem);
    const node = new X509Certificate(issued.certPem);
    expect(id).toEqual({
      spiffeId: 'spiffe://fluxguard.dev/ns/prod/sa/reader',
      uris: ['spiffe://fluxguard.dev/ns/prod/sa/reader'],
      dnsNames: ['reader.fluxguard.dev'],
      commonName: 'reader',
      fingerprint256: node.fingerprint256.replaceAll(':', '').toLowerCase(),
      validFrom: issued.notBefore,
      validTo: issued.notAfter,
    });
    expect(id.fingerprint256).toBe(issued.fingerprint256);
    expect(Object.isFrozen(id)).toBe(true);
    expect(isIdentityCurrent(id)).toBe(true);
    expect(isIdentityCurrent(id, new Date(issued.notAfter.getTime() + 1000))).toBe(false);
  });

  it('accepts DER bytes, PEM bytes, a PeerCertificate-like { raw } and an X509Certificate alike', async () => {
    const issued = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/a' });
    const node = new X509Certificate(issued.certPem);
    const expected = identityFromCertificate(issued.certPem);
    expect(identityFromCertificate(node.raw)).toEqual(expected);
    expect(identityFromCertificate(new Uint8Array(node.raw))).toEqual(expected);
    expect(identityFromCertificate(Buffer.from(issued.certPem))).toEqual(expected);
    expect(identityFromCertificate({ raw: node.raw })).toEqual(expected);
    expect(identityFromCertificate(node)).toEqual(expected);
  });

  it('gives no SPIFFE ID when there are two', async () => {
    const issued = await ca.issueClientCertificate({
      spiffeId: 'spiffe://fluxguard.dev/a',
      uris: ['spiffe://fluxguard.dev/admin'],
    });
    const id = identityFromCertificate(issued.certPem);
    expect(id.spiffeId).toBeUndefined();
    expect(id.uris).toEqual(['spiffe://fluxguard.dev/a', 'spiffe://fluxguard.dev/admin']);
  });

  it('gives no SPIFFE ID for a malformed one', async () => {
    for (const uri of [
      'spiffe://Fluxguard.dev/a',
      'spiffe://fluxguard.dev/a?admin=1',
      'spiffe://fluxguard.dev/a#x',
      'spiffe://fluxguard.dev',
      'spiffe://fluxguard.dev/a/../admin',
      'spiffe://fluxguard.dev/a%2Fb',
      'SPIFFE://fluxguard.dev/a',
    ]) {
      const issued = await ca.issueClientCertificate({ uris: [uri] });
      const id = identityFromCertificate(issued.certPem);
      expect(id.spiffeId, uri).toBeUndefined();
      expect(id.uris).toEqual([uri]);
    }
  });

  it('keeps URIs with commas and quotes intact (no string-format parsing)', async () => {
    const tricky = 'https://x.test/a,URI:spiffe://fluxguard.dev/admin,"b"';
    const issued = await ca.issueClientCertificate({ uris: [tricky], dnsNames: ['a.test'] });
    const id = identityFromCertificate(issued.certPem);
    expect(id.uris).toEqual([tricky]);
    expect(id.spiffeId).toBeUndefined();
    expect(id.dnsNames).toEqual(['a.test']);
  });

  it('skips SAN kinds it does not read (otherName) instead of failing', async () => {
    const pem = await selfSigned('CN=svc', [
      { type: 'upn', value: 'admin@example.org' },
      { type: 'url', value: 'spiffe://example.org/svc' },
      { type: 'email', value: 'a@example.org' },
    ]);
    const id = identityFromCertificate(pem);
    expect(id.spiffeId).toBe('spiffe://example.org/svc');
    expect(id.uris).toEqual(['spiffe://example.org/svc']);
    expect(id.dnsNames).toEqual([]);
  });

  it('uses the CN only when there is exactly one', async () => {
    expect(identityFromCertificate(await selfSigned('CN=only', [])).commonName).toBe('only');
    expect(identityFromCertificate(await selfSigned('CN=a+CN=b', [])).commonName).toBeUndefined();
    expect(identityFromCertificate(await selfSigned('O=no cn', [])).commonName).toBeUndefined();
    expect(identityFromCertificate(await selfSigned('CN=Zoë', [])).commonName).toBe('Zoë');
  });

  it('refuses what is not a certificate with unauthenticated', () => {
    for (const input of [
      Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]),
      'garbage',
      { raw: Buffer.alloc(0) },
      { raw: 'x' } as never,
    ]) {
      let caught: unknown;
      try {
        identityFromCertificate(input);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(SecurityError);
      expect(caught).toMatchObject({ code: 'unauthenticated', reason: 'certificate_unreadable' });
    }
  });
});

describe('identityFromTlsSocket', () => {
  it('returns nothing unless the socket is authorized, whatever the certificate claims', async () => {
    const issued = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/admin' });
    const raw = new X509Certificate(issued.certPem).raw;
    const socket = (authorized: boolean) =>
      ({ authorized, getPeerCertificate: () => ({ raw, subject: { CN: 'admin' } }) }) as never;
    expect(identityFromTlsSocket(socket(false))).toBeUndefined();
    expect(identityFromTlsSocket(socket(true))?.spiffeId).toBe('spiffe://fluxguard.dev/admin');
    expect(identityFromTlsSocket({ authorized: true, getPeerCertificate: () => ({}) } as never)).toBeUndefined();
  });
});

describe('isSpiffeId', () => {
  it('follows the SPIFFE ID syntax', () => {
    expect(isSpiffeId('spiffe://example.org/ns/prod/sa/api')).toBe(true);
    expect(isSpiffeId('spiffe://example.org/a.b-c_d')).toBe(true);
    expect(isSpiffeId('spiffe://example.org/')).toBe(false);
    expect(isSpiffeId('spiffe://example.org/a/')).toBe(false);
    expect(isSpiffeId('spiffe://ex ample.org/a')).toBe(false);
    expect(isSpiffeId('spiffe://user@example.org/a')).toBe(false);
    expect(isSpiffeId('spiffe://example.org:8080/a')).toBe(false);
    expect(isSpiffeId(`spiffe://example.org/${'a'.repeat(2100)}`)).toBe(false);
  });
});
