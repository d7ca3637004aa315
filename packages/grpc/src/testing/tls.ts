// Shared by this package's TLS tests: a development PKI written to a temporary directory, a
// JSON-encoded test service whose handlers report the principal they see, real grpc-js servers
// bound with fluxguard's credentials on 127.0.0.1:0, real clients, and ES256 tokens signed
// with node:crypto.
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OutgoingHttpHeaders } from 'node:http2';
import { connect, type ConnectionOptions } from 'node:tls';
import {
  Client,
  Metadata,
  Server,
  type CallOptions,
  type ChannelCredentials,
  type ClientOptions,
  type ServerCredentials,
  type ServerInterceptor,
  type ServerOptions,
  type ServiceDefinition,
  type StatusObject,
  type handleClientStreamingCall,
  type handleUnaryCall,
} from '@grpc/grpc-js';
import type { AuditLogger, AuditLoggerOptions, RbacRules } from '@fluxguard/core';
import {
  createDevCertificateAuthority,
  type DevCertificateAuthority,
  type IssuedCertificate,
} from '@fluxguard/core/dev-pki';
import { addService, createServerCredentials, getPrincipal, type SafeImplementation } from '../index.js';
import { createClientCredentials } from '../client.js';
import { captureAudit, deserialize, jsonMethod, serialize, type Json } from './harness.js';
import { grpcFrame, openTlsSession, rawGrpcCall, type RawAnswer } from './raw-http2.js';

export type { Json };

export const SERVICE = 'fluxguard.test.v1.Secure';

const method = (name: string, requestStream: boolean) => jsonMethod(`/${SERVICE}/${name}`, requestStream, false);

export interface SecureImpl {
  Public: handleUnaryCall<Json, Json>;
  Read: handleUnaryCall<Json, Json>;
  Upload: handleClientStreamingCall<Json, Json>;
  Workload: handleUnaryCall<Json, Json>;
  Pinned: handleUnaryCall<Json, Json>;
  Backup: handleUnaryCall<Json, Json>;
}

export const secureService: ServiceDefinition<SecureImpl> = {
  Public: method('Public', false),
  Read: method('Read', false),
  Upload: method('Upload', true),
  Workload: method('Workload', false),
  Pinned: method('Pinned', false),
  Backup: method('Backup', false),
};

export const op = (name: keyof SecureImpl): string => `/${SERVICE}/${name}`;
export const SERVED = Object.keys(secureService).map((name) => `/${SERVICE}/${name}`);

/** What a handler reports: the principal it sees, and for uploads what it saw in which order. */
function describePrincipal(call: Parameters<typeof getPrincipal>[0]): Json {
  const p = getPrincipal(call);
  return p === undefined
    ? { principal: null }
    : {
        principal: {
          subject: p.subject,
          roles: [...p.roles],
          authenticatedBy: p.authenticatedBy,
          spiffeId: p.certificate?.spiffeId ?? null,
        },
      };
}

/** Counts handler starts, to prove a refused call never reached one. */
export const handlerStarts = { count: 0 };

export function registerSecureService(server: Server, overrides: Partial<SafeImplementation<SecureImpl>> = {}): void {
  const unary = (call: Parameters<typeof getPrincipal>[0]): Json => {
    handlerStarts.count++;
    return describePrincipal(call);
  };
  addService(server, secureService, {
    Public: (call) => unary(call),
    Read: (call) => unary(call),
    Workload: (call) => unary(call),
    Pinned: (call) => unary(call),
    Backup: (call) => unary(call),
    Upload: async (call) => {
      handlerStarts.count++;
      // The principal must be there before the first message is read.
      const seen = describePrincipal(call);
      const messages: Json[] = [];
      for await (const message of call) messages.push(message as Json);
      return { ...seen, messages };
    },
    ...overrides,
  });
}

/** The PKI of the tests, as files in a temporary directory and as PEM. */
export interface TestPki {
  readonly dir: string;
  readonly ca: DevCertificateAuthority;
  readonly otherCa: DevCertificateAuthority;
  readonly server: IssuedCertificate;
  readonly reader: IssuedCertificate;
  readonly backup: IssuedCertificate;
  readonly outsider: IssuedCertificate;
  readonly expired: IssuedCertificate;
  readonly notYetValid: IssuedCertificate;
  readonly revoked: IssuedCertificate;
  /** Another CA's certificate claiming the reader's SPIFFE ID. */
  readonly forged: IssuedCertificate;
  readonly files: {
    readonly certFile: string;
    readonly keyFile: string;
    readonly caFile: string;
    readonly crlFile: string;
  };
  cleanup(): Promise<void>;
}

export const READER_SPIFFE = 'spiffe://fluxguard.dev/ns/prod/sa/reader';
export const BACKUP_SPIFFE = 'spiffe://fluxguard.dev/backup';

export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'fluxguard-grpc-tls-'));
  const ca = await createDevCertificateAuthority({ commonName: 'fluxguard grpc test CA' });
  const otherCa = await createDevCertificateAuthority({ commonName: 'another CA' });
  const [server, reader, backup, outsider, expired, notYetValid, revoked, forged] = await Promise.all([
    ca.issueServerCertificate(),
    ca.issueClientCertificate({ spiffeId: READER_SPIFFE }),
    ca.issueClientCertificate({ spiffeId: BACKUP_SPIFFE }),
    ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/ns/prod/sa/writer' }),
    ca.issueClientCertificate({ spiffeId: READER_SPIFFE, validity: 'expired' }),
    ca.issueClientCertificate({ spiffeId: READER_SPIFFE, validity: 'not-yet-valid' }),
    ca.issueClientCertificate({ spiffeId: READER_SPIFFE }),
    otherCa.issueClientCertificate({ spiffeId: READER_SPIFFE }),
  ]);
  const files = {
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
    crlFile: join(dir, 'ca.crl'),
  };
  await writeFile(files.certFile, server.certPem);
  await writeFile(files.keyFile, server.keyPem, { mode: 0o600 });
  await writeFile(files.caFile, ca.certPem);
  await writeFile(files.crlFile, await ca.createCrl({ revokedSerialNumbers: [revoked.serialNumber] }));
  return {
    dir,
    ca,
    otherCa,
    server,
    reader,
    backup,
    outsider,
    expired,
    notYetValid,
    revoked,
    forged,
    files,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** The RBAC rules of the guard tests: one rule of each kind over the secure service. */
export function secureRules(pki: TestPki): RbacRules {
  return {
    [op('Public')]: { public: true },
    [op('Read')]: { anyRoles: ['reader', 'admin'] },
    [op('Upload')]: { anyRoles: ['writer'] },
    [op('Workload')]: { certificate: [{ spiffeId: 'spiffe://fluxguard.dev/ns/*/sa/reader' }] },
    [op('Pinned')]: { certificate: [{ fingerprint256: pki.backup.fingerprint256 }] },
    [op('Backup')]: { anyRoles: ['backup.reader'] },
  };
}

/** Server credentials asking for, but not requiring, a client certificate; no CRL, no reload. */
export function perOperationCredentials(
  pki: TestPki,
  audit: AuditLogger,
  options: { readonly handshakeTimeoutMs?: number } = {},
): ServerCredentials {
  return createServerCredentials(
    { ...pki.files, crlFile: undefined, clientCertificates: 'per-operation' },
    { audit, reload: false, ...options },
  );
}

/** The principal a handler of the secure service reported. */
export const principalOf = (response: Json | undefined): unknown => response?.principal;

/** Replaces a file the way certificate tools do: write beside it, then rename over it. */
export async function replaceFile(file: string, contents: string): Promise<void> {
  const temporary = `${file}.${String(process.pid)}.tmp`;
  await writeFile(temporary, contents, { mode: 0o600 });
  await rename(temporary, file);
}

export interface TestServer {
  readonly server: Server;
  readonly port: number;
  readonly address: string;
  close(): Promise<void>;
}

export async function startTlsServer(
  credentials: ServerCredentials,
  interceptors: ServerInterceptor[],
  register: (server: Server) => void = registerSecureService,
  options: ServerOptions = {},
): Promise<TestServer> {
  const server = new Server({ ...options, interceptors });
  register(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', credentials, (err, bound) => {
      if (err) reject(err);
      else resolve(bound);
    });
  });
  return {
    server,
    port,
    address: `127.0.0.1:${String(port)}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}

/** What {@link startSecureServer} started: the PKI, the server, its audit lines and its clients. */
export interface SecureServer {
  readonly pki: TestPki;
  readonly server: TestServer;
  readonly audit: AuditLogger;
  readonly lines: () => Json[];
  /** A new client of the server (its own channel), with `cert` as its certificate when given. */
  client(cert?: { certPem: string; keyPem: string }): Client;
  /**
   * A call of `path` over a raw HTTP/2 stream, for what grpc-js's client never sends, on a TLS
   * session of its own (with `cert` as the client's certificate when given), closed once the
   * call is; `body` is sent as it is, one empty JSON message unless given.
   */
  rawCall(
    path: string,
    headers: OutgoingHttpHeaders,
    options?: { readonly body?: Buffer; readonly cert?: { certPem: string; keyPem: string } },
  ): Promise<RawAnswer>;
  /** Closes the clients and the server, and removes the PKI's files unless the PKI was given. */
  close(): Promise<void>;
}

/**
 * What most TLS tests start before their first test: a PKI (or `pki`), a captured audit log and
 * a server of the secure service (or of `register`) with per-operation TLS settings, behind the
 * interceptors `interceptors` makes with them.
 *
 * @example
 * ```ts
 * secure = await startSecureServer((audit) => fluxguardInterceptors({ audit }));
 * const { status } = await unary(secure.client(secure.pki.reader), 'Public');
 * ```
 */
export async function startSecureServer(
  interceptors: (audit: AuditLogger, pki: TestPki) => ServerInterceptor[],
  options: {
    readonly register?: (server: Server) => void;
    readonly serverOptions?: ServerOptions;
    readonly foldRefusals?: AuditLoggerOptions['foldRefusals'];
    /** The credentials' limit on a TLS handshake, in place of their default. */
    readonly handshakeTimeoutMs?: number;
    /**
     * A PKI several servers share, so that one certificate is trusted by each; the caller
     * removes it, after the last of them is closed.
     */
    readonly pki?: TestPki;
  } = {},
): Promise<SecureServer> {
  const pki = options.pki ?? (await createTestPki());
  const { audit, lines } = captureAudit(
    options.foldRefusals === undefined ? {} : { foldRefusals: options.foldRefusals },
  );
  const server = await startTlsServer(
    perOperationCredentials(
      pki,
      audit,
      options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.handshakeTimeoutMs },
    ),
    interceptors(audit, pki),
    options.register,
    options.serverOptions,
  );
  const clients = createClientPool();
  return {
    pki,
    server,
    audit,
    lines,
    client: (cert) => clients.open(server.address, pki.ca.certPem, cert),
    rawCall: async (path, headers, { body = grpcFrame(Buffer.from('{}')), cert } = {}) => {
      const session = openTlsSession(server.address, { ca: pki.ca.certPem, ...(cert === undefined ? {} : { cert }) });
      try {
        return await rawGrpcCall(session, path, headers, body);
      } finally {
        session.close();
      }
    },
    close: async () => {
      clients.closeAll();
      await server.close();
      if (options.pki === undefined) await pki.cleanup();
    },
  };
}

/** A client of the test service, with fluxguard's client credentials. */
export function clientFor(
  address: string,
  tls: { readonly ca: string; readonly cert?: IssuedCertificate | { certPem: string; keyPem: string } },
  onServerCertificate?: (fingerprint256: string) => void,
  options: ClientOptions = {},
): Client {
  const credentials: ChannelCredentials = createClientCredentials({
    ca: tls.ca,
    ...(tls.cert === undefined ? {} : { cert: tls.cert.certPem, key: tls.cert.keyPem }),
    ...(onServerCertificate === undefined
      ? {}
      : {
          checkServerIdentity: (_host, certificate) => {
            onServerCertificate(certificate.fingerprint256.replaceAll(':', '').toLowerCase());
            return undefined;
          },
        }),
  });
  // Each test client is its own channel: no connection is shared between identities.
  // Verified as localhost (the certificate's DNS name): an IP address is no valid TLS server name.
  return new Client(address, credentials, {
    'grpc.use_local_subchannel_pool': 1,
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
    ...options,
  });
}

/** Clients of the test service, each its own channel, closed together once the tests are done. */
export function createClientPool(): {
  open(address: string, ca: string, cert?: { certPem: string; keyPem: string }): Client;
  closeAll(): void;
} {
  const clients: Client[] = [];
  return {
    open(address, ca, cert) {
      const c = clientFor(address, { ca, ...(cert === undefined ? {} : { cert }) });
      clients.push(c);
      return c;
    },
    closeAll() {
      for (const c of clients) c.close();
    },
  };
}

export interface Outcome {
  readonly status: StatusObject;
  readonly response: Json | undefined;
}

/**
 * Resolves with the status and the response of a call started by `start`; `send` then writes
 * to the call, once the status listener is on.
 */
function outcomeOf<C extends { on(event: 'status', listener: (status: StatusObject) => void): unknown }>(
  start: (onResponse: (err: unknown, value?: Json) => void) => C,
  send?: (call: C) => void,
): Promise<Outcome> {
  return new Promise((resolve) => {
    let response: Json | undefined;
    const call = start((_err, value) => {
      response = value;
    });
    call.on('status', (status: StatusObject) => {
      setImmediate(() => {
        resolve({ status, response });
      });
    });
    send?.(call);
  });
}

const callOptions = (): CallOptions => ({ deadline: Date.now() + 10_000 });

export function unary(
  client: Client,
  name: keyof SecureImpl,
  metadata = new Metadata(),
  request: Json = {},
): Promise<Outcome> {
  return outcomeOf((onResponse) =>
    client.makeUnaryRequest(op(name), serialize, deserialize, request, metadata, callOptions(), onResponse),
  );
}

/** A client stream whose messages are all written at once, before any answer. */
export function upload(client: Client, messages: Json[], metadata = new Metadata()): Promise<Outcome> {
  return outcomeOf(
    (onResponse) =>
      client.makeClientStreamRequest(op('Upload'), serialize, deserialize, metadata, callOptions(), onResponse),
    (call) => {
      for (const message of messages) call.write(message);
      call.end();
    },
  );
}

export function bearer(token: string): Metadata {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

export const ISSUER = 'https://issuer.test';
export const AUDIENCE = 'grpc-tests';

/** An ES256 signing key and its public JWK set, with node:crypto only. */
export interface TokenSigner {
  readonly jwks: { readonly keys: readonly Json[] };
  sign(claims: Json): string;
}

export function createTokenSigner(kid = 'test-key'): TokenSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicJwk = { ...(publicKey.export({ format: 'jwk' }) as Json), kid, alg: 'ES256', use: 'sig' };
  return {
    jwks: { keys: [publicJwk] },
    sign: (claims) => signEs256(privateKey, kid, claims),
  };
}

function signEs256(key: KeyObject, kid: string, claims: Json): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid }));
  const payload = b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 600, ...claims }));
  const signature = sign('sha256', Buffer.from(`${header}.${payload}`), { key, dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${signature.toString('base64url')}`;
}

const b64url = (text: string): string => Buffer.from(text).toString('base64url');

export type RawTlsResult =
  | { readonly ok: true; readonly protocol: string | null; readonly fingerprint256: string }
  | { readonly ok: false; readonly error: string };

/** A bare TLS handshake (ALPN h2) against a server, to check versions and suites. */
export function rawHandshake(port: number, options: ConnectionOptions): Promise<RawTlsResult> {
  return new Promise((resolve) => {
    let settled = false;
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols: ['h2'], ...options });
    const finish = (result: RawTlsResult): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(result);
    };
    socket.on('secureConnect', () => {
      finish({
        ok: true,
        protocol: socket.getProtocol(),
        fingerprint256: socket.getPeerCertificate().fingerprint256.replaceAll(':', '').toLowerCase(),
      });
    });
    socket.on('error', (err: Error & { code?: string }) => {
      finish({ ok: false, error: `${err.code ?? ''} ${err.message}` });
    });
    setTimeout(() => {
      finish({ ok: false, error: 'timeout' });
    }, 5000).unref();
  });
}

export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
