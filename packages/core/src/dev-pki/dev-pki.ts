import type * as X509 from '@peculiar/x509';
import type { Extension, JsonGeneralName, X509Certificate } from '@peculiar/x509';
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { isSpiffeId } from '../mtls/spiffe.js';
import { loadX509 } from './peers.js';

// @peculiar/x509 and reflect-metadata are optional peer dependencies: loaded here, once, with a
// ConfigurationError naming what to install when they are missing. This is why the development
// PKI is a subpath export, away from the main import path.
const {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
  X509CrlGenerator,
  X509CrlReason,
} = await loadX509();

const subtle = webcrypto.subtle;
const KEY_ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 86_400_000;
/** Tolerated clock skew between the machine issuing and the machines verifying. */
const BACKDATE_MS = 5 * 60_000;

/**
 * Which validity window a test certificate gets: `valid` (now, for `validityDays`), `expired`
 * (ended a day ago) or `not-yet-valid` (starts tomorrow).
 *
 * @example
 * ```ts
 * import type { CertificateValidity } from '@fluxguard/core/dev-pki';
 * const validity: CertificateValidity = 'expired';
 * ```
 */
export type CertificateValidity = 'valid' | 'expired' | 'not-yet-valid';

/**
 * A certificate and its private key, as PEM (key in PKCS#8).
 *
 * @example
 * ```ts
 * const { certPem, keyPem, serialNumber } = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/a' });
 * ```
 */
export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  /** Serial number, lowercase hex: what {@link DevCertificateAuthority.createCrl} revokes. */
  readonly serialNumber: string;
  /** SHA-256 of the DER, lowercase hex: the `fingerprint256` of its identity. */
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * Validity options shared by server and client certificates.
 *
 * @example
 * ```ts
 * import type { ValidityOptions } from '@fluxguard/core/dev-pki';
 * const expired: ValidityOptions = { validity: 'expired' };
 * await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/old', ...expired });
 * ```
 */
export interface ValidityOptions {
  /** Default `valid`. */
  readonly validity?: CertificateValidity | undefined;
  /** Lifetime of a `valid` certificate. Default 90 days. */
  readonly validityDays?: number | undefined;
  /** Explicit window; overrides `validity`. */
  readonly notBefore?: Date | undefined;
  readonly notAfter?: Date | undefined;
}

/**
 * Options of {@link DevCertificateAuthority.issueServerCertificate}.
 *
 * @example
 * ```ts
 * await ca.issueServerCertificate({ dnsNames: ['localhost', 'api.test'], ipAddresses: ['127.0.0.1'] });
 * ```
 */
export interface ServerCertificateOptions extends ValidityOptions {
  /** SAN DNS names. Default `['localhost']`. */
  readonly dnsNames?: readonly string[] | undefined;
  /** SAN IP addresses. Default `['127.0.0.1', '::1']`. */
  readonly ipAddresses?: readonly string[] | undefined;
  /** Subject CN. Default: the first DNS name. */
  readonly commonName?: string | undefined;
}

/**
 * Options of {@link DevCertificateAuthority.issueClientCertificate}.
 *
 * @example
 * ```ts
 * await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/ns/prod/sa/reader' });
 * await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/old', validity: 'expired' });
 * ```
 */
export interface ClientCertificateOptions extends ValidityOptions {
  /** The SPIFFE ID (SAN URI). Must be a valid `spiffe://trust-domain/path`. */
  readonly spiffeId?: string | undefined;
  /** Further SAN URIs, not checked (tests of odd certificates). */
  readonly uris?: readonly string[] | undefined;
  /** SAN DNS names. */
  readonly dnsNames?: readonly string[] | undefined;
  /** Subject CN. Default: the SPIFFE ID, else the first DNS name, else `fluxguard dev client`. */
  readonly commonName?: string | undefined;
}

/**
 * Options of {@link DevCertificateAuthority.createCrl}.
 *
 * @example
 * ```ts
 * const crlPem = await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] });
 * ```
 */
export interface CrlOptions {
  /** Serial numbers (hex) to revoke; may be empty. */
  readonly revokedSerialNumbers: readonly string[];
  /** Lifetime of the CRL (nextUpdate). Default 7 days. OpenSSL refuses every client once it passes. */
  readonly validityDays?: number | undefined;
}

/**
 * A development certificate authority (ECDSA P-256, SHA-256) held in memory.
 *
 * @example
 * ```ts
 * import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
 * const ca = await createDevCertificateAuthority();
 * const server = await ca.issueServerCertificate();
 * const client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
 * ```
 */
export interface DevCertificateAuthority {
  /** The CA certificate (PEM): what servers and clients trust. */
  readonly certPem: string;
  /** The CA private key (PEM, PKCS#8). Never written by {@link writeDevPki}. */
  readonly keyPem: string;
  readonly fingerprint256: string;
  /** A server certificate (EKU serverAuth), by default for localhost, 127.0.0.1 and ::1. */
  issueServerCertificate(options?: ServerCertificateOptions): Promise<IssuedCertificate>;
  /** A client certificate (EKU clientAuth), with a SPIFFE ID as SAN URI. */
  issueClientCertificate(options?: ClientCertificateOptions): Promise<IssuedCertificate>;
  /** An X.509 v2 CRL (PEM) signed by this CA. */
  createCrl(options: CrlOptions): Promise<string>;
}

/**
 * Options of {@link createDevCertificateAuthority}.
 *
 * @example
 * ```ts
 * await createDevCertificateAuthority({ commonName: 'other test CA' });
 * ```
 */
export interface DevCertificateAuthorityOptions {
  /** Subject CN of the CA. Default `fluxguard development CA`. */
  readonly commonName?: string | undefined;
  /** Lifetime of the CA certificate. Default 365 days. */
  readonly validityDays?: number | undefined;
}

function pem(tag: string, der: ArrayBuffer): string {
  const base64 = Buffer.from(der).toString('base64');
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${tag}-----\n${lines.join('\n')}\n-----END ${tag}-----\n`;
}

function randomSerial(): string {
  const bytes = randomBytes(16);
  // Positive and without a leading zero byte, as DER INTEGER and RFC 5280 4.1.2.2 want.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function positiveDays(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0)
    throw new ConfigurationError(`dev-pki: "${name}" must be a positive number of days`);
  return value;
}

function windowOf(options: ValidityOptions, now: number): { notBefore: Date; notAfter: Date } {
  const days = positiveDays(options.validityDays, 90, 'validityDays');
  let notBefore: Date;
  let notAfter: Date;
  switch (options.validity ?? 'valid') {
    case 'valid':
      notBefore = new Date(now - BACKDATE_MS);
      notAfter = new Date(now + days * DAY_MS);
      break;
    case 'expired':
      notBefore = new Date(now - 30 * DAY_MS);
      notAfter = new Date(now - DAY_MS);
      break;
    case 'not-yet-valid':
      notBefore = new Date(now + DAY_MS);
      notAfter = new Date(now + 30 * DAY_MS);
      break;
  }
  return { notBefore: options.notBefore ?? notBefore, notAfter: options.notAfter ?? notAfter };
}

async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
}

/** A CN must not carry characters that would make a distinguished-name string ambiguous. */
function safeCommonName(value: string): string {
  if (value.length === 0 || value.length > 64 || /[,+="\\<>;#\n\r\0]/.test(value)) {
    throw new ConfigurationError(
      'dev-pki: "commonName" must be 1-64 characters without , + = " \\ < > ; # or control characters',
    );
  }
  return value;
}

function issued(cert: X509Certificate, keyPem: string): IssuedCertificate {
  return Object.freeze({
    certPem: cert.toString('pem') + '\n',
    keyPem,
    serialNumber: cert.serialNumber.toLowerCase(),
    fingerprint256: createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex'),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  });
}

/**
 * Creates a development CA in memory (ECDSA P-256). Call it twice for "a certificate from
 * another CA".
 *
 * @example
 * ```ts
 * import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
 * const ca = await createDevCertificateAuthority();
 * const other = await createDevCertificateAuthority({ commonName: 'untrusted CA' });
 * const stranger = await other.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
 * ```
 */
export async function createDevCertificateAuthority(
  options: DevCertificateAuthorityOptions = {},
): Promise<DevCertificateAuthority> {
  const now = Date.now();
  const caName = `CN=${safeCommonName(options.commonName ?? 'fluxguard development CA')}, O=fluxguard development`;
  const caKeys = await newKeys();
  const caSki = await SubjectKeyIdentifierExtension.create(caKeys.publicKey);
  const caCert = await X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + positiveDays(options.validityDays, 365, 'validityDays') * DAY_MS),
    keys: caKeys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new BasicConstraintsExtension(true, 0, true),
      new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
      caSki,
    ],
  });
  const aki = new AuthorityKeyIdentifierExtension(caSki.keyId);

  const issue = async (
    subjectCn: string,
    names: JsonGeneralName[],
    usage: X509.ExtendedKeyUsage,
    validity: ValidityOptions,
  ): Promise<IssuedCertificate> => {
    const keys = await newKeys();
    const { notBefore, notAfter } = windowOf(validity, Date.now());
    const extensions: Extension[] = [
      new BasicConstraintsExtension(false, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
      new ExtendedKeyUsageExtension([usage]),
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
      aki,
    ];
    if (names.length > 0) extensions.push(new SubjectAlternativeNameExtension(names));
    const cert = await X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${safeCommonName(subjectCn)}`,
      issuer: caCert.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions,
    });
    return issued(cert, pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)));
  };

  return Object.freeze({
    certPem: caCert.toString('pem') + '\n',
    keyPem: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', caKeys.privateKey)),
    fingerprint256: createHash('sha256').update(Buffer.from(caCert.rawData)).digest('hex'),

    async issueServerCertificate(server: ServerCertificateOptions = {}) {
      const dnsNames = server.dnsNames ?? ['localhost'];
      const ipAddresses = server.ipAddresses ?? ['127.0.0.1', '::1'];
      for (const ip of ipAddresses) {
        if (isIP(ip) === 0) throw new ConfigurationError('dev-pki: "ipAddresses" must hold IPv4 or IPv6 addresses');
      }
      const names: JsonGeneralName[] = [
        ...dnsNames.map((value): JsonGeneralName => ({ type: 'dns', value })),
        ...ipAddresses.map((value): JsonGeneralName => ({ type: 'ip', value })),
      ];
      return issue(
        server.commonName ?? dnsNames[0] ?? 'fluxguard dev server',
        names,
        ExtendedKeyUsage.serverAuth,
        server,
      );
    },

    async issueClientCertificate(client: ClientCertificateOptions = {}) {
      if (client.spiffeId !== undefined && !isSpiffeId(client.spiffeId)) {
        throw new ConfigurationError('dev-pki: "spiffeId" must be spiffe://<trust-domain>/<path>');
      }
      const uris = [...(client.spiffeId === undefined ? [] : [client.spiffeId]), ...(client.uris ?? [])];
      const dnsNames = client.dnsNames ?? [];
      const names: JsonGeneralName[] = [
        ...uris.map((value): JsonGeneralName => ({ type: 'url', value })),
        ...dnsNames.map((value): JsonGeneralName => ({ type: 'dns', value })),
      ];
      const cn = client.commonName ?? client.spiffeId ?? dnsNames[0] ?? 'fluxguard dev client';
      return issue(cn, names, ExtendedKeyUsage.clientAuth, client);
    },

    async createCrl(crl: CrlOptions) {
      const thisUpdate = new Date(Date.now() - BACKDATE_MS);
      const generated = await X509CrlGenerator.create({
        issuer: caCert.subject,
        thisUpdate,
        nextUpdate: new Date(thisUpdate.getTime() + positiveDays(crl.validityDays, 7, 'validityDays') * DAY_MS),
        entries: crl.revokedSerialNumbers.map((serialNumber) => ({
          serialNumber,
          revocationDate: thisUpdate,
          reason: X509CrlReason.keyCompromise,
        })),
        extensions: [aki],
        signingKey: caKeys.privateKey,
        signingAlgorithm: SIGNING_ALGORITHM,
      });
      return pem('X509 CRL', generated.rawData);
    },
  });
}

/**
 * The client SPIFFE ID of the default development PKI.
 *
 * @example
 * ```ts
 * import type { IdentityRule } from '@fluxguard/core';
 * import { DEV_CLIENT_SPIFFE_ID } from '@fluxguard/core/dev-pki';
 * const roles: IdentityRule[] = [{ spiffeId: DEV_CLIENT_SPIFFE_ID, roles: ['artifacts.reader'] }];
 * ```
 */
export const DEV_CLIENT_SPIFFE_ID = 'spiffe://fluxguard.dev/client';

/**
 * Options of {@link createDevPki}.
 *
 * @example
 * ```ts
 * await createDevPki({ clientSpiffeId: 'spiffe://fluxguard.dev/ci' });
 * ```
 */
export interface DevPkiOptions {
  /** Default {@link DEV_CLIENT_SPIFFE_ID}. */
  readonly clientSpiffeId?: string | undefined;
  /** Default `['localhost']`. */
  readonly serverDnsNames?: readonly string[] | undefined;
  /** Default `['127.0.0.1', '::1']`. */
  readonly serverIpAddresses?: readonly string[] | undefined;
  /** Lifetime of server and client certificates. Default 90 days. */
  readonly validityDays?: number | undefined;
}

/**
 * The development PKI: a CA, a server certificate and a client certificate.
 *
 * @example
 * ```ts
 * const { ca, server, client } = await createDevPki();
 * ```
 */
export interface DevPki {
  readonly ca: DevCertificateAuthority;
  readonly server: IssuedCertificate;
  readonly client: IssuedCertificate;
}

/**
 * Creates the development PKI in memory: a CA, a server certificate for localhost, 127.0.0.1
 * and ::1, and a client certificate for `spiffe://fluxguard.dev/client`. Use
 * `pki.ca.issueClientCertificate(...)` for more clients, and {@link writeDevPki} to write it.
 *
 * @example
 * ```ts
 * import { createDevPki } from '@fluxguard/core/dev-pki';
 * const pki = await createDevPki();
 * const reader = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/ns/x/sa/reader' });
 * ```
 */
export async function createDevPki(options: DevPkiOptions = {}): Promise<DevPki> {
  const ca = await createDevCertificateAuthority({});
  const validityDays = options.validityDays;
  const server = await ca.issueServerCertificate({
    dnsNames: options.serverDnsNames,
    ipAddresses: options.serverIpAddresses,
    validityDays,
  });
  const client = await ca.issueClientCertificate({
    spiffeId: options.clientSpiffeId ?? DEV_CLIENT_SPIFFE_ID,
    validityDays,
  });
  return Object.freeze({ ca, server, client });
}
