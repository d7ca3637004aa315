// Shared by this package's tests: real certificates from the development PKI of
// @fluxguard/core, written to a temporary directory; ES256 tokens signed with node:crypto
// (jose is not a dependency of this package); real HTTPS servers, and plain HTTP ones for the
// tests without TLS, on 127.0.0.1:0; undici clients.
import { generateKeyPairSync, sign, type JsonWebKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import type { Express } from 'express';
import { Agent } from 'undici';
import {
  createAuditLogger,
  createBruteForceProtection,
  createJwtVerifier,
  createRateLimit,
  type AuditLogger,
  type Control,
  type AuditLoggerOptions,
  type JwtVerifier,
} from '@fluxguard/core';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '@fluxguard/core/dev-pki';
import { createSecureServer } from '../index.js';
import { captureLines } from '@fluxguard/test-support/log-lines';

export const ISSUER = 'https://id.fluxguard.test';
export const AUDIENCE = 'express-tests';
export const CLIENT_SPIFFE_ID = 'spiffe://fluxguard.dev/client';

export interface TestPki {
  readonly dir: string;
  readonly ca: DevCertificateAuthority;
  readonly other: DevCertificateAuthority;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly server: IssuedCertificate;
  /** `spiffe://fluxguard.dev/client`, from the trusted CA. */
  readonly client: IssuedCertificate;
  /** The same SPIFFE ID and CN, issued by another CA. */
  readonly stranger: IssuedCertificate;
  remove(): Promise<void>;
}

export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'fluxguard-express-tls-'));
  const ca = await createDevCertificateAuthority();
  const other = await createDevCertificateAuthority({ commonName: 'untrusted CA' });
  const server = await ca.issueServerCertificate();
  const client = await ca.issueClientCertificate({ spiffeId: CLIENT_SPIFFE_ID });
  const stranger = await other.issueClientCertificate({ spiffeId: CLIENT_SPIFFE_ID });
  const caFile = join(dir, 'ca.crt');
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  await writeFile(caFile, ca.certPem);
  await writeFile(certFile, server.certPem);
  await writeFile(keyFile, server.keyPem, { mode: 0o600 });
  return {
    dir,
    ca,
    other,
    caFile,
    certFile,
    keyFile,
    server,
    client,
    stranger,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A TLS connection's options to `port`: the test CA trusted, the client certificate presented. */
export function clientTlsOptions(port: number, pki: TestPki): ConnectionOptions {
  return {
    host: '127.0.0.1',
    port,
    ca: pki.ca.certPem,
    cert: pki.client.certPem,
    key: pki.client.keyPem,
    servername: 'localhost',
  };
}

/** An undici Agent trusting `caPem`, offering `client` when given. Certificate checks are never relaxed. */
export function agentFor(caPem: string, client?: { readonly certPem: string; readonly keyPem: string }): Agent {
  return new Agent({
    connect: {
      ca: caPem,
      ...(client === undefined ? {} : { cert: client.certPem, key: client.keyPem }),
      rejectUnauthorized: true,
    },
  });
}

export interface TokenSigner {
  readonly verifier: JwtVerifier;
  sign(claims?: Record<string, unknown>, header?: Record<string, unknown>): string;
}

export function createTokenSigner(): TokenSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk: JsonWebKey = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256', use: 'sig' };
  const verifier = createJwtVerifier({
    jwks: { keys: [jwk] },
    issuer: ISSUER,
    audience: AUDIENCE,
  });
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  return {
    verifier,
    sign(claims = {}, header = {}) {
      const now = Math.floor(Date.now() / 1000);
      const head = b64({ alg: 'ES256', kid: 'k1', typ: 'JWT', ...header });
      const body = b64({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 300, roles: [], ...claims });
      const signature = sign('sha256', Buffer.from(`${head}.${body}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      return `${head}.${body}.${signature.toString('base64url')}`;
    },
  };
}

export interface CapturedAudit {
  readonly audit: AuditLogger;
  readonly lines: () => Record<string, unknown>[];
}

export function captureAudit(options: Pick<AuditLoggerOptions, 'foldRefusals'> = {}): CapturedAudit {
  const { destination, lines } = captureLines();
  return { audit: createAuditLogger({ ...options, destination, level: 'debug' }), lines: () => [...lines] };
}

export async function listen(server: Server): Promise<Served> {
  return listenOnLoopback(server, 'https');
}

/** `server` listening on 127.0.0.1:0; `close` ends its open connections too. */
async function listenOnLoopback(server: HttpServer | Server, scheme: 'http' | 'https'): Promise<Served> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** The certificate a NEW connection to the server is given. */
export async function serverCertificateOf(port: number, caPem: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost' }, () => {
      const peer = socket.getPeerCertificate();
      socket.destroy();
      resolve(peer);
    });
    socket.on('error', reject);
  });
}

/** An HTTPS server for `app` asking for, but not requiring, a client certificate; no reload. */
export function perOperationServer(app: Express, pki: TestPki, audit: AuditLogger): Server {
  return createSecureServer(app, {
    audit,
    tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, clientCertificates: 'per-operation' },
    reload: false,
  });
}

export interface Served {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `app` (or any request listener, `fluxguard().wrap(app)`) over plain HTTP on 127.0.0.1:0. */
export async function serve(app: RequestListener): Promise<Served> {
  return listenOnLoopback(createHttpServer(app), 'http');
}

/**
 * The limits that count a client by its address: a `peer` rate limit of `points` calls a minute
 * (`per-peer`) and the brute-force protection, blocking after `maxFailures`; both trust
 * `trustedProxies`.
 */
export function peerLimits(trustedProxies: readonly string[], points: number, maxFailures: number): Control[] {
  const limits = createRateLimit({
    trustedProxies,
    rules: [{ name: 'per-peer', key: 'peer', points, durationSeconds: 60 }],
  });
  const bruteForce = createBruteForceProtection({
    trustedProxies,
    peer: { maxFailures, windowSeconds: 60, blockSeconds: 60 },
  });
  return [...limits.controls, bruteForce];
}
