import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { identityFromCertificate } from '../mtls/peer-identity.js';
import { createDevPki, DEV_CLIENT_SPIFFE_ID, type DevPki, type DevPkiOptions } from './dev-pki.js';

/**
 * The file names of the development PKI, fixed so that any client, script or person can find
 * them. The CA key is never written: regenerating means a new CA.
 *
 * @example
 * ```ts
 * import { DEV_PKI_FILES } from '@fluxguard/core/dev-pki';
 * path.join(devDir, DEV_PKI_FILES.clientKey); // '.fluxguard/dev/client.key'
 * ```
 */
export const DEV_PKI_FILES = Object.freeze({
  ca: 'ca.crt',
  serverCert: 'server.crt',
  serverKey: 'server.key',
  clientCert: 'client.crt',
  clientKey: 'client.key',
} as const);

/**
 * Absolute paths of the written files.
 *
 * @example
 * ```ts
 * const { caFile, serverCertFile, serverKeyFile } = await ensureDevPki('.fluxguard/dev');
 * ```
 */
export interface DevPkiPaths {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

/**
 * Options of {@link ensureDevPki}.
 *
 * @example
 * ```ts
 * await ensureDevPki(dir, { force: true }); // what `pnpm certs` does
 * ```
 */
export interface EnsureDevPkiOptions extends DevPkiOptions {
  /** Regenerate even when the existing material is fine. Default false. */
  readonly force?: boolean | undefined;
  /** Regenerate when a certificate expires within this many days. Default 1. */
  readonly renewWithinDays?: number | undefined;
}

/**
 * What {@link ensureDevPki} did.
 *
 * @example
 * ```ts
 * import { ensureDevPki, type EnsureDevPkiResult } from '@fluxguard/core/dev-pki';
 * const dev: EnsureDevPkiResult = await ensureDevPki('.fluxguard/dev');
 * if (dev.created) console.log('new development certificates, CA', dev.caFile);
 * ```
 */
export interface EnsureDevPkiResult extends DevPkiPaths {
  /** True when new material was generated and written, false when existing files were kept. */
  readonly created: boolean;
}

function pathsOf(dir: string): DevPkiPaths {
  return Object.freeze({
    dir,
    caFile: join(dir, DEV_PKI_FILES.ca),
    serverCertFile: join(dir, DEV_PKI_FILES.serverCert),
    serverKeyFile: join(dir, DEV_PKI_FILES.serverKey),
    clientCertFile: join(dir, DEV_PKI_FILES.clientCert),
    clientKeyFile: join(dir, DEV_PKI_FILES.clientKey),
  });
}

async function prepareDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

async function writeAtomic(file: string, contents: string, mode: number): Promise<void> {
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  // The mode is set at creation, so a private key is never readable by others, even briefly.
  await writeFile(temp, contents, { mode, flag: 'wx' });
  await chmod(temp, mode);
  await rename(temp, file);
}

/**
 * Writes a development PKI (a new one unless given) to `dir`: `ca.crt`, `server.crt`,
 * `server.key`, `client.crt`, `client.key`. Private keys mode 0600, the directory 0700; each
 * file is replaced atomically. Overwrites existing files; see {@link ensureDevPki} to keep them.
 *
 * @example
 * ```ts
 * import { createDevPki, writeDevPki } from '@fluxguard/core/dev-pki';
 * const paths = await writeDevPki('.fluxguard/dev', await createDevPki());
 * ```
 */
export async function writeDevPki(dir: string, pki?: DevPki): Promise<DevPkiPaths> {
  const material = pki ?? (await createDevPki());
  const paths = pathsOf(dir);
  await prepareDir(dir);
  // Keys before certificates: a reader that sees a new certificate also finds its key.
  await writeAtomic(paths.serverKeyFile, material.server.keyPem, 0o600);
  await writeAtomic(paths.clientKeyFile, material.client.keyPem, 0o600);
  await writeAtomic(paths.caFile, material.ca.certPem, 0o644);
  await writeAtomic(paths.serverCertFile, material.server.certPem, 0o644);
  await writeAtomic(paths.clientCertFile, material.client.certPem, 0o644);
  return paths;
}

async function existingIsUsable(paths: DevPkiPaths, renewWithinDays: number, clientSpiffeId: string): Promise<boolean> {
  try {
    const [caPem, serverPem, serverKeyPem, clientPem, clientKeyPem] = await Promise.all(
      [paths.caFile, paths.serverCertFile, paths.serverKeyFile, paths.clientCertFile, paths.clientKeyFile].map((f) =>
        readFile(f),
      ),
    );
    if (!caPem || !serverPem || !serverKeyPem || !clientPem || !clientKeyPem) return false;
    const ca = new X509Certificate(caPem);
    const server = new X509Certificate(serverPem);
    const client = new X509Certificate(clientPem);
    const deadline = Date.now() + renewWithinDays * 86_400_000;
    for (const cert of [ca, server, client]) {
      if (Date.parse(cert.validTo) <= deadline || Date.parse(cert.validFrom) > Date.now()) return false;
    }
    if (!server.checkIssued(ca) || !server.verify(ca.publicKey)) return false;
    if (!client.checkIssued(ca) || !client.verify(ca.publicKey)) return false;
    if (!server.checkPrivateKey(createPrivateKey(serverKeyPem))) return false;
    if (!client.checkPrivateKey(createPrivateKey(clientKeyPem))) return false;
    if (identityFromCertificate(client).spiffeId !== clientSpiffeId) return false;
    // Keep good material, but never with keys readable by others.
    for (const keyFile of [paths.serverKeyFile, paths.clientKeyFile]) {
      if (((await stat(keyFile)).mode & 0o077) !== 0) await chmod(keyFile, 0o600);
    }
    return true;
  } catch {
    return false;
  }
}

async function withLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const lock = join(dir, '.dev-pki.lock');
  const started = Date.now();
  for (;;) {
    try {
      const handle = await open(lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
      await handle.close();
      break;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'EEXIST') throw err;
      // A lock left by a crashed process is stale after 30 s (generation takes well under 1 s).
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 30_000) await unlink(lock).catch(() => undefined);
      if (Date.now() - started > 60_000)
        throw new ConfigurationError(`ensureDevPki: ${lock} is held by another process`);
      await sleep(50);
    }
  }
  try {
    return await work();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

/**
 * Makes sure `dir` holds a usable development PKI and returns its paths: existing files are
 * kept when they all parse, chain to `ca.crt`, match their keys, carry the expected client
 * SPIFFE ID and stay valid for `renewWithinDays`; otherwise (or with `force`) a new PKI is
 * generated and written. Safe to call from two servers starting at once (a lock file in `dir`).
 *
 * @example
 * ```ts
 * import { ensureDevPki } from '@fluxguard/core/dev-pki';
 * const dev = await ensureDevPki(process.env.FLUXGUARD_DEV_DIR ?? '.fluxguard/dev');
 * const tls = createTlsSettings({
 *   certFile: dev.serverCertFile, keyFile: dev.serverKeyFile, caFile: dev.caFile,
 *   clientCertificates: 'strict',
 * });
 * ```
 */
export async function ensureDevPki(dir: string, options: EnsureDevPkiOptions = {}): Promise<EnsureDevPkiResult> {
  if (typeof dir !== 'string' || dir.length === 0) throw new ConfigurationError('ensureDevPki: "dir" must be a path');
  const { force = false, renewWithinDays = 1, ...pkiOptions } = options;
  if (!Number.isFinite(renewWithinDays) || renewWithinDays < 0) {
    throw new ConfigurationError('ensureDevPki: "renewWithinDays" must be a number of days, 0 or more');
  }
  const paths = pathsOf(dir);
  await prepareDir(dir);
  return withLock(dir, async () => {
    const spiffeId = pkiOptions.clientSpiffeId ?? DEV_CLIENT_SPIFFE_ID;
    if (!force && (await existingIsUsable(paths, renewWithinDays, spiffeId))) {
      return Object.freeze({ ...paths, created: false });
    }
    await writeDevPki(dir, await createDevPki(pkiOptions));
    return Object.freeze({ ...paths, created: true });
  });
}
