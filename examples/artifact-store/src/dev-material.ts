import { randomBytes } from 'node:crypto';
import { chmod, link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { ConfigurationError } from '@fluxguard/core';
import { ensureDevPki, type EnsureDevPkiResult } from '@fluxguard/core/dev-pki';

/** File names of the development JWT material, beside the PKI in the dev directory. */
export const DEV_JWT_FILES = Object.freeze({ signingKey: 'jwt-signing.key', jwks: 'jwks.json' } as const);

/** The issuer and audience of development tokens (the policy file names the same). */
export const DEV_ISSUER = 'https://fluxguard.dev';
export const DEV_AUDIENCE = 'artifact-store';

/** Paths of everything `ensureDevMaterial` keeps in the dev directory. */
export interface DevMaterial {
  readonly pki: EnsureDevPkiResult;
  readonly signingKeyFile: string;
  readonly jwksFile: string;
}

/**
 * Creates, on first use, the development material the reference servers need: the PKI
 * (`ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`) and an ES256 signing key
 * (`jwt-signing.key`, a private JWK, mode 0600) with its public key set (`jwks.json`).
 * Existing valid material is kept.
 *
 * @example
 * ```ts
 * const dev = await ensureDevMaterial('.fluxguard/dev');
 * dev.jwksFile; // '.fluxguard/dev/jwks.json'
 * ```
 */
export async function ensureDevMaterial(devDir: string, options: { force?: boolean } = {}): Promise<DevMaterial> {
  const pki = await ensureDevPki(devDir, { force: options.force === true });
  const signingKeyFile = join(devDir, DEV_JWT_FILES.signingKey);
  const jwksFile = join(devDir, DEV_JWT_FILES.jwks);
  if (options.force === true) await rm(signingKeyFile, { force: true });
  let privateJwk = await readJwk(signingKeyFile);
  if (privateJwk === undefined) {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(privateKey);
    const created = { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'ES256', use: 'sig' };
    // Both servers may start at once (`pnpm start`): link() publishes the key atomically and
    // only if none exists, so every process ends up with the one key that won.
    const temp = `${signingKeyFile}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(temp, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
    await chmod(temp, 0o600);
    await link(temp, signingKeyFile).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    });
    await rm(temp, { force: true });
    privateJwk = await readJwk(signingKeyFile);
    if (privateJwk === undefined) throw new ConfigurationError(`cannot create ${signingKeyFile}`);
  }
  const { d: _private, ...publicJwk } = privateJwk;
  const jwksTemp = `${jwksFile}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(jwksTemp, `${JSON.stringify({ keys: [publicJwk] }, null, 2)}\n`, { mode: 0o644 });
  await rename(jwksTemp, jwksFile);
  return Object.freeze({ pki, signingKeyFile, jwksFile });
}

async function readJwk(file: string): Promise<JWK | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const jwk = JSON.parse(text) as JWK;
  if (jwk.kty !== 'EC' || typeof jwk.d !== 'string' || typeof jwk.kid !== 'string') {
    throw new ConfigurationError(`${file} is not a private EC JWK with a kid; run \`pnpm certs\` to start over`);
  }
  return jwk;
}

/** Options of {@link signDevToken}. */
export interface DevTokenOptions {
  readonly devDir: string;
  readonly subject: string;
  readonly roles?: readonly string[];
  readonly scopes?: readonly string[];
  /** Lifetime in seconds. Default 3600. */
  readonly ttlSeconds?: number;
  readonly jti?: string;
  readonly issuer?: string;
  readonly audience?: string;
}

/**
 * Signs a development token with the dev signing key (what `pnpm token` prints).
 *
 * @example
 * ```ts
 * const token = await signDevToken({ devDir: '.fluxguard/dev', subject: 'alice', roles: ['artifacts.reader'] });
 * ```
 */
export async function signDevToken(options: DevTokenOptions): Promise<string> {
  const dev = await ensureDevMaterial(options.devDir);
  const jwk = await readJwk(dev.signingKeyFile);
  if (jwk === undefined) throw new ConfigurationError(`no signing key in ${options.devDir}`);
  const key = await importJWK(jwk, 'ES256');
  const ttl = options.ttlSeconds ?? 3600;
  const builder = new SignJWT({
    roles: [...(options.roles ?? [])],
    ...(options.scopes === undefined ? {} : { scope: options.scopes.join(' ') }),
  })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid ?? '', typ: 'JWT' })
    .setIssuer(options.issuer ?? DEV_ISSUER)
    .setAudience(options.audience ?? DEV_AUDIENCE)
    .setSubject(options.subject)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
  return (options.jti === undefined ? builder : builder.setJti(options.jti)).sign(key);
}

/**
 * Parses a duration such as `90s`, `15m`, `1h` or `2d` into seconds.
 *
 * @example
 * ```ts
 * parseDuration('1h'); // 3600
 * ```
 */
export function parseDuration(text: string): number {
  const match = /^(\d{1,6})([smhd]?)$/.exec(text.trim());
  if (match?.[1] === undefined) throw new ConfigurationError(`"${text}" is not a duration like 90s, 15m, 1h or 2d`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] ?? ''] ?? 1;
  return Number(match[1]) * unit;
}
