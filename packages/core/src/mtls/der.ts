/**
 * The few DER reads that peer identity needs (subject CN, validity, SAN DNS/URI names, whether
 * the certificate signs others), over a
 * certificate OpenSSL has already parsed, and those a CRL check needs (issuer, dates, signature). Written here rather than through @peculiar/x509 so
 * that the main import path needs no global `Reflect` polyfill, and so that a SAN entry of a
 * kind we do not read (otherName, directoryName, ...) is skipped instead of failing the parse.
 * Every read is bounds-checked; malformed input throws.
 */

interface Tlv {
  readonly tag: number;
  /** The tag's byte. */
  readonly offset: number;
  /** First byte of the content. */
  readonly start: number;
  /** One past the last byte of the content. */
  readonly end: number;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OID = 0x06;
const BOOLEAN = 0x01;
const INTEGER = 0x02;
const BIT_STRING = 0x03;
const OCTET_STRING = 0x04;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

// DER of OIDs 2.5.4.3 (commonName), 2.5.29.17 (subjectAltName), 2.5.29.19 (basicConstraints)
// and 2.5.29.15 (keyUsage), content bytes only.
const OID_COMMON_NAME = [0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME = [0x55, 0x1d, 0x11];
const OID_BASIC_CONSTRAINTS = [0x55, 0x1d, 0x13];
const OID_KEY_USAGE = [0x55, 0x1d, 0x0f];
// keyCertSign (bit 5) and cRLSign (bit 6) in the first byte of the key usage bits.
const KEY_USAGE_SIGNS_OTHERS = 0x04 | 0x02;

function fail(what: string): never {
  throw new Error(`malformed DER: ${what}`);
}

function readTlv(der: Uint8Array, offset: number, limit: number): Tlv {
  if (offset + 2 > limit) fail('truncated element');
  const tag = der[offset] ?? fail('truncated');
  if ((tag & 0x1f) === 0x1f) fail('multi-byte tag');
  let lengthByte = der[offset + 1] ?? fail('truncated');
  let pos = offset + 2;
  let length: number;
  if (lengthByte < 0x80) {
    length = lengthByte;
  } else {
    lengthByte &= 0x7f;
    if (lengthByte === 0 || lengthByte > 4) fail('unsupported length');
    length = 0;
    for (let i = 0; i < lengthByte; i++) length = length * 256 + (der[pos + i] ?? fail('truncated length'));
    pos += lengthByte;
  }
  const end = pos + length;
  if (end > limit) fail('element overruns its parent');
  return { tag, offset, start: pos, end };
}

function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let pos = parent.start;
  while (pos < parent.end) {
    const child = readTlv(der, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

function expectTag(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (tlv?.tag !== tag) fail(what);
  return tlv;
}

function contentEquals(der: Uint8Array, tlv: Tlv, bytes: readonly number[]): boolean {
  if (tlv.end - tlv.start !== bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (der[tlv.start + i] !== bytes[i]) return false;
  return true;
}

/** Printable ASCII only; anything else is not a name we can compare safely. */
function ia5(der: Uint8Array, tlv: Tlv): string | undefined {
  let out = '';
  for (let i = tlv.start; i < tlv.end; i++) {
    const c = der[i] ?? 0;
    if (c < 0x21 || c > 0x7e) return undefined;
    out += String.fromCharCode(c);
  }
  return out;
}

/**
 * A directory string's text. A byte order mark is kept, as OpenSSL keeps it: decoded away, a CN
 * of a BOM and `admin` read as `admin`, the subject of another certificate.
 */
function directoryString(der: Uint8Array, tlv: Tlv): string | undefined {
  const bytes = der.subarray(tlv.start, tlv.end);
  switch (tlv.tag) {
    case 0x0c: // UTF8String
      return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    case 0x13: // PrintableString
    case 0x16: // IA5String
      return Buffer.from(bytes).toString('latin1');
    case 0x1e: // BMPString
      return new TextDecoder('utf-16be', { fatal: true, ignoreBOM: true }).decode(bytes);
    default:
      return undefined;
  }
}

function digits(text: string, from: number, count: number): number {
  let value = 0;
  for (let i = from; i < from + count; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) fail('bad time');
    value = value * 10 + (c - 0x30);
  }
  return value;
}

function readTime(der: Uint8Array, tlv: Tlv | undefined): Date {
  if (tlv === undefined) fail('missing time');
  const text = new TextDecoder('latin1').decode(der.subarray(tlv.start, tlv.end));
  let year: number;
  let at: number;
  if (tlv.tag === UTC_TIME && text.length === 13) {
    const yy = digits(text, 0, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy; // RFC 5280 4.1.2.5.1
    at = 2;
  } else if (tlv.tag === GENERALIZED_TIME && text.length === 15) {
    year = digits(text, 0, 4);
    at = 4;
  } else {
    fail('unsupported time format');
  }
  if (!text.endsWith('Z')) fail('time not in UTC');
  return new Date(
    Date.UTC(
      year,
      digits(text, at, 2) - 1,
      digits(text, at + 2, 2),
      digits(text, at + 4, 2),
      digits(text, at + 6, 2),
      digits(text, at + 8, 2),
    ),
  );
}

/** What peer identity reads from a DER certificate. */
export interface CertificateFields {
  /** Every CN value of the subject, in order. */
  readonly commonNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SAN DNS names in printable ASCII; others are left out. */
  readonly dnsNames: readonly string[];
  /** SAN URIs in printable ASCII; others are left out (but counted in `uriCount`). */
  readonly uris: readonly string[];
  /** Every SAN URI, readable or not. */
  readonly uriCount: number;
  /**
   * Whether the certificate is one that signs others: basicConstraints with cA set, or a key
   * usage of keyCertSign or cRLSign.
   */
  readonly signsCertificates: boolean;
}

/**
 * Reads subject CNs, validity, SAN DNS/URI names and whether it signs others from a DER X.509
 * certificate.
 */
export function readCertificateFields(der: Uint8Array): CertificateFields {
  const { parts, versioned, at: i } = tbsCertificateParts(der);
  const validity = children(der, expectTag(parts[i], SEQUENCE, 'validity'));
  const subject = expectTag(parts[i + 1], SEQUENCE, 'subject');
  const extensionsWrapper = parts.slice(i + 3).find((p) => p.tag === 0xa3); // [3] EXPLICIT extensions

  const commonNames: string[] = [];
  for (const rdn of children(der, subject)) {
    for (const atv of children(der, expectTag(rdn, SET, 'RDN'))) {
      const [typeTlv, value] = children(der, expectTag(atv, SEQUENCE, 'attribute'));
      const type = expectTag(typeTlv, OID, 'attribute type');
      if (value !== undefined && contentEquals(der, type, OID_COMMON_NAME)) {
        const text = directoryString(der, value);
        if (text !== undefined) commonNames.push(text);
      }
    }
  }

  const dnsNames: string[] = [];
  const uris: string[] = [];
  let uriCount = 0;
  let signsCertificates = false;
  if (extensionsWrapper !== undefined) {
    // RFC 5280 4.1.2.9: extensions only in version 3. OpenSSL reads them in any version; a
    // reader that follows the RFC would see no names at all, so such a certificate is refused.
    if (!versioned || !isVersion3(der, parts[0])) fail('extensions in a certificate before version 3');
    const extensions = expectTag(children(der, extensionsWrapper)[0], SEQUENCE, 'extensions');
    let seenSan = false;
    for (const ext of children(der, extensions)) {
      const fields = children(der, expectTag(ext, SEQUENCE, 'extension'));
      const id = expectTag(fields[0], OID, 'extension id');
      const value = expectTag(fields[1]?.tag === BOOLEAN ? fields[2] : fields[1], OCTET_STRING, 'extension value');
      if (contentEquals(der, id, OID_BASIC_CONSTRAINTS)) {
        signsCertificates ||= basicConstraintsCa(der, value);
        continue;
      }
      if (contentEquals(der, id, OID_KEY_USAGE)) {
        signsCertificates ||= keyUsageSignsOthers(der, value);
        continue;
      }
      if (!contentEquals(der, id, OID_SUBJECT_ALT_NAME)) continue;
      if (seenSan) fail('duplicate subjectAltName'); // RFC 5280 4.2: at most one of each
      seenSan = true;
      const names = expectTag(readTlv(der, value.start, value.end), SEQUENCE, 'GeneralNames');
      if (names.end !== value.end) fail('trailing bytes in subjectAltName');
      for (const name of children(der, names)) {
        // Context-specific, primitive: [2] dNSName, [6] uniformResourceIdentifier (IA5String).
        if (name.tag === 0x82) {
          const dns = ia5(der, name);
          if (dns !== undefined) dnsNames.push(dns);
        } else if (name.tag === 0x86) {
          uriCount++;
          const uri = ia5(der, name);
          if (uri !== undefined) uris.push(uri);
        }
      }
    }
  }

  return {
    commonNames,
    notBefore: readTime(der, validity[0]),
    notAfter: readTime(der, validity[1]),
    dnsNames,
    uris,
    uriCount,
    signsCertificates,
  };
}

/** The elements of a certificate's tbsCertificate, and where its validity stands among them. */
function tbsCertificateParts(der: Uint8Array): { parts: Tlv[]; versioned: boolean; at: number } {
  const cert = expectTag(readTlv(der, 0, der.length), SEQUENCE, 'certificate');
  const tbs = expectTag(children(der, cert)[0], SEQUENCE, 'tbsCertificate');
  const parts = children(der, tbs);
  const versioned = parts[0]?.tag === 0xa0; // [0] EXPLICIT version, absent in version 1
  // serialNumber, signature, issuer come before the validity.
  return { parts, versioned, at: (versioned ? 1 : 0) + 3 };
}

/** The DER of a certificate's subject name, to find the CA that issued a CRL. */
export function readCertificateSubject(der: Uint8Array): Uint8Array {
  const { parts, at } = tbsCertificateParts(der);
  const subject = expectTag(parts[at + 1], SEQUENCE, 'subject');
  return der.subarray(subject.offset, subject.end);
}

/** The DER of a certificate's issuer name, to find the CRL that may revoke it. */
export function readCertificateIssuer(der: Uint8Array): Uint8Array {
  const { parts, at } = tbsCertificateParts(der);
  const issuer = expectTag(parts[at - 1], SEQUENCE, 'issuer');
  return der.subarray(issuer.offset, issuer.end);
}

/**
 * A name's DER (a certificate's issuer or subject, a CRL's issuer) as OpenSSL compares names
 * when it finds a certificate's CRL or issuer (`x509_name_canon`): each attribute's string
 * value as UTF-8, trimmed, its inner runs of white space made one space, ASCII letters
 * lowercased; a value that is not a string kept as its DER. So a CA re-issued with its name in
 * UTF8String, and its CRLs, name the certificates issued under the PrintableString one.
 */
export function canonicalName(der: Uint8Array): string {
  const name = expectTag(readTlv(der, 0, der.length), SEQUENCE, 'name');
  const rdns = children(der, name).map((rdn) =>
    children(der, expectTag(rdn, SET, 'relative name'))
      .map((ava) => {
        const [type, value] = children(der, expectTag(ava, SEQUENCE, 'attribute'));
        const oidTlv = expectTag(type, OID, 'attribute type');
        const oid = Buffer.from(der.subarray(oidTlv.start, oidTlv.end)).toString('hex');
        if (value === undefined) fail('attribute value');
        const text = nameString(der, value);
        return text === undefined
          ? `${oid}#${Buffer.from(der.subarray(value.offset, value.end)).toString('hex')}`
          : `${oid}=${text
              .replace(/[\t\n\v\f\r ]+/g, ' ')
              // Not trim(), which takes a byte order mark for white space; OpenSSL does not.
              .replace(/^ | $/g, '')
              .replace(/[A-Z]+/g, (c) => c.toLowerCase())}`;
      })
      .sort(),
  );
  return JSON.stringify(rdns);
}

/**
 * `canonicalName`, or `undefined` for a name this cannot read, which matches no other name.
 *
 * @internal
 */
export function comparableName(der: Uint8Array): string | undefined {
  try {
    return canonicalName(der);
  } catch {
    return undefined;
  }
}

/**
 * A name attribute's value as text, for the string types OpenSSL compares as text
 * (`ASN1_MASK_CANON`); `undefined` for the others (NumericString among them), which it compares
 * as their DER.
 */
function nameString(der: Uint8Array, tlv: Tlv): string | undefined {
  const bytes = der.subarray(tlv.start, tlv.end);
  try {
    switch (tlv.tag) {
      case 0x14: // T61String, read as OpenSSL reads it: one byte a character
      case 0x1a: // VisibleString
        return Buffer.from(bytes).toString('latin1');
      case 0x1c: {
        // UniversalString: UTF-32BE
        if (bytes.length % 4 !== 0) return undefined;
        let out = '';
        for (let i = 0; i < bytes.length; i += 4) {
          out += String.fromCodePoint(Buffer.from(bytes.subarray(i, i + 4)).readUInt32BE(0));
        }
        return out;
      }
      default:
        return directoryString(der, tlv);
    }
  } catch {
    return undefined; // not valid in its own encoding: compared as its DER
  }
}

/** What a CRL check reads from a DER CRL (RFC 5280 5.1). */
export interface CrlFields {
  /** The DER of the issuer name. */
  readonly issuer: Uint8Array;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** The DER of tbsCertList: the bytes the signature covers. */
  readonly signed: Uint8Array;
  /** The outer signatureAlgorithm's OID, dotted (`1.2.840.10045.4.3.2`). */
  readonly signatureAlgorithm: string;
  readonly signature: Uint8Array;
  /**
   * The serial numbers the CRL revokes, as Node's `X509Certificate.serialNumber` writes a
   * certificate's: uppercase hex, no leading zero bytes.
   */
  readonly revokedSerials: readonly string[]; /** The OIDs (dotted) of the CRL's own extensions (`crlExtensions`). */
  readonly extensions: readonly string[];
}

/** Reads the issuer, the dates, the revoked serial numbers and the signature of a DER CRL. */
export function readCrlFields(der: Uint8Array): CrlFields {
  const list = expectTag(readTlv(der, 0, der.length), SEQUENCE, 'CRL');
  if (list.end !== der.length) fail('trailing bytes after the CRL');
  const [tbs, algorithm, signatureBits] = children(der, list);
  const tbsList = expectTag(tbs, SEQUENCE, 'tbsCertList');
  const parts = children(der, tbsList);
  const i = parts[0]?.tag === INTEGER ? 1 : 0; // version, present in version 2
  const issuer = expectTag(parts[i + 1], SEQUENCE, 'issuer');
  const next = parts[i + 3];
  const hasNext = next?.tag === UTC_TIME || next?.tag === GENERALIZED_TIME;
  // revokedCertificates: SEQUENCE OF SEQUENCE { userCertificate INTEGER, revocationDate, ... }.
  const revoked = parts[i + (hasNext ? 4 : 3)];
  const revokedSerials =
    revoked?.tag === SEQUENCE
      ? children(der, revoked).map((entry) =>
          serialText(der, expectTag(children(der, expectTag(entry, SEQUENCE, 'revoked entry'))[0], INTEGER, 'serial')),
        )
      : [];
  // crlExtensions: [0] EXPLICIT SEQUENCE OF Extension { extnID, critical?, extnValue }.
  const wrapper = parts.find((part) => part.tag === 0xa0);
  const extensions =
    wrapper === undefined
      ? []
      : children(der, expectTag(children(der, wrapper)[0], SEQUENCE, 'crlExtensions')).map((extension) =>
          oidText(der, expectTag(children(der, expectTag(extension, SEQUENCE, 'extension'))[0], OID, 'extnID')),
        );
  const bits = expectTag(signatureBits, BIT_STRING, 'signatureValue');
  if (bits.end - bits.start < 2 || der[bits.start] !== 0) fail('signatureValue');
  return {
    issuer: der.subarray(issuer.offset, issuer.end),
    thisUpdate: readTime(der, parts[i + 2]),
    nextUpdate: hasNext ? readTime(der, next) : undefined,
    signed: der.subarray(tbsList.offset, tbsList.end),
    signatureAlgorithm: oidText(
      der,
      expectTag(children(der, expectTag(algorithm, SEQUENCE, 'algorithm'))[0], OID, 'algorithm'),
    ),
    signature: der.subarray(bits.start + 1, bits.end),
    revokedSerials,
    extensions,
  };
}

/** An INTEGER's content as Node writes a serial number: uppercase hex without leading zero bytes. */
function serialText(der: Uint8Array, tlv: Tlv): string {
  let start = tlv.start;
  while (start < tlv.end - 1 && der[start] === 0) start += 1;
  return Buffer.from(der.subarray(start, tlv.end)).toString('hex').toUpperCase();
}

/** An OID's content bytes as dotted text. */
function oidText(der: Uint8Array, tlv: Tlv): string {
  const arcs: number[] = [];
  let value = 0;
  for (let i = tlv.start; i < tlv.end; i++) {
    const byte = der[i] ?? 0;
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) fail('OID arc too large');
    if ((byte & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else arcs.push(value);
      value = 0;
    }
  }
  if (value !== 0 || arcs.length === 0) fail('OID');
  return arcs.join('.');
}

function isVersion3(der: Uint8Array, wrapper: Tlv | undefined): boolean {
  if (wrapper === undefined) return false;
  const version = expectTag(children(der, wrapper)[0], INTEGER, 'version');
  return contentEquals(der, version, [0x02]);
}

/** basicConstraints: SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }. */
function basicConstraintsCa(der: Uint8Array, value: Tlv): boolean {
  const constraints = expectTag(readTlv(der, value.start, value.end), SEQUENCE, 'basicConstraints');
  const first = children(der, constraints)[0];
  // Any byte but 0 is true in BER; read leniently, the certificate counts as a CA.
  return first?.tag === BOOLEAN && first.end > first.start && der[first.start] !== 0;
}

/** keyUsage: a BIT STRING whose first content byte counts the unused bits of the last. */
function keyUsageSignsOthers(der: Uint8Array, value: Tlv): boolean {
  const bits = expectTag(readTlv(der, value.start, value.end), BIT_STRING, 'keyUsage');
  return bits.end - bits.start >= 2 && ((der[bits.start + 1] ?? 0) & KEY_USAGE_SIGNS_OTHERS) !== 0;
}
