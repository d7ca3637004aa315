import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '@fluxguard/core/dev-pki';

/** A client certificate and key, as a client loads them. */
export interface ClientCredential {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly fingerprint256: string;
  /** Lowercase hex, as a CRL lists it. */
  readonly serialNumber: string;
}

/** Every certificate the end-to-end rows need, written under one directory. */
export interface TestPki {
  readonly ca: Buffer;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** A CRL of the CA revoking `clients.revoked`. */
  readonly crlFile: string;
  readonly clients: {
    /** `spiffe://fluxguard.dev/client`, the development client. */
    readonly valid: ClientCredential;
    /** `spiffe://fluxguard.dev/backup`: the policy maps it to `artifacts.reader` without a token. */
    readonly backup: ClientCredential;
    /** The backup SPIFFE ID beside a second URI that holds a NUL: no SPIFFE ID at all. */
    readonly backupBesideHiddenUri: ClientCredential;
    /** A SPIFFE ID of another trust domain, signed by our CA. */
    readonly foreignSpiffe: ClientCredential;
    readonly expired: ClientCredential;
    readonly notYetValid: ClientCredential;
    /** Signed by another CA that presents the same SPIFFE ID. */
    readonly otherCa: ClientCredential;
    /** Listed in the CRL. */
    readonly revoked: ClientCredential;
  };
  /** Issues a new server certificate, writes it over the served files, and returns its fingerprint. */
  replaceServerCertificate(): Promise<string>;
  /** Writes a new CRL over the served one that revokes `client` too, as a CA publishing one would. */
  revoke(client: keyof TestPki['clients']): Promise<void>;
  readonly serverFingerprint256: string;
}

function credential(issued: IssuedCertificate): ClientCredential {
  return {
    cert: Buffer.from(issued.certPem),
    key: Buffer.from(issued.keyPem),
    fingerprint256: issued.fingerprint256,
    serialNumber: issued.serialNumber,
  };
}

function writeServer(dir: string, issued: IssuedCertificate): void {
  // Key first, then certificate, as a renewal tool would; the watcher waits for both to settle.
  writeFileSync(join(dir, 'server.key.next'), issued.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, 'server.crt.next'), issued.certPem);
  // A rename replaces a file atomically, as real rotation tools do.
  renameSync(join(dir, 'server.key.next'), join(dir, 'server.key'));
  renameSync(join(dir, 'server.crt.next'), join(dir, 'server.crt'));
}

/** Creates the test PKI under `dir`. */
export async function createTestPki(dir: string): Promise<TestPki> {
  const ca: DevCertificateAuthority = await createDevCertificateAuthority({ commonName: 'fluxguard e2e CA' });
  const other = await createDevCertificateAuthority({ commonName: 'attacker CA' });
  const server = await ca.issueServerCertificate();
  const revoked = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' });
  const clients = {
    valid: credential(await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' })),
    backup: credential(await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/backup' })),
    backupBesideHiddenUri: credential(
      await ca.issueClientCertificate({
        spiffeId: 'spiffe://fluxguard.dev/backup',
        uris: ['spiffe://other.example/x\u0000'],
      }),
    ),
    foreignSpiffe: credential(await ca.issueClientCertificate({ spiffeId: 'spiffe://evil.example/client' })),
    expired: credential(
      await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client', validity: 'expired' }),
    ),
    notYetValid: credential(
      await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client', validity: 'not-yet-valid' }),
    ),
    otherCa: credential(await other.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' })),
    revoked: credential(revoked),
  };
  const revokedSerialNumbers = [revoked.serialNumber];
  const caFile = join(dir, 'ca.crt');
  const crlFile = join(dir, 'ca.crl');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(crlFile, await ca.createCrl({ revokedSerialNumbers }));
  writeServer(dir, server);
  return {
    ca: Buffer.from(ca.certPem),
    caFile,
    serverCertFile: join(dir, 'server.crt'),
    serverKeyFile: join(dir, 'server.key'),
    crlFile,
    clients,
    serverFingerprint256: server.fingerprint256,
    replaceServerCertificate: async () => {
      const next = await ca.issueServerCertificate();
      writeServer(dir, next);
      return next.fingerprint256;
    },
    revoke: async (client) => {
      revokedSerialNumbers.push(clients[client].serialNumber);
      writeFileSync(`${crlFile}.next`, await ca.createCrl({ revokedSerialNumbers }));
      renameSync(`${crlFile}.next`, crlFile);
    },
  };
}
