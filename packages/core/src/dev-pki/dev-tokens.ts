import { randomBytes } from 'node:crypto';
import { chmod, link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { ensureDevPki, type EnsureDevPkiResult } from './write.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * File names of the development JWT material, beside the PKI in the development directory.
 *
 * @example
 * ```ts
 * import { DEV_JWT_FILES } from '@fluxguard/core/dev-pki';
 * path.join(devDir, DEV_JWT_FILES.jwks); // '.fluxguard/dev/jwks.json'
 * ```
 */
export const DEV_JWT_FILES = Object.freeze({ signingKey: 'jwt-signing.key', jwks: 'jwks.json' } as const);

/**
 * The issuer and audience of development tokens unless told otherwise (the reference servers'
 * policy names the same).
 *
 * @example
 * ```ts
 * import { DEV_TOKEN_DEFAULTS } from '@fluxguard/core/dev-pki';
 * createJwtVerifier({ jwks, ...DEV_TOKEN_DEFAULTS }); // issuer and audience of `fluxguard token`
 * ```
 */
export const DEV_TOKEN_DEFAULTS = Object.freeze({
  issuer: 'https://fluxguard.dev',
  audience: 'artifact-store',
} as const);

/**
 * Paths of everything {@link ensureDevMaterial} keeps in the development directory.
 *
 * @example
 * ```ts
 * const { pki, jwksFile } = await ensureDevMaterial('.fluxguard/dev');
 * ```
 */
export interface DevMaterial {
  readonly pki: EnsureDevPkiResult;
  readonly signingKeyFile: string;
  readonly jwksFile: string;
}

/**
 * Creates, on first use, the development material of a service: the PKI (`ca.crt`,
 * `server.crt`, `server.key`, `client.crt`, `client.key`, see `ensureDevPki`) and an ES256
 * signing key (`jwt-signing.key`, a private JWK, mode 0600) with its public key set
 * (`jwks.json`). Existing valid material is kept unless `force` is set. Several processes may
 * call it at once: they all end up with the same key.
 *
 * @example
 * ```ts
 * import { ensureDevMaterial } from '@fluxguard/core/dev-pki';
 * const dev = await ensureDevMaterial('.fluxguard/dev');
 * dev.jwksFile; // '.fluxguard/dev/jwks.json'
 * ```
 */
export async function ensureDevMaterial(devDir: string, options: { force?: boolean } = {}): Promise<DevMaterial> {
  const pki = await ensureDevPki(devDir, { force: options.force === true });
  const signingKeyFile = join(devDir, DEV_JWT_FILES.signingKey);
  const jwksFile = join(devDir, DEV_JWT_FILES.jwks);
  if (options.force === true) await rm(signingKeyFile, { force: true });
  let privateJwk = await readSigningKey(signingKeyFile);
  if (privateJwk === undefined) {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(privateKey);
    const created = { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'ES256', use: 'sig' };
    // link() publishes the key atomically and only if none exists, so that every process
    // started at once ends up with the one key that won.
    const temp = `${signingKeyFile}.${String(process.pid)}.${randomBytes(4).toString('hex')}`;
    await writeFile(temp, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
    await chmod(temp, 0o600);
    await link(temp, signingKeyFile).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    });
    await rm(temp, { force: true });
    privateJwk = await readSigningKey(signingKeyFile);
    if (privateJwk === undefined) throw new ConfigurationError(`cannot create ${signingKeyFile}`);
  }
  const { d: _private, ...publicJwk } = privateJwk;
  const jwksTemp = `${jwksFile}.${String(process.pid)}.${randomBytes(4).toString('hex')}`;
  await writeFile(jwksTemp, `${JSON.stringify({ keys: [publicJwk] }, null, 2)}\n`, { mode: 0o644 });
  await rename(jwksTemp, jwksFile);
  return Object.freeze({ pki, signingKeyFile, jwksFile });
}

async function readSigningKey(file: string): Promise<JWK | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch {
    throw new ConfigurationError(`${file} is not JSON; create the development material again (force)`);
  }
  if (jwk.kty !== 'EC' || typeof jwk.d !== 'string' || typeof jwk.kid !== 'string') {
    throw new ConfigurationError(
      `${file} is not a private EC JWK with a kid; create the development material again (force)`,
    );
  }
  return jwk;
}

/**
 * Options of {@link signDevToken}.
 *
 * @example
 * ```ts
 * const options: DevTokenOptions = { devDir: '.fluxguard/dev', subject: 'alice', roles: ['reader'], ttlSeconds: 600 };
 * ```
 */
export interface DevTokenOptions {
  readonly devDir: string;
  readonly subject: string;
  readonly roles?: readonly string[];
  readonly scopes?: readonly string[];
  /** Lifetime in seconds. Default 3600. */
  readonly ttlSeconds?: number;
  readonly jti?: string;
  /** Default {@link DEV_TOKEN_DEFAULTS}.issuer. */
  readonly issuer?: string;
  /** Default {@link DEV_TOKEN_DEFAULTS}.audience. */
  readonly audience?: string;
  /**
   * Create the development material in `devDir` when it is missing (see
   * {@link ensureDevMaterial}). Default true. With false, the token is signed with the key
   * already in `devDir` and nothing is written; no key there is a `ConfigurationError`.
   */
  readonly create?: boolean;
}

/**
 * Signs a development token with the signing key of `devDir` (created with the rest of the
 * development material when missing, unless `create` is false): ES256, `roles` as an array claim, `scopes` as a
 * space-separated `scope` claim.
 *
 * @example
 * ```ts
 * import { signDevToken } from '@fluxguard/core/dev-pki';
 * const token = await signDevToken({ devDir: '.fluxguard/dev', subject: 'alice', roles: ['artifacts.reader'] });
 * ```
 */
export async function signDevToken(options: DevTokenOptions): Promise<string> {
  const ttl = wholeNumber(options.ttlSeconds ?? 3600, 'signDevToken: "ttlSeconds"');
  if (typeof options.subject !== 'string' || options.subject === '') {
    throw new ConfigurationError('signDevToken: "subject" must be a non-empty string');
  }
  const signingKeyFile =
    options.create === false
      ? join(options.devDir, DEV_JWT_FILES.signingKey)
      : (await ensureDevMaterial(options.devDir)).signingKeyFile;
  const jwk = await readSigningKey(signingKeyFile);
  if (jwk === undefined) throw new ConfigurationError(`no signing key in ${options.devDir}`);
  const key = await importJWK(jwk, 'ES256');
  const builder = new SignJWT({
    roles: [...(options.roles ?? [])],
    ...(options.scopes === undefined ? {} : { scope: options.scopes.join(' ') }),
  })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid ?? '', typ: 'JWT' })
    .setIssuer(options.issuer ?? DEV_TOKEN_DEFAULTS.issuer)
    .setAudience(options.audience ?? DEV_TOKEN_DEFAULTS.audience)
    .setSubject(options.subject)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
  return (options.jti === undefined ? builder : builder.setJti(options.jti)).sign(key);
}

/**
 * Parses a duration such as `90`, `90s`, `15m`, `1h` or `2d` into seconds.
 *
 * @throws ConfigurationError for anything else.
 *
 * @example
 * ```ts
 * import { parseDuration } from '@fluxguard/core/dev-pki';
 * parseDuration('1h'); // 3600
 * ```
 */
export function parseDuration(text: string): number {
  const match = /^(\d{1,6})([smhd]?)$/.exec(text.trim());
  if (match?.[1] === undefined) throw new ConfigurationError(`"${text}" is not a duration like 90s, 15m, 1h or 2d`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] ?? ''] ?? 1;
  return Number(match[1]) * unit;
}
