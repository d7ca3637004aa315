import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { crlDer } from './crl-check.js';
import { canonicalName, readCertificateIssuer, readCrlFields } from './der.js';
import { crlList, pemCertificates, type TlsMaterial } from './material.js';

/** How many certificates of a client's chain are followed towards a CA of the bundle. */
const MAX_CHAIN = 10;

/**
 * Tells, after a reload changed the CA bundle or the CRLs, whether an open connection's client
 * certificate would still be accepted: `false` when it (or a certificate of the chain it sent)
 * is revoked by a CRL of its issuer, or when it no longer chains to a CA of the bundle. A
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
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { createTrustRecheck, trustChanged } from '@fluxguard/core/adapter';
 * onUpdate: (options, material) => {
 *   if (!trustChanged(before, material)) return;
 *   const stillTrusted = createTrustRecheck(material);
 *   for (const socket of connections) {
 *     if (stillTrusted(socket)) socket.end(); // its calls finish, its client handshakes again
 *     else socket.destroy(); // revoked: its calls end now
 *   }
 * };
 * ```
 */
export function createTrustRecheck(material: Pick<TlsMaterial, 'ca' | 'crl'>): TrustRecheck {
  const authorities = pemCertificates(material.ca).flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch {
      return [];
    }
  });
  // Revoked serial numbers by the issuer's name, compared as OpenSSL compares names: a CRL
  // whose issuer is written in another string type than the certificate's issuer (a CA
  // re-issued with UTF8String names) revokes it for OpenSSL, and must here too.
  const revoked = new Map<string, Set<string>>();
  for (const pem of material.crl === undefined ? [] : crlList(material.crl)) {
    const der = crlDer(pem);
    if (der === undefined) continue;
    try {
      const crl = readCrlFields(der);
      const issuer = canonicalName(crl.issuer);
      let serials = revoked.get(issuer);
      if (serials === undefined) revoked.set(issuer, (serials = new Set()));
      for (const serial of crl.revokedSerials) serials.add(serialKey(serial));
    } catch {
      // Refused when the material loaded: OpenSSL never took it.
    }
  }
  const isRevoked = (cert: X509Certificate): boolean => {
    if (revoked.size === 0) return false;
    try {
      return revoked.get(canonicalName(readCertificateIssuer(cert.raw)))?.has(serialKey(cert.serialNumber)) === true;
    } catch {
      return true; // a name OpenSSL read and this cannot: cut, the client handshakes again
    }
  };
  // Many connections carry the same certificates: each is parsed, and each signature verified, once.
  const parsed = new Map<string, X509Certificate>();
  const verified = new Map<string, boolean>();
  const issues = (issuer: X509Certificate, cert: X509Certificate): boolean => {
    if (!cert.checkIssued(issuer)) return false;
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
  const revokedInBundle = revokedAbove(authorities, isRevoked, issues);
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
    if (chain.length === 0) return true;
    for (const [i, cert] of chain.entries()) {
      if (isRevoked(cert)) return false;
      // A CA of the bundle, or the next certificate the client sent, issued it.
      const anchor = authorities.find((ca) => ca.fingerprint256 === cert.fingerprint256 || issues(ca, cert));
      if (anchor !== undefined) return !revokedInBundle(anchor);
      const next = chain[i + 1];
      if (next === undefined || !issues(next, cert)) return false;
    }
    return false;
  };
}

/**
 * Whether `ca` of the bundle, or a CA of the bundle above it, is revoked by a CRL of its issuer:
 * OpenSSL checks every certificate of the chain it builds (Node asks it to), the intermediates
 * it took from the bundle included, so a CRL of the root revoking an intermediate of the bundle
 * cuts the intermediate's clients. Their connections kept their calls when the check stopped at
 * the first CA of the bundle. Stops at a self-issued CA, which no CRL above it can revoke.
 */
function revokedAbove(
  authorities: readonly X509Certificate[],
  isRevoked: (cert: X509Certificate) => boolean,
  issues: (issuer: X509Certificate, cert: X509Certificate) => boolean,
): (ca: X509Certificate) => boolean {
  const known = new Map<X509Certificate, boolean>();
  return (ca) => {
    let answer = known.get(ca);
    if (answer !== undefined) return answer;
    answer = false;
    let current: X509Certificate | undefined = ca;
    for (let depth = 0; current !== undefined && depth < MAX_CHAIN; depth++) {
      if (isRevoked(current)) {
        answer = true;
        break;
      }
      const cert: X509Certificate = current;
      if (cert.checkIssued(cert)) break;
      current = authorities.find((parent) => parent !== cert && issues(parent, cert));
    }
    known.set(ca, answer);
    return answer;
  };
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
