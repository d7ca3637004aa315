// The `fluxguard` command as a user runs it: the built script in a process of its own for the
// files it writes and the token it prints (checked by a real verifier), `runCli` for the usage
// errors.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJwtVerifier } from '@fluxguard/core';
import { DEV_TOKEN_DEFAULTS } from '@fluxguard/core/dev-pki';
import { runCli, type CliIo } from './cli.js';

const run = promisify(execFile);
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fluxguard-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function captured(): CliIo & { out_: string; err_: string } {
  const io = {
    out_: '',
    err_: '',
    out(text: string) {
      io.out_ += text;
    },
    err(text: string) {
      io.err_ += text;
    },
  };
  return io;
}

describe('fluxguard certs and token', () => {
  it('writes the development material, and signs tokens a verifier of its key set accepts', async () => {
    const dev = join(dir, 'dev');
    const { stdout } = await run(process.execPath, [MAIN, 'certs', dev]);
    expect(stdout).toContain('written');
    for (const file of [
      'ca.crt',
      'server.crt',
      'server.key',
      'client.crt',
      'client.key',
      'jwt-signing.key',
      'jwks.json',
    ]) {
      expect((await stat(join(dev, file))).isFile()).toBe(true);
    }
    expect((await stat(join(dev, 'jwt-signing.key'))).mode & 0o077).toBe(0);
    // Run again: the material is kept.
    expect((await run(process.execPath, [MAIN, 'certs', dev])).stdout).toContain('kept');

    const token = (
      await run(process.execPath, [
        MAIN,
        'token',
        '--key',
        dev,
        '--sub',
        'alice',
        '--roles',
        'r1,r2',
        '--scopes',
        'a,b',
        '--ttl',
        '10m',
      ])
    ).stdout.trim();
    const verifier = createJwtVerifier({
      jwks: JSON.parse(await readFile(join(dev, 'jwks.json'), 'utf8')) as never,
      ...DEV_TOKEN_DEFAULTS,
    });
    const verified = await verifier.verify(token);
    expect(verified.principal).toMatchObject({ subject: 'alice', roles: ['r1', 'r2'], scopes: ['a', 'b'] });
    expect(verified.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(600_000);

    const other = (
      await run(process.execPath, [MAIN, 'token', '--key', dev, '--sub', 'bob', '--aud', 'orders'])
    ).stdout.trim();
    await expect(verifier.verify(other)).rejects.toMatchObject({ reason: 'wrong_audience' });
  });

  it.each([
    [[], 'a command is required'],
    [['mint'], 'unknown command "mint"'],
    [['certs'], 'certs: the directory is required'],
    [['token', '--sub', 'alice'], 'token: --key DIR is required'],
    [['token', '--key', 'd'], 'token: --sub NAME is required'],
    [['token', '--key', 'd', '--sub', 'a', '--ttl', 'forever'], 'token: --ttl "forever" is not a duration'],
    [['token', '--key', 'd', '--sub', 'a', '--role', 'x'], "Unknown option '--role'"],
    [['token', '--key', 'd', '--sub', 'a', '--aud', ''], 'token: --aud AUDIENCE must not be empty'],
    [['token', '--key', 'd', '--sub', 'a', '--iss', ''], 'token: --iss URL must not be empty'],
    [['token', '--key', 'd', '--sub', 'a', '--jti', ''], 'token: --jti ID must not be empty'],
    // Blank or too long: every verifier would refuse the token.
    [['token', '--key', 'd', '--sub', ' '], 'token: --sub NAME is required'],
    [['token', '--key', 'd', '--sub', 'a', '--aud', ' '], 'token: --aud AUDIENCE must not be empty'],
    [['token', '--key', 'd', '--sub', 'a', '--jti', 'j'.repeat(257)], 'token: --jti ID must be at most 256 characters'],
    [
      ['token', '--key', 'd', '--sub', 'a', '--roles', 'a b'],
      'token: --roles "a b" holds a role name with white space in it',
    ],
    [['token', '--key', 'd', '--sub', 'a', '--roles', ''], 'token: --roles must not be empty'],
    [['token', '--key', 'd', '--sub', 'a', '--roles', ',,'], 'token: --roles ",," holds an empty role name'],
    [['token', '--key', 'd', '--sub', 'a', '--roles', 'r1,'], 'token: --roles "r1," holds an empty role name'],
    [['token', '--key', 'd', '--sub', 'a', '--roles', 'r1, ,r2'], 'holds an empty role name'],
    [['token', '--key', 'd', '--sub', 'a', '--scopes', ',a'], 'token: --scopes ",a" holds an empty scope name'],
    [['token', '--key', 'd', '--sub', 'a', '--ttl', '1h', '--ttl', '2h'], 'token: --ttl given twice'],
    [['token', '--key', 'd', '--sub', 'a', '--sub', 'b'], 'token: --sub given twice'],
    [['token', '--key', 'd', '--sub', 'a', '--ttl', '-5m'], 'token: --ttl must be a positive duration'],
    [['token', '--key', 'd', '--sub', 'a', '--ttl=-5m'], 'token: --ttl must be a positive duration'],
    [['token', '--key', 'd', '--sub', 'a', '--ttl', '0m'], 'token: --ttl must be a positive duration'],
    [['certs', 'd', '--force', '--force'], 'certs: --force given twice'],
  ])('answers %j with the usage and status 2, without a stack', async (argv, message) => {
    const io = captured();
    expect(await runCli(argv, io)).toBe(2);
    expect(io.err_).toContain(message);
    expect(io.err_).toContain('usage:');
    expect(io.err_).not.toMatch(/\n\s+at /);
    expect(io.out_).toBe('');
  });

  it('prints its package version with --version and -v, status 0', async () => {
    const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    expect(manifest.version).toMatch(/^\d+\.\d+\.\d+/);
    for (const flag of ['--version', '-v']) {
      expect((await run(process.execPath, [MAIN, flag])).stdout).toBe(`${manifest.version}\n`);
      const io = captured();
      expect(await runCli([flag], io)).toBe(0);
      expect(io.out_).toBe(`${manifest.version}\n`);
      expect(io.err_).toBe('');
    }
  });

  it('answers a key directory it cannot use with status 1 and one line', async () => {
    const broken = join(dir, 'broken');
    const io = captured();
    expect(await runCli(['certs', broken], io)).toBe(0);
    await import('node:fs/promises').then((fs) => fs.writeFile(join(broken, 'jwt-signing.key'), 'not json'));
    const failed = captured();
    expect(await runCli(['token', '--key', broken, '--sub', 'a'], failed)).toBe(1);
    expect(failed.err_).toMatch(/^fluxguard token: .*jwt-signing\.key is not JSON/);
    expect(failed.err_.trim().split('\n')).toHaveLength(1);
  });

  it('signs with an existing key only: a path without one is one line, status 1, and nothing written', async () => {
    const d1 = join(dir, 'd1');
    expect(await runCli(['certs', d1], captured())).toBe(0);
    const empty = join(dir, 'empty');
    await mkdir(empty);
    const noKey = join(dir, 'no-key');
    expect(await runCli(['certs', noKey], captured())).toBe(0);
    await rm(join(noKey, 'jwt-signing.key'));
    const before = async () => ({
      top: (await readdir(dir)).sort(),
      d1: (await readdir(d1)).sort(),
      empty: await readdir(empty),
      noKey: (await readdir(noKey)).sort(),
    });
    const listing = await before();
    for (const [key, message] of [
      [
        join(dir, 'nodir'),
        /no signing key in .*nodir: no such directory; write one with `fluxguard certs .*nodir` first$/,
      ],
      [join(d1, 'ca.pem'), /no signing key in .*ca\.pem: no such directory; write one with `fluxguard certs /],
      [join(d1, 'client.key'), /client\.key is a file: --key takes the directory that holds jwt-signing\.key/],
      [join(d1, 'client.key', 'x'), /no signing key in .*x: a part of the path is a file, not a directory$/],
      [empty, /no signing key in .*empty \(no jwt-signing\.key\); write one with `fluxguard certs .*empty` first$/],
      [noKey, /no signing key in .*no-key \(no jwt-signing\.key\)/],
    ] as const) {
      const io = captured();
      expect(await runCli(['token', '--key', key, '--sub', 'a'], io), key).toBe(1);
      expect(io.err_.trim().split('\n'), key).toHaveLength(1);
      expect(io.err_.trim(), key).toMatch(/^fluxguard token: /);
      expect(io.err_.trim(), key).toMatch(message);
      expect(io.err_, key).not.toContain('PRIVATE KEY');
      expect(io.out_, key).toBe('');
    }
    expect(await before()).toEqual(listing);
  });

  it('writes nothing when it signs: a directory holding the signing key alone stays as it is', async () => {
    const keyOnly = join(dir, 'key-only');
    expect(await runCli(['certs', keyOnly], captured())).toBe(0);
    for (const file of ['ca.crt', 'server.crt', 'server.key', 'client.crt', 'client.key']) {
      await rm(join(keyOnly, file));
    }
    const jwks = await stat(join(keyOnly, 'jwks.json'));
    const io = captured();
    expect(await runCli(['token', '--key', keyOnly, '--sub', 'a'], io)).toBe(0);
    expect(io.out_).toMatch(/^eyJ[\w.-]+\n$/);
    expect((await readdir(keyOnly)).sort()).toEqual(['jwks.json', 'jwt-signing.key']);
    expect((await stat(join(keyOnly, 'jwks.json'))).mtimeMs).toBe(jwks.mtimeMs);
  });

  it('answers certs given a file, or a path through one, with one line and status 1', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, 'kept\n');
    for (const [target, message] of [
      [file, /^fluxguard certs: .*a-file is a file: give the directory to write the material into$/],
      [join(file, 'dev'), /^fluxguard certs: .*dev: a part of the path is a file, not a directory$/],
    ] as const) {
      for (const argv of [
        ['certs', target],
        ['certs', target, '--force'],
      ]) {
        const io = captured();
        expect(await runCli(argv, io), target).toBe(1);
        expect(io.err_.trim(), target).toMatch(message);
        expect(io.err_.trim().split('\n'), target).toHaveLength(1);
        expect(io.out_, target).toBe('');
      }
    }
    expect(await readFile(file, 'utf8')).toBe('kept\n');
  });
});
