import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ClientCertificateMode, Denylist, JwtVerifier, RateLimitStore } from '@fluxguard/core';
import { loadReferenceSecurity, signDevToken, type ReferenceSecurity } from '@fluxguard/example-artifact-store';
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
  cleanup(): void;
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
  /** HTTP only: the server's request timeout (and so its headers timeout, at most 10 s). */
  readonly requestTimeoutMs?: number;
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
  });
  const adminToken = await world.token('e2e-admin', ['artifacts.admin']);
  const clients: ArtifactClient[] = [];
  let port: number;
  let stop: () => Promise<void>;
  let make: (o: ClientOptions) => ArtifactClient;
  if (transport === 'grpc') {
    const server = await startGrpcServer({ host: '127.0.0.1', port: 0, dataDir, audit: log.audit, security });
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
    close: async () => {
      for (const c of clients) c.close();
      await stop();
      await security.close();
    },
  };
}
