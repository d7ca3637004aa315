import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { TLS_CIPHERS } from './ciphers.js';
import { checkCrls } from './crl-check.js';
import { readCertificateFields } from './der.js';

/**
 * A validated set of server TLS material, as PEM bytes: what both transports load (Node
 * `tls`/`https` options, grpc-js `ServerCredentials.createSsl` and certificate providers).
 *
 * @example
 * ```ts
 * import type { TlsMaterial } from '@fluxguard/core';
 * function log(m: TlsMaterial): void { console.log('serving certificate', m.certFingerprint256); }
 * ```
 */
export interface TlsMaterial {
  /** The server certificate (PEM), followed by its chain if the file holds one. */
  readonly cert: Buffer;
  /** The server's private key (PEM, unencrypted). */
  readonly key: Buffer;
  /** The CA bundle that client certificates are verified against (PEM, one or more). */
  readonly ca: Buffer;
  /** The certificate revocation list(s) (PEM), when configured. */
  readonly crl: Buffer | undefined;
  /** SHA-256 fingerprint of the server (leaf) certificate, lowercase hex. */
  readonly certFingerprint256: string;
  /** When the server certificate expires. */
  readonly certValidTo: Date;
  /**
   * The earliest `nextUpdate` of the CRLs, when they have one: past it, OpenSSL refuses every
   * client of that CRL's CA until a fresh CRL is loaded.
   */
  readonly crlNextUpdate?: Date | undefined;
}

/** Where a piece of material comes from: a file path, or its PEM contents. */
export interface MaterialSource {
  /** The option that named it, for error messages (e.g. `certFile`). */
  readonly option: string;
  readonly file?: string | undefined;
  readonly contents?: string | Uint8Array | undefined;
}

/** The four sources of a {@link TlsMaterial}; `crl` is optional. */
export interface MaterialSources {
  readonly cert: MaterialSource;
  readonly key: MaterialSource;
  readonly ca: MaterialSource;
  readonly crl?: MaterialSource | undefined;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

// A run of base64 (spaces aside) as long as a line of a PEM block, holding digits and letters of
// both cases, as key text does and paths seldom do: key text given where a path belongs.
const BASE64_RUN = /[A-Za-z0-9+/=]{40,}/g;

function mayBeKeyText(value: string): boolean {
  for (const [run] of value.replace(/\s+/g, '').matchAll(BASE64_RUN)) {
    if (/\d/.test(run) && /[a-z]/.test(run) && /[A-Z]/.test(run)) return true;
  }
  return false;
}

/**
 * Whether error text may show a source's path. A private key's never: a key's text given as
 * its `keyFile` (pasted into an environment variable, cut short, or without its PEM lines)
 * would be printed with the path, and error text reaches the log. Another option's path is
 * shown unless it looks like such text.
 */
function showsPath(source: MaterialSource): source is MaterialSource & { file: string } {
  return source.file !== undefined && !/key/i.test(source.option) && !mayBeKeyText(source.file);
}

/** How error messages name a source: the option, and the file when it may be shown. */
export function describeSource(source: MaterialSource): string {
  return showsPath(source) ? `"${source.option}" (${source.file})` : `"${source.option}"`;
}

/**
 * The source of one part from its two options, `<part>File` (a path) and `<part>` (PEM text or
 * bytes): at most one may be set; `undefined` when neither is. Options also arrive from plain
 * JavaScript, so both are checked at run time.
 */
export function pickSource(
  where: string,
  fileOption: string,
  file: unknown,
  option: string,
  contents: unknown,
): MaterialSource | undefined {
  if (file !== undefined && contents !== undefined) {
    throw new ConfigurationError(`${where}: give either "${fileOption}" or "${option}", not both`);
  }
  if (file !== undefined) {
    if (typeof file !== 'string' || file.length === 0) {
      throw new ConfigurationError(`${where}: "${fileOption}" must be a non-empty path`);
    }
    // Never quoted back: it may be a private key.
    if (/-----|[\r\n]/.test(file)) {
      throw new ConfigurationError(
        `${where}: "${fileOption}" holds PEM text, not a path: give the file's path, or the text as "${option}"`,
      );
    }
    return { option: fileOption, file };
  }
  if (contents === undefined) return undefined;
  if (typeof contents !== 'string' && !(contents instanceof Uint8Array)) {
    throw new ConfigurationError(`${where}: "${option}" must be PEM text or bytes`);
  }
  return { option, contents };
}

/**
 * The error of a source that cannot be read. Node's own error quotes the path, so it is kept as
 * the cause only when the path may be shown; otherwise the cause carries its code alone.
 */
export function readError(where: string, source: MaterialSource, cause: unknown): ConfigurationError {
  const code = (cause as { code?: unknown } | null)?.code;
  const why = typeof code === 'string' ? ` (${code})` : '';
  const kept = showsPath(source)
    ? cause
    : Object.assign(new Error(typeof code === 'string' ? code : 'unreadable'), { code });
  return new ConfigurationError(`${where}: cannot read ${describeSource(source)}${why}`, { cause: kept });
}

function toBuffer(contents: string | Uint8Array): Buffer {
  return typeof contents === 'string'
    ? Buffer.from(contents, 'utf8')
    : Buffer.from(contents.buffer, contents.byteOffset, contents.byteLength);
}

/** The PEM blocks of certificates in a CA bundle, in order. */
export function pemCertificates(ca: Buffer): string[] {
  return ca.toString('latin1').match(PEM_CERTIFICATE) ?? [];
}

/**
 * Every certificate of a CA bundle parses, and there is at least one: the parsed certificates.
 * OpenSSL takes no partial chain, so a bundle verifies a peer only up to a self-signed
 * certificate of its own, and an entry that signs no certificate and is not self-signed (a
 * client's or a server's, a `fullchain.pem` given as the bundle) verifies no one. Both are
 * refused, rather than found out from failed handshakes. A self-signed certificate, whatever its
 * key usage, is its own anchor: it pins that one peer.
 */
export function checkCaBundle(where: string, source: MaterialSource, ca: Buffer): X509Certificate[] {
  const blocks = pemCertificates(ca);
  if (blocks.length === 0) throw new ConfigurationError(`${where}: ${describeSource(source)} holds no PEM certificate`);
  const anchors: X509Certificate[] = [];
  const certificates = blocks.map((block, index) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch (cause) {
      // The parser's text may quote the input; the option name says enough.
      throw new ConfigurationError(`${where}: certificate ${index + 1} in ${describeSource(source)} cannot be parsed`, {
        cause,
      });
    }
    const anchor = isSelfSigned(cert);
    if (anchor) anchors.push(cert);
    if (!anchor && !signsCertificates(cert)) {
      throw new ConfigurationError(
        `${where}: certificate ${index + 1} in ${describeSource(source)} is not a CA certificate (a client's or a server's certificate, which verifies no one): give the certificates of the CAs that issue the peers' certificates`,
      );
    }
    return cert;
  });
  if (anchors.length === 0) {
    throw new ConfigurationError(
      `${where}: ${describeSource(source)} holds no root (self-signed) certificate: OpenSSL takes no partial chain, so a bundle of intermediate CAs alone verifies no one; add the root they chain to`,
    );
  }
  return certificates;
}

/** Named as its own issuer and signed by its own key: a trust anchor, whatever its key usage says. */
function isSelfSigned(cert: X509Certificate): boolean {
  if (cert.subject !== cert.issuer) return false;
  try {
    return cert.verify(cert.publicKey);
  } catch {
    return false; // a key type Node cannot verify with
  }
}

function signsCertificates(cert: X509Certificate): boolean {
  try {
    return readCertificateFields(cert.raw).signsCertificates;
  } catch {
    return cert.ca; // what Node reads of it, for a certificate the DER reader cannot follow
  }
}

/** A file read where a FIFO or a device would block a thread for good: only a regular file is. */
const NOT_A_FILE = 'ENOTREGULAR';

function notRegular(file: string, stats: { isDirectory(): boolean }): Error {
  const code = stats.isDirectory() ? 'EISDIR' : NOT_A_FILE;
  return Object.assign(new Error(`${file} is not a regular file`), { code, path: file });
}

/**
 * Reads a regular file without blocking on anything else: opened with `O_NONBLOCK` (a FIFO put
 * in the file's place held the watcher's read, and every later reload, for good) and checked by
 * its handle.
 */
async function readRegularFile(file: string): Promise<Buffer> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw notRegular(file, stats);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

function readRegularFileSync(file: string): Buffer {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw notRegular(file, stats);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads one source synchronously (start-up only): its contents, or its file. */
export function readSourceSync(where: string, source: MaterialSource): Buffer {
  if (source.contents !== undefined) return toBuffer(source.contents);
  if (source.file === undefined) throw new ConfigurationError(`${where}: "${source.option}" is required`);
  try {
    return readRegularFileSync(source.file);
  } catch (cause) {
    throw readError(where, source, cause);
  }
}

/** Reads the sources synchronously (start-up only). */
export function readMaterialSync(where: string, sources: MaterialSources): RawMaterial {
  const read = (source: MaterialSource): Buffer => readSourceSync(where, source);
  return {
    cert: read(sources.cert),
    key: read(sources.key),
    ca: read(sources.ca),
    crl: sources.crl === undefined ? undefined : read(sources.crl),
  };
}

/** Reads the sources without blocking the event loop (reload ticks). */
export async function readMaterial(where: string, sources: MaterialSources): Promise<RawMaterial> {
  const read = async (source: MaterialSource): Promise<Buffer> => {
    if (source.contents !== undefined) return toBuffer(source.contents);
    if (source.file === undefined) throw new ConfigurationError(`${where}: "${source.option}" is required`);
    try {
      return await readRegularFile(source.file);
    } catch (cause) {
      throw readError(where, source, cause);
    }
  };
  const [cert, key, ca, crl] = await Promise.all([
    read(sources.cert),
    read(sources.key),
    read(sources.ca),
    sources.crl === undefined ? undefined : read(sources.crl),
  ]);
  return { cert, key, ca, crl };
}

/** Unvalidated bytes of the four sources. */
export interface RawMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
  readonly crl: Buffer | undefined;
}

/** A certificate issued by a CA whose clock is a little ahead is not refused for it. */
const NOT_BEFORE_TOLERANCE_MS = 5 * 60_000;

const CRL_BLOCK = /-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----/g;

/**
 * The CRLs of a file, one entry each, as Node's `crl` option wants them: given one buffer, Node
 * reads only the first CRL in it, so a file with one CRL per CA of the bundle left the others
 * unread (a client of the second CA could never be verified: no CRL for its issuer). Text with
 * no PEM block is passed on as it is.
 */
export function crlList(crl: Buffer): Buffer[] {
  const blocks = crl.toString('latin1').match(CRL_BLOCK);
  return blocks === null ? [crl] : blocks.map((block) => Buffer.from(block, 'latin1'));
}

/**
 * Whether `next` trusts clients otherwise than `previous`: another CA bundle or another CRL.
 * A connection keeps the certificate it was verified with for its whole life, so an adapter
 * closes the connections made under the old trust (a revoked client's open connection was
 * served for as long as it kept it busy), and their clients handshake again under the new.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { trustChanged } from '@fluxguard/core/adapter';
 * onUpdate: (options, material) => {
 *   const before = tls.current;
 *   server.setSecureContext(options);
 *   if (trustChanged(before, material)) closeConnectionsMadeBefore();
 * };
 * ```
 */
export function trustChanged(
  previous: Pick<TlsMaterial, 'ca' | 'crl'>,
  next: Pick<TlsMaterial, 'ca' | 'crl'>,
): boolean {
  if (!previous.ca.equals(next.ca)) return true;
  if (previous.crl === undefined || next.crl === undefined) return previous.crl !== next.crl;
  return !previous.crl.equals(next.crl);
}

/** A digest of the raw bytes, to tell a real change from a touched file. */
export function materialDigest(raw: RawMaterial): string {
  const hash = createHash('sha256');
  for (const part of [raw.cert, raw.key, raw.ca, raw.crl ?? Buffer.alloc(0)]) {
    hash.update(String(part.length)).update(':').update(part);
  }
  return hash.digest('hex');
}

/**
 * Checks that the material is usable before any server sees it: the certificate parses, the
 * key parses and matches it, the CA bundle holds at least one certificate and each parses, each
 * CRL parses, is signed by a CA of the bundle and is within its dates (see `checkCrls`), and
 * OpenSSL accepts the whole set. Messages name the option, never key bytes.
 */
export function validateMaterial(
  where: string,
  sources: MaterialSources,
  raw: RawMaterial,
  role: 'server' | 'client' = 'server',
): TlsMaterial {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(raw.cert);
  } catch (cause) {
    throw new ConfigurationError(`${where}: ${describeSource(sources.cert)} does not hold a PEM certificate`, {
      cause,
    });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(raw.key);
  } catch (cause) {
    throw new ConfigurationError(
      `${where}: ${describeSource(sources.key)} does not hold a readable private key (unencrypted PEM, e.g. PKCS#8)`,
      { cause },
    );
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new ConfigurationError(
      `${where}: the private key in ${describeSource(sources.key)} does not match the certificate in ${describeSource(sources.cert)}`,
    );
  }
  // Every client refuses a server certificate outside its validity: loaded anyway (a reload of
  // an old file), it failed every handshake while the log said `tls.reloaded`. A client's own is
  // the server's to refuse (and tests present expired ones on purpose).
  const now = Date.now();
  if (role === 'server' && Date.parse(leaf.validTo) < now) {
    throw new ConfigurationError(
      `${where}: the certificate in ${describeSource(sources.cert)} expired on ${leaf.validTo}; renew it`,
    );
  }
  if (role === 'server' && Date.parse(leaf.validFrom) > now + NOT_BEFORE_TOLERANCE_MS) {
    throw new ConfigurationError(
      `${where}: the certificate in ${describeSource(sources.cert)} is not valid before ${leaf.validFrom}`,
    );
  }
  const authorities = checkCaBundle(where, sources.ca, raw.ca);
  let crlNextUpdate: Date | undefined;
  if (raw.crl !== undefined && sources.crl !== undefined) {
    const crls = crlList(raw.crl);
    try {
      createSecureContext({ ca: raw.ca, crl: crls });
    } catch (cause) {
      throw new ConfigurationError(`${where}: ${describeSource(sources.crl)} does not hold a PEM CRL`, { cause });
    }
    crlNextUpdate = checkCrls(where, describeSource(sources.crl), crls, authorities, now);
  }
  try {
    createSecureContext({
      // The security level of the cipher list applies to the certificate and key too.
      ciphers: TLS_CIPHERS,
      cert: raw.cert,
      key: raw.key,
      ca: raw.ca,
      ...(raw.crl === undefined ? {} : { crl: crlList(raw.crl) }),
    });
  } catch (cause) {
    throw new ConfigurationError(`${where}: ${refusalOf(cause, describeSource(sources.cert))}`, { cause });
  }
  return Object.freeze({
    cert: raw.cert,
    key: raw.key,
    ca: raw.ca,
    crl: raw.crl,
    certFingerprint256: createHash('sha256').update(leaf.raw).digest('hex'),
    certValidTo: readCertificateFields(leaf.raw).notAfter,
    crlNextUpdate,
  });
}

// What OpenSSL's security level refuses in a certificate of one's own, by Node's error code.
const TOO_WEAK: Readonly<Record<string, string>> = Object.freeze({
  ERR_SSL_EE_KEY_TOO_SMALL: 'its key is too small (RSA needs 2048 bits or more)',
  ERR_SSL_CA_MD_TOO_WEAK: 'it is signed with a weak digest (SHA-1 or older)',
});

/** Why OpenSSL refused the material, in words that name the option and never its bytes. */
function refusalOf(cause: unknown, certificate: string): string {
  const code = (cause as { code?: unknown } | null)?.code;
  const weakness = typeof code === 'string' ? TOO_WEAK[code] : undefined;
  return weakness === undefined
    ? 'OpenSSL refused the TLS material (certificate, key, CA, CRL)'
    : `the certificate in ${certificate} is refused at OpenSSL security level 2: ${weakness}`;
}
