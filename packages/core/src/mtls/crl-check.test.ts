import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevCertificateAuthority, type IssuedCertificate } from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { startTlsServer, tryConnect } from '../testing/handshake.js';
import { createOpensslCa, type OpensslCa, type OpensslCaKind } from '@fluxguard/test-support/openssl-ca';
import { watchTlsMaterial } from './reload.js';
import { createTlsSettings } from './tls-settings.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let dir: string;
let server: IssuedCertificate;
const authorities = new Map<OpensslCaKind, OpensslCa>();
/** An RSA CA with the same name as the RSA CA of `authorities`, and another key. */
let impostor: OpensslCa;
/** An RSA CA of another name, not in any bundle. */
let stranger: OpensslCa;
/** The RSA CA of `authorities` re-issued with its key, its name a PrintableString. */
let renamed: OpensslCa;

const current = { lastUpdate: new Date(Date.now() - HOUR), nextUpdate: new Date(Date.now() + DAY) };

function settingsWith(ca: string, crl: string) {
  return createTlsSettings({ clientCertificates: 'strict', cert: server.certPem, key: server.keyPem, ca, crl });
}

function authority(kind: OpensslCaKind): OpensslCa {
  const ca = authorities.get(kind);
  if (ca === undefined) throw new Error(`no ${kind} CA`);
  return ca;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-crl-'));
  server = await (await createDevCertificateAuthority()).issueServerCertificate();
  for (const kind of ['rsa', 'ec', 'ed25519'] as const) {
    authorities.set(kind, await createOpensslCa(join(dir, kind), kind, `fluxguard test ${kind} CA`));
  }
  impostor = await createOpensslCa(join(dir, 'impostor'), 'rsa', 'fluxguard test rsa CA');
  stranger = await createOpensslCa(join(dir, 'stranger'), 'rsa', 'another CA');
  renamed = await createOpensslCa(join(dir, 'renamed'), 'rsa', 'fluxguard test rsa CA', {
    keyFile: authority('rsa').keyFile,
    printableName: true,
  });
}, 60_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('CRLs are checked when the TLS material is loaded', () => {
  it.each(['rsa', 'ec', 'ed25519'] as const)('accepts a current CRL signed by its CA (%s)', async (kind) => {
    const ca = authority(kind);
    expect(settingsWith(ca.certPem, await ca.crl(current)).material.crl).toBeDefined();
  });

  it.each(['rsa', 'ec', 'ed25519'] as const)('refuses a CRL past its next update (%s)', async (kind) => {
    const ca = authority(kind);
    const stale = await ca.crl({ lastUpdate: new Date(Date.now() - 8 * DAY), nextUpdate: new Date(Date.now() - DAY) });
    expect(() => settingsWith(ca.certPem, stale)).toThrow(ConfigurationError);
    expect(() => settingsWith(ca.certPem, stale)).toThrow(
      /the CRL in "crl" expired on .* \(its next update\); OpenSSL would refuse every client of its CA: publish a fresh one/,
    );
  });

  it('refuses a CRL not valid yet, beyond a few minutes of clock skew', async () => {
    const ca = authority('ec');
    const early = await ca.crl({ lastUpdate: new Date(Date.now() + DAY), nextUpdate: new Date(Date.now() + 7 * DAY) });
    expect(() => settingsWith(ca.certPem, early)).toThrow(/the CRL in "crl" is not valid before/);
    const skewed = await ca.crl({
      lastUpdate: new Date(Date.now() + 2 * 60_000),
      nextUpdate: new Date(Date.now() + DAY),
    });
    expect(settingsWith(ca.certPem, skewed).material.crl).toBeDefined();
  });

  it("refuses a CRL that names the bundle's CA but was signed by another key", async () => {
    const forged = await impostor.crl(current);
    expect(() => settingsWith(authority('rsa').certPem, forged)).toThrow(
      /the CRL in "crl" is not signed by any CA of the bundle/,
    );
  });

  it('accepts a CRL whose issuer names a re-issued CA of the bundle in another string type', async () => {
    // The CRL names the CA in a UTF8String; the bundle holds the CA re-issued with the same key
    // under a PrintableString, beside an impostor whose name has the CRL's very bytes.
    const bundle = impostor.certPem + renamed.certPem;
    const client = await renamed.issueClient('4d');
    const revoking = await authority('rsa').crl({ ...current, revoke: ['4d'] });
    // Each CA of the bundle needs its CRL: the impostor's is given too.
    expect(settingsWith(bundle, revoking + (await impostor.crl(current))).material.crl).toBeDefined();
    // OpenSSL applies it: it matches a CRL to a CA by name as compared, not by bytes.
    expect(await handshakes(bundle, client, [await authority('rsa').crl(current)])).toBe(true);
    expect(await handshakes(bundle, client, [revoking])).toBe(false);
    // The impostor's own CRL, of the same name, is still not the CA's.
    const impostorCrl = await impostor.crl(current);
    expect(() => settingsWith(renamed.certPem, impostorCrl)).toThrow(/is not signed by any CA of the bundle/);
  });

  it('refuses a CRL file without the CRL of a CA of the bundle, or cut short in one', async () => {
    // OpenSSL checks each CA of a client's chain against its CRL: without one, every client of
    // that CA was refused while the reload said it had succeeded.
    const [rsa, ec] = [authority('rsa'), authority('ec')];
    const bundle = rsa.certPem + ec.certPem;
    const both = (await rsa.crl(current)) + (await ec.crl(current));
    expect(settingsWith(bundle, both).material.crl).toBeDefined();
    const rsaOnly = await rsa.crl(current);
    expect(() => settingsWith(bundle, rsaOnly)).toThrow(
      /^createTlsSettings: "crl" holds no CRL of the CA "CN=fluxguard test ec CA" of the bundle: OpenSSL would refuse every client of that CA; give a current CRL from each CA of the bundle$/,
    );
    // A writer stopped in the second CRL: the first is whole, the second unreadable.
    expect(() => settingsWith(bundle, both.slice(0, both.length - 200))).toThrow(
      /holds no CRL of the CA "CN=fluxguard test ec CA"/,
    );
    // What OpenSSL does with such a file: a client of the CA without a CRL is refused.
    const ecClient = await ec.issueClient('5e');
    expect(await handshakes(bundle, ecClient, [await rsa.crl(current)])).toBe(false);
    expect(await handshakes(bundle, ecClient, [await rsa.crl(current), await ec.crl(current)])).toBe(true);
  });

  it('refuses a CRL of a CA that is not in the bundle', async () => {
    const foreign = await stranger.crl(current);
    expect(() => settingsWith(authority('rsa').certPem, foreign)).toThrow(/is not signed by any CA of the bundle/);
  });

  it('refuses a CRL whose signed part was changed (a revocation taken out)', async () => {
    const ca = authority('rsa');
    const revoking = await ca.crl({ ...current, revoke: ['0a'] });
    const der = Buffer.from(revoking.replace(/-----[A-Z0-9 ]+-----/g, '').replace(/\s/g, ''), 'base64');
    // The serial number 0x0a of the one entry, as DER: INTEGER, length 1, 0x0a. Changed to 0x0b.
    const at = der.indexOf(Buffer.from([0x02, 0x01, 0x0a]));
    expect(at).toBeGreaterThan(0);
    der[at + 2] = 0x0b;
    const changed = `-----BEGIN X509 CRL-----\n${der.toString('base64')}\n-----END X509 CRL-----\n`;
    expect(() => settingsWith(ca.certPem, changed)).toThrow(/is not signed by any CA of the bundle/);
  });

  it('names the CRL of a file with several, one per CA of the bundle', async () => {
    const bundle = `${authority('rsa').certPem}${authority('ec').certPem}`;
    const fresh = await authority('rsa').crl(current);
    const stale = await authority('ec').crl({
      lastUpdate: new Date(Date.now() - 8 * DAY),
      nextUpdate: new Date(Date.now() - DAY),
    });
    expect(settingsWith(bundle, fresh + (await authority('ec').crl(current))).material.crl).toBeDefined();
    expect(() => settingsWith(bundle, fresh + stale)).toThrow(/CRL 2 in "crl" expired on/);
  });

  it("refuses a delta CRL, which Node takes for a complete CRL, lifting the base CRL's revocations", async () => {
    const ca = authority('ec');
    const client = await ca.issueClient('3c');
    const base = await ca.crl({ ...current, revoke: ['3c'] });
    const delta = await ca.crl({
      lastUpdate: new Date(Date.now() - 60_000),
      nextUpdate: current.nextUpdate,
      delta: true,
    });
    expect(() => settingsWith(ca.certPem, base + delta)).toThrow(
      /CRL 2 in "crl" is a delta CRL, which Node's TLS does not apply as one/,
    );
    expect(settingsWith(ca.certPem, base).material.crl).toBeDefined();
    // Why: handed to Node as they are, the revoked client gets through with the delta on
    // OpenSSL 3.0 (Node 20); OpenSSL 3.5 (Node 24) keeps the base CRL's revocation.
    expect(await handshakes(ca, client, [base])).toBe(false);
    const withDelta = await handshakes(ca, client, [base, delta]);
    if (process.versions.openssl.startsWith('3.0.')) expect(withDelta).toBe(true);
  });

  it('is right to refuse: OpenSSL holds a stale CRL against every client of its CA', async () => {
    const ca = authority('ec');
    const client = await ca.issueClient('1f');
    const stale = await ca.crl({ lastUpdate: new Date(Date.now() - 8 * DAY), nextUpdate: new Date(Date.now() - DAY) });
    expect(await handshakes(ca, client, [await ca.crl(current)])).toBe(true);
    expect(await handshakes(ca, client, [stale])).toBe(false);
  });
});

/** Whether `client` gets through a server that Node's TLS gives `ca` and `crls` as they are. */
async function handshakes(
  ca: OpensslCa | string,
  client: { readonly certPem: string; readonly keyPem: string },
  crls: readonly string[],
): Promise<boolean> {
  const srv = await startTlsServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: typeof ca === 'string' ? ca : ca.certPem,
    crl: [...crls],
    requestCert: true,
    rejectUnauthorized: true,
  });
  try {
    const asClient = { ca: server.certPem, cert: client.certPem, key: client.keyPem, rejectUnauthorized: false };
    return (await tryConnect(srv.port, asClient)).ok;
  } finally {
    await srv.close();
  }
}

describe('CRLs are checked at a reload', () => {
  async function waitFor(condition: () => boolean | Promise<boolean>): Promise<void> {
    const start = Date.now();
    while (!(await condition())) {
      if (Date.now() - start > 5_000) throw new Error('timed out waiting');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('keeps the last good set for a stale or forged CRL, and applies the next good one', async () => {
    const ca = authority('rsa');
    const files = {
      certFile: join(dir, 'reload-server.crt'),
      keyFile: join(dir, 'reload-server.key'),
      caFile: ca.certFile,
      crlFile: join(dir, 'reload.crl'),
    };
    const replace = (file: string, contents: string): void => {
      writeFileSync(`${file}.new`, contents);
      renameSync(`${file}.new`, file);
    };
    writeFileSync(files.certFile, server.certPem);
    writeFileSync(files.keyFile, server.keyPem);
    writeFileSync(files.crlFile, await ca.crl(current));
    const client = await ca.issueClient('2e');
    const asClient = { ca: server.certPem, cert: client.certPem, key: client.keyPem, rejectUnauthorized: false };
    const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
    const srv = await startTlsServer(settings.serverOptions);
    const errors: Error[] = [];
    const watcher = watchTlsMaterial({
      ...files,
      intervalMs: 50,
      onUpdate: (material) => {
        srv.server.setSecureContext(settings.secureContextOptions(material));
      },
      onError: (err) => errors.push(err),
    });
    try {
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      replace(
        files.crlFile,
        await ca.crl({ lastUpdate: new Date(Date.now() - 8 * DAY), nextUpdate: new Date(Date.now() - DAY) }),
      );
      await waitFor(() => errors.length === 1);
      expect(errors[0]?.message).toMatch(/the CRL in "crlFile".* expired on/);
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      replace(files.crlFile, await impostor.crl({ ...current, revoke: [] }));
      await waitFor(() => errors.length === 2);
      expect(errors[1]?.message).toMatch(/the CRL in "crlFile".* is not signed by any CA of the bundle/);
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      replace(files.crlFile, await ca.crl({ ...current, revoke: ['2e'] }));
      await waitFor(async () => !(await tryConnect(srv.port, asClient)).ok);
    } finally {
      watcher.close();
      await srv.close();
    }
  });

  it('reports a CRL that passes its next update while in use, once', async () => {
    const ca = authority('ec');
    const files = {
      certFile: join(dir, 'expiring-server.crt'),
      keyFile: join(dir, 'expiring-server.key'),
      caFile: ca.certFile,
      crlFile: join(dir, 'expiring.crl'),
    };
    writeFileSync(files.certFile, server.certPem);
    writeFileSync(files.keyFile, server.keyPem);
    writeFileSync(
      files.crlFile,
      await ca.crl({ lastUpdate: current.lastUpdate, nextUpdate: new Date(Date.now() + 2_000) }),
    );
    const client = await ca.issueClient('3d');
    const asClient = { ca: server.certPem, cert: client.certPem, key: client.keyPem, rejectUnauthorized: false };
    const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
    const srv = await startTlsServer(settings.serverOptions);
    const expired: Error[] = [];
    const watcher = watchTlsMaterial({
      ...files,
      intervalMs: 50,
      onUpdate: (material) => {
        srv.server.setSecureContext(settings.secureContextOptions(material));
      },
      onError: () => undefined,
      onExpired: (err) => expired.push(err),
    });
    try {
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      expect(watcher.current.crlNextUpdate).toBeInstanceOf(Date);
      await waitFor(() => expired.length === 1);
      expect(expired[0]?.message).toMatch(
        /a CRL in "crlFile" .* passed its next update on .*; OpenSSL refuses every client of its CA until a fresh one is loaded/,
      );
      expect((await tryConnect(srv.port, asClient)).ok).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(expired).toHaveLength(1);
    } finally {
      watcher.close();
      await srv.close();
    }
  });
});
