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
import { run } from '../testing/handshake.js';
import { createTrustRecheck } from './trust-recheck.js';

let dir: string;
let root: DevCertificateAuthority;
let other: DevCertificateAuthority;
let client: IssuedCertificate;
let server: Server;
/**
 * A client certificate issued by an intermediate CA, with the intermediate; the root above it
 * (made with openssl: the development CA allows no intermediate), and its CRLs: one empty, one
 * revoking the intermediate. And the root re-issued with the same key under its name in capitals
 * and as a PrintableString (`rootRenamed`, where the first is a UTF8String), with CRLs of its own
 * (the same name to OpenSSL, other bytes).
 */
let chained: {
  certPem: string;
  leafPem: string;
  keyPem: string;
  intermediate: string;
  root: string;
  emptyCrl: Buffer;
  revokingCrl: Buffer;
  rootRenamed: string;
  renamedEmptyCrl: Buffer;
  renamedRevokingCrl: Buffer;
};
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
  file('root.ext', 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
  file('index.txt', '');
  file('crlnumber', '01\n');
  file(
    'ca.cnf',
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${file('index.txt')}\ncrlnumber = ${file('crlnumber')}\ndefault_md = sha256\ndefault_crl_days = 1\n`,
  );
  file('int.ext', 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
  file(
    'leaf.ext',
    'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://fluxguard.dev/chained\n',
  );
  const key = (name: string) =>
    run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file(name)]);
  const sign = (csr: string, ca: string, caKey: string, ext: string, out: string) =>
    run('openssl', [
      'x509',
      '-req',
      '-in',
      file(csr),
      '-CA',
      file(ca),
      '-CAkey',
      file(caKey),
      '-set_serial',
      String(Date.now()),
      '-days',
      '1',
      '-extfile',
      file(ext),
      '-out',
      file(out),
    ]);
  await key('root.key');
  await run('openssl', [
    'req',
    '-new',
    '-x509',
    '-key',
    file('root.key'),
    '-subj',
    '/CN=recheck chain root',
    '-days',
    '1',
    '-extensions',
    'v3',
    '-config',
    file(
      'root.cnf',
      '[req]\ndistinguished_name = n\n[n]\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n',
    ),
    '-out',
    file('root.crt'),
  ]);
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
  await sign('int.csr', 'root.crt', 'root.key', 'int.ext', 'int.crt');
  await key('leaf.key');
  await run('openssl', ['req', '-new', '-key', file('leaf.key'), '-subj', '/CN=chained', '-out', file('leaf.csr')]);
  await sign('leaf.csr', 'int.crt', 'int.key', 'leaf.ext', 'leaf.crt');
  const openCa = ['ca', '-config', file('ca.cnf'), '-cert', file('root.crt'), '-keyfile', file('root.key')];
  await run('openssl', [...openCa, '-gencrl', '-out', file('empty.crl')]);
  await run('openssl', [...openCa, '-revoke', file('int.crt')]);
  await run('openssl', [...openCa, '-gencrl', '-out', file('revoking.crl')]);
  await run('openssl', [
    'req',
    '-new',
    '-x509',
    '-key',
    file('root.key'),
    '-subj',
    '/CN=RECHECK  Chain Root',
    '-days',
    '1',
    '-extensions',
    'v3',
    '-config',
    file(
      'renamed.cnf',
      '[req]\ndistinguished_name = n\nstring_mask = default\n[n]\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n',
    ),
    '-out',
    file('renamed.crt'),
  ]);
  file('renamed-index.txt', '');
  file('renamed-crlnumber', '01\n');
  file(
    'renamed-ca.cnf',
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${file('renamed-index.txt')}\ncrlnumber = ${file('renamed-crlnumber')}\ndefault_md = sha256\ndefault_crl_days = 1\n`,
  );
  const renamedCa = [
    'ca',
    '-config',
    file('renamed-ca.cnf'),
    '-cert',
    file('renamed.crt'),
    '-keyfile',
    file('root.key'),
  ];
  await run('openssl', [...renamedCa, '-gencrl', '-out', file('renamed-empty.crl')]);
  await run('openssl', [...renamedCa, '-revoke', file('int.crt')]);
  await run('openssl', [...renamedCa, '-gencrl', '-out', file('renamed-revoking.crl')]);
  chained = {
    certPem: readFileSync(file('leaf.crt'), 'latin1') + readFileSync(file('int.crt'), 'latin1'),
    leafPem: readFileSync(file('leaf.crt'), 'latin1'),
    keyPem: readFileSync(file('leaf.key'), 'latin1'),
    intermediate: readFileSync(file('int.crt'), 'latin1'),
    root: readFileSync(file('root.crt'), 'latin1'),
    emptyCrl: readFileSync(file('empty.crl')),
    revokingCrl: readFileSync(file('revoking.crl')),
    rootRenamed: readFileSync(file('renamed.crt'), 'latin1'),
    renamedEmptyCrl: readFileSync(file('renamed-empty.crl')),
    renamedRevokingCrl: readFileSync(file('renamed-revoking.crl')),
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
    expect(createTrustRecheck({ ca: ca(root.certPem + other.certPem), crl: elsewhere })(socket)).toBe(true);
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
    // client of an intermediate CA cannot be rechecked, and is cut (it handshakes again).
    const shown = socket.getPeerCertificate(true) as Partial<DetailedPeerCertificate>;
    const chainShown = shown.issuerCertificate !== undefined;
    // Node 20, the default runtime, shows it: the chain-following path is tested there.
    if (process.versions.node.startsWith('20.')) expect(chainShown).toBe(true);
    expect(createTrustRecheck({ ca: chainRoot, crl: undefined })(socket)).toBe(chainShown);
    expect(createTrustRecheck({ ca: chainRoot, crl: chained.emptyCrl })(socket)).toBe(chainShown);
    expect(createTrustRecheck({ ca: chainRoot, crl: chained.revokingCrl })(socket)).toBe(false);
    expect(createTrustRecheck({ ca: ca(other.certPem), crl: undefined })(socket)).toBe(false);
  });

  it('refuses the clients of an intermediate of the bundle that a CRL of the root revokes', async () => {
    // OpenSSL checks every certificate of the chain it builds, the bundle's intermediates
    // included: a new handshake of these clients fails. The recheck stopped at the first CA of
    // the bundle, so their open connections kept their calls.
    const bundle = ca(chained.root + chained.intermediate);
    for (const sent of [{ certPem: chained.leafPem, keyPem: chained.keyPem }, chained]) {
      const socket = await serverSocketFor(sent);
      expect(socket.authorized).toBe(true);
      expect(createTrustRecheck({ ca: bundle, crl: chained.emptyCrl })(socket)).toBe(true);
      expect(createTrustRecheck({ ca: bundle, crl: chained.revokingCrl })(socket)).toBe(false);
    }
  });

  it('reads the names of CRLs as OpenSSL does: another string type, case or spacing is the same name', async () => {
    const socket = await serverSocketFor(chained);
    const shown = socket.getPeerCertificate(true) as Partial<DetailedPeerCertificate>;
    const chainShown = shown.issuerCertificate !== undefined;
    const renamed = ca(chained.rootRenamed);
    expect(createTrustRecheck({ ca: renamed, crl: chained.renamedEmptyCrl })(socket)).toBe(chainShown);
    // Its issuer name and the CRL's differ in bytes: compared as bytes, it was not revoked.
    expect(createTrustRecheck({ ca: renamed, crl: chained.renamedRevokingCrl })(socket)).toBe(false);
    expect(createTrustRecheck({ ca: ca(chained.root), crl: chained.renamedRevokingCrl })(socket)).toBe(false);
  });

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
