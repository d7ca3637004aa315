import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { crlDer, crlSignedBy } from './crl-check.js';
import { comparableName, readCertificateSubject, readCrlFields, type CrlFields } from './der.js';
import { crlList, pemCertificates, type TlsMaterial } from './material.js';

/**
 * How long a chain is followed: Node's default verify depth, so that every chain OpenSSL
 * accepted is followed to its end.
 */
const MAX_CHAIN = 100;

/**
 * Tells, after a reload changed the CA bundle or the CRLs, whether an open connection's client
 * certificate would still be accepted: `false` when a new handshake with the same chain would
 * fail, as far as a revocation or the bundle decides it (a certificate of the chain revoked, a
 * CA of it with no CRL while CRLs are checked, no path to a self-signed CA of the bundle). A
 * connection without a verified client certificate has nothing to recheck (`true`).
 *
 * @example
 * ```ts
 * import { createTrustRecheck } from '@fluxguard/core/adapter';
 * const stillTrusted = createTrustRecheck(material);
 * for (const socket of connections) if (!stillTrusted(socket)) socket.destroy();
 * ```
 */
export type TrustRecheck = (socket: TLSSocket) => boolean;

/**
 * Compiles the CA bundle and the CRLs of `material` once, for {@link TrustRecheck}s of every
 * open connection. A connection keeps the certificate it was verified with for its whole life:
 * without this, a client whose certificate a new CRL revokes kept the calls it had open (a
 * stream, a long download) until they ended, since closing its connection gracefully lets them
 * finish. CRLs that cannot be read were refused when the material loaded, and are skipped here.
 *
 * The chain is built as OpenSSL builds it for Node (trusted first, no partial chains, every
 * certificate checked against a CRL when there are CRLs): each certificate's issuer is taken
 * from the bundle first (one valid now before one that is not), else from the chain the client
 * sent, up to a self-issued CA of the bundle; every certificate of it must be valid now. Where
 * OpenSSL weighs what this does not (which of a CA's CRLs applies, which of two CAs of one name
 * issued a certificate without a key id), the recheck cuts: a client cut wrongly handshakes
 * again, while one kept wrongly keeps calls it should have lost.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { createTrustRecheck, trustChanged } from '@fluxguard/core/adapter';
 * onUpdate: (options, material) => {
 *   if (!trustChanged(before, material)) return;
 *   const stillTrusted = createTrustRecheck(material);
 *   for (const socket of connections) {
 *     // Still trusted: closed gracefully (a GOAWAY on HTTP/2, `connection: close` on its next
 *     // HTTP/1.1 answer), never at a moment its client cannot see coming.
 *     if (stillTrusted(socket)) closeAfterCurrentCalls(socket);
 *     else socket.destroy(); // revoked: its calls end now
 *   }
 * };
 * ```
 */
export function createTrustRecheck(material: Pick<TlsMaterial, 'ca' | 'crl'>): TrustRecheck {
  const now = Date.now();
  const authorities = pemCertificates(material.ca).flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch {
      return [];
    }
  });
  // Many connections carry the same certificates: each is parsed, and each signature verified, once.
  const parsed = new Map<string, X509Certificate>();
  const verified = new Map<string, boolean>();
  const signedBy = (issuer: X509Certificate, cert: X509Certificate): boolean => {
    const pair = `${issuer.fingerprint256}/${cert.fingerprint256}`;
    let good = verified.get(pair);
    if (good === undefined) {
      try {
        good = cert.verify(issuer.publicKey);
      } catch {
        good = false;
      }
      verified.set(pair, good);
    }
    return good;
  };
  const issues = (issuer: X509Certificate, cert: X509Certificate): boolean =>
    cert.checkIssued(issuer) && signedBy(issuer, cert);
  const crls = material.crl === undefined ? [] : crlList(material.crl);
  const revokedBy = revocationsByAuthority(crls, authorities);
  const validNow = (cert: X509Certificate): boolean =>
    Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
  const inBundle = (cert: X509Certificate): boolean =>
    authorities.some((ca) => ca.fingerprint256 === cert.fingerprint256);
  const issuerOf = (cert: X509Certificate, chain: readonly X509Certificate[]): X509Certificate | undefined => {
    const named = authorities.filter((ca) => ca.fingerprint256 !== cert.fingerprint256 && cert.checkIssued(ca));
    if (named.length > 0) {
      // OpenSSL picks among these by name and key id, and checks the signature after: where
      // one of them did not sign the certificate, which one it picks is not told here.
      if (!named.every((ca) => signedBy(ca, cert))) return undefined;
      return named.find(validNow) ?? named[0];
    }
    return chain.find((other) => other.fingerprint256 !== cert.fingerprint256 && issues(other, cert));
  };
  return (socket) => {
    // A certificate the handshake did not verify (per-operation mode) was never an identity, and
    // its chain, the client's own, is not worth a signature check.
    if (!socket.authorized) return true;
    let chain: X509Certificate[];
    try {
      chain = peerChain(socket, parsed);
    } catch {
      return false;
    }
    const leaf = chain[0];
    if (leaf === undefined) return true;
    let cert: X509Certificate = leaf;
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      if (!validNow(cert)) return false;
      // A self-issued CA of the bundle is a trust anchor: OpenSSL does not check its signature.
      const anchor = inBundle(cert) && cert.checkIssued(cert);
      const issuer = anchor ? cert : issuerOf(cert, chain);
      // No issuer: OpenSSL takes no partial chain (UNABLE_TO_GET_ISSUER_CERT).
      if (issuer === undefined) return false;
      if (crls.length > 0) {
        // With CRLs, OpenSSL checks every certificate of the chain, the root included, and
        // refuses one whose issuer has none (UNABLE_TO_GET_CRL).
        const revoked = revokedBy.get(issuer.fingerprint256);
        if (revoked === undefined || revoked.has(serialKey(cert.serialNumber))) return false;
      }
      if (anchor) return true;
      cert = issuer;
    }
    return false;
  };
}

/**
 * The serial numbers each CA of the bundle may revoke (by its fingerprint): those of every CRL
 * named as it (names compared as OpenSSL compares them) and signed by its key, or by a
 * signature this cannot check (RSASSA-PSS). OpenSSL picks one CRL of a CA by a score (its scope,
 * whether it is valid yet, unknown critical extensions, then its date); this does not weigh
 * them, and a serial number any of them lists is revoked: a newer CRL that lifted a hold still
 * cuts the client once (it handshakes again), but no CRL that OpenSSL would pass over (one not
 * valid yet, one of another scope) hides a revocation. A CRL of another CA of the same name,
 * whose signature this checks, revokes nothing of this one's.
 */
function revocationsByAuthority(
  crls: readonly Buffer[],
  authorities: readonly X509Certificate[],
): ReadonlyMap<string, ReadonlySet<string>> {
  const names = new Map(authorities.map((ca) => [ca, comparableName(readCertificateSubject(ca.raw))]));
  const revoked = new Map<string, Set<string>>();
  for (const pem of crls) {
    const der = crlDer(pem);
    if (der === undefined) continue;
    let crl: CrlFields;
    let issuer: string | undefined;
    try {
      crl = readCrlFields(der);
      issuer = comparableName(crl.issuer);
    } catch {
      continue; // refused when the material loaded: OpenSSL never took it
    }
    for (const ca of authorities) {
      if (issuer === undefined || names.get(ca) !== issuer || !crlSignedBy(crl, ca)) continue;
      let serials = revoked.get(ca.fingerprint256);
      if (serials === undefined) revoked.set(ca.fingerprint256, (serials = new Set()));
      for (const serial of crl.revokedSerials) serials.add(serialKey(serial));
    }
  }
  return revoked;
}

/**
 * The client's certificate and the chain the handshake verified it with, leaf first (empty
 * without a certificate), each parsed once per recheck (`parsed`, by its DER in base64).
 * Read through `getPeerCertificate(true)`, which can be read again: Node's
 * `getPeerX509Certificate()` hands the chain out once, after which neither shows more than the
 * leaf (Node 20 and 24), so a second reload, or an application that had read it, found a
 * client of an intermediate CA no longer issued by any CA and cut it. Some Node releases (24.21,
 * 26.8) read it so during the handshake: there only the leaf is ever shown, and a client of an
 * intermediate CA, whose intermediate cannot be checked, is cut (fails closed).
 */
function peerChain(socket: TLSSocket, parsed: Map<string, X509Certificate>): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  // Without a certificate Node gives an empty object; the last issuer may be missing too.
  let cert = socket.getPeerCertificate(true) as Partial<DetailedPeerCertificate> | undefined;
  while (cert?.raw !== undefined && chain.length < MAX_CHAIN) {
    const der = cert.raw.toString('base64');
    // A root's issuer is itself.
    if (seen.has(der)) break;
    seen.add(der);
    let x509 = parsed.get(der);
    if (x509 === undefined) parsed.set(der, (x509 = new X509Certificate(cert.raw)));
    chain.push(x509);
    cert = cert.issuerCertificate;
  }
  return chain;
}

/** A serial number as compared: uppercase hex without leading zeros. */
function serialKey(serial: string): string {
  return serial.toUpperCase().replace(/^0+(?=.)/, '');
}
