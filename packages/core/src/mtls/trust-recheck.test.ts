// After a reload changes the CA bundle or the CRLs, each open connection's client certificate is
// checked again: a revoked one (or one no CA of the bundle issues any more) has its connection
// cut, calls and all. Real handshakes: the chain is what a TLS socket reports of its peer.
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type DetailedPeerCertificate, type Server, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '../dev-pki/dev-pki.js';
import { run } from '@fluxguard/test-support/commands';
import { createTrustRecheck } from './trust-recheck.js';

let dir: string;
let root: DevCertificateAuthority;
let other: DevCertificateAuthority;
let client: IssuedCertificate;
let server: Server;
/**
 * A client certificate issued by an intermediate CA, with the intermediate; the root above it
 * (made with openssl: the development CA allows no intermediate), and CRLs (PEM) of each:
 * - `rootCrl`: the root's, empty; `revokingCrl`: the root's, revoking the intermediate;
 *   `laterCrl`: the root's, empty, issued after `revokingCrl` (the intermediate's revocation
 *   lifted); `intCrl`: the intermediate's, empty;
 * - `renamed`: the root re-issued with the same key under its name in capitals and as a
 *   PrintableString (the first is a UTF8String), with its CRLs `renamedCrl` (empty) and
 *   `renamedRevokingCrl`: the same name to OpenSSL, other bytes;
 * - `twin`: another root of the same name with a key of its own, and its CRL revoking a
 *   certificate of the intermediate's serial number (`twinRevokingCrl`);
 * - `crossExpired`: the intermediate (its name and key) cross-signed by `root2`, expired;
 *   `root2Crl`, empty; `intExpired`: the intermediate re-issued by the root, expired;
 * - `futureCrl`: the root's, empty, valid only from four minutes on (within what the loader
 *   allows a CA's clock).
 */
let chained: Record<
  | 'certPem'
  | 'leafPem'
  | 'keyPem'
  | 'intermediate'
  | 'root'
  | 'renamed'
  | 'twin'
  | 'root2'
  | 'crossExpired'
  | 'intExpired',
  string
> &
  Record<
    | 'rootCrl'
    | 'revokingCrl'
    | 'laterCrl'
    | 'futureCrl'
    | 'intCrl'
    | 'renamedCrl'
    | 'renamedRevokingCrl'
    | 'twinRevokingCrl'
    | 'root2Crl',
    Buffer
  >;
const sockets: TLSSocket[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-recheck-'));
  root = await createDevCertificateAuthority({ commonName: 'recheck root' });
  other = await createDevCertificateAuthority({ commonName: 'recheck other' });
  client = await root.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  const file = (name: string, text?: string) => {
    const path = join(dir, name);
    if (text !== undefined) writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  const caExt = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n';
  file('int.ext', caExt);
  file(
    'leaf.ext',
    'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://fluxguard.dev/chained\n',
  );
  const key = (name: string) =>
    run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file(name)]);
  const selfSigned = (keyFile: string, subject: string, out: string, stringMask = '') =>
    run('openssl', [
      ...['req', '-new', '-x509', '-key', file(keyFile), '-subj', subject, '-days', '1', '-extensions', 'v3'],
      '-config',
      file(`${out}.cnf`, `[req]\ndistinguished_name = n\n${stringMask}[n]\n[v3]\n${caExt}`),
      '-out',
      file(out),
    ]);
  // An `openssl ca` database for one CA: its CRLs, its revocations, and certificates it issues
  // with chosen dates.
  const authority = (name: string, cert: string, caKey: string) => {
    file(`${name}-index.txt`, '');
    file(`${name}-crlnumber`, '01\n');
    file(`${name}-serial`, '1000\n');
    const config = file(
      `${name}-ca.cnf`,
      `[ca]\ndefault_ca = d\n[d]\ndatabase = ${file(`${name}-index.txt`)}\ncrlnumber = ${file(`${name}-crlnumber`)}\n` +
        `serial = ${file(`${name}-serial`)}\nnew_certs_dir = ${dir}\ndefault_md = sha256\ndefault_crl_days = 1\n` +
        `policy = p\nunique_subject = no\ncrl_extensions = crl_ext\n[p]\ncommonName = supplied\n` +
        // Its key's id in each CRL, as RFC 5280 asks: without it OpenSSL cannot tell the CRLs of
        // two CAs of one name apart but by trying them, in an order of its own.
        `[crl_ext]\nauthorityKeyIdentifier = keyid:always\n`,
    );
    const ca = ['ca', '-batch', '-config', config, '-cert', file(cert), '-keyfile', file(caKey)];
    return {
      crl: (out: string, ...extra: string[]) => run('openssl', [...ca, '-gencrl', ...extra, '-out', file(out)]),
      revoke: (certFile: string) => run('openssl', [...ca, '-revoke', file(certFile)]),
      issue: (csr: string, ext: string, out: string, start: string, end: string) =>
        run('openssl', [
          ...ca,
          '-in',
          file(csr),
          '-extfile',
          file(ext),
          '-startdate',
          start,
          '-enddate',
          end,
          '-out',
          file(out),
        ]),
    };
  };
  const sign = (csr: string, ca: string, caKey: string, ext: string, out: string, serial = String(Date.now())) =>
    run('openssl', [
      ...['x509', '-req', '-in', file(csr), '-CA', file(ca), '-CAkey', file(caKey), '-set_serial', serial],
      ...['-days', '1', '-extfile', file(ext), '-out', file(out)],
    ]);
  await key('root.key');
  await selfSigned('root.key', '/CN=recheck chain root', 'root.crt');
  await key('int.key');
  await run('openssl', [
    'req',
    '-new',
    '-key',
    file('int.key'),
    '-subj',
    '/CN=recheck intermediate',
    '-out',
    file('int.csr'),
  ]);
  await sign('int.csr', 'root.crt', 'root.key', 'int.ext', 'int.crt', '4242');
  await key('leaf.key');
  await run('openssl', ['req', '-new', '-key', file('leaf.key'), '-subj', '/CN=chained', '-out', file('leaf.csr')]);
  await sign('leaf.csr', 'int.crt', 'int.key', 'leaf.ext', 'leaf.crt');
  const rootCa = authority('root', 'root.crt', 'root.key');
  await rootCa.crl('root.crl');
  await rootCa.revoke('int.crt');
  // Issued an hour ago, so that the root's CRL issued now without the revocation is newer: the
  // CRL OpenSSL keeps (a CRL issued later than now would not be valid yet).
  const hourAgo = new Date(Date.now() - 3_600_000).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  await rootCa.crl('revoking.crl', '-crl_lastupdate', hourAgo);
  const rootLater = authority('root-later', 'root.crt', 'root.key');
  await rootLater.crl('later.crl');
  const inMinutes = new Date(Date.now() + 240_000).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  await rootLater.crl('future.crl', '-crl_lastupdate', inMinutes);
  await rootLater.issue('int.csr', 'int.ext', 'int-expired.crt', '200101000000Z', '200201000000Z');
  await authority('int', 'int.crt', 'int.key').crl('int.crl');
  await selfSigned('root.key', '/CN=RECHECK  Chain Root', 'renamed.crt', 'string_mask = default\n');
  const renamedCa = authority('renamed', 'renamed.crt', 'root.key');
  await renamedCa.crl('renamed.crl');
  await renamedCa.revoke('int.crt');
  await renamedCa.crl('renamed-revoking.crl');
  await key('twin.key');
  await selfSigned('twin.key', '/CN=recheck chain root', 'twin.crt');
  await key('other-int.key');
  await run('openssl', [
    'req',
    '-new',
    '-key',
    file('other-int.key'),
    '-subj',
    '/CN=twin issued',
    '-out',
    file('other-int.csr'),
  ]);
  await sign('other-int.csr', 'twin.crt', 'twin.key', 'int.ext', 'twin-issued.crt', '4242');
  const twinCa = authority('twin', 'twin.crt', 'twin.key');
  await twinCa.revoke('twin-issued.crt');
  await twinCa.crl('twin-revoking.crl');
  await key('root2.key');
  await selfSigned('root2.key', '/CN=recheck second root', 'root2.crt');
  const root2Ca = authority('root2', 'root2.crt', 'root2.key');
  await root2Ca.issue('int.csr', 'int.ext', 'cross-expired.crt', '200101000000Z', '200201000000Z');
  await root2Ca.crl('root2.crl');
  const pem = (name: string) => readFileSync(file(name), 'latin1');
  chained = {
    certPem: pem('leaf.crt') + pem('int.crt'),
    leafPem: pem('leaf.crt'),
    keyPem: pem('leaf.key'),
    intermediate: pem('int.crt'),
    root: pem('root.crt'),
    renamed: pem('renamed.crt'),
    twin: pem('twin.crt'),
    root2: pem('root2.crt'),
    crossExpired: pem('cross-expired.crt'),
    intExpired: pem('int-expired.crt'),
    rootCrl: readFileSync(file('root.crl')),
    revokingCrl: readFileSync(file('revoking.crl')),
    laterCrl: readFileSync(file('later.crl')),
    futureCrl: readFileSync(file('future.crl')),
    intCrl: readFileSync(file('int.crl')),
    renamedCrl: readFileSync(file('renamed.crl')),
    renamedRevokingCrl: readFileSync(file('renamed-revoking.crl')),
    twinRevokingCrl: readFileSync(file('twin-revoking.crl')),
    root2Crl: readFileSync(file('root2.crl')),
  };
  const serverCert = await root.issueServerCertificate();
  // Verification is this test's subject, not the handshake's: every client gets through.
  server = createServer(
    {
      key: serverCert.keyPem,
      cert: serverCert.certPem,
      // The intermediate too: a client that sends only its leaf is verified through it.
      ca: [root.certPem, chained.root, chained.intermediate],
      requestCert: true,
      rejectUnauthorized: false,
    },
    (socket) => {
      socket.on('error', () => undefined);
      sockets.push(socket);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

/** The server's side of a connection made with `cert`. */
async function serverSocketFor(cert?: { certPem: string; keyPem: string }): Promise<TLSSocket> {
  const before = sockets.length;
  const socket = connect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    ca: root.certPem,
    servername: 'localhost',
    ...(cert === undefined ? {} : { cert: cert.certPem, key: cert.keyPem }),
  });
  socket.on('error', () => undefined);
  await once(socket, 'secureConnect');
  await expect.poll(() => sockets.length).toBe(before + 1);
  const accepted = sockets[before];
  if (accepted === undefined) throw new Error('the server saw no connection');
  return accepted;
}

/** Whether a new handshake with `sent` gets through a server holding `bundle` and `crls`. */
async function handshakeVerdict(
  bundle: Buffer,
  crls: readonly Buffer[],
  sent: { certPem: string; keyPem: string },
): Promise<boolean> {
  const serverCert = await root.issueServerCertificate();
  const verdict = createServer({
    key: serverCert.keyPem,
    cert: serverCert.certPem,
    ca: bundle,
    ...(crls.length === 0 ? {} : { crl: [...crls] }),
    requestCert: true,
    rejectUnauthorized: false,
  });
  try {
    const accepted = once(verdict, 'secureConnection') as Promise<[TLSSocket]>;
    await new Promise<void>((resolve) => verdict.listen(0, '127.0.0.1', resolve));
    const socket = connect({
      host: '127.0.0.1',
      port: (verdict.address() as AddressInfo).port,
      ca: root.certPem,
      servername: 'localhost',
      cert: sent.certPem,
      key: sent.keyPem,
    });
    socket.on('error', () => undefined);
    const [serverSide] = await accepted;
    socket.destroy();
    serverSide.destroy();
    return serverSide.authorized;
  } finally {
    verdict.close();
  }
}

const ca = (pem: string) => Buffer.from(pem);
const crl = async (authority: DevCertificateAuthority, serials: string[]) =>
  Buffer.from(await authority.createCrl({ revokedSerialNumbers: serials }));

describe('createTrustRecheck', () => {
  it('keeps a client whose certificate the new trust still accepts', async () => {
    const socket = await serverSocketFor(client);
    expect(createTrustRecheck({ ca: ca(root.certPem), crl: undefined })(socket)).toBe(true);
    expect(createTrustRecheck({ ca: ca(root.certPem), crl: await crl(root, []) })(socket)).toBe(true);
  });

  it('refuses a client whose certificate a new CRL of its CA revokes', async () => {
    const socket = await serverSocketFor(client);
    const revoking = await crl(root, [client.serialNumber]);
    expect(createTrustRecheck({ ca: ca(root.certPem), crl: revoking })(socket)).toBe(false);
    // The same serial number revoked by another CA is another certificate's.
    const elsewhere = await crl(other, [client.serialNumber]);
    const both = Buffer.concat([await crl(root, []), elsewhere]);
    expect(createTrustRecheck({ ca: ca(root.certPem + other.certPem), crl: both })(socket)).toBe(true);
    // With CRLs, a CA of the chain without one fails the handshake (UNABLE_TO_GET_CRL).
    expect(createTrustRecheck({ ca: ca(root.certPem + other.certPem), crl: elsewhere })(socket)).toBe(false);
  });

  it('refuses a client whose CA has left the bundle', async () => {
    const socket = await serverSocketFor(client);
    expect(createTrustRecheck({ ca: ca(other.certPem), crl: undefined })(socket)).toBe(false);
  });

  it('follows the chain a client sent: a revoked intermediate refuses its clients', async () => {
    const socket = await serverSocketFor(chained);
    expect(socket.authorized).toBe(true);
    const chainRoot = ca(chained.root);
    // Some Node releases (24.21, 26.8) no longer show a server the chain its client sent: then a
    // client of an intermediate CA not in the bundle cannot be rechecked, and is cut (it
    // handshakes again).
    const shown = socket.getPeerCertificate(true) as Partial<DetailedPeerCertificate>;
    const chainShown = shown.issuerCertificate !== undefined;
    // Node 20, the default runtime, shows it: the chain-following path is tested there.
    if (process.versions.node.startsWith('20.')) expect(chainShown).toBe(true);
    expect(createTrustRecheck({ ca: chainRoot, crl: undefined })(socket)).toBe(chainShown);
    expect(createTrustRecheck({ ca: chainRoot, crl: chained.revokingCrl })(socket)).toBe(false);
    // With CRLs an intermediate outside the bundle has none OpenSSL takes: refused either way.
    expect(createTrustRecheck({ ca: chainRoot, crl: chained.rootCrl })(socket)).toBe(false);
    expect(createTrustRecheck({ ca: ca(other.certPem), crl: undefined })(socket)).toBe(false);
  });

  // Each row: the new CA bundle and CRLs, and whether a client of the intermediate still gets
  // through. The recheck of an open connection must say what a new handshake says (checked here
  // against one, made with the same material, for the leaf sent alone and with its chain).
  // A fifth value, where given, is the recheck's own answer: it cuts where OpenSSL's choice
  // among a CA's CRLs is not one it makes (a cut client handshakes again).
  const rows: [string, () => string, () => Buffer[], boolean, boolean?][] = [
    [
      'the root and the intermediate, each with its CRL',
      () => chained.root + chained.intermediate,
      () => [chained.rootCrl, chained.intCrl],
      true,
    ],
    // OpenSSL checks every certificate of the chain, the bundle's intermediates included: the
    // recheck stopped at the first CA of the bundle, so these clients kept their calls.
    [
      'a CRL of the root revoking the intermediate of the bundle',
      () => chained.root + chained.intermediate,
      () => [chained.revokingCrl, chained.intCrl],
      false,
    ],
    [
      'no CRL for the intermediate, where there are CRLs',
      () => chained.root + chained.intermediate,
      () => [chained.rootCrl],
      false,
    ],
    // Node sets no partial-chain flag: a CA of the bundle is no anchor without its root.
    ['the intermediate without its root', () => chained.intermediate, () => [], false],
    // OpenSSL keeps the newest CRL of a CA that is valid now: a revocation lifted since is no
    // revocation to it. The recheck cuts on a serial number any CRL of the CA lists: that
    // newest CRL may be one OpenSSL passes over (not valid yet, of another scope).
    [
      'an older CRL revoking it and a newer one that does not',
      () => chained.root + chained.intermediate,
      () => [chained.revokingCrl, chained.laterCrl, chained.intCrl],
      true,
      false,
    ],
    [
      'an older CRL revoking it and a newer one not valid yet',
      () => chained.root + chained.intermediate,
      () => [chained.revokingCrl, chained.futureCrl, chained.intCrl],
      false,
    ],
    // OpenSSL takes the issuer from the bundle first: an expired copy there fails the chain.
    ['an expired copy of the intermediate in the bundle', () => chained.root + chained.intExpired, () => [], false],
    // Names compared as OpenSSL compares them: the same name in another string type and case.
    [
      'the root renamed, with its CRL',
      () => chained.renamed + chained.intermediate,
      () => [chained.renamedCrl, chained.intCrl],
      true,
    ],
    [
      'the root renamed, its CRL revoking the intermediate',
      () => chained.renamed + chained.intermediate,
      () => [chained.renamedRevokingCrl, chained.intCrl],
      false,
    ],
    [
      "the root, and the renamed root's CRL revoking the intermediate",
      () => chained.root + chained.intermediate,
      () => [chained.renamedRevokingCrl, chained.intCrl],
      false,
    ],
    // A CA of the same name with another key: its CRL lists the intermediate's serial number for
    // a certificate of its own.
    [
      'a namesake of the root revoking the same serial number',
      () => chained.root + chained.twin + chained.intermediate,
      () => [chained.rootCrl, chained.twinRevokingCrl, chained.intCrl],
      true,
    ],
    // The intermediate's expired cross-signature listed first: OpenSSL takes the issuer valid
    // now, whose CRL revokes it.
    [
      'an expired cross-signed copy of the revoked intermediate listed first',
      () => chained.crossExpired + chained.intermediate + chained.root + chained.root2,
      () => [chained.revokingCrl, chained.intCrl, chained.root2Crl],
      false,
    ],
  ];
  for (const [name, bundle, crls, expected, recheck = expected] of rows) {
    it(`says what a new handshake says: ${name}`, async () => {
      const material = { ca: ca(bundle()), crl: crls().length === 0 ? undefined : Buffer.concat(crls()) };
      for (const sent of [{ certPem: chained.leafPem, keyPem: chained.keyPem }, chained]) {
        const socket = await serverSocketFor(sent);
        expect(socket.authorized).toBe(true);
        const chain = sent === chained ? 'with its chain' : 'alone';
        expect(await handshakeVerdict(material.ca, crls(), sent), `a new handshake, the leaf sent ${chain}`).toBe(
          expected,
        );
        expect(createTrustRecheck(material)(socket), `the recheck, the leaf sent ${chain}`).toBe(recheck);
      }
    });
  }

  it('has nothing to recheck on a connection without a verified client certificate', async () => {
    const anonymous = await serverSocketFor();
    expect(createTrustRecheck({ ca: ca(other.certPem), crl: undefined })(anonymous)).toBe(true);
    // Per-operation mode lets an unverified certificate through the handshake; it is no identity,
    // and its chain (the client's own making) is not followed.
    const stranger = await serverSocketFor(await other.issueClientCertificate({ spiffeId: 'spiffe://x/y' }));
    expect(stranger.authorized).toBe(false);
    expect(createTrustRecheck({ ca: ca(root.certPem), crl: undefined })(stranger)).toBe(true);
  });

  it('rechecks a thousand connections’ worth of chains against a long CRL without trouble', async () => {
    const socket = await serverSocketFor(client);
    const serials = Array.from({ length: 500 }, (_, i) => (i + 1).toString(16).padStart(32, '0'));
    const recheck = createTrustRecheck({
      ca: ca(root.certPem),
      crl: await crl(root, [...serials, client.serialNumber]),
    });
    for (let i = 0; i < 1000; i++) expect(recheck(socket)).toBe(false);
  });
});
