import { createHash, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { LruCache } from '../cache/lru.js';
import type { CertificateIdentity } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
import { readCertificateFields } from './der.js';
import { parseSpiffeId } from './spiffe.js';

/**
 * A certificate in any of the forms the transports hand out: DER bytes, PEM text (string or
 * bytes), Node's `PeerCertificate` (`getPeerCertificate()`, grpc-js
 * `getAuthContext().sslPeerCertificate`: anything with a DER `raw`), or a `node:crypto`
 * `X509Certificate`.
 *
 * @example
 * ```ts
 * import type { CertificateInput } from '@fluxguard/core/adapter';
 * const input: CertificateInput = call.getAuthContext().sslPeerCertificate!; // { raw: Buffer, ... }
 * ```
 */
export type CertificateInput = Uint8Array | string | { readonly raw: Uint8Array } | X509Certificate;

const CACHE_LIMIT = 1024;
// Identity per fingerprint: the same DER always gives the same identity, so a cache hit is
// exact. Bounded, so that a server meeting many client certificates keeps its memory flat.
const cache = new LruCache<string, CertificateIdentity>(CACHE_LIMIT);

function toDer(input: CertificateInput): Buffer {
  if (input instanceof X509Certificate) return input.raw;
  if (typeof input === 'string') return new X509Certificate(input).raw;
  if (input instanceof Uint8Array) {
    const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    // PEM starts with "-----BEGIN"; DER with a SEQUENCE tag (0x30).
    if (bytes[0] === 0x2d) return new X509Certificate(bytes).raw;
    return bytes;
  }
  const raw: unknown = (input as { raw?: unknown }).raw;
  if (!(raw instanceof Uint8Array)) throw new TypeError('certificate has no DER "raw" field');
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
}

/**
 * The identity of a client certificate that the TLS stack has ALREADY VERIFIED against the
 * configured CA. Never call it on a certificate of a connection that was not authorized: use
 * {@link identityFromTlsSocket} for raw sockets; grpc-js (>= 1.14.5) exposes
 * `getAuthContext().sslPeerCertificate` only for verified peers.
 *
 * - `uris`, `dnsNames`: every SAN URI and DNS name (names with bytes outside printable ASCII are
 *   dropped).
 * - `spiffeId`: the certificate's URI SAN, when it is the only one (readable or not) and a valid
 *   SPIFFE ID (lowercase trust domain, path, no query or fragment), and the certificate signs
 *   no others (no CA flag, no keyCertSign or cRLSign usage): an X.509-SVID as SPIFFE defines
 *   it. Otherwise `undefined`, also when a second URI of any kind is present.
 * - `commonName`: the subject CN when there is exactly one.
 * - `fingerprint256`: SHA-256 of the DER, lowercase hex.
 *
 * Identities are cached by fingerprint (bounded), so calling it per request is cheap.
 *
 * @throws SecurityError `unauthenticated` (reason `certificate_unreadable`) when the input is
 *   not a certificate that can be parsed.
 *
 * @example
 * ```ts
 * import { identityFromCertificate } from '@fluxguard/core/adapter';
 * const peer = call.getAuthContext().sslPeerCertificate; // grpc-js >= 1.14.5: verified only
 * const identity = peer === undefined ? undefined : identityFromCertificate(peer);
 * identity?.spiffeId; // 'spiffe://fluxguard.dev/client'
 * ```
 */
export function identityFromCertificate(input: CertificateInput): CertificateIdentity {
  let der: Buffer;
  try {
    der = toDer(input);
  } catch (cause) {
    throw new SecurityError('unauthenticated', { reason: 'certificate_unreadable', cause });
  }
  const fingerprint256 = createHash('sha256').update(der).digest('hex');
  const cached = cache.get(fingerprint256);
  if (cached !== undefined) return cached;
  let identity: CertificateIdentity;
  try {
    // OpenSSL parses it first: anything it refuses never reaches our own reader.
    new X509Certificate(der);
    const fields = readCertificateFields(der);
    // An X.509-SVID has exactly one URI SAN and is no CA certificate (SPIFFE X509-SVID 2, 4.1).
    // URIs the reader leaves out count too: one cannot hide a second URI from the check.
    const only = fields.uriCount === 1 && !fields.signsCertificates ? fields.uris[0] : undefined;
    identity = Object.freeze({
      spiffeId: only !== undefined && parseSpiffeId(only) !== undefined ? only : undefined,
      uris: Object.freeze([...fields.uris]),
      dnsNames: Object.freeze([...fields.dnsNames]),
      commonName: fields.commonNames.length === 1 ? fields.commonNames[0] : undefined,
      fingerprint256,
      validFrom: fields.notBefore,
      validTo: fields.notAfter,
    });
  } catch (cause) {
    throw new SecurityError('unauthenticated', { reason: 'certificate_unreadable', cause });
  }
  cache.set(fingerprint256, identity);
  return identity;
}

/**
 * The socket members {@link identityFromTlsSocket} reads: a `tls.TLSSocket` (Express:
 * `req.socket`).
 *
 * @example
 * ```ts
 * import type { TLSSocket } from 'node:tls';
 * import { identityFromTlsSocket, type PeerTlsSocket } from '@fluxguard/core/adapter';
 * const socket: PeerTlsSocket = req.socket as TLSSocket; // Express over HTTPS
 * const identity = identityFromTlsSocket(socket);
 * ```
 */
export type PeerTlsSocket = Pick<TLSSocket, 'authorized' | 'getPeerCertificate'>;

/**
 * The verified client identity of a TLS connection, or `undefined` when the connection is not
 * `authorized` (no certificate, or one that failed verification). This check is the point:
 * with `rejectUnauthorized: false` (per-operation mode) `getPeerCertificate()` still returns
 * the subject of an untrusted, self-signed certificate, which must never become an identity.
 *
 * @example
 * ```ts
 * import { identityFromTlsSocket } from '@fluxguard/core/adapter';
 * app.use((req, _res, next) => {
 *   const identity = identityFromTlsSocket(req.socket as import('node:tls').TLSSocket);
 *   next();
 * });
 * ```
 */
export function identityFromTlsSocket(socket: PeerTlsSocket): CertificateIdentity | undefined {
  if (!socket.authorized) return undefined;
  const peer: unknown = socket.getPeerCertificate(false);
  if (typeof peer !== 'object' || peer === null) return undefined;
  const raw: unknown = (peer as { raw?: unknown }).raw;
  if (!(raw instanceof Uint8Array) || raw.length === 0) return undefined;
  return identityFromCertificate({ raw });
}

/**
 * The socket members {@link untrustedCertificateError} reads: a `tls.TLSSocket` (Express:
 * `req.socket`; gRPC: the socket of the call's HTTP/2 session).
 *
 * @example
 * ```ts
 * import type { TLSSocket } from 'node:tls';
 * import { untrustedCertificateError, type UnverifiedTlsSocket } from '@fluxguard/core/adapter';
 * const socket: UnverifiedTlsSocket = req.socket as TLSSocket;
 * const code = untrustedCertificateError(socket);
 * ```
 */
export type UnverifiedTlsSocket = Pick<TLSSocket, 'authorized' | 'authorizationError' | 'getPeerCertificate'>;

/** A verification error code as Node names it: OpenSSL's `X509_V_ERR_` name without the prefix. */
const VERIFY_ERROR_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;
/** What is logged when Node gives no code of that form: a fixed word, never its text. */
const UNNAMED_VERIFY_ERROR = 'UNKNOWN';
// Per connection: what a socket presented, and whether it verified, never change (renegotiation
// is disabled on both adapters' servers). `null` records "nothing presented that failed".
const untrustedCodes = new WeakMap<object, string | null>();

/**
 * Why the client certificate a TLS connection presented did not verify: Node's verification error
 * code (`CERT_HAS_EXPIRED`, `CERT_NOT_YET_VALID`, `CERT_REVOKED`,
 * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...), or `undefined` when the connection is authorized or
 * presented no certificate. Only per-operation mode completes such a handshake. It tells an
 * untrusted certificate from none for the audit line: nothing of the certificate is read but its
 * presence, and the code is a fixed identifier (`UNKNOWN` when Node gives none of that form),
 * never a message. Cached per socket.
 *
 * @example
 * ```ts
 * import type { TLSSocket } from 'node:tls';
 * import { untrustedCertificateError } from '@fluxguard/core/adapter';
 * const socket = req.socket as TLSSocket;
 * const code = socket.authorized ? undefined : untrustedCertificateError(socket); // 'CERT_HAS_EXPIRED'
 * ```
 */
export function untrustedCertificateError(socket: UnverifiedTlsSocket): string | undefined {
  if (socket.authorized) return undefined;
  const known = untrustedCodes.get(socket);
  if (known !== undefined) return known ?? undefined;
  const code = presentedCertificate(socket) ? verifyErrorCode(socket.authorizationError) : undefined;
  untrustedCodes.set(socket, code ?? null);
  return code;
}

/**
 * Whether the peer sent a certificate at all: Node names a verification error without one too
 * (`UNABLE_TO_GET_ISSUER_CERT`), and only the certificate's presence tells the two apart.
 */
function presentedCertificate(socket: UnverifiedTlsSocket): boolean {
  let peer: unknown;
  try {
    peer = socket.getPeerCertificate(false);
  } catch {
    // A socket torn down under the call: nothing to tell.
    return false;
  }
  if (typeof peer !== 'object' || peer === null) return false;
  const raw: unknown = (peer as { raw?: unknown }).raw;
  return raw instanceof Uint8Array && raw.length > 0;
}

/** Node keeps the code as a string (its typings say `Error`); either way, only a code of the fixed form passes. */
function verifyErrorCode(error: unknown): string {
  const code: unknown = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : error;
  return typeof code === 'string' && VERIFY_ERROR_CODE.test(code) ? code : UNNAMED_VERIFY_ERROR;
}

/**
 * True when `now` lies in the identity's validity window. The TLS stack already refuses
 * certificates outside it at handshake time; this is for long-lived connections that outlive
 * their client certificate.
 *
 * @example
 * ```ts
 * import { isIdentityCurrent } from '@fluxguard/core/adapter';
 * if (identity !== undefined && !isIdentityCurrent(identity)) throw new SecurityError('unauthenticated');
 * ```
 */
export function isIdentityCurrent(identity: CertificateIdentity, now?: Date): boolean {
  // Asked several times on every call of a mutual-TLS connection: no `Date` made for it.
  const t = now === undefined ? Date.now() : now.getTime();
  return t >= identity.validFrom.getTime() && t <= identity.validTo.getTime();
}
