import 'reflect-metadata';
import {
  BasicConstraintsExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  X509CertificateGenerator,
  type Extension,
  type JsonGeneralName,
} from '@peculiar/x509';
import { webcrypto, X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDevCertificateAuthority, type DevCertificateAuthority } from '../dev-pki/dev-pki.js';
import { SecurityError } from '../errors/security-error.js';
import {
  identityFromCertificate,
  identityFromTlsSocket,
  isIdentityCurrent,
  untrustedCertificateError,
} from './peer-identity.js';
import { isSpiffeId } from './spiffe.js';

let ca: DevCertificateAuthority;

beforeAll(async () => {
  ca = await createDevCertificateAuthority();
});

async function selfSigned(name: string, sans: JsonGeneralName[], extensions: Extension[] = []): Promise<string> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await X509CertificateGenerator.createSelfSigned({
    name,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [...(sans.length > 0 ? [new SubjectAlternativeNameExtension(sans)] : []), ...extensions],
  });
  return cert.toString('pem');
}

/** DER length octets. */
function derLength(length: number): number[] {
  if (length < 0x80) return [length];
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return [0x80 | bytes.length, ...bytes];
}

/** The elements of a DER SEQUENCE at the start of `der`, each with its tag and length. */
function sequenceElements(der: Buffer): Buffer[] {
  const lengthOf = (at: number): [number, number] => {
    const first = der[at + 1] ?? 0;
    if (first < 0x80) return [first, 2];
    let length = 0;
    for (let i = 0; i < (first & 0x7f); i++) length = length * 256 + (der[at + 2 + i] ?? 0);
    return [length, 2 + (first & 0x7f)];
  };
  const [outer, head] = lengthOf(0);
  const out: Buffer[] = [];
  for (let at = head; at < head + outer;) {
    const [length, header] = lengthOf(at);
    out.push(der.subarray(at, at + header + length));
    at += header + length;
  }
  return out;
}

const sequence = (elements: Buffer[]): Buffer => {
  const body = Buffer.concat(elements);
  return Buffer.concat([Buffer.from([0x30, ...derLength(body.length)]), body]);
};

/**
 * The certificate with its version field taken out (so version 1) and its extensions kept: what
 * RFC 5280 forbids and OpenSSL still parses. The signature no longer matches; the identity
 * reader is only ever given certificates the TLS stack verified, and does not check it.
 */
function asVersion1(pem: string): Buffer {
  const [tbs, algorithm, signature] = sequenceElements(new X509Certificate(pem).raw);
  if (tbs === undefined || algorithm === undefined || signature === undefined) throw new Error('not a certificate');
  return sequence([sequence(sequenceElements(tbs).slice(1)), algorithm, signature]);
}

describe('identityFromCertificate', () => {
  it('keeps a byte order mark in a CN: another name than the one without it', async () => {
    // Decoded away, a CN of a BOM and `admin` was `admin`, the subject of another certificate.
    const marked = identityFromCertificate(await selfSigned('CN=\uFEFFadmin', []));
    expect(marked.commonName).toBe('\uFEFFadmin');
    expect(identityFromCertificate(await selfSigned('CN=admin', [])).commonName).toBe('admin');
  });

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

  it('gives no SPIFFE ID when another URI of any kind is present (an X.509-SVID has one URI SAN)', async () => {
    const issued = await ca.issueClientCertificate({
      spiffeId: 'spiffe://fluxguard.dev/a',
      uris: ['https://fluxguard.dev/a'],
    });
    const id = identityFromCertificate(issued.certPem);
    expect(id.spiffeId).toBeUndefined();
    expect(id.uris).toEqual(['spiffe://fluxguard.dev/a', 'https://fluxguard.dev/a']);
  });

  it.each([
    ['a NUL', '\u0000'],
    ['a space', ' '],
    ['a tab', '\t'],
    ['a non-ASCII letter', 'é'],
  ])(
    'gives no SPIFFE ID when a second URI holds %s (the reader leaves it out, the count does not)',
    async (_label, odd) => {
      const pem = await selfSigned('CN=svc', [
        { type: 'url', value: `spiffe://other.org/x${odd}` },
        { type: 'url', value: 'spiffe://fluxguard.dev/backup' },
      ]);
      const id = identityFromCertificate(pem);
      expect(id.uris).toEqual(['spiffe://fluxguard.dev/backup']);
      expect(id.spiffeId).toBeUndefined();
    },
  );

  it.each([
    ['a CA flag', () => [new BasicConstraintsExtension(true, undefined, true)]],
    ['a keyCertSign usage', () => [new KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign)]],
    ['a cRLSign usage', () => [new KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.cRLSign)]],
  ])('gives no SPIFFE ID to a certificate that signs others: %s', async (_label, extensions) => {
    const pem = await selfSigned('CN=svc', [{ type: 'url', value: 'spiffe://fluxguard.dev/backup' }], extensions());
    expect(identityFromCertificate(pem).spiffeId).toBeUndefined();
    // The same with a leaf's extensions is an identity: the check above is the flag, not the shape.
    const leaf = await selfSigned(
      'CN=svc',
      [{ type: 'url', value: 'spiffe://fluxguard.dev/backup' }],
      [new BasicConstraintsExtension(false, undefined, true), new KeyUsagesExtension(KeyUsageFlags.digitalSignature)],
    );
    expect(identityFromCertificate(leaf).spiffeId).toBe('spiffe://fluxguard.dev/backup');
  });

  it('refuses a certificate before version 3 that carries extensions (OpenSSL reads them, RFC 5280 does not)', async () => {
    const pem = await selfSigned('CN=svc', [{ type: 'url', value: 'spiffe://fluxguard.dev/backup' }]);
    const v1 = asVersion1(pem);
    // OpenSSL parses it, with its names: only fluxguard's reader stands in the way.
    expect(new X509Certificate(v1).subjectAltName).toBe('URI:spiffe://fluxguard.dev/backup');
    expect(() => identityFromCertificate(v1)).toThrow(
      expect.objectContaining({ code: 'unauthenticated', reason: 'certificate_unreadable' }),
    );
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

describe('untrustedCertificateError', () => {
  const raw = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]);
  /** A socket as Node leaves it after a handshake, counting how often its certificate is read. */
  function socket(authorized: boolean, authorizationError: unknown, presented: boolean) {
    const reads = { count: 0 };
    const fake = {
      authorized,
      authorizationError,
      getPeerCertificate: () => {
        reads.count++;
        return presented ? { raw, subject: { CN: 'claimed admin' } } : {};
      },
    };
    return { socket: fake as never, reads };
  }

  it('names the code of a presented certificate that failed verification', () => {
    expect(untrustedCertificateError(socket(false, 'CERT_HAS_EXPIRED', true).socket)).toBe('CERT_HAS_EXPIRED');
    expect(untrustedCertificateError(socket(false, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', true).socket)).toBe(
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    );
    // Node's typings say an Error: its code is taken, never its message.
    const asError = Object.assign(new Error('certificate revoked for admin'), { code: 'CERT_REVOKED' });
    expect(untrustedCertificateError(socket(false, asError, true).socket)).toBe('CERT_REVOKED');
  });

  it('says nothing of a connection without a certificate, though Node names an error for it', () => {
    expect(untrustedCertificateError(socket(false, 'UNABLE_TO_GET_ISSUER_CERT', false).socket)).toBeUndefined();
  });

  it('never reads an authorized connection', () => {
    const { socket: verified, reads } = socket(true, undefined, true);
    expect(untrustedCertificateError(verified)).toBeUndefined();
    expect(reads.count).toBe(0);
  });

  it('writes a fixed word for anything that is not a code, never the text', () => {
    for (const odd of ['certificate has expired', 'CN=admin', undefined, 42, 'A'.repeat(65)]) {
      expect(untrustedCertificateError(socket(false, odd, true).socket)).toBe('UNKNOWN');
    }
  });

  it('reads a connection once, however many calls ask', () => {
    const { socket: untrusted, reads } = socket(false, 'CERT_HAS_EXPIRED', true);
    for (let i = 0; i < 5; i++) expect(untrustedCertificateError(untrusted)).toBe('CERT_HAS_EXPIRED');
    const { socket: none, reads: noneReads } = socket(false, 'UNABLE_TO_GET_ISSUER_CERT', false);
    for (let i = 0; i < 5; i++) expect(untrustedCertificateError(none)).toBeUndefined();
    expect([reads.count, noneReads.count]).toEqual([1, 1]);
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
