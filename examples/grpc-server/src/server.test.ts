import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { createConnection, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CallCredentials,
  Client,
  Metadata,
  loadPackageDefinition,
  status as Status,
  type GrpcObject,
  type MethodDefinition,
  type StatusObject,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ConfigurationError, createAuditLogger, type AuditLogger } from '@fluxguard/core';
import { createClientCredentials, defaultDeadline } from '@fluxguard/grpc';
import {
  DEFAULT_POLICY_FILE,
  PROTO_PATH,
  loadReferenceSecurity,
  signDevToken,
  type ReferenceSecurity,
} from '@fluxguard/example-artifact-store';
import { startGrpcServer, type StartedGrpcServer } from './server.js';

type Json = Record<string, unknown>;
type Method = MethodDefinition<Json, Json>;

const HEALTH_PROTO = fileURLToPath(new URL('../proto/health.proto', import.meta.url));

function methods(protoPath: string, service: string): Record<string, Method> {
  const loaded = loadPackageDefinition(
    loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }),
  );
  let node: unknown = loaded;
  for (const part of service.split('.')) node = (node as GrpcObject)[part];
  return (node as { service: Record<string, Method> }).service;
}

const store = methods(PROTO_PATH, 'fluxguard.example.v1.ArtifactStore');
const health = methods(HEALTH_PROTO, 'grpc.health.v1.Health');

interface Result {
  readonly status: StatusObject;
  readonly messages: Json[];
}

function method(definitions: Record<string, Method>, name: string): Method {
  const definition = definitions[name];
  if (definition === undefined) throw new Error(`no method ${name}`);
  return definition;
}

/**
 * Resolves with the status and the messages of a call started by `start`; `send` then writes to
 * the call, once the status listener is on.
 */
function collect<C extends { on(event: 'status', listener: (status: StatusObject) => void): unknown }>(
  start: (messages: Json[]) => C,
  send?: (call: C) => void,
): Promise<Result> {
  return new Promise((resolve) => {
    const messages: Json[] = [];
    const call = start(messages);
    call.on('status', (status: StatusObject) => {
      setImmediate(() => {
        resolve({ status, messages });
      });
    });
    send?.(call);
  });
}

/** The response callback of a unary or client-stream call: keeps the response, if any. */
const keepResponse =
  (messages: Json[]) =>
  (_err: unknown, value?: Json): void => {
    if (value !== undefined) messages.push(value);
  };

function unary(client: Client, m: Method, request: Json, metadata = new Metadata()): Promise<Result> {
  return collect((messages) =>
    client.makeUnaryRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      request,
      metadata,
      {},
      keepResponse(messages),
    ),
  );
}

function serverStream(client: Client, m: Method, request: Json, metadata = new Metadata()): Promise<Result> {
  return collect((messages) => {
    const call = client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      request,
      metadata,
      {},
    );
    call.on('data', (value: Json) => messages.push(value));
    call.on('error', () => undefined);
    return call;
  });
}

function clientStream(client: Client, m: Method, requests: Json[], metadata = new Metadata()): Promise<Result> {
  return collect(
    (messages) =>
      client.makeClientStreamRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        metadata,
        {},
        keepResponse(messages),
      ),
    (call) => {
      for (const request of requests) call.write(request);
      call.end();
    },
  );
}

function requestIdOf(status: StatusObject): string {
  const [value] = status.metadata.get('x-request-id');
  expect(typeof value).toBe('string');
  return String(value);
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

let base: string;
let dataDir: string;
let devDir: string;
let security: ReferenceSecurity;
let server: StartedGrpcServer;
/** The development client certificate (spiffe://fluxguard.dev/client) and an admin token. */
let client: Client;
/** Tokens by role, signed with the development key the server trusts. */
const tokens: Record<'admin' | 'writer' | 'reader' | 'none', string> = { admin: '', writer: '', reader: '', none: '' };
const logChunks: string[] = [];
const logLines = (): Json[] =>
  logChunks
    .join('')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);
const clients: Client[] = [];

function bearer(token: string): Metadata {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/**
 * A client of `address` trusting the development CA, with or without the development client
 * certificate, and with a token on every call when given (call credentials).
 */
function tlsClient(address: string, withCertificate: boolean, token?: string): Client {
  const channel = createClientCredentials({
    caFile: join(devDir, 'ca.crt'),
    ...(withCertificate ? { certFile: join(devDir, 'client.crt'), keyFile: join(devDir, 'client.key') } : {}),
  });
  const c = new Client(
    address,
    token === undefined
      ? channel
      : channel.compose(
          CallCredentials.createFromMetadataGenerator((_params, callback) => {
            callback(null, bearer(token));
          }),
        ),
    { interceptors: [defaultDeadline(15_000)], 'grpc.use_local_subchannel_pool': 1 },
  );
  clients.push(c);
  return c;
}

async function startOwn(audit: AuditLogger, env: Record<string, string> = {}) {
  const dir = await mkdtemp(join(base, 'data-'));
  const own = await loadReferenceSecurity({ devDir, audit, env });
  const started = await startGrpcServer({ port: 0, dataDir: dir, audit, security: own });
  return {
    server: started,
    address: `localhost:${started.port}`,
    close: async () => {
      await started.close();
      await own.close();
    },
  };
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'fluxguard-grpc-example-'));
  dataDir = join(base, 'data');
  devDir = join(base, 'dev');
  await mkdir(dataDir);
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logChunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  const audit = createAuditLogger({ destination });
  // An empty environment: the development PKI and key in devDir, the default policy.
  security = await loadReferenceSecurity({ devDir, audit, env: {} });
  server = await startGrpcServer({ port: 0, dataDir, audit, security });
  tokens.admin = await signDevToken({ devDir, subject: 'ada', roles: ['artifacts.admin'] });
  tokens.writer = await signDevToken({ devDir, subject: 'wes', roles: ['artifacts.writer'] });
  tokens.reader = await signDevToken({ devDir, subject: 'rea', roles: ['artifacts.reader'] });
  tokens.none = await signDevToken({ devDir, subject: 'nob', roles: [] });
  client = tlsClient(`localhost:${server.port}`, true, tokens.admin);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server.close();
  await security.close();
  await rm(base, { recursive: true, force: true });
});

describe('reference gRPC server', () => {
  it('listens on an ephemeral port', () => {
    expect(server.port).toBeGreaterThan(0);
    expect(server.address).toBe(`127.0.0.1:${server.port}`);
  });

  it('answers health checks, publicly', async () => {
    const whole = await unary(client, method(health, 'Check'), { service: '' });
    expect(whole.status.code).toBe(Status.OK);
    expect(whole.messages[0]).toEqual({ status: 'SERVING' });
    const store = await unary(client, method(health, 'Check'), { service: 'fluxguard.example.v1.ArtifactStore' });
    expect(store.messages[0]).toEqual({ status: 'SERVING' });
    const unknown = await unary(client, method(health, 'Check'), { service: 'no.such.Service' });
    expect(unknown.status.code).toBe(Status.NOT_FOUND);
  });

  it('uploads, gets, lists and deletes an artifact', async () => {
    const content = Buffer.from('weights '.repeat(10_000));
    const upload = await clientStream(client, method(store, 'UploadArtifact'), [
      { header: { path: 'models/a.bin', sha256: sha256(content) } },
      { chunk: content.subarray(0, 30_000) },
      { chunk: content.subarray(30_000) },
    ]);
    expect(upload.status.code).toBe(Status.OK);
    expect(upload.messages[0]).toEqual({ path: 'models/a.bin', sha256: sha256(content), size: content.length });

    const got = await unary(client, method(store, 'GetArtifact'), { path: 'models/a.bin' });
    expect(got.status.code).toBe(Status.OK);
    expect(Buffer.compare(got.messages[0]?.content as Buffer, content)).toBe(0);
    expect(got.messages[0]).toMatchObject({ sha256: sha256(content), size: content.length });

    const listed = await serverStream(client, method(store, 'ListArtifacts'), { prefix: 'models/' });
    expect(listed.status.code).toBe(Status.OK);
    expect(listed.messages).toEqual([{ path: 'models/a.bin', sha256: sha256(content), size: content.length }]);

    const deleted = await unary(client, method(store, 'DeleteArtifact'), { path: 'models/a.bin' });
    expect(deleted.status.code).toBe(Status.OK);
    const gone = await unary(client, method(store, 'GetArtifact'), { path: 'models/a.bin' });
    expect(gone.status.code).toBe(Status.NOT_FOUND);
    expect(gone.status.details).toBe('Not found.');
  });

  it('refuses a checksum mismatch, naming the field, and keeps nothing', async () => {
    const result = await clientStream(client, method(store, 'UploadArtifact'), [
      { header: { path: 'bad/mismatch.bin', sha256: sha256(Buffer.from('something else')) } },
      { chunk: Buffer.from('actual bytes') },
    ]);
    expect(result.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(result.status.metadata.get('x-fluxguard-field')).toEqual(['sha256']);
    const files = await readdir(dataDir, { recursive: true });
    expect(files.filter((f) => f.includes('mismatch'))).toEqual([]);
  });

  it('refuses an upload whose first message is not a header', async () => {
    const result = await clientStream(client, method(store, 'UploadArtifact'), [{ chunk: Buffer.from('no header') }]);
    expect(result.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(result.status.metadata.get('x-fluxguard-field')).toEqual(['header']);
    const empty = await clientStream(client, method(store, 'UploadArtifact'), []);
    expect(empty.status.code).toBe(Status.INVALID_ARGUMENT);
  });

  it('refuses a second header and a message with no part after the header, each by its own reason', async () => {
    const header = { header: { path: 'models/parts.bin', sha256: sha256(Buffer.from('x')) } };
    const cases = [
      ['example-header-twice', header, 'app.upload_header_repeated'],
      ['example-empty-part', {}, 'app.upload_part_missing'],
    ] as const;
    for (const [requestId, second, reason] of cases) {
      const metadata = new Metadata();
      metadata.set('x-request-id', requestId);
      const result = await clientStream(client, method(store, 'UploadArtifact'), [header, second], metadata);
      expect(result.status.code).toBe(Status.INVALID_ARGUMENT);
      expect(result.status.metadata.get('x-fluxguard-field')).toEqual(['chunk']);
      await expect.poll(() => logLines().filter((l) => l.requestId === requestId)).toMatchObject([{ reason }]);
    }
  });

  it('refuses path traversal', async () => {
    const result = await unary(client, method(store, 'GetArtifact'), { path: '../../etc/passwd' });
    expect(result.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(JSON.stringify(result.status.metadata.toJSON()) + result.status.details).not.toContain('passwd');
  });

  it('answers a file-system failure with a generic INTERNAL and logs the cause with the same request id', async () => {
    // A socket file: opening it fails (ENXIO), a failure no client can cause through the API.
    const socket = createServer().listen(join(dataDir, 'a-socket'));
    await once(socket, 'listening');
    const metadata = new Metadata();
    metadata.set('x-request-id', 'eisdir-1');
    const result = await unary(client, method(store, 'GetArtifact'), { path: 'a-socket' }, metadata).finally(() => {
      socket.close();
    });
    expect(result.status.code).toBe(Status.INTERNAL);
    expect(result.status.details).toBe('An internal error occurred.');
    expect(requestIdOf(result.status)).toBe('eisdir-1');
    const visible = JSON.stringify({ details: result.status.details, trailers: result.status.metadata.toJSON() });
    expect(visible).not.toContain(dataDir);
    expect(visible).not.toMatch(/ENXIO|errno|\bat /);
    const lines = logLines().filter((l) => l.requestId === 'eisdir-1');
    expect(lines).toHaveLength(1);
    const err = JSON.stringify(lines[0]?.err);
    expect(err).toContain('ENXIO');
    expect(err).toMatch(/\bat /);
  });

  it('accepts an upload chunk close to the 8 MiB message limit', async () => {
    const content = Buffer.alloc(7 * 1024 * 1024, 7);
    const result = await clientStream(client, method(store, 'UploadArtifact'), [
      { header: { path: 'big/seven.bin', sha256: sha256(content) } },
      { chunk: content },
    ]);
    expect(result.status.code).toBe(Status.OK);
    expect(result.messages[0]).toMatchObject({ size: content.length });
  });
});

describe('authentication and authorization', () => {
  const address = (): string => `localhost:${server.port}`;

  it('keeps health public: no client certificate, no token', async () => {
    const anonymous = tlsClient(address(), false);
    const result = await unary(anonymous, method(health, 'Check'), { service: '' });
    expect(result.status.code).toBe(Status.OK);
  });

  it('answers UNAUTHENTICATED without a token and with a bad one', async () => {
    const noToken = await unary(tlsClient(address(), true), method(store, 'GetArtifact'), { path: 'x' });
    expect(noToken.status.code).toBe(Status.UNAUTHENTICATED);
    const bad = await unary(tlsClient(address(), true, `${tokens.reader}x`), method(store, 'GetArtifact'), {
      path: 'x',
    });
    expect(bad.status.code).toBe(Status.UNAUTHENTICATED);
  });

  it('enforces the roles of the policy', async () => {
    const content = Buffer.from('roles');
    const uploadWith = (token: string) =>
      clientStream(tlsClient(address(), true, token), method(store, 'UploadArtifact'), [
        { header: { path: 'roles/r.txt', sha256: sha256(content) } },
        { chunk: content },
      ]);
    expect((await uploadWith(tokens.reader)).status.code).toBe(Status.PERMISSION_DENIED);
    expect((await uploadWith(tokens.none)).status.code).toBe(Status.PERMISSION_DENIED);
    expect((await uploadWith(tokens.writer)).status.code).toBe(Status.OK);
    const reader = tlsClient(address(), true, tokens.reader);
    expect((await unary(reader, method(store, 'GetArtifact'), { path: 'roles/r.txt' })).status.code).toBe(Status.OK);
    expect((await serverStream(reader, method(store, 'ListArtifacts'), { prefix: 'roles/' })).status.code).toBe(
      Status.OK,
    );
    expect((await unary(reader, method(store, 'DeleteArtifact'), { path: 'roles/r.txt' })).status.code).toBe(
      Status.PERMISSION_DENIED,
    );
    const writer = tlsClient(address(), true, tokens.writer);
    expect((await unary(writer, method(store, 'DeleteArtifact'), { path: 'roles/r.txt' })).status.code).toBe(
      Status.PERMISSION_DENIED,
    );
    expect((await unary(client, method(store, 'DeleteArtifact'), { path: 'roles/r.txt' })).status.code).toBe(Status.OK);
  });

  it('asks for the client certificate the policy names, even with a valid token', async () => {
    const noCertificate = tlsClient(address(), false, tokens.admin);
    const result = await unary(noCertificate, method(store, 'GetArtifact'), { path: 'x' });
    expect(result.status.code).toBe(Status.PERMISSION_DENIED);
  });

  it('ignores metadata that claims a principal', async () => {
    const metadata = new Metadata();
    metadata.set('x-fluxguard-principal', JSON.stringify({ subject: 'root', roles: ['artifacts.admin'] }));
    metadata.set('x-user', 'root');
    const result = await unary(tlsClient(address(), true), method(store, 'DeleteArtifact'), { path: 'x' }, metadata);
    expect(result.status.code).toBe(Status.UNAUTHENTICATED);
  });

  it('logs each refusal with its reason and the subject', async () => {
    const metadata = new Metadata();
    metadata.set('x-request-id', 'example-denied-1');
    await unary(tlsClient(address(), true, tokens.reader), method(store, 'DeleteArtifact'), { path: 'x' }, metadata);
    const lines = logLines().filter((l) => l.requestId === 'example-denied-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      code: 'permission_denied',
      operation: '/fluxguard.example.v1.ArtifactStore/DeleteArtifact',
    });
  });

  it('refuses a handshake without a client certificate in strict mode', async () => {
    const strict = await startOwn(createAuditLogger({ level: 'silent' }), { FLUXGUARD_CLIENT_CERTS: 'strict' });
    try {
      const without = await unary(tlsClient(strict.address, false), method(health, 'Check'), { service: '' });
      expect(without.status.code).toBe(Status.UNAVAILABLE);
      const withCertificate = await unary(tlsClient(strict.address, true), method(health, 'Check'), { service: '' });
      expect(withCertificate.status.code).toBe(Status.OK);
    } finally {
      await strict.close();
    }
  });

  it('cannot be started without security', async () => {
    await expect(startGrpcServer({ port: 0, dataDir } as never)).rejects.toThrow(ConfigurationError);
  });
});

describe('GetArtifact answers within a byte budget', () => {
  const content = Buffer.from('x'.repeat(1_500));
  let own: StartedGrpcServer;
  let ownSecurity: ReferenceSecurity;
  const sessions: ClientHttp2Session[] = [];
  const lines: { reason?: string; level?: number; event?: string }[] = [];

  beforeAll(async () => {
    const audit = createAuditLogger({
      destination: new Writable({
        write: (chunk: Buffer, _e, done) => {
          lines.push(JSON.parse(chunk.toString()) as { reason?: string; level?: number; event?: string });
          done();
        },
      }),
    });
    ownSecurity = await loadReferenceSecurity({ devDir, audit, env: {} });
    own = await startGrpcServer({
      port: 0,
      dataDir: await mkdtemp(join(base, 'budget-')),
      audit,
      security: ownSecurity,
      answerBudget: { totalBytes: 3_000, perCallerBytes: 2_000 },
    });
    const admin = tlsClient(`localhost:${own.port}`, true, tokens.admin);
    const upload = await clientStream(admin, method(store, 'UploadArtifact'), [
      { header: { path: 'budget/a.bin', sha256: sha256(content) } },
      { chunk: content },
    ]);
    expect(upload.status.code).toBe(Status.OK);
  });

  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await own.close();
    await ownSecurity.close();
  });

  /** A GetArtifact whose answer is never read: a window of 1 KiB, never opened further. */
  function unreadGet(token: string): ClientHttp2Session {
    const session = http2Connect(`https://localhost:${String(own.port)}`, {
      ca: readFileSync(join(devDir, 'ca.crt')),
      cert: readFileSync(join(devDir, 'client.crt')),
      key: readFileSync(join(devDir, 'client.key')),
      settings: { initialWindowSize: 1024 },
    });
    session.on('error', () => undefined);
    sessions.push(session);
    const request = method(store, 'GetArtifact').requestSerialize({ path: 'budget/a.bin' });
    const frame = Buffer.alloc(5 + request.length);
    frame.writeUInt32BE(request.length, 1);
    request.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': method(store, 'GetArtifact').path,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${token}`,
    });
    stream.on('error', () => undefined);
    stream.pause();
    stream.end(frame);
    return session;
  }

  const get = (token: string): Promise<number> =>
    unary(tlsClient(`localhost:${own.port}`, true, token), method(store, 'GetArtifact'), { path: 'budget/a.bin' }).then(
      (result) => result.status.code,
    );

  it('refuses an answer over a caller’s share or the total at once, and serves again once the held ones end', async () => {
    const reader = unreadGet(tokens.reader);
    // Held: the reader's second answer would go over its 2,000 bytes.
    await expect.poll(() => get(tokens.reader), { timeout: 5_000 }).toBe(Status.UNAVAILABLE);
    // Another caller still fits in the total; then a second held answer fills it.
    expect(await get(tokens.admin)).toBe(Status.OK);
    unreadGet(tokens.writer);
    await expect.poll(() => get(tokens.admin), { timeout: 5_000 }).toBe(Status.UNAVAILABLE);
    // The client leaves: its answer's bytes are given back.
    reader.destroy();
    await expect.poll(() => get(tokens.admin), { timeout: 5_000 }).toBe(Status.OK);
    // Clients fill the budget at will: each refusal is a refusal line, never an error line.
    const refusals = lines.filter((line) => line.reason === 'app.answer_budget');
    expect(refusals.filter((line) => line.event === 'request.denied' && line.level === 40).length).toBeGreaterThan(0);
    expect(refusals.filter((line) => line.event === 'request.failed' || (line.level ?? 0) >= 50)).toEqual([]);
  });
});

describe('health Watch', () => {
  /** A watch of the server's health: its messages and how it ended; `onMessage` sees each as it comes. */
  async function watchHealth(
    address: string,
    { deadline, onMessage }: { deadline?: number; onMessage?: (messages: Json[]) => void } = {},
  ): Promise<{ messages: Json[]; status: StatusObject }> {
    const watcher = tlsClient(address, false);
    try {
      const watch = method(health, 'Watch');
      const call = watcher.makeServerStreamRequest(
        watch.path,
        watch.requestSerialize,
        watch.responseDeserialize,
        { service: '' },
        new Metadata(),
        deadline === undefined ? {} : { deadline },
      );
      const messages: Json[] = [];
      call.on('data', (m: Json) => {
        messages.push(m);
        onMessage?.(messages);
      });
      call.on('error', () => undefined);
      const status = await new Promise<StatusObject>((resolve) => call.on('status', resolve));
      return { messages, status };
    } finally {
      watcher.close();
    }
  }

  it('ends a watch with OK a moment before the server’s deadline, and leaves a deadline the client chose to it', async () => {
    // The server's deadline for a watch, 1.4 s here (15 minutes in the reference policy): the
    // test client's 15 s deadline is brought down to it.
    const policy = JSON.parse(readFileSync(DEFAULT_POLICY_FILE, 'utf8')) as {
      timeouts: { rules: { operation: string; defaultMs?: number; maxMs?: number }[] };
    };
    for (const rule of policy.timeouts.rules) {
      if (rule.operation === '/grpc.health.v1.Health/Watch') Object.assign(rule, { defaultMs: 1_400, maxMs: 1_400 });
    }
    const policyFile = join(base, 'short-watch.policy.json');
    writeFileSync(policyFile, JSON.stringify(policy));
    const watchLines: { level?: number; operation?: string }[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
          const parsed = JSON.parse(line) as { level?: number; operation?: string };
          if (parsed.operation === '/grpc.health.v1.Health/Watch') watchLines.push(parsed);
        }
        callback();
      },
    });
    const own = await startOwn(createAuditLogger({ destination }), { FLUXGUARD_POLICY: policyFile });
    try {
      const watches = await Promise.all([watchHealth(own.address), watchHealth(own.address)]);
      for (const { messages, status } of watches) {
        expect(status.code).toBe(Status.OK);
        expect(messages).toEqual([{ status: 'SERVING' }]);
      }
      // Nothing logged as a failure, nor as a refusal: the watches ended as the protocol lets them.
      expect(watchLines).toEqual([]);
      // A client's own deadline, within the server's, ends its watch as it asked.
      const own600 = await watchHealth(own.address, { deadline: Date.now() + 600 });
      expect(own600.status.code).toBe(Status.DEADLINE_EXCEEDED);
    } finally {
      await own.close();
    }
  });

  it('sends SERVING, then NOT_SERVING and ends when the server shuts down', async () => {
    const own = await startOwn(createAuditLogger({ level: 'silent' }));
    try {
      const { messages, status } = await watchHealth(own.address, {
        onMessage: (received) => {
          if (received.length === 1) void own.server.close();
        },
      });
      expect(status.code).toBe(Status.OK);
      expect(messages).toEqual([{ status: 'SERVING' }, { status: 'NOT_SERVING' }]);
    } finally {
      await own.close();
    }
  });
});

describe('reference gRPC server: shutdown', () => {
  /** The HTTP/2 client preface, which a client that holds the server sends a byte at a time. */
  const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

  /** Shakes hands over `raw` (accepted already) with the client certificate, then trickles the preface. */
  function lateHandshake(raw: Socket): () => void {
    const secure = tlsConnect({
      socket: raw,
      servername: 'localhost',
      ALPNProtocols: ['h2'],
      ca: readFileSync(join(devDir, 'ca.crt')),
      cert: readFileSync(join(devDir, 'client.crt')),
      key: readFileSync(join(devDir, 'client.key')),
    });
    secure.on('error', () => undefined);
    let sent = 0;
    let trickle: NodeJS.Timeout | undefined;
    secure.once('secureConnect', () => {
      trickle = setInterval(() => {
        if (sent < PREFACE.length && !secure.destroyed) secure.write(PREFACE.subarray(sent, ++sent));
      }, 300);
    });
    return () => {
      clearInterval(trickle);
      secure.destroy();
    };
  }

  it('ends at the end of its grace a connection whose handshake comes late and then trickles its preface', async () => {
    const own = await startOwn(createAuditLogger({ level: 'silent' }));
    // Accepted before close(), its handshake not begun: no HTTP/2 session for grpc-js to end.
    const raw = createConnection({ host: '127.0.0.1', port: own.server.port });
    raw.on('error', () => undefined);
    await once(raw, 'connect');
    const rawClosed = once(raw, 'close').then(() => true);
    let closed = false;
    const closing = own.server.close().then(() => {
      closed = true;
    });
    let stop: (() => void) | undefined;
    try {
      // Past the 5 s grace, well within the 10 s handshake timeout: the handshake is done now,
      // if the connection is still there, and the preface trickled.
      await Promise.race([closing, sleep(5_500)]);
      if (!raw.destroyed) stop = lateHandshake(raw);
      const ended = await Promise.race([Promise.all([closing, rawClosed]), sleep(2_500).then(() => undefined)]);
      // Within about the grace: close() resolved (every connection of the port gone), and the
      // client's connection ended by the server, not by the handshake timeout or the idle limit.
      expect(closed).toBe(true);
      expect(raw.destroyed).toBe(true);
      expect(ended).toBeDefined();
    } finally {
      stop?.();
      raw.destroy();
      await closing;
      await own.close();
    }
  });
});
