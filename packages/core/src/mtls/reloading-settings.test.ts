import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SecureContextOptions } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuditLogger, type AuditLogger } from '../audit/audit-logger.js';
import { createDevCertificateAuthority, type DevCertificateAuthority } from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { startTlsServer, tryConnect } from '../testing/handshake.js';
import type { TlsMaterial } from './material.js';
import { createReloadingTlsSettings, type ReloadingTlsSettings } from './reloading-settings.js';
import { createTlsSettings, TLS_CIPHERS, TLS_ECDH_CURVES } from './tls-settings.js';

type Issued = Awaited<ReturnType<DevCertificateAuthority['issueServerCertificate']>>;

let dir: string;
let ca: DevCertificateAuthority;
let client: Issued;
let first: Issued;
let files: { certFile: string; keyFile: string; caFile: string; crlFile: string };

/** Renews a file as certificate tools do: written aside, then renamed into place. */
async function renew(file: string, contents: string): Promise<void> {
  await writeFile(`${file}.new`, contents, { mode: 0o600 });
  await rename(`${file}.new`, file);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** An audit logger whose events the test reads back. */
function captureAudit(): { audit: AuditLogger; events: () => string[] } {
  const raw: string[] = [];
  const audit = createAuditLogger({ destination: { write: (line: string) => raw.push(line) } });
  const events = (): string[] =>
    raw.map((line) => (JSON.parse(line) as { event?: unknown }).event).filter((e) => typeof e === 'string');
  return { audit, events };
}

interface Update {
  readonly contextOptions: SecureContextOptions;
  readonly material: TlsMaterial;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fluxguard-reloading-'));
  ca = await createDevCertificateAuthority();
  [client, first] = await Promise.all([
    ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/client' }),
    ca.issueServerCertificate(),
  ]);
  files = {
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
    crlFile: join(dir, 'ca.crl'),
  };
  const crl = await ca.createCrl({ revokedSerialNumbers: [] });
  for (const [file, contents] of [
    [files.caFile, ca.certPem],
    [files.crlFile, crl],
    [files.certFile, first.certPem],
    [files.keyFile, first.keyPem],
  ] as const) {
    await renew(file, contents);
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('createReloadingTlsSettings: when to reload', () => {
  const { audit } = captureAudit();
  const onUpdate = (): void => undefined;

  it('reloads by default when the TLS options name files, and not when told not to', () => {
    const tls = createReloadingTlsSettings({ ...files, clientCertificates: 'strict' }, { audit, onUpdate });
    try {
      expect(tls.reloading).toBe(true);
      expect(tls.current.certFingerprint256).toBe(first.fingerprint256);
      expect(tls.settings.clientCertificates).toBe('strict');
    } finally {
      tls.close();
      tls.close(); // idempotent
    }
    const fixed = createReloadingTlsSettings(
      { ...files, clientCertificates: 'strict' },
      { audit, onUpdate, reload: false },
    );
    expect(fixed.reloading).toBe(false);
    expect(fixed.current).toBe(fixed.settings.material);
    fixed.close();
  });

  it('does not reload inline PEM or built settings, and refuses to be asked to', () => {
    const inline = { cert: first.certPem, key: first.keyPem, ca: ca.certPem, clientCertificates: 'strict' } as const;
    const pem = createReloadingTlsSettings(inline, { audit, onUpdate });
    expect(pem.reloading).toBe(false);
    const built = createTlsSettings(inline);
    const given = createReloadingTlsSettings(built, { audit, onUpdate });
    expect(given.settings).toBe(built);
    expect(given.reloading).toBe(false);

    expect(() => createReloadingTlsSettings(inline, { audit, onUpdate, reload: true })).toThrow(
      /"reload" needs the TLS options to name files/,
    );
    expect(() =>
      createReloadingTlsSettings(built, { audit, onUpdate, reload: true, where: 'createSecureServer' }),
    ).toThrow(/^createSecureServer: "reload" needs/);
    // Read by nothing: there is nothing to reload.
    expect(() => createReloadingTlsSettings(inline, { audit, onUpdate, reloadIntervalMs: 500 })).toThrow(
      /"reloadIntervalMs" is read only while files are reloaded, and they are not/,
    );
    expect(() =>
      createReloadingTlsSettings(
        { ...files, clientCertificates: 'strict' },
        { audit, onUpdate, reload: false, reloadIntervalMs: 500 },
      ),
    ).toThrow(/"reloadIntervalMs" is read only while files are reloaded/);
  });

  it('refuses material named partly as files and partly as contents, whose files would never be reloaded', () => {
    const mixed = {
      certFile: files.certFile,
      keyFile: files.keyFile,
      ca: ca.certPem,
      clientCertificates: 'strict',
    } as const;
    expect(() => createReloadingTlsSettings(mixed, { audit, onUpdate })).toThrow(
      /some TLS material is named as files and some given as contents, so the files would never be reloaded/,
    );
    const fixed = createReloadingTlsSettings(mixed, { audit, onUpdate, reload: false });
    expect(fixed.reloading).toBe(false);
    fixed.close();
  });

  it('validates its options', () => {
    const tls = { ...files, clientCertificates: 'strict' } as const;
    expect(() => createReloadingTlsSettings(tls, { onUpdate } as never)).toThrow(/"audit"/);
    expect(() => createReloadingTlsSettings(tls, { audit } as never)).toThrow(/"onUpdate"/);
    expect(() => createReloadingTlsSettings(tls, { audit, onUpdate, reload: 'yes' as never })).toThrow(/"reload"/);
    expect(() => createReloadingTlsSettings(tls, { audit, onUpdate, reloadIntervalMs: 5 })).toThrow(
      /"reloadIntervalMs" must be/,
    );
    expect(() => createReloadingTlsSettings(tls, { audit, onUpdate, reloadIntervalMs: 2 ** 31 })).toThrow(
      /"reloadIntervalMs" must be a number of milliseconds, from 20 to 2147483647/,
    );
    expect(() => createReloadingTlsSettings(tls, { audit, onUpdate, watch: true } as never)).toThrow(
      /unknown option "watch"/,
    );
    expect(() => createReloadingTlsSettings(undefined as never, { audit, onUpdate })).toThrow(/TLS options/);
    // Left out from plain JavaScript: named, rather than a TypeError from inside.
    for (const options of [undefined, null, 5]) {
      expect(() => createReloadingTlsSettings(tls, options as never)).toThrow(
        'createReloadingTlsSettings: options must be an object with "audit" and "onUpdate"',
      );
    }
    expect(() =>
      createReloadingTlsSettings({ ...tls, keyFile: join(dir, 'missing.key') }, { audit, onUpdate }),
    ).toThrow(ConfigurationError);
  });
});

describe('createReloadingTlsSettings with a real server', () => {
  const { audit, events } = captureAudit();
  const updates: Update[] = [];
  let tls: ReloadingTlsSettings;
  let srv: Awaited<ReturnType<typeof startTlsServer>>;
  let failNext = false;
  const asClient = () => ({ ca: ca.certPem, cert: client.certPem, key: client.keyPem });

  beforeAll(async () => {
    tls = createReloadingTlsSettings(
      { ...files, clientCertificates: 'strict', minVersion: 'TLSv1.3' },
      {
        audit,
        reloadIntervalMs: 50,
        onUpdate: (contextOptions, material) => {
          if (failNext) {
            failNext = false;
            throw new Error('the transport refused the context');
          }
          updates.push({ contextOptions, material });
          srv.server.setSecureContext(contextOptions);
        },
      },
    );
    srv = await startTlsServer({ ...tls.settings.serverOptions, ...tls.settings.secureContextOptions(tls.current) });
  });

  afterAll(async () => {
    tls.close();
    await srv.close();
  });

  it('hands complete context options to onUpdate after a renewal, and logs tls.reloaded', async () => {
    expect(await tryConnect(srv.port, asClient())).toMatchObject({
      ok: true,
      serverFingerprint256: first.fingerprint256,
    });

    const second = await ca.issueServerCertificate();
    await renew(files.keyFile, second.keyPem);
    await renew(files.certFile, second.certPem);
    await vi.waitFor(() => {
      expect(updates).toHaveLength(1);
    });

    const [update] = updates;
    expect(update?.material.certFingerprint256).toBe(second.fingerprint256);
    expect(update?.contextOptions).toMatchObject({
      minVersion: 'TLSv1.3',
      ciphers: TLS_CIPHERS,
      honorCipherOrder: true,
      ecdhCurve: TLS_ECDH_CURVES,
      cert: Buffer.from(second.certPem),
      ca: Buffer.from(ca.certPem),
    });
    expect(update?.contextOptions.key).toBeInstanceOf(Buffer);
    expect((update?.contextOptions.crl as unknown[] | undefined)?.[0]).toBeInstanceOf(Buffer);
    expect(tls.current.certFingerprint256).toBe(second.fingerprint256);
    expect(events()).toContain('tls.reloaded');
    expect(await tryConnect(srv.port, asClient())).toMatchObject({
      ok: true,
      serverFingerprint256: second.fingerprint256,
    });
    // The minimum version came with the renewal.
    expect(await tryConnect(srv.port, { ...asClient(), maxVersion: 'TLSv1.2' })).toMatchObject({ ok: false });
  });

  it('keeps the last good material on a broken file and logs tls.reload_failed once', async () => {
    const good = tls.current.certFingerprint256;
    const before = updates.length;
    await renew(files.certFile, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
    await vi.waitFor(() => {
      expect(events()).toContain('tls.reload_failed');
    });
    await sleep(300); // several more ticks
    expect(events().filter((e) => e === 'tls.reload_failed')).toHaveLength(1);
    expect(updates).toHaveLength(before);
    expect(tls.current.certFingerprint256).toBe(good);
    expect(await tryConnect(srv.port, asClient())).toMatchObject({ ok: true, serverFingerprint256: good });
  });

  it('keeps the last good material when the transport refuses the update', async () => {
    const good = tls.current.certFingerprint256;
    const failuresBefore = events().filter((e) => e === 'tls.reload_failed').length;
    const third = await ca.issueServerCertificate();
    failNext = true;
    await renew(files.keyFile, third.keyPem);
    await renew(files.certFile, third.certPem);
    await vi.waitFor(() => {
      expect(events().filter((e) => e === 'tls.reload_failed')).toHaveLength(failuresBefore + 1);
    });
    expect(failNext).toBe(false);
    expect(tls.current.certFingerprint256).toBe(good);
  });

  it('stops handing over material once closed', async () => {
    tls.close();
    const before = updates.length;
    const fourth = await ca.issueServerCertificate();
    await renew(files.keyFile, fourth.keyPem);
    await renew(files.certFile, fourth.certPem);
    await sleep(400);
    expect(updates).toHaveLength(before);
    expect(tls.current.certFingerprint256).not.toBe(fourth.fingerprint256);
  });
});

describe('createReloadingTlsSettings: material that expires in use', () => {
  it('logs tls.material_expired once when the server certificate in use expires, and not again after a renewal', async () => {
    const { audit, events } = captureAudit();
    const short = await ca.issueServerCertificate({
      notBefore: new Date(Date.now() - 3_600_000),
      notAfter: new Date(Date.now() + 1_500),
    });
    const own = { ...files, certFile: join(dir, 'short.crt'), keyFile: join(dir, 'short.key') };
    await renew(own.certFile, short.certPem);
    await renew(own.keyFile, short.keyPem);
    // The server is made from the settings, and their updates go to it.
    const serving: { srv?: Awaited<ReturnType<typeof startTlsServer>> } = {};
    const tls = createReloadingTlsSettings(
      { ...own, clientCertificates: 'strict' },
      {
        audit,
        reloadIntervalMs: 50,
        onUpdate: (options) => {
          serving.srv?.server.setSecureContext(options);
        },
      },
    );
    const srv = await startTlsServer({
      ...tls.settings.serverOptions,
      ...tls.settings.secureContextOptions(tls.current),
    });
    serving.srv = srv;
    const asClient = { ca: ca.certPem, cert: client.certPem, key: client.keyPem };
    try {
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      while (!events().includes('tls.material_expired')) await sleep(50);
      // What the line is about: every client now refuses the server.
      expect((await tryConnect(srv.port, asClient)).ok).toBe(false);
      await sleep(300);
      expect(events().filter((e) => e === 'tls.material_expired')).toHaveLength(1);
      await renew(own.certFile, first.certPem);
      await renew(own.keyFile, first.keyPem);
      while (!events().includes('tls.reloaded')) await sleep(50);
      expect((await tryConnect(srv.port, asClient)).ok).toBe(true);
      await sleep(300);
      expect(events().filter((e) => e === 'tls.material_expired')).toHaveLength(1);
    } finally {
      tls.close();
      await srv.close();
    }
  });
});
