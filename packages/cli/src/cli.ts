import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MAX_JTI_LENGTH, isFluxguardError } from '@fluxguard/core';
import {
  DEV_JWT_FILES,
  DEV_TOKEN_DEFAULTS,
  ensureDevMaterial,
  parseDuration,
  signDevToken,
} from '@fluxguard/core/dev-pki';

/**
 * Where the command writes: standard output for what it produces (a token, the list of files),
 * standard error for problems and usage.
 *
 * @example
 * ```ts
 * const io: CliIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
 * ```
 */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

/**
 * Exit status: 0 done, 1 failed (a file could not be written, say), 2 wrong usage.
 *
 * @example
 * ```ts
 * import { runCli, type CliStatus } from 'fluxguard';
 * const status: CliStatus = await runCli(process.argv.slice(2), io);
 * process.exitCode = status;
 * ```
 */
export type CliStatus = 0 | 1 | 2;

const USAGE = `usage:
  fluxguard certs DIR [--force]
      writes a development CA, server and client certificates (ca.crt, server.crt,
      server.key, client.crt, client.key) and a JWT signing key (jwt-signing.key) with its
      public key set (jwks.json) into DIR; existing valid material is kept unless --force
  fluxguard token --key DIR --sub NAME [--roles r1,r2] [--scopes s1,s2] [--ttl 1h]
                  [--jti ID] [--iss URL] [--aud AUDIENCE]
      prints an ES256 token signed with the key in DIR, written by fluxguard certs DIR
      (issuer ${DEV_TOKEN_DEFAULTS.issuer}, audience ${DEV_TOKEN_DEFAULTS.audience} unless given)
  fluxguard help
  fluxguard --version
`;

/** This package's version, from the `package.json` beside `dist/` (published with it). */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version?: unknown;
  };
  return typeof manifest.version === 'string' ? manifest.version : 'unknown';
}

/** A problem with the command line: answered with the usage and status 2. */
class UsageError extends Error {}

/**
 * Runs the `fluxguard` command with its arguments (without `node` and the script). Never
 * throws: a problem is one line on `io.err` (never a stack) and a non-zero status.
 *
 * @example
 * ```ts
 * import { runCli } from 'fluxguard';
 * process.exitCode = await runCli(['token', '--key', '.fluxguard/dev', '--sub', 'alice'], io);
 * ```
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<CliStatus> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'certs':
        await certs(rest, io);
        return 0;
      case 'token':
        await token(rest, io);
        return 0;
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return 0;
      case '--version':
      case '-v':
        io.out(`${packageVersion()}\n`);
        return 0;
      case undefined:
        throw new UsageError('a command is required');
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError || isNodeArgumentError(err)) {
      io.err(`fluxguard: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    const message = isFluxguardError(err) || err instanceof Error ? err.message : String(err);
    io.err(`fluxguard ${command ?? ''}: ${message}\n`);
    return 1;
  }
}

async function certs(args: readonly string[], io: CliIo): Promise<void> {
  const { values, positionals, tokens } = parseArgs({
    args: [...args],
    options: { force: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
    tokens: true,
  });
  onceEach('certs', tokens);
  const [dir, extra] = positionals;
  if (dir === undefined || dir === '') throw new UsageError('certs: the directory is required');
  if (extra !== undefined) throw new UsageError(`certs: one directory only (got "${extra}" too)`);
  const kind = await kindOf(resolve(dir));
  if (kind === 'file') throw new Error(`${dir} is a file: give the directory to write the material into`);
  if (kind === 'under-a-file') throw new Error(`${dir}: a part of the path is a file, not a directory`);
  const dev = await ensureDevMaterial(resolve(dir), { force: values.force });
  io.out(
    [
      `${dev.pki.created ? 'written' : 'kept (still valid; --force to replace)'}: ${dev.pki.dir}`,
      `  CA            ${dev.pki.caFile}`,
      `  server        ${dev.pki.serverCertFile} ${dev.pki.serverKeyFile}`,
      `  client        ${dev.pki.clientCertFile} ${dev.pki.clientKeyFile}`,
      `  JWT signing   ${dev.signingKeyFile}`,
      `  JWT key set   ${dev.jwksFile}`,
      '',
    ].join('\n'),
  );
}

async function token(args: readonly string[], io: CliIo): Promise<void> {
  const { values, positionals, tokens } = parseTokenArgs(args);
  onceEach('token', tokens);
  if (positionals.length > 0) throw new UsageError(`token: unexpected "${String(positionals[0])}"`);
  if (values.key === undefined || values.key === '') throw new UsageError('token: --key DIR is required');
  if (values.sub === undefined || values.sub.trim() === '') throw new UsageError('token: --sub NAME is required');
  if (values.iss?.trim() === '') {
    throw new UsageError(`token: --iss URL must not be empty (leave it out for ${DEV_TOKEN_DEFAULTS.issuer})`);
  }
  if (values.aud?.trim() === '') {
    throw new UsageError(`token: --aud AUDIENCE must not be empty (leave it out for ${DEV_TOKEN_DEFAULTS.audience})`);
  }
  if (values.jti?.trim() === '') throw new UsageError('token: --jti ID must not be empty (leave it out for none)');
  // Every verifier refuses a longer one (malformed_claims): a token that could never be used.
  if (values.jti !== undefined && values.jti.length > MAX_JTI_LENGTH) {
    throw new UsageError(`token: --jti ID must be at most ${String(MAX_JTI_LENGTH)} characters`);
  }
  let ttlSeconds: number;
  try {
    ttlSeconds = parseDuration(values.ttl);
  } catch {
    if (values.ttl.trim().startsWith('-')) throw new UsageError(TTL_POSITIVE);
    throw new UsageError(`token: --ttl "${values.ttl}" is not a duration like 90s, 15m, 1h or 2d`);
  }
  if (ttlSeconds === 0) throw new UsageError(TTL_POSITIVE);
  const roles = values.roles === undefined ? [] : list(values.roles, '--roles', 'role');
  const scopes = values.scopes === undefined ? undefined : list(values.scopes, '--scopes', 'scope');
  const devDir = resolve(values.key);
  await checkSigningKey(values.key, devDir);
  const signed = await signDevToken({
    devDir,
    create: false,
    subject: values.sub,
    roles,
    ...(scopes === undefined ? {} : { scopes }),
    ttlSeconds,
    ...(values.jti === undefined ? {} : { jti: values.jti }),
    ...(values.iss === undefined ? {} : { issuer: values.iss }),
    ...(values.aud === undefined ? {} : { audience: values.aud }),
  });
  io.out(`${signed}\n`);
}

/**
 * Fails with one line when `devDir` (given as `given`) holds no signing key: `token` signs with
 * the key `certs` wrote and never writes one of its own (a new key, that no server trusts).
 */
async function checkSigningKey(given: string, devDir: string): Promise<void> {
  const certs = `write one with \`fluxguard certs ${given}\` first`;
  switch (await kindOf(devDir)) {
    case 'absent':
      throw new Error(`no signing key in ${given}: no such directory; ${certs}`);
    case 'under-a-file':
      throw new Error(`no signing key in ${given}: a part of the path is a file, not a directory`);
    case 'file':
      throw new Error(
        `${given} is a file: --key takes the directory that holds ${DEV_JWT_FILES.signingKey} (fluxguard certs DIR writes one)`,
      );
    case 'directory':
      break;
  }
  if ((await kindOf(join(devDir, DEV_JWT_FILES.signingKey))) !== 'file') {
    throw new Error(`no signing key in ${given} (no ${DEV_JWT_FILES.signingKey}); ${certs}`);
  }
}

/** What is at `path`; `under-a-file` when a directory on the way is a file. */
async function kindOf(path: string): Promise<'directory' | 'file' | 'absent' | 'under-a-file'> {
  try {
    return (await stat(path)).isDirectory() ? 'directory' : 'file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'absent';
    if (code === 'ENOTDIR') return 'under-a-file';
    throw err;
  }
}

const TTL_POSITIVE = 'token: --ttl must be a positive duration like 90s, 15m, 1h or 2d';

function parseTokenArgs(args: readonly string[]) {
  try {
    return parseArgs({
      args: [...args],
      options: {
        key: { type: 'string' },
        sub: { type: 'string' },
        roles: { type: 'string' },
        scopes: { type: 'string' },
        ttl: { type: 'string', default: '1h' },
        jti: { type: 'string' },
        iss: { type: 'string' },
        aud: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
      tokens: true,
    });
  } catch (err) {
    // parseArgs takes `--ttl -5m` for a missing value followed by an option ("ambiguous").
    if (args.some((arg, i) => arg === '--ttl' && /^-\d/.test(args[i + 1] ?? ''))) throw new UsageError(TTL_POSITIVE);
    throw err;
  }
}

/** Refuses an option given twice: `parseArgs` keeps the last value silently. */
function onceEach(command: string, tokens: readonly { kind: string; name?: string; rawName?: string }[]): void {
  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== 'option' || token.name === undefined) continue;
    if (seen.has(token.name)) {
      throw new UsageError(`${command}: ${token.rawName ?? `--${token.name}`} given twice; give it once`);
    }
    seen.add(token.name);
  }
}

/** A comma-separated list of names, none of them empty (`a,,b`, `a,` and `,` are refused). */
function list(text: string, flag: string, what: string): string[] {
  const items = text.split(',').map((item) => item.trim());
  if (text.trim() === '') throw new UsageError(`token: ${flag} must not be empty (leave it out for no ${what}s)`);
  if (items.includes('')) {
    throw new UsageError(`token: ${flag} "${text}" holds an empty ${what} name; separate names with single commas`);
  }
  // A token's scopes are split at spaces, and no RBAC rule may name a role with one.
  if (items.some((item) => /\s/.test(item))) {
    throw new UsageError(`token: ${flag} "${text}" holds a ${what} name with white space in it`);
  }
  return items;
}

/** `parseArgs` refuses an unknown option or a missing value with a TypeError carrying a code. */
function isNodeArgumentError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}
