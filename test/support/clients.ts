import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ERROR_CODES, type SecurityErrorCode } from '@fluxguard/core';
import { PROTO_PATH, parseReprDigest, reprDigestOf, type ArtifactInfo } from '@fluxguard/example-artifact-store';

/** The result of one call, the same shape on both transports. */
export interface Outcome<T = unknown> {
  readonly ok: boolean;
  readonly value?: T;
  /** gRPC status code or HTTP status. */
  readonly status: number;
  readonly requestId: string | undefined;
  /** Everything the client received besides the artifact bytes: status text, headers or metadata, body or details. */
  readonly exposed: string;
}

/** The TLS handshake was refused: gRPC reports UNAVAILABLE, the HTTP client gets no response at all. */
export const HANDSHAKE_REFUSED = { status: { grpc: 14, http: 0 } } as const;

/** What a scenario expects of a failed call. */
export interface Expected {
  readonly code?: SecurityErrorCode;
  /** For answers outside the error table (gRPC UNIMPLEMENTED): the raw status per transport. */
  readonly status?: { readonly grpc: number; readonly http: number };
}

/**
 * A request whose client was still sending it when its idle limit or deadline passed: the
 * client's doing, so HTTP answers `408`, not the table's `504`; gRPC `DEADLINE_EXCEEDED`.
 */
export const CLIENT_TOO_SLOW: Expected = {
  code: 'deadline_exceeded',
  status: { grpc: ERROR_CODES.deadline_exceeded.grpcStatus, http: 408 },
};

/** One page of a listing: its artifacts, and where the next page starts if there is one. */
export interface ListPage {
  readonly items: ArtifactInfo[];
  readonly next: string | undefined;
}

export interface RetrievedArtifact {
  readonly content: Buffer;
  readonly sha256: string;
  readonly size: number;
}

/** An ArtifactStore client: one implementation per transport, one scenario table for both. */
export interface ArtifactClient {
  readonly transport: 'grpc' | 'http';
  get(path: string): Promise<Outcome<RetrievedArtifact>>;
  list(prefix: string): Promise<Outcome<ArtifactInfo[]>>;
  /**
   * One page of a listing, from after `startAfter`; `next` is where the next page starts when
   * the server says more may follow (HTTP: its `Link: rel="next"`; gRPC: the `x-list-truncated`
   * trailer, and the last path received).
   */
  listPage(prefix: string, startAfter: string): Promise<Outcome<ListPage>>;
  upload(path: string, sha256Hex: string, parts: readonly Buffer[]): Promise<Outcome<ArtifactInfo>>;
  /**
   * An upload that sends its parts `gapMs` apart, and with `stallAfter` stops after that many
   * parts without ending the request (a stalled upload). gRPC: with the client deadline
   * `deadlineMs` (default 10 s).
   */
  uploadPaced(path: string, sha256Hex: string, parts: readonly Buffer[], pace: Pace): Promise<Outcome<ArtifactInfo>>;
  delete(path: string): Promise<Outcome<undefined>>;
  /**
   * A delete of `path` whose request is cut short in its encoding, so that a lenient reader
   * would still find `path` in it. gRPC: the message's `path` field says one byte more than
   * follows (protobufjs alone reads `path`); HTTP: the URL ends in a lone `%`.
   */
  deleteCutShort(path: string): Promise<Outcome<undefined>>;
  /** Imports an artifact from a URL (the server fetches it) with its expected SHA-256 in hex. */
  importFrom(path: string, url: string, sha256Hex: string): Promise<Outcome<ArtifactInfo>>;
  health(): Promise<Outcome<string>>;
  unknownOperation(): Promise<Outcome<undefined>>;
  /** A raw call with extra headers/metadata (used to try forging fluxguard's own context). */
  getWithHeaders(path: string, headers: Record<string, string>): Promise<Outcome<RetrievedArtifact>>;
  deleteWithHeaders(path: string, headers: Record<string, string>): Promise<Outcome<undefined>>;
  /** A get that carries a valid token anywhere but the Authorization header (query string, other keys). */
  getWithCredentialElsewhere(path: string, token: string): Promise<Outcome<RetrievedArtifact>>;
  /** The status a transport uses for a code (`ERROR_CODES` of `@fluxguard/core`). */
  statusOf(expected: Expected): number;
  close(): void;
}

export const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** How {@link ArtifactClient.uploadPaced} sends. */
export interface Pace {
  readonly gapMs: number;
  readonly stallAfter?: number;
  readonly deadlineMs?: number;
  /**
   * With `stallAfter`: the client cancels this long after its last part, without ending its
   * request (gRPC: `call.cancel()`, an HTTP/2 reset; HTTP: the connection destroyed).
   */
  readonly cancelAfterMs?: number;
}

/**
 * Calls `send(part)` for each part `gapMs` apart (after `stallAfter` parts, stops, and cancels
 * after `cancelAfterMs` when given); then `end()`.
 */
function pacedWrites(
  parts: readonly Buffer[],
  pace: Pace,
  send: (part: Buffer) => boolean,
  end: () => void,
  cancel: () => void,
): void {
  let i = 0;
  const next = (): void => {
    if (pace.stallAfter !== undefined && i >= pace.stallAfter) {
      if (pace.cancelAfterMs !== undefined) setTimeout(cancel, pace.cancelAfterMs);
      return;
    }
    const part = parts[i];
    if (part === undefined) {
      end();
      return;
    }
    i += 1;
    if (send(part)) setTimeout(next, pace.gapMs);
  };
  setTimeout(next, pace.gapMs);
}

// ---------------------------------------------------------------- gRPC

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: Number,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  fluxguard: { example: { v1: { ArtifactStore: grpc.ServiceClientConstructor } } };
};

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
interface StoreStub extends grpc.Client {
  GetArtifact(
    req: object,
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: Callback<RetrievedArtifact>,
  ): grpc.ClientUnaryCall;
  ListArtifacts(req: object, md: grpc.Metadata, options: grpc.CallOptions): grpc.ClientReadableStream<WireInfo>;
  UploadArtifact(
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: Callback<ArtifactInfo>,
  ): grpc.ClientWritableStream<object>;
  DeleteArtifact(req: object, md: grpc.Metadata, options: grpc.CallOptions, cb: Callback<object>): grpc.ClientUnaryCall;
  ImportArtifact(
    req: object,
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: Callback<ArtifactInfo>,
  ): grpc.ClientUnaryCall;
}

/** int64 arrives as a string or number depending on loader options; normalize. */
interface WireInfo {
  readonly path: string;
  readonly sha256: string;
  readonly size: number | string;
}

function describeMetadata(md: grpc.Metadata | undefined): string {
  return md === undefined ? '' : JSON.stringify(md.toJSON());
}

function metadataRequestId(md: grpc.Metadata | undefined): string | undefined {
  const value = md?.get('x-request-id')[0];
  return typeof value === 'string' ? value : undefined;
}

/** Collects what a gRPC call exposes: status, details, initial and trailing metadata. */
class GrpcObserver {
  initial: grpc.Metadata | undefined;
  trailing: grpc.Metadata | undefined;
  watch(call: {
    on(event: 'metadata', cb: (md: grpc.Metadata) => void): unknown;
    on(event: 'status', cb: (s: grpc.StatusObject) => void): unknown;
  }): void {
    call.on('metadata', (md) => (this.initial = md));
    call.on('status', (s) => (this.trailing = s.metadata));
  }
  outcome<T>(err: grpc.ServiceError | null | undefined, value: T | undefined): Outcome<T> {
    const trailing = err?.metadata ?? this.trailing;
    return {
      ok: err === null || err === undefined,
      ...(value === undefined ? {} : { value }),
      status: err?.code ?? grpc.status.OK,
      requestId: metadataRequestId(trailing) ?? metadataRequestId(this.initial),
      exposed: [
        err?.details ?? '',
        err?.message ?? '',
        describeMetadata(this.initial),
        describeMetadata(trailing),
      ].join('\n'),
    };
  }
}

/** A gRPC client of the reference server. */
export function grpcArtifactClient(
  address: string,
  credentials = grpc.credentials.createInsecure(),
  defaultMetadata: Record<string, string> = {},
  channelOptions: grpc.ChannelOptions = {},
): ArtifactClient {
  const stub = new loaded.fluxguard.example.v1.ArtifactStore(
    address,
    credentials,
    channelOptions,
  ) as unknown as StoreStub;
  const options = (): grpc.CallOptions => ({ deadline: new Date(Date.now() + 10_000) });
  const grpcListPage = (prefix: string, startAfter: string): Promise<Outcome<ListPage>> =>
    new Promise((resolve) => {
      const observer = new GrpcObserver();
      const items: ArtifactInfo[] = [];
      const call = stub.ListArtifacts({ prefix, start_after: startAfter }, meta(), options());
      observer.watch(call);
      call.on('data', (item: WireInfo) =>
        items.push({ path: item.path, sha256: item.sha256, size: Number(item.size) }),
      );
      call.on('error', () => undefined);
      call.on('status', (s: grpc.StatusObject) => {
        const err: grpc.ServiceError | null = s.code === grpc.status.OK ? null : Object.assign(new Error(s.details), s);
        const truncated = s.metadata.get('x-list-truncated')[0] === 'true';
        resolve(
          observer.outcome(err, err === null ? { items, next: truncated ? items.at(-1)?.path : undefined } : undefined),
        );
      });
    });
  const meta = (headers: Record<string, string> = {}): grpc.Metadata => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries({ ...defaultMetadata, ...headers })) md.set(k, v);
    return md;
  };

  function unary<T>(
    invoke: (cb: Callback<T>) => grpc.ClientUnaryCall | grpc.ClientWritableStream<object>,
    after?: (call: grpc.ClientWritableStream<object>) => void,
  ): Promise<Outcome<T>> {
    return new Promise((resolve) => {
      const observer = new GrpcObserver();
      let settled: { err: grpc.ServiceError | null; value: T | undefined } | undefined;
      let statusSeen = false;
      const finish = (): void => {
        if (settled !== undefined && statusSeen) resolve(observer.outcome(settled.err, settled.value));
      };
      const call = invoke((err, value) => {
        settled = { err, value };
        finish();
      });
      call.on('metadata', (md: grpc.Metadata) => (observer.initial = md));
      call.on('status', (s: grpc.StatusObject) => {
        observer.trailing = s.metadata;
        statusSeen = true;
        finish();
      });
      if (after) after(call as grpc.ClientWritableStream<object>);
    });
  }

  return {
    transport: 'grpc',
    statusOf: (e) => e.status?.grpc ?? ERROR_CODES[e.code ?? 'internal'].grpcStatus,
    get: (path) => unary<RetrievedArtifact>((cb) => stub.GetArtifact({ path }, meta(), options(), cb)),
    getWithHeaders: (path, headers) =>
      unary<RetrievedArtifact>((cb) => stub.GetArtifact({ path }, meta(headers), options(), cb)),
    delete: async (path) => {
      const outcome = await unary<object>((cb) => stub.DeleteArtifact({ path }, meta(), options(), cb));
      return { ...outcome, value: undefined };
    },
    deleteCutShort: async (path) => {
      const text = Buffer.from(path);
      if (text.length > 126) throw new Error('deleteCutShort: a path of at most 126 bytes');
      const cut = Buffer.concat([Buffer.from([0x0a, text.length + 1]), text]);
      const outcome = await unary<object>((cb) =>
        stub.makeUnaryRequest(
          '/fluxguard.example.v1.ArtifactStore/DeleteArtifact',
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          cut,
          meta(),
          options(),
          cb as grpc.requestCallback<Buffer>,
        ),
      );
      return { ...outcome, value: undefined };
    },
    importFrom: (path, url, sha) =>
      unary<ArtifactInfo>((cb) => stub.ImportArtifact({ path, url, sha256: sha }, meta(), options(), cb)),
    deleteWithHeaders: async (path, headers) => {
      const outcome = await unary<object>((cb) => stub.DeleteArtifact({ path }, meta(headers), options(), cb));
      return { ...outcome, value: undefined };
    },
    getWithCredentialElsewhere: (path, token) =>
      unary<RetrievedArtifact>((cb) =>
        stub.GetArtifact({ path }, meta({ access_token: token, 'x-access-token': token, token }), options(), cb),
      ),
    upload: (path, sha, parts) =>
      unary<ArtifactInfo>(
        (cb) => stub.UploadArtifact(meta(), options(), cb),
        (call) => {
          call.write({ header: { path, sha256: sha } });
          for (const part of parts) call.write({ chunk: part });
          call.end();
        },
      ),
    uploadPaced: (path, sha, parts, pace) => {
      let ended = false;
      return unary<ArtifactInfo>(
        (cb) => {
          const deadlineMs = pace.deadlineMs ?? 10_000;
          const deadline = Number.isFinite(deadlineMs) ? new Date(Date.now() + deadlineMs) : Infinity;
          const call = stub.UploadArtifact(meta(), { deadline }, cb);
          call.on('status', () => (ended = true));
          return call;
        },
        (call) => {
          call.write({ header: { path, sha256: sha } });
          pacedWrites(
            parts,
            pace,
            (part) => {
              if (ended) return false;
              call.write({ chunk: part });
              return true;
            },
            () => {
              if (!ended) call.end();
            },
            () => {
              call.cancel();
            },
          );
        },
      );
    },
    list: async (prefix) => itemsOf(await grpcListPage(prefix, '')),
    listPage: grpcListPage,
    health: () =>
      new Promise((resolve) => {
        const observer = new GrpcObserver();
        const call = stub.makeUnaryRequest(
          '/grpc.health.v1.Health/Check',
          (request: Buffer) => request,
          (b: Buffer) => b,
          Buffer.alloc(0),
          meta(),
          options(),
          (err, value) => {
            // HealthCheckResponse { status = 1 }: field 1 varint 1 (SERVING) is bytes 08 01.
            resolve(
              observer.outcome(
                err,
                value === undefined ? undefined : value.equals(Buffer.from([8, 1])) ? 'SERVING' : value.toString('hex'),
              ),
            );
          },
        );
        observer.watch(call);
      }),
    unknownOperation: () =>
      new Promise((resolve) => {
        const observer = new GrpcObserver();
        const call = stub.makeUnaryRequest(
          '/fluxguard.example.v1.ArtifactStore/ExportEverything',
          (request: Buffer) => request,
          (b: Buffer) => b,
          Buffer.alloc(0),
          meta(),
          options(),
          (err) => {
            resolve(observer.outcome<undefined>(err, undefined));
          },
        );
        observer.watch(call);
      }),
    close: () => {
      stub.close();
    },
  };
}

// ---------------------------------------------------------------- HTTP

/** TLS material of an HTTPS client: the CA to trust and, for mTLS, a client certificate. */
export interface HttpsClientTls {
  readonly ca: Buffer | string;
  readonly cert?: Buffer | string;
  readonly key?: Buffer | string;
}

interface RawResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * One request with Node's own client, which sends the path exactly as given: fetch and URL
 * parsers resolve `..` and `%2e%2e` before sending, and the attack must reach the server.
 */
function rawRequest(
  base: URL,
  tls: HttpsClientTls | undefined,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const options = {
      host: base.hostname,
      port: base.port,
      method,
      path,
      headers: { ...headers, ...(body === undefined ? {} : { 'content-length': String(body.length) }) },
      timeout: 10_000,
      agent: false as const,
      ...(tls === undefined ? {} : { ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' }),
    };
    const req = (base.protocol === 'https:' ? httpsRequest : httpRequest)(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? '',
          headers: res.headers,
          body: Buffer.concat(chunks),
        });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A chunked PUT whose body is written part by part, paced (see {@link pacedWrites}). */
function pacedRequest(
  base: URL,
  tls: HttpsClientTls | undefined,
  path: string,
  headers: Record<string, string>,
  parts: readonly Buffer[],
  pace: Pace,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const options = {
      host: base.hostname,
      port: base.port,
      method: 'PUT',
      path,
      headers: { ...headers, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
      agent: false as const,
      ...(tls === undefined ? {} : { ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' }),
    };
    let answered = false;
    const req = (base.protocol === 'https:' ? httpsRequest : httpRequest)(options, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? '',
          headers: res.headers,
          body: Buffer.concat(chunks),
        });
        req.destroy();
      });
      res.on('error', reject);
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.flushHeaders();
    pacedWrites(
      parts,
      pace,
      (part) => {
        if (answered || req.destroyed) return false;
        req.write(part);
        return true;
      },
      () => {
        if (!answered) req.end();
      },
      () => {
        req.destroy(new Error('the client cancelled its upload'));
      },
    );
  });
}

/** The artifacts of a page's outcome, as `list` answers them. */
function itemsOf(page: Outcome<ListPage>): Outcome<ArtifactInfo[]> {
  const { value, ...rest } = page;
  return value === undefined ? rest : { ...rest, value: value.items };
}

function httpOutcome<T>(res: RawResponse, read: (body: Buffer) => T): Outcome<T> {
  const ok = res.status >= 200 && res.status < 300;
  const exposedBody = ok && res.headers['content-type'] === 'application/octet-stream' ? '' : res.body.toString('utf8');
  const requestId = res.headers['x-request-id'];
  return {
    ok,
    ...(ok ? { value: read(res.body) } : {}),
    status: res.status,
    requestId: typeof requestId === 'string' ? requestId : undefined,
    exposed: [`${res.status} ${res.statusText}`, JSON.stringify(res.headers), exposedBody].join('\n'),
  };
}

/**
 * Encodes each segment; dot segments are percent-encoded so that they reach the server as an
 * attacker would send them.
 */
function encodePath(path: string): string {
  return path
    .split('/')
    .map((segment) => (/^\.+$/.test(segment) ? segment.replaceAll('.', '%2E') : encodeURIComponent(segment)))
    .join('/');
}

function artifactOf(res: RawResponse) {
  return (body: Buffer): RetrievedArtifact => {
    const digest = res.headers['repr-digest'];
    return { content: body, sha256: typeof digest === 'string' ? parseReprDigest(digest) : '', size: body.length };
  };
}

/** An HTTP(S) client of the reference server, on Node's own `http`/`https` client. */
export function httpArtifactClient(
  baseUrl: string,
  tls?: HttpsClientTls,
  defaultHeaders: Record<string, string> = {},
): ArtifactClient {
  const base = new URL(baseUrl);
  // A connection that fails (a refused handshake) is an outcome with status 0, as UNAVAILABLE is on gRPC.
  const send = (
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: Buffer,
  ): Promise<RawResponse> =>
    rawRequest(base, tls, method, path, { ...defaultHeaders, ...headers }, body).catch((err: unknown) => ({
      status: 0,
      statusText: (err as NodeJS.ErrnoException).code ?? 'connection failed',
      headers: {},
      body: Buffer.from(err instanceof Error ? err.message : String(err)),
    }));
  const httpListPage = async (prefix: string, startAfter: string): Promise<Outcome<ListPage>> => {
    const query = new URLSearchParams({ prefix, ...(startAfter === '' ? {} : { startAfter }) });
    const res = await send('GET', `/v1/artifacts?${query.toString()}`);
    return httpOutcome(res, (b) => {
      // `</v1/artifacts?prefix=...&startAfter=...>; rel="next"`
      const link = /^<([^>]*)>; rel="next"$/.exec(String(res.headers.link ?? ''))?.[1];
      const next =
        link === undefined ? undefined : (new URL(link, 'https://x').searchParams.get('startAfter') ?? undefined);
      return { items: JSON.parse(b.toString('utf8')) as ArtifactInfo[], next };
    });
  };
  return {
    transport: 'http',
    statusOf: (e) => e.status?.http ?? ERROR_CODES[e.code ?? 'internal'].httpStatus,
    get: async (path) => {
      const res = await send('GET', `/v1/artifacts/${encodePath(path)}`);
      return httpOutcome(res, artifactOf(res));
    },
    getWithHeaders: async (path, headers) => {
      const res = await send('GET', `/v1/artifacts/${encodePath(path)}`, headers);
      return httpOutcome(res, artifactOf(res));
    },
    deleteWithHeaders: async (path, headers) =>
      httpOutcome(await send('DELETE', `/v1/artifacts/${encodePath(path)}`, headers), () => undefined),
    getWithCredentialElsewhere: async (path, token) => {
      const res = await send('GET', `/v1/artifacts/${encodePath(path)}?access_token=${token}&token=${token}`, {
        'x-access-token': token,
        cookie: `access_token=${token}`,
      });
      return httpOutcome(res, artifactOf(res));
    },
    list: async (prefix) => itemsOf(await httpListPage(prefix, '')),
    listPage: httpListPage,
    upload: async (path, sha, parts) =>
      httpOutcome(
        await send(
          'PUT',
          `/v1/artifacts/${encodePath(path)}`,
          {
            'content-type': 'application/octet-stream',
            'repr-digest': /^[0-9a-f]{64}$/.test(sha) ? reprDigestOf(sha) : sha,
          },
          Buffer.concat(parts),
        ),
        (b) => JSON.parse(b.toString('utf8')) as ArtifactInfo,
      ),
    uploadPaced: async (path, sha, parts, pace) =>
      httpOutcome(
        await pacedRequest(
          base,
          tls,
          `/v1/artifacts/${encodePath(path)}`,
          { ...defaultHeaders, 'repr-digest': reprDigestOf(sha) },
          parts,
          pace,
        ).catch((err: unknown) => ({
          status: 0,
          statusText: (err as NodeJS.ErrnoException).code ?? 'failed',
          headers: {},
          body: Buffer.alloc(0),
        })),
        (b) => JSON.parse(b.toString('utf8')) as ArtifactInfo,
      ),
    delete: async (path) => httpOutcome(await send('DELETE', `/v1/artifacts/${encodePath(path)}`), () => undefined),
    deleteCutShort: async (path) =>
      httpOutcome(await send('DELETE', `/v1/artifacts/${encodePath(path)}%`), () => undefined),
    importFrom: async (path, url, sha) =>
      httpOutcome(
        await send(
          'POST',
          `/v1/artifacts/${encodePath(path)}:import`,
          { 'content-type': 'application/json' },
          Buffer.from(JSON.stringify({ url, sha256: sha })),
        ),
        (b) => JSON.parse(b.toString('utf8')) as ArtifactInfo,
      ),
    health: async () =>
      httpOutcome(await send('GET', '/healthz'), (b) =>
        (JSON.parse(b.toString('utf8')) as { status?: string }).status === 'ok' ? 'SERVING' : b.toString('utf8'),
      ),
    unknownOperation: async () => httpOutcome(await send('GET', '/v1/export-everything'), () => undefined),
    close: () => undefined,
  };
}
