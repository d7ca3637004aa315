import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { ClientCertificateMode, Denylist, JwtVerifier, RateLimitStore, UrlGuard } from '@fluxguard/core';
import {
  DEFAULT_POLICY_FILE,
  loadReferenceSecurity,
  signDevToken,
  type ReferenceSecurity,
} from '@fluxguard/example-artifact-store';
import { startGrpcServer } from '@fluxguard/example-grpc-server';
import { startHttpServer } from '@fluxguard/example-http-server';
import { grpcArtifactClient, httpArtifactClient, type ArtifactClient } from './clients.js';
import { captureLog, type CapturedLog } from './log-capture.js';
import { createTestPki, type ClientCredential, type TestPki } from './pki.js';

export type TransportName = 'grpc' | 'http';
export const TRANSPORTS: readonly TransportName[] = ['grpc', 'http'];

/** One test file's world: a PKI, development JWT keys, a scratch directory. */
export interface E2eEnvironment {
  readonly base: string;
  readonly pki: TestPki;
  /** Holds the development JWT signing key and JWKS the servers trust. */
  readonly devDir: string;
  /** A token signed with the trusted development key. */
  token(subject: string, roles: readonly string[], options?: { ttlSeconds?: number; jti?: string }): Promise<string>;
  /**
   * Writes the reference policy as `change` returns it to `<name>.policy.json` in this
   * environment, and returns the path (for `FLUXGUARD_POLICY`).
   */
  writePolicy(name: string, change: (reference: ReferencePolicy) => object): string;
  cleanup(): void;
}

/**
 * The upload operation of each transport, with the same limits: the rules of a policy section
 * (`timeouts`, `limits`) that a test sets for uploads on both.
 */
export function forUploads<T extends object>(limits: T): ({ readonly operation: string } & T)[] {
  return [
    { operation: '/fluxguard.example.v1.ArtifactStore/UploadArtifact', ...limits },
    { operation: 'PUT /v1/artifacts/*path', ...limits },
  ];
}

/** The reference policy file as an object: the parts tests change, typed; the rest as it is. */
export interface ReferencePolicy {
  readonly [section: string]: unknown;
  readonly rbac: { readonly rules: { readonly operation: string; certificate?: unknown }[] };
  readonly timeouts: { readonly rules: readonly { readonly operation: string; readonly idleMs?: number }[] };
  readonly rateLimits: { readonly rules: readonly { readonly name: string }[] };
}

/** Creates the PKI and key material of one test file. */
export async function createE2eEnvironment(): Promise<E2eEnvironment> {
  const base = mkdtempSync(join(tmpdir(), 'fluxguard-e2e-'));
  const pkiDir = join(base, 'pki');
  mkdirSync(pkiDir);
  const devDir = join(base, 'dev');
  const pki = await createTestPki(pkiDir);
  return {
    base,
    pki,
    devDir,
    token: (subject, roles, options = {}) => signDevToken({ devDir, subject, roles, ...options }),
    writePolicy: (name, change) => {
      const file = join(base, `${name}.policy.json`);
      writeFileSync(
        file,
        JSON.stringify(change(JSON.parse(readFileSync(DEFAULT_POLICY_FILE, 'utf8')) as ReferencePolicy)),
      );
      return file;
    },
    cleanup: () => {
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** Options of {@link startTransport}. */
export interface StartOptions {
  /** Default `per-operation`. */
  readonly clientCertificates?: ClientCertificateMode;
  /** Further environment for the reference security (e.g. `FLUXGUARD_POLICY`). */
  readonly env?: Readonly<Record<string, string>>;
  readonly jwt?: JwtVerifier;
  readonly denylist?: Denylist;
  readonly rateLimitStore?: RateLimitStore;
  readonly urlGuard?: UrlGuard;
  /** HTTP only: the server's request timeout (and so its headers timeout, at most 10 s). */
  readonly requestTimeoutMs?: number;
  /** Most artifacts one listing returns. Default: the store's. */
  readonly maxListEntries?: number;
}

/** Credentials of one client: a certificate (or none) and a token (or none). */
export interface ClientOptions {
  readonly cert?: ClientCredential | null;
  readonly token?: string | null;
}

/** One reference server under test, with its log and a way to make clients. */
export interface TransportUnderTest {
  readonly transport: TransportName;
  readonly world: E2eEnvironment;
  readonly log: CapturedLog;
  readonly dataDir: string;
  readonly port: number;
  readonly security: ReferenceSecurity;
  /** A client with the valid development certificate and an admin token. */
  readonly client: ArtifactClient;
  /** A client with other credentials; `null` leaves one out. */
  clientWith(options: ClientOptions): ArtifactClient;
  /**
   * The reference server's own shutdown, its clients left as they are: calls in flight get the
   * server's grace, then its forced close. `close` after it still closes the rest.
   */
  shutDown(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a reference server over TLS on an ephemeral port, with the test PKI and a fresh data directory. */
export async function startTransport(
  transport: TransportName,
  world: E2eEnvironment,
  options: StartOptions = {},
): Promise<TransportUnderTest> {
  const dataDir = mkdtempSync(join(world.base, `data-${transport}-`));
  const log = captureLog();
  const security = await loadReferenceSecurity({
    devDir: world.devDir,
    audit: log.audit,
    env: {
      FLUXGUARD_TLS_CERT: world.pki.serverCertFile,
      FLUXGUARD_TLS_KEY: world.pki.serverKeyFile,
      FLUXGUARD_TLS_CA: world.pki.caFile,
      FLUXGUARD_TLS_CRL: world.pki.crlFile,
      FLUXGUARD_CLIENT_CERTS: options.clientCertificates ?? 'per-operation',
      ...options.env,
    },
    ...(options.jwt === undefined ? {} : { jwt: options.jwt }),
    ...(options.denylist === undefined ? {} : { denylist: options.denylist }),
    ...(options.rateLimitStore === undefined ? {} : { rateLimitStore: options.rateLimitStore }),
    ...(options.urlGuard === undefined ? {} : { urlGuard: options.urlGuard }),
  });
  const adminToken = await world.token('e2e-admin', ['artifacts.admin']);
  const clients: ArtifactClient[] = [];
  let port: number;
  let stop: () => Promise<void>;
  let make: (o: ClientOptions) => ArtifactClient;
  if (transport === 'grpc') {
    const server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      dataDir,
      audit: log.audit,
      security,
      ...(options.maxListEntries === undefined ? {} : { maxListEntries: options.maxListEntries }),
    });
    port = server.port;
    stop = () => server.close();
    make = ({ cert, token }) =>
      grpcArtifactClient(
        `127.0.0.1:${server.port}`,
        grpc.credentials.createSsl(world.pki.ca, cert?.key ?? null, cert?.cert ?? null),
        token === null || token === undefined ? {} : { authorization: `Bearer ${token}` },
        // A fresh connection per client, so that each one makes its own handshake; the server
        // name is the certificate's (an IP address is no valid TLS server name, RFC 6066).
        { 'grpc.use_local_subchannel_pool': 1, 'grpc.ssl_target_name_override': 'localhost' },
      );
  } else {
    const server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      dataDir,
      audit: log.audit,
      security,
      ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
      ...(options.maxListEntries === undefined ? {} : { maxListEntries: options.maxListEntries }),
    });
    port = server.port;
    stop = () => server.close();
    make = ({ cert, token }) =>
      httpArtifactClient(
        `https://127.0.0.1:${server.port}`,
        { ca: world.pki.ca, ...(cert === null || cert === undefined ? {} : { cert: cert.cert, key: cert.key }) },
        token === null || token === undefined ? {} : { authorization: `Bearer ${token}` },
      );
  }
  const clientWith = (o: ClientOptions): ArtifactClient => {
    const c = make(o);
    clients.push(c);
    return c;
  };
  return {
    transport,
    world,
    log,
    dataDir,
    port,
    security,
    client: clientWith({ cert: world.pki.clients.valid, token: adminToken }),
    clientWith,
    // The reference servers' `close` runs once, however often it is called.
    shutDown: () => stop(),
    close: async () => {
      for (const c of clients) c.close();
      await stop();
      await security.close();
    },
  };
}

/** A reference server running in a process of its own (`examples/*-server/dist/main.js`). */
export interface ServerProcess {
  readonly transport: TransportName;
  readonly port: number;
  /** The server's process id, to read its descriptors and memory from `/proc`. */
  readonly pid: number;
  /** Everything the process wrote so far (its log lines on stdout, anything on stderr). */
  output(): string;
  /** A client with the valid development certificate and this token. */
  clientWith(token: string): ArtifactClient;
  close(): Promise<void>;
}

const MAIN: Readonly<Record<TransportName, string>> = {
  grpc: fileURLToPath(new URL('../../examples/grpc-server/dist/main.js', import.meta.url)),
  http: fileURLToPath(new URL('../../examples/http-server/dist/main.js', import.meta.url)),
};

/**
 * Starts the built reference server of `transport` as its own Node process on an ephemeral port,
 * with the test PKI and `env` (a policy, a Redis URL), as a replica of a deployment would run.
 */
export async function spawnReferenceServer(
  transport: TransportName,
  world: E2eEnvironment,
  env: Readonly<Record<string, string>>,
  options: { readonly openFiles?: number } = {},
): Promise<ServerProcess> {
  // `ulimit -n` then `exec`: the server runs under that open-file limit, with the shell's pid.
  const [command, args] =
    options.openFiles === undefined
      ? [process.execPath, [MAIN[transport]]]
      : ['sh', ['-c', `ulimit -n ${String(options.openFiles)} && exec "$0" "$1"`, process.execPath, MAIN[transport]]];
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      FLUXGUARD_HOST: '127.0.0.1',
      FLUXGUARD_GRPC_PORT: '0',
      FLUXGUARD_HTTP_PORT: '0',
      FLUXGUARD_DATA_DIR: mkdtempSync(join(world.base, `process-data-${transport}-`)),
      FLUXGUARD_DEV_DIR: world.devDir,
      FLUXGUARD_TLS_CERT: world.pki.serverCertFile,
      FLUXGUARD_TLS_KEY: world.pki.serverKeyFile,
      FLUXGUARD_TLS_CA: world.pki.caFile,
      FLUXGUARD_CLIENT_CERTS: 'per-operation',
      ...env,
    },
  });
  let stderr = '';
  let output = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    output += d.toString();
  });
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      reject(new Error(`the ${transport} server process did not start: ${stderr}`));
    }, 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      // The "server listening" line names its URL (HTTP) or address (gRPC), port included.
      const match = /"(?:url|address)":"[^"]*:(\d+)"/.exec(out);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${transport} server process exited (${String(code)}): ${stderr}`));
    });
  });
  const clients: ArtifactClient[] = [];
  const cert = world.pki.clients.valid;
  return {
    transport,
    port,
    pid: child.pid ?? 0,
    output: () => output,
    clientWith: (token) => {
      const client =
        transport === 'grpc'
          ? grpcArtifactClient(
              `127.0.0.1:${String(port)}`,
              grpc.credentials.createSsl(world.pki.ca, cert.key, cert.cert),
              { authorization: `Bearer ${token}` },
              { 'grpc.use_local_subchannel_pool': 1, 'grpc.ssl_target_name_override': 'localhost' },
            )
          : httpArtifactClient(
              `https://127.0.0.1:${String(port)}`,
              { ca: world.pki.ca, cert: cert.cert, key: cert.key },
              { authorization: `Bearer ${token}` },
            );
      clients.push(client);
      return client;
    },
    close: async () => {
      for (const client of clients) client.close();
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
