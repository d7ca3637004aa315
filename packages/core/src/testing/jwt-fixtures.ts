// Shared by the jwt, denylist, policy and guard tests: keys, signed tokens, calls, a captured
// audit log and a JWKS endpoint a test can take down, slow down or rotate.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { createAuditLogger, type AuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, CertificateIdentity, HeaderReader } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
import { captureLines } from '@fluxguard/test-support/log-lines';

export const ISSUER = 'https://id.example.test';
export const AUDIENCE = 'artifacts';

export interface TestKey {
  readonly alg: 'RS256' | 'ES256' | 'EdDSA' | 'PS256' | 'RS512';
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function makeKey(alg: TestKey['alg'], kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicKey, publicJwk };
}

export interface SignOptions {
  readonly claims?: JWTPayload;
  readonly header?: Record<string, unknown>;
  readonly nowSeconds?: number;
  readonly ttlSeconds?: number;
  readonly omit?: readonly string[];
}

export async function sign(key: TestKey, options: SignOptions = {}): Promise<string> {
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const claims: JWTPayload = {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: 'alice',
    iat: now,
    exp: now + (options.ttlSeconds ?? 300),
    roles: ['artifacts.reader'],
    ...options.claims,
  };
  for (const name of options.omit ?? []) Reflect.deleteProperty(claims, name);
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, ...options.header }).sign(key.privateKey);
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

export function headersOf(entries: Record<string, string | string[]>): HeaderReader {
  const map = new Map(Object.entries(entries).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v : [v]]));
  return {
    get: (name) => map.get(name.toLowerCase())?.[0],
    getAll: (name) => map.get(name.toLowerCase()) ?? [],
  };
}

/** Operations of the ArtifactStore example, as the guard tests name them. */
export const GUARD_OPS = {
  GET: '/fluxguard.example.v1.ArtifactStore/GetArtifact',
  DELETE: '/fluxguard.example.v1.ArtifactStore/DeleteArtifact',
  HEALTH: '/grpc.health.v1.Health/Check',
  PULL: '/fluxguard.example.v1.Backup/Pull',
} as const;

/** The guard tests' RBAC rules: public health, roles for reads and deletes, a certificate for pulls. */
export const GUARD_RULES = {
  [GUARD_OPS.HEALTH]: { public: true as const },
  [GUARD_OPS.GET]: { anyRoles: ['artifacts.reader', 'artifacts.admin'] },
  [GUARD_OPS.DELETE]: { anyRoles: ['artifacts.admin'] },
  [GUARD_OPS.PULL]: { certificate: [{ spiffeId: 'spiffe://fluxguard.dev/backup' }] },
};

/** A gRPC CallInfo of a test: `operation` with these headers and verified certificate. */
export function testCall(
  ids: { readonly requestId: string; readonly peerAddress: string },
  operation: string,
  headers: Record<string, string> = {},
  peerCertificate?: CertificateIdentity,
): CallInfo {
  return {
    transport: 'grpc',
    operation,
    requestId: ids.requestId,
    peerAddress: ids.peerAddress,
    peerCertificate,
    headers: headersOf(headers),
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

/** An audit logger whose lines (one a write) are collected as parsed JSON. */
export function capturedAudit(): { audit: AuditLogger; lines: Record<string, unknown>[] } {
  const { destination, lines } = captureLines();
  return { audit: createAuditLogger({ destination }), lines };
}

/** The SecurityError a promise rejects with; anything else, or no rejection, fails the test. */
export async function refusal(promise: Promise<unknown>): Promise<SecurityError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof SecurityError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

/**
 * A real JWKS endpoint on 127.0.0.1:0 that a test can take down, slow down or rotate. `trickle`
 * sends its headers and the start of a body, then one space every 50 ms, never ending.
 */
export interface JwksServer {
  readonly url: string;
  keys: JWK[];
  mode: 'ok' | 'down' | 'slow' | 'garbage' | 'trickle';
  slowMs: number;
  requests: number;
  close(): Promise<void>;
}

export async function startJwksServer(keys: JWK[]): Promise<JwksServer> {
  const state = { keys, mode: 'ok' as JwksServer['mode'], slowMs: 2000, requests: 0 };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    state.requests += 1;
    const answer = (): void => {
      if (state.mode === 'down') {
        res.writeHead(503).end('down');
      } else if (state.mode === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys": "nope"');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
      }
    };
    if (state.mode === 'trickle') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys":[ ');
      const timer = setInterval(() => res.write(' '), 50);
      res.on('close', () => {
        clearInterval(timer);
      });
    } else if (state.mode === 'slow') {
      const timer = setTimeout(answer, state.slowMs);
      req.on('close', () => {
        clearTimeout(timer);
      });
    } else {
      answer();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const handle: JwksServer = {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get keys() {
      return state.keys;
    },
    set keys(value) {
      state.keys = value;
    },
    get mode() {
      return state.mode;
    },
    set mode(value) {
      state.mode = value;
    },
    get slowMs() {
      return state.slowMs;
    },
    set slowMs(value) {
      state.slowMs = value;
    },
    get requests() {
      return state.requests;
    },
    set requests(value) {
      state.requests = value;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
  return handle;
}

/** A verified client certificate of the backup job (SPIFFE ID), valid from 1970 to 2096. */
export const BACKUP_CERTIFICATE: CertificateIdentity = Object.freeze({
  spiffeId: 'spiffe://fluxguard.dev/backup',
  uris: ['spiffe://fluxguard.dev/backup'],
  dnsNames: [],
  commonName: undefined,
  fingerprint256: 'cd'.repeat(32),
  validFrom: new Date(0),
  validTo: new Date(4_000_000_000_000),
});
