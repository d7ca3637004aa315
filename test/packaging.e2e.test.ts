// The packages as npm users get them: packed with `pnpm pack` (which rewrites the
// workspace: ranges), installed with npm into an application outside the workspace, type-checked
// with the two module resolutions users have (nodenext and bundler), and run. Tests inside the
// workspace resolve the packages to their sources, so a file left out of `files`, an export
// pointing at nothing or a runtime import missing from `dependencies` shows up only here.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const PACKAGES = ['core', 'grpc', 'express', 'cli'] as const;
type PackageDir = (typeof PACKAGES)[number];

interface Manifest {
  readonly name: string;
  readonly version: string;
  readonly main?: string;
  readonly types?: string;
  readonly exports?: unknown;
  readonly typesVersions?: Record<string, Record<string, string[]>>;
  readonly dependencies?: Record<string, string>;
  readonly peerDependencies?: Record<string, string>;
  readonly peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  readonly devDependencies?: Record<string, string>;
}

interface Packed {
  readonly tarball: string;
  /** Where the tarball was unpacked: its `package/` directory. */
  readonly dir: string;
  readonly manifest: Manifest;
  /** Every file of the tarball, relative to `dir`, with `/` separators. */
  readonly files: ReadonlySet<string>;
}

// undici 8 declares Node >=22.19: it runs on the Node 24 and 26 of CI, and fails to load on Node 20.
const [nodeMajor = 0, nodeMinor = 0] = process.versions.node.split('.').map(Number);
const loadsUndici8 = nodeMajor > 22 || (nodeMajor === 22 && nodeMinor >= 19);

/** What mtls-fetch.mjs prints when the call went through with the client certificate. */
const CALLER_SERVED = { status: 200, body: { spiffeId: 'spiffe://fluxguard.dev/caller' } };

let work: string | undefined;
const packed = new Map<PackageDir, Packed>();
let app: string;

function packOf(name: PackageDir): Packed {
  const pack = packed.get(name);
  if (pack === undefined) throw new Error(`packages/${name} was not packed`);
  return pack;
}

/**
 * The environment of the commands: pnpm sets NODE_PATH to the workspace's packages, through
 * which `require` in the application would find what it did not install, and would hide a
 * missing dependency.
 */
function cleanEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_update_notifier: 'false' };
  delete env.NODE_PATH;
  delete env.NODE_OPTIONS;
  return env;
}

/** Runs a command, failing with its output so that a broken step explains itself. */
async function sh(command: string, args: readonly string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await run(command, args, { cwd, maxBuffer: 64 * 1024 * 1024, env: cleanEnvironment() });
    return stdout;
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed in ${cwd}:\n${stdout ?? ''}\n${stderr ?? ''}`, { cause: err });
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)).split(sep).join('/'));
}

/** The package a bare specifier names (`@scope/name/sub` → `@scope/name`). */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? specifier);
}

/** The packages a file imports, comments ignored (the TSDoc examples import plenty). */
function importedPackages(source: string): Set<string> {
  const imports = ts.preProcessFile(source, true, true).importedFiles.map((file) => file.fileName);
  return new Set(
    imports.filter((name) => !name.startsWith('.') && !name.startsWith('/') && !isBuiltin(name)).map(packageOf),
  );
}

async function importsOf(pack: Packed, suffix: '.js' | '.d.ts'): Promise<Set<string>> {
  const found = new Set<string>();
  for (const file of pack.files) {
    if (!file.startsWith('dist/') || !file.endsWith(suffix)) continue;
    if (suffix === '.js' && file.endsWith('.d.ts')) continue;
    for (const name of importedPackages(await readFile(join(pack.dir, file), 'utf8'))) found.add(name);
  }
  found.delete(pack.manifest.name);
  return found;
}

/** Every file path the manifest points at: main, types, typesVersions and each export target. */
function manifestTargets(manifest: Manifest): string[] {
  const targets: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') targets.push(value);
    else if (typeof value === 'object' && value !== null) for (const inner of Object.values(value)) walk(inner);
  };
  walk(manifest.exports);
  if (manifest.main !== undefined) targets.push(manifest.main);
  if (manifest.types !== undefined) targets.push(manifest.types);
  walk(manifest.typesVersions);
  return targets.map((target) => target.replace(/^\.\//, ''));
}

beforeAll(async () => {
  const scratch = await mkdtemp(join(tmpdir(), 'fluxguard-packaging-'));
  work = scratch;
  // The tarballs hold dist: build it (nothing to do when `pnpm test` has just built it).
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  await sh(
    process.execPath,
    [tsc, '-b', ...PACKAGES.map((name) => join(root, 'packages', name, 'tsconfig.build.json'))],
    root,
  );
  const packs = join(scratch, 'packs');
  await mkdir(packs);
  for (const name of PACKAGES) {
    const before = new Set(await readdir(packs));
    await sh('pnpm', ['pack', '--pack-destination', packs], join(root, 'packages', name));
    const tarball = (await readdir(packs)).find((file) => !before.has(file) && file.endsWith('.tgz'));
    if (tarball === undefined) throw new Error(`pnpm pack wrote no tarball for packages/${name}`);
    const unpacked = join(scratch, 'unpacked', name);
    await mkdir(unpacked, { recursive: true });
    await sh('tar', ['-xzf', join(packs, tarball), '-C', unpacked], scratch);
    const dir = join(unpacked, 'package');
    packed.set(name, {
      tarball: join(packs, tarball),
      dir,
      manifest: JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Manifest,
      files: new Set(await listFiles(dir)),
    });
  }

  // The application, outside the workspace: nothing of the workspace's node_modules reaches it.
  app = join(scratch, 'app');
  await mkdir(app);
  const tarballOf = (name: PackageDir): string => `file:${packOf(name).tarball}`;
  await writeFile(
    join(app, 'package.json'),
    JSON.stringify({
      name: 'fluxguard-packaging-app',
      private: true,
      type: 'module',
      dependencies: {
        '@fluxguard/core': tarballOf('core'),
        '@fluxguard/grpc': tarballOf('grpc'),
        '@fluxguard/express': tarballOf('express'),
        express: '^5.1.0',
        '@grpc/grpc-js': '^1.14.5',
        typescript: '6.0.3',
        '@types/node': '^20.19.0',
        '@types/express': '^5.0.0',
      },
    }),
  );
  await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app);
}, 300_000);

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe.each(PACKAGES)('the tarball of packages/%s', (name) => {
  const pack = (): Packed => packOf(name);

  it('holds every file its manifest points at', () => {
    const missing = manifestTargets(pack().manifest).filter((target) => !pack().files.has(target));
    expect(missing).toEqual([]);
  });

  it('holds the sources of its source maps, and no test or test helper', async () => {
    const unresolved: string[] = [];
    for (const file of pack().files) {
      if (!file.endsWith('.map')) continue;
      const map = JSON.parse(await readFile(join(pack().dir, file), 'utf8')) as {
        sourceRoot?: string;
        sources: string[];
      };
      for (const source of map.sources) {
        const target = relative(pack().dir, resolve(pack().dir, dirname(file), map.sourceRoot ?? '', source));
        if (!pack().files.has(target.split(sep).join('/'))) unresolved.push(`${file} → ${source}`);
      }
    }
    expect(unresolved).toEqual([]);
    expect([...pack().files].filter((file) => /\.test\.|(^|\/)testing\//.test(file))).toEqual([]);
  });

  it('carries the licence, the README and the changelog', () => {
    for (const file of ['LICENSE', 'README.md', 'CHANGELOG.md']) expect(pack().files.has(file)).toBe(true);
  });

  it('depends at run time on exactly what its code imports, and names every other import as a peer', async () => {
    const { dependencies = {}, peerDependencies = {} } = pack().manifest;
    const runtime = await importsOf(pack(), '.js');
    // Nothing installed for nothing: each dependency is imported by the shipped code, or is an
    // optional peer that a packed dependency needs for what this package uses of it (the
    // command needs core's development PKI).
    const neededPeers = new Set(
      PACKAGES.map(packOf)
        .filter((dep) => dependencies[dep.manifest.name] !== undefined)
        .flatMap((dep) => Object.keys(dep.manifest.peerDependenciesMeta ?? {})),
    );
    expect(Object.keys(dependencies).filter((dep) => !runtime.has(dep) && !neededPeers.has(dep))).toEqual([]);
    const declared = new Set([...Object.keys(dependencies), ...Object.keys(peerDependencies)]);
    expect([...runtime].filter((dep) => !declared.has(dep))).toEqual([]);
    // The declarations may import a package's types (`@types/express` provides `express`).
    const typed = await importsOf(pack(), '.d.ts');
    const typeProvider = (dep: string): string => `@types/${dep.replace(/^@(.*)\//, '$1__')}`;
    expect([...typed].filter((dep) => !declared.has(dep) && !declared.has(typeProvider(dep)))).toEqual([]);
  });

  it('has no workspace: range left, and takes core as a caret peer', () => {
    expect(JSON.stringify(pack().manifest)).not.toMatch(/workspace:/);
    if (name === 'core') return;
    const core = packOf('core').manifest;
    if (name === 'cli') {
      // A command, not a library an application imports beside core: core is its own dependency.
      expect(pack().manifest.dependencies?.['@fluxguard/core']).toBe(`^${core.version}`);
      return;
    }
    expect(pack().manifest.peerDependencies?.['@fluxguard/core']).toBe(`^${core.version}`);
    expect(pack().manifest.dependencies?.['@fluxguard/core']).toBeUndefined();
  });
});

/** An application that imports every public entry point, and uses each enough to need its types. */
const APP_SOURCE = `
import { generateKeyPairSync } from 'node:crypto';
import express from 'express';
import { Server } from '@grpc/grpc-js';
import {
  ERROR_CODES,
  SecurityError,
  compileRbac,
  createAuditLogger,
  createGuard,
  createJwtVerifier,
  isSecurityError,
  type SecurityErrorCode,
} from '@fluxguard/core';
import { toPublicError, type PublicError } from '@fluxguard/core/adapter';
import { createDevCertificateAuthority, type DevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { fluxguardInterceptors } from '@fluxguard/grpc';
import { createMtlsAgent, createSecureServer, fluxguard, type FluxguardMiddleware } from '@fluxguard/express';

const audit = createAuditLogger();
const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const guard = createGuard({
  audit,
  jwt: createJwtVerifier({
    issuer: 'https://id.example.com',
    audience: 'app',
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }),
  rbac: compileRbac({ 'GET /v1/items/:id': { anyRoles: ['reader'] } }),
});
const code: SecurityErrorCode = toPublicError(new SecurityError('not_found'), 'r-1').code;
const status: number = ERROR_CODES[code].httpStatus;
const pub: PublicError | undefined = isSecurityError(new Error()) ? undefined : toPublicError('x', 'r-2');
const middleware: FluxguardMiddleware = fluxguard({ audit, guard });
const grpcServer = new Server({ interceptors: fluxguardInterceptors({ audit, guard }) });
const ca: Promise<DevCertificateAuthority> = createDevCertificateAuthority();
const app = express();
app.use(middleware.before);
export const server = createSecureServer(app, {
  audit,
  tls: { cert: 'pem', key: 'pem', ca: 'pem', clientCertificates: 'per-operation' },
});
export const agent = (): ReturnType<typeof createMtlsAgent> => createMtlsAgent({ ca: 'pem' });
export { status, pub, grpcServer, ca };
`;

/** Loads everything, and shows what the optional peers' absence does. */
const MISSING_PEERS_SCRIPT = `
import { isConfigurationError } from '@fluxguard/core';
await import('@fluxguard/core/adapter');
await import('@fluxguard/grpc');
const { createMtlsAgent } = await import('@fluxguard/express');
const outcome = (run) => {
  try { run(); return 'no error'; } catch (err) { return { configuration: isConfigurationError(err), message: err.message }; }
};
let devPki;
try { await import('@fluxguard/core/dev-pki'); devPki = 'loaded'; }
catch (err) { devPki = { configuration: isConfigurationError(err), message: err.message }; }
const mtlsAgent = outcome(() => createMtlsAgent({ ca: 'pem' }));
console.log(JSON.stringify({ devPki, mtlsAgent }));
`;

/** An HTTPS server with fluxguard() on certificates of the development PKI, and one request without a token. */
const SERVE_SCRIPT = `
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:https';
import { Writable } from 'node:stream';
import express from 'express';
import { Server } from '@grpc/grpc-js';
import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { fluxguardInterceptors } from '@fluxguard/grpc';
import { createMtlsAgent, createSecureServer, fluxguard } from '@fluxguard/express';

const audit = createAuditLogger({ destination: new Writable({ write: (_chunk, _encoding, done) => done() }) });
const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const guard = createGuard({
  audit,
  jwt: createJwtVerifier({ issuer: 'https://id.example.com', audience: 'app', publicKey: publicKey.export({ type: 'spki', format: 'pem' }) }),
  rbac: compileRbac({ 'GET /v1/items/:id': { anyRoles: ['reader'] } }),
});
new Server({ interceptors: fluxguardInterceptors({ audit, guard }) });
const ca = await createDevCertificateAuthority();
const issued = await ca.issueServerCertificate();
await createMtlsAgent({ ca: ca.certPem }).close();

const app = express();
app.set('case sensitive routing', true);
const { before, after } = fluxguard({ audit, guard });
app.use(before);
app.get('/v1/items/:id', (req, res) => res.json({ id: req.params.id }));
app.use(after);
const server = createSecureServer(app, {
  audit,
  tls: { cert: issued.certPem, key: issued.keyPem, ca: ca.certPem, clientCertificates: 'per-operation' },
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const answer = await new Promise((resolve, reject) => {
  const req = request(
    { host: '127.0.0.1', port: server.address().port, path: '/v1/items/1', ca: ca.certPem, servername: 'localhost' },
    (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body: JSON.parse(body) }));
    },
  );
  req.on('error', reject);
  req.end();
});
server.close();
server.closeAllConnections?.();
console.log(JSON.stringify(answer));
`;

/** The rate-limit README example's imports: ioredis's declarations, checked too without skipLibCheck. */
const REDIS_APP_SOURCE = `
import { Redis } from 'ioredis';
import { createAuditLogger, createRedisDenylist, createRedisRateLimitStore } from '@fluxguard/core';

const audit = createAuditLogger();
const client = new Redis('redis://127.0.0.1:6379', { lazyConnect: true, maxRetriesPerRequest: 1 });
export const store = createRedisRateLimitStore({ client, audit });
export const denylist = createRedisDenylist({ client });
`;

/**
 * createMtlsAgent with the undici the application installed, and undici's own fetch, against
 * createSecureServer requiring a client certificate; or the error createMtlsAgent threw.
 */
const MTLS_FETCH_SCRIPT = `
import { Writable } from 'node:stream';
import express from 'express';
import { createAuditLogger, isConfigurationError } from '@fluxguard/core';
import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { createMtlsAgent, createSecureServer, getClientCertificate } from '@fluxguard/express';

const ca = await createDevCertificateAuthority();
const issued = await ca.issueServerCertificate();
const client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/caller' });
let dispatcher;
try {
  dispatcher = createMtlsAgent({ ca: ca.certPem, cert: client.certPem, key: client.keyPem, servername: 'localhost' });
} catch (err) {
  console.log(JSON.stringify({ configuration: isConfigurationError(err), message: err.message }));
  process.exit(0);
}
const { fetch } = await import('undici');
const audit = createAuditLogger({ destination: new Writable({ write: (_chunk, _encoding, done) => done() }) });
const app = express();
app.get('/whoami', (req, res) => res.json({ spiffeId: getClientCertificate(req)?.spiffeId ?? null }));
const server = createSecureServer(app, {
  audit,
  tls: { cert: issued.certPem, key: issued.keyPem, ca: ca.certPem, clientCertificates: 'strict' },
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
try {
  const res = await fetch(\`https://127.0.0.1:\${server.address().port}/whoami\`, { dispatcher });
  console.log(JSON.stringify({ status: res.status, body: await res.json() }));
} finally {
  await dispatcher.close();
  server.close();
  server.closeAllConnections?.();
}
`;

const tsconfig = (module: 'nodenext' | 'esnext', skipLibCheck: boolean, files: readonly string[]): string =>
  JSON.stringify({
    compilerOptions: {
      module,
      moduleResolution: module === 'nodenext' ? 'nodenext' : 'bundler',
      target: 'es2022',
      lib: ['es2023'],
      types: ['node'],
      strict: true,
      exactOptionalPropertyTypes: true,
      noEmit: true,
      skipLibCheck,
    },
    files,
  });

async function typecheck(
  module: 'nodenext' | 'esnext',
  skipLibCheck: boolean,
  files: readonly string[] = ['app.ts'],
): Promise<void> {
  const config = `tsconfig.${module}${skipLibCheck ? '.skiplib' : ''}.json`;
  await writeFile(join(app, config), tsconfig(module, skipLibCheck, files));
  await sh(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', config], app);
}

describe('an application installing the tarballs with npm', () => {
  beforeAll(async () => {
    await writeFile(join(app, 'app.ts'), APP_SOURCE);
    await writeFile(join(app, 'missing-peers.mjs'), MISSING_PEERS_SCRIPT);
    await writeFile(join(app, 'serve.mjs'), SERVE_SCRIPT);
    await writeFile(join(app, 'redis-app.ts'), REDIS_APP_SOURCE);
    await writeFile(join(app, 'mtls-fetch.mjs'), MTLS_FETCH_SCRIPT);
  });

  it('type-checks without the optional peers installed (skipLibCheck, as most applications)', async () => {
    await typecheck('nodenext', true);
  }, 120_000);

  it('loads every entry point without the optional peers, and names the one to install', async () => {
    const out = JSON.parse(await sh(process.execPath, ['missing-peers.mjs'], app)) as {
      devPki: { configuration: boolean; message: string };
      mtlsAgent: { configuration: boolean; message: string };
    };
    expect(out.devPki.configuration).toBe(true);
    expect(out.devPki.message).toMatch(/"reflect-metadata"|"@peculiar\/x509"/);
    expect(out.mtlsAgent.configuration).toBe(true);
    expect(out.mtlsAgent.message).toMatch(/"undici"/);
    // The command for this Node: a plain install would get undici 8, which Node 20 cannot load.
    expect(out.mtlsAgent.message).toMatch(loadsUndici8 ? /: npm install undici$/ : /: npm install undici@7$/);
  }, 60_000);

  describe('with the optional peers installed', () => {
    beforeAll(async () => {
      await sh(
        'npm',
        [
          'install',
          '--prefer-offline',
          '--no-audit',
          '--no-fund',
          '--loglevel=error',
          '@peculiar/x509@^2.2.0',
          'reflect-metadata@^0.2.2',
          'undici@^7.0.0',
          'ioredis@^6.0.0',
          // ioredis 6's declarations import redis-errors, which has no types of its own.
          '@types/redis-errors',
        ],
        app,
      );
    }, 180_000);

    it.each(['nodenext', 'esnext'] as const)(
      'type-checks with module %s, declarations checked too (no skipLibCheck)',
      async (module) => {
        await typecheck(module, false, ['app.ts', 'redis-app.ts']);
      },
      120_000,
    );

    it('serves fluxguard() over TLS with certificates of the development PKI: 401 problem+json without a token', async () => {
      const answer = JSON.parse(await sh(process.execPath, ['serve.mjs'], app)) as {
        status: number;
        type: string;
        body: Record<string, unknown>;
      };
      expect(answer.status).toBe(401);
      expect(answer.type).toMatch(/^application\/problem\+json/);
      expect(answer.body).toMatchObject({ status: 401, code: 'unauthenticated' });
    }, 60_000);

    it('calls a server requiring client certificates through createMtlsAgent and undici 7', async () => {
      const answer = JSON.parse(await sh(process.execPath, ['mtls-fetch.mjs'], app)) as unknown;
      expect(answer).toEqual(CALLER_SERVED);
    }, 60_000);
  });

  describe('with undici 8', () => {
    beforeAll(async () => {
      // A fresh install of the whole application, as a new user's: npm refuses one whose
      // optional peer is out of range (added to an installed tree, it would only warn).
      const manifestPath = join(app, 'package.json');
      const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { dependencies: Record<string, string> };
      manifest.dependencies.undici = '^8.0.0';
      await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
      await rm(join(app, 'node_modules'), { recursive: true, force: true });
      await rm(join(app, 'package-lock.json'), { force: true });
      await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app);
    }, 180_000);

    it('installs beside @fluxguard/express, whose peer range takes it, and type-checks', async () => {
      const installed = JSON.parse(await readFile(join(app, 'node_modules', 'undici', 'package.json'), 'utf8')) as {
        version: string;
      };
      expect(installed.version).toMatch(/^8\./);
      await typecheck('nodenext', false);
    }, 120_000);

    it(
      loadsUndici8
        ? 'calls a server requiring client certificates through createMtlsAgent and undici 8'
        : 'says, on a Node that cannot load undici 8, which version and command to use instead of a TypeError',
      async () => {
        const answer = JSON.parse(await sh(process.execPath, ['mtls-fetch.mjs'], app)) as unknown;
        if (loadsUndici8) {
          expect(answer).toEqual(CALLER_SERVED);
        } else {
          expect(answer).toEqual({
            configuration: true,
            message: expect.stringMatching(
              /^createMtlsAgent: the installed undici 8\.\d+\.\d+ \(for Node >=22\.19\.0\) could not be loaded on Node 2\d\.\d+\.\d+: npm install undici@7$/,
            ) as unknown,
          });
        }
      },
      60_000,
    );
  });
});

describe('the fluxguard command installed with npm', () => {
  let cliApp: string;
  beforeAll(async () => {
    // An application of its own: the command brings the development PKI's libraries, which the
    // application above must not have.
    cliApp = join(dirname(app), 'cli-app');
    await mkdir(cliApp);
    await writeFile(
      join(cliApp, 'package.json'),
      JSON.stringify({
        name: 'fluxguard-cli-app',
        private: true,
        type: 'module',
        dependencies: {
          '@fluxguard/core': `file:${packOf('core').tarball}`,
          fluxguard: `file:${packOf('cli').tarball}`,
        },
      }),
    );
    await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], cliApp);
  }, 180_000);

  it('writes development certificates and signs a token that core verifies with the written key set', async () => {
    const written = await sh('npx', ['--no-install', 'fluxguard', 'certs', 'dev'], cliApp);
    expect(written).toContain('jwks.json');
    const token = (
      await sh(
        'npx',
        ['--no-install', 'fluxguard', 'token', '--key', 'dev', '--sub', 'alice', '--roles', 'reader'],
        cliApp,
      )
    ).trim();
    await writeFile(
      join(cliApp, 'verify.mjs'),
      `import { readFileSync } from 'node:fs';
import { createJwtVerifier } from '@fluxguard/core';
import { DEV_TOKEN_DEFAULTS } from '@fluxguard/core/dev-pki';
const verifier = createJwtVerifier({ jwks: JSON.parse(readFileSync('dev/jwks.json', 'utf8')), ...DEV_TOKEN_DEFAULTS });
const { principal } = await verifier.verify(process.argv[2]);
console.log(JSON.stringify({ subject: principal.subject, roles: principal.roles }));
`,
    );
    expect(JSON.parse(await sh(process.execPath, ['verify.mjs', token], cliApp))).toEqual({
      subject: 'alice',
      roles: ['reader'],
    });
  }, 60_000);
});
