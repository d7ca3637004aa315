import { verify, type X509Certificate } from 'node:crypto';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { comparableName, readCertificateSubject, readCrlFields, type CrlFields } from './der.js';

/**
 * The digest of each signature algorithm a CRL check can verify, by OID (`null`: the algorithm
 * names its own, as EdDSA does). RSASSA-PSS and anything else are left to OpenSSL.
 */
const DIGEST_OF: Readonly<Record<string, string | null>> = Object.freeze({
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.1': 'sha1',
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null,
  '1.3.101.113': null,
});

/**
 * The delta CRL indicator (RFC 5280 5.2.4). Node does not ask OpenSSL to use delta CRLs, and
 * OpenSSL 3.0 (Node 20's) then takes one for a complete CRL of its CA: a base CRL revoking a
 * client, given with a newer empty delta, let that client handshake.
 */
const DELTA_CRL_INDICATOR = '2.5.29.27';

/** A CRL issued by a CA whose clock is a little ahead is not refused for it. */
const THIS_UPDATE_TOLERANCE_MS = 5 * 60_000;

const PEM_BODY = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/;

/**
 * Refuses the CRLs OpenSSL would load and then hold against every client of their CA: with a
 * CRL, OpenSSL checks each client certificate against its issuer's CRL, and one that is not
 * signed by that CA, not valid yet, or past its `nextUpdate` fails every handshake. Loaded at
 * start-up, or at a reload (a forged or stale file), it shut every client out while the log said
 * `tls.reloaded`; refused here, start-up says why and a reload keeps the last good set.
 *
 * `crls` are the PEM blocks of the CRL source (`crlList`), `authorities` the CA bundle.
 * Returns the earliest `nextUpdate` of the CRLs, if any has one.
 *
 * @throws ConfigurationError naming the CRL by its place in `source` and what is wrong.
 */
export function checkCrls(
  where: string,
  source: string,
  crls: readonly Buffer[],
  authorities: readonly X509Certificate[],
  now: number,
): Date | undefined {
  let earliest: Date | undefined;
  const covered = new Set<X509Certificate>();
  crls.forEach((pem, index) => {
    const name = crls.length === 1 ? `the CRL in ${source}` : `CRL ${String(index + 1)} in ${source}`;
    const der = crlDer(pem);
    if (der === undefined) return; // not PEM: OpenSSL has refused it already
    let crl: CrlFields;
    try {
      crl = readCrlFields(der);
    } catch (cause) {
      throw new ConfigurationError(`${where}: ${name} cannot be read as an X.509 CRL`, { cause });
    }
    const issuers = issuingAuthorities(crl, authorities);
    if (issuers.length === 0) {
      throw new ConfigurationError(`${where}: ${name} is not signed by any CA of the bundle`);
    }
    for (const ca of issuers) covered.add(ca);
    if (crl.extensions.includes(DELTA_CRL_INDICATOR)) {
      throw new ConfigurationError(
        `${where}: ${name} is a delta CRL, which Node's TLS does not apply as one (OpenSSL 3.0 takes it for a complete CRL of its CA, and the base CRL's revocations no longer count): give complete CRLs only`,
      );
    }
    if (crl.thisUpdate.getTime() > now + THIS_UPDATE_TOLERANCE_MS) {
      throw new ConfigurationError(`${where}: ${name} is not valid before ${crl.thisUpdate.toUTCString()}`);
    }
    if (crl.nextUpdate !== undefined && crl.nextUpdate.getTime() < now) {
      throw new ConfigurationError(
        `${where}: ${name} expired on ${crl.nextUpdate.toUTCString()} (its next update); OpenSSL would refuse every client of its CA: publish a fresh one`,
      );
    }
    if (crl.nextUpdate !== undefined && (earliest === undefined || crl.nextUpdate < earliest))
      earliest = crl.nextUpdate;
  });
  // Node has OpenSSL check every CA of a client's chain against its CRL: a CA of the bundle
  // without one (a CRL file cut short, a CA added to the bundle alone) refused all its clients
  // while the log said `tls.reloaded`, each refusal read as a certificate mismatch.
  const uncovered = authorities.find((ca) => !covered.has(ca));
  if (uncovered !== undefined && crls.some((pem) => crlDer(pem) !== undefined)) {
    throw new ConfigurationError(
      `${where}: ${source} holds no CRL of the CA "${uncovered.subject.replaceAll('\n', ', ')}" of the bundle: OpenSSL would refuse every client of that CA; give a current CRL from each CA of the bundle`,
    );
  }
  return earliest;
}

/**
 * The CAs of the bundle that signed the CRL: of the CAs named as its issuer (names compared as
 * OpenSSL compares them, so a CA re-issued with its name in another string type is one of
 * them), else of every CA. A signature algorithm this check cannot verify is left to OpenSSL.
 */
function issuingAuthorities(crl: CrlFields, authorities: readonly X509Certificate[]): X509Certificate[] {
  const issuer = comparableName(crl.issuer);
  const named =
    issuer === undefined ? [] : authorities.filter((ca) => comparableName(readCertificateSubject(ca.raw)) === issuer);
  return (named.length > 0 ? named : authorities).filter((ca) => crlSignedBy(crl, ca));
}

/**
 * Whether `ca`'s key made the CRL's signature; `true` for a signature algorithm this check
 * cannot verify (RSASSA-PSS and others), which is left to OpenSSL.
 *
 * @internal
 */
export function crlSignedBy(crl: CrlFields, ca: X509Certificate): boolean {
  const digest = DIGEST_OF[crl.signatureAlgorithm];
  if (digest === undefined) return true;
  try {
    return verify(digest, crl.signed, ca.publicKey, crl.signature);
  } catch {
    return false; // a key of another type than the algorithm's
  }
}

/** The DER of one PEM CRL (an entry of `crlList`), or `undefined` when it is not PEM. */
export function crlDer(pem: Buffer): Buffer | undefined {
  const body = PEM_BODY.exec(pem.toString('latin1'))?.[1];
  return body === undefined ? undefined : Buffer.from(body, 'base64');
}
