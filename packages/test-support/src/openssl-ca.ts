// Test support: a certificate authority run by Debian's openssl binary, for CRLs with any dates
// and signature algorithm (the development PKI makes only current ECDSA ones).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './commands.js';

/** The CA's key: RSA 2048 with SHA-256, ECDSA P-384 with SHA-384, or Ed25519. */
export type OpensslCaKind = 'rsa' | 'ec' | 'ed25519';

export interface OpensslCa {
  readonly certPem: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** A CRL (PEM) of this CA with the dates given, revoking the serial numbers (hex) given. */
  crl(options: {
    readonly lastUpdate: Date;
    readonly nextUpdate: Date;
    readonly revoke?: readonly string[];
    /** Marked as a delta CRL (RFC 5280 5.2.4) of base CRL number 1. */
    readonly delta?: boolean;
  }): Promise<string>;
  /**
   * A client certificate (PEM and key) with the serial number (hex) given, named `/CN=client`,
   * and with `spiffeId` as its URI subject alternative name when given.
   */
  issueClient(
    serial: string,
    options?: { readonly spiffeId?: string },
  ): Promise<{ readonly certPem: string; readonly keyPem: string }>;
  /** An intermediate CA of the same kind issued by this one, named `/CN=<name>`. */
  issueIntermediate(name: string): Promise<OpensslCa>;
}

const KEY_ARGS: Readonly<Record<OpensslCaKind, readonly string[]>> = {
  rsa: ['-newkey', 'rsa:2048', '-sha256'],
  ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-sha384'],
  ed25519: ['-newkey', 'ed25519'],
};
/** The extensions of a client certificate, as a section of an openssl configuration. */
const CLIENT_EXTENSIONS = [
  '[client]',
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature',
  'extendedKeyUsage = clientAuth',
] as const;
const DIGEST: Readonly<Record<OpensslCaKind, string>> = { rsa: 'sha256', ec: 'sha384', ed25519: 'default' };

/** `YYYYMMDDHHMMSSZ`, as `openssl ca` takes a CRL's dates. */
function generalizedTime(date: Date): string {
  return `${date.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

async function openssl(args: readonly string[]): Promise<void> {
  const result = await run('openssl', [...args]);
  if (result.code !== 0) throw new Error(`openssl ${args[0] ?? ''} failed: ${result.stderr}`);
}

/** How `createOpensslCa` makes a CA other than with a key and name of its own. */
export interface OpensslCaOptions {
  /** The key file of another CA, to re-issue that CA (a CA of `kind`). */
  readonly keyFile?: string;
  /** The name as a PrintableString where it can be (OpenSSL's default is a UTF8String). */
  readonly printableName?: boolean;
  /** The CA that issues this one (an intermediate); else it is self-signed. */
  readonly issuer?: { readonly certFile: string; readonly keyFile: string };
}

/** Makes a self-signed CA in `dir` (created), named `/CN=<name>`. */
export async function createOpensslCa(
  dir: string,
  kind: OpensslCaKind,
  name: string,
  options: OpensslCaOptions = {},
): Promise<OpensslCa> {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, 'ca.crt');
  const keyFile = options.keyFile ?? join(dir, 'ca.key');
  const config = join(dir, 'ca.cnf');
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'crlnumber'), '01\n');
  writeFileSync(
    config,
    [
      '[ca]',
      'default_ca = ca_default',
      '[ca_default]',
      `database = ${join(dir, 'index.txt')}`,
      `crlnumber = ${join(dir, 'crlnumber')}`,
      `default_md = ${DIGEST[kind]}`,
      '[req]',
      'distinguished_name = dn',
      ...(options.printableName === true ? ['string_mask = default'] : []),
      '[dn]',
      '[v3_ca]',
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
      ...CLIENT_EXTENSIONS,
      '[delta_crl]',
      '2.5.29.27 = critical, DER:02:01:01',
    ].join('\n'),
  );
  const { issuer } = options;
  const csrFile = join(dir, 'ca.csr');
  await openssl([
    'req',
    ...(issuer === undefined ? ['-x509'] : ['-new']),
    ...(options.keyFile === undefined ? [...KEY_ARGS[kind], '-nodes', '-keyout', keyFile] : ['-key', keyFile]),
    ...(kind === 'ed25519' || options.keyFile === undefined ? [] : [`-${DIGEST[kind]}`]),
    '-subj',
    `/CN=${name}`,
    '-config',
    config,
    ...(issuer === undefined ? ['-days', '30', '-extensions', 'v3_ca', '-out', certFile] : ['-out', csrFile]),
  ]);
  if (issuer !== undefined) {
    await openssl([
      'x509',
      '-req',
      '-in',
      csrFile,
      '-CA',
      issuer.certFile,
      '-CAkey',
      issuer.keyFile,
      '-set_serial',
      '0x1a2b',
      '-days',
      '30',
      ...(kind === 'ed25519' ? [] : [`-${DIGEST[kind]}`]),
      '-extfile',
      config,
      '-extensions',
      'v3_ca',
      '-out',
      certFile,
    ]);
  }
  let crls = 0;
  let intermediates = 0;
  return {
    certPem: readFileSync(certFile, 'utf8'),
    certFile,
    keyFile,
    async crl({ lastUpdate, nextUpdate, revoke = [], delta = false }) {
      // The database `openssl ca` reads revocations from: one line per revoked serial number.
      // Its dates are UTCTime (YYMMDDHHMMSSZ).
      const utc = (date: Date): string => generalizedTime(date).slice(2);
      const expiry = utc(new Date(Date.now() + 86_400_000));
      writeFileSync(
        join(dir, 'index.txt'),
        revoke.map((serial) => `R\t${expiry}\t${utc(lastUpdate)}\t${serial.toUpperCase()}\tunknown\t/CN=x\n`).join(''),
      );
      crls += 1;
      const out = join(dir, `crl-${String(crls)}.pem`);
      await openssl([
        'ca',
        '-batch',
        '-gencrl',
        '-config',
        config,
        '-keyfile',
        keyFile,
        '-cert',
        certFile,
        '-crl_lastupdate',
        generalizedTime(lastUpdate),
        '-crl_nextupdate',
        generalizedTime(nextUpdate),
        ...(delta ? ['-crlexts', 'delta_crl'] : []),
        '-out',
        out,
      ]);
      return readFileSync(out, 'utf8');
    },
    issueIntermediate: (intermediateName) =>
      createOpensslCa(join(dir, `intermediate-${String(++intermediates)}`), kind, intermediateName, {
        issuer: { certFile, keyFile },
      }),
    async issueClient(serial, { spiffeId } = {}) {
      const key = join(dir, `client-${serial}.key`);
      const csr = join(dir, `client-${serial}.csr`);
      const cert = join(dir, `client-${serial}.crt`);
      await openssl([
        'req',
        '-new',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        key,
        '-subj',
        '/CN=client',
        '-out',
        csr,
      ]);
      await openssl([
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        certFile,
        '-CAkey',
        keyFile,
        '-set_serial',
        `0x${serial}`,
        '-days',
        '1',
        ...(kind === 'ed25519' ? [] : [`-${DIGEST[kind]}`]),
        '-extfile',
        spiffeId === undefined ? config : clientExtensions(join(dir, `client-${serial}.cnf`), spiffeId),
        '-extensions',
        'client',
        '-out',
        cert,
      ]);
      return { certPem: readFileSync(cert, 'utf8'), keyPem: readFileSync(key, 'utf8') };
    },
  };
}

/** An extension file for a client certificate that names `spiffeId`; returns its path. */
function clientExtensions(file: string, spiffeId: string): string {
  writeFileSync(file, [...CLIENT_EXTENSIONS, `subjectAltName = URI:${spiffeId}`].join('\n'));
  return file;
}
