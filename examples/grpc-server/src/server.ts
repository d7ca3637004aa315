import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import {
  Metadata,
  Server,
  loadPackageDefinition,
  type GrpcObject,
  type ServiceDefinition,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import { loadSync, type Options as ProtoLoaderOptions } from '@grpc/proto-loader';
import {
  ConfigurationError,
  SecurityError,
  createAuditLogger,
  createHeaderLimits,
  createMessageValidation,
  type UrlGuard,
} from '@fluxguard/core';
import {
  addService,
  createServerCredentials,
  fluxguardInterceptors,
  getCallContext,
  getPrincipal,
  getSignal,
  routeGrpcJsLogs,
  secureServerOptions,
  type SafeImplementation,
} from '@fluxguard/grpc';
import type { ArtifactStore } from '@fluxguard/example-artifact-store';
import {
  ARTIFACT_MESSAGE_RULES,
  ARTIFACT_STORE_SERVICE,
  openReferenceStore,
  PROTO_PATH,
  readContent,
  type ArtifactInfo,
  type ReferenceServerOptions,
} from '@fluxguard/example-artifact-store';
import { ANSWER_BUDGET, AnswerBudget, type AnswerBudgetLimits } from './answer-budget.js';

export { ANSWER_BUDGET, type AnswerBudgetLimits } from './answer-budget.js';

/** Options of {@link startGrpcServer}. */
export interface GrpcServerOptions extends ReferenceServerOptions {
  /** Port; `0` picks a free one. Default 9000. */
  readonly port?: number;
  /** Bytes of `GetArtifact` answers held at once, in all and per caller. Default {@link ANSWER_BUDGET}. */
  readonly answerBudget?: AnswerBudgetLimits;
}

/** A running reference gRPC server. */
export interface StartedGrpcServer {
  readonly port: number;
  /** `host:port`, for a grpc-js client. */
  readonly address: string;
  /** Ends health watches, lets calls in flight finish (at most 5 s), then resolves. */
  close(): Promise<void>;
}

/** Largest single message: an upload chunk or a request. Artifacts are streamed in chunks. */
export const MAX_RECEIVE_MESSAGE_BYTES = 8 * 1024 * 1024;
/**
 * Largest response: `GetArtifact` returns a whole artifact (at most the store's 64 MiB) in one
 * message.
 */
const MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024 + 1024;
/**
 * HTTP/2 session memory per connection, in MB: room for a few maximum-size messages in flight
 * (Node answers a connection over the limit with GOAWAY ENHANCE_YOUR_CALM).
 */
const MAX_SESSION_MEMORY_MB = 32;
const SHUTDOWN_GRACE_MS = 5_000;

const HEALTH_PROTO_PATH = fileURLToPath(new URL('../proto/health.proto', import.meta.url));

const PROTO_OPTIONS: ProtoLoaderOptions = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

// Messages as proto-loader decodes them with PROTO_OPTIONS (artifact_store.proto holds the contract).
interface PathRequest {
  readonly path: string;
}
interface ListArtifactsRequest {
  readonly prefix: string;
  readonly start_after: string;
}
interface UploadHeader {
  readonly path: string;
  readonly sha256: string;
}
interface UploadArtifactRequest {
  readonly part?: 'header' | 'chunk';
  readonly header?: UploadHeader | null;
  readonly chunk?: Buffer;
}
interface ArtifactMessage extends ArtifactInfo {
  readonly content: Buffer;
}
type Empty = Record<string, never>;

interface ArtifactStoreHandlers {
  GetArtifact: handleUnaryCall<PathRequest, ArtifactMessage>;
  ListArtifacts: handleServerStreamingCall<ListArtifactsRequest, ArtifactInfo>;
  UploadArtifact: handleClientStreamingCall<UploadArtifactRequest, ArtifactInfo>;
  DeleteArtifact: handleUnaryCall<PathRequest, Empty>;
  ImportArtifact: handleUnaryCall<ImportArtifactRequest, ArtifactInfo>;
}

interface ImportArtifactRequest {
  readonly path: string;
  readonly url: string;
  readonly sha256: string;
}

type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
interface HealthHandlers {
  Check: handleUnaryCall<{ readonly service: string }, { status: ServingStatus }>;
  Watch: handleServerStreamingCall<{ readonly service: string }, { status: ServingStatus }>;
}

/**
 * Starts the reference gRPC server: `fluxguard.example.v1.ArtifactStore` over a data
 * directory, and the standard `grpc.health.v1.Health` (public), over TLS with client
 * certificates (`security.tls`: strict or per-operation, reloaded from disk without restart)
 * and behind fluxguard's interceptors: request ids, safe errors, one audit line per failure,
 * then authentication (bearer JWT and/or verified client certificate) and the policy's RBAC
 * rules for every method, default deny.
 *
 * @example
 * ```ts
 * const audit = createAuditLogger();
 * const security = await loadReferenceSecurity({ devDir: '.fluxguard/dev', audit });
 * const server = await startGrpcServer({ port: 0, dataDir: '/tmp/artifacts', security, audit });
 * console.log(server.address);
 * await server.close();
 * await security.close();
 * ```
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<StartedGrpcServer> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 9000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigurationError('startGrpcServer: "port" must be an integer from 0 to 65535');
  }
  const { security } = options;
  if (typeof security !== 'object' || typeof security.guard !== 'function') {
    throw new ConfigurationError('startGrpcServer: "security" is required (loadReferenceSecurity())');
  }
  const audit = options.audit ?? createAuditLogger();
  // grpc-js's own lines (one per metadata entry it drops, quoting what the client sent) go to
  // the audit log, bounded, not to the console. grpc-js has one logger per process: with two
  // servers in one process, the last one started gets them.
  routeGrpcJsLogs({ audit });
  const store = await openReferenceStore(options, audit);

  const storeService = artifactStoreService();
  const health = healthHandlers();
  const healthDefinition = healthService();
  // Every method this server serves: a rule naming anything else is refused at start-up.
  const guard = security.guard('grpc', [...methodPaths(storeService), ...methodPaths(healthDefinition)]);

  const server = new Server({
    ...secureServerOptions({
      maxReceiveMessageBytes: MAX_RECEIVE_MESSAGE_BYTES,
      maxSendMessageBytes: MAX_SEND_MESSAGE_BYTES,
      maxSessionMemoryMb: MAX_SESSION_MEMORY_MB,
      maxConnectionIdleMs: security.connections.idleMs,
      maxConnections: security.connections.maxConnections,
      maxConnectionsPerAddress: security.connections.maxConnectionsPerAddress,
    }),
    interceptors: fluxguardInterceptors({
      audit,
      guard,
      controls: [
        createHeaderLimits(),
        security.concurrency,
        createMessageValidation({ rules: ARTIFACT_MESSAGE_RULES }),
      ],
    }),
  });
  const answers = new AnswerBudget(options.answerBudget ?? ANSWER_BUDGET);
  addService(server, storeService, artifactStoreHandlers(store, security.urlGuard, answers));
  addService(server, healthDefinition, health.handlers);

  // Material is loaded (and checked) here, before bind; renewed files are picked up live.
  const credentials = createServerCredentials(security.tls, {
    audit,
    handshakeTimeoutMs: security.connections.handshakeTimeoutMs,
  });
  let boundPort: number;
  try {
    boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${formatHost(host)}:${port}`, credentials, (err, bound) => {
        if (err) reject(err);
        else resolve(bound);
      });
    });
  } catch (err) {
    credentials.close();
    server.forceShutdown();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return Object.freeze({
    port: boundPort,
    address: `${formatHost(host)}:${boundPort}`,
    close: () =>
      (closing ??= (async () => {
        health.shutdown();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, SHUTDOWN_GRACE_MS);
          timer.unref();
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        credentials.close();
      })()),
  });
}

function artifactStoreHandlers(
  store: ArtifactStore,
  urlGuard: UrlGuard,
  answers: AnswerBudget,
): SafeImplementation<ArtifactStoreHandlers> {
  return {
    GetArtifact: async (call) => {
      const signal = getSignal(call);
      const opened = await store.open(call.request.path, signal);
      let release: () => void;
      try {
        // The whole artifact is one message, held until the client takes it: within a budget.
        release = answers.reserve(getPrincipal(call)?.subject ?? getCallContext(call).peer, opened.size);
      } catch (err) {
        opened.content.destroy();
        throw err;
      }
      // Given back when the call ends, answered, cancelled or past its deadline.
      if (signal.aborted) release();
      else signal.addEventListener('abort', release, { once: true });
      const content = await readContent(opened);
      return { path: opened.path, content, sha256: opened.sha256, size: content.length };
    },

    ListArtifacts: async (call) => {
      const signal = getSignal(call);
      const listing = store.list(call.request.prefix, signal, call.request.start_after);
      for await (const info of listing) {
        await write(call, { path: info.path, sha256: info.sha256, size: info.size }, signal);
      }
      // More may follow: the client lists again from the last path it received.
      call.end(listing.truncated ? listTruncated() : undefined);
    },

    UploadArtifact: async (call) => {
      const signal = getSignal(call);
      const messages = call[Symbol.asyncIterator]() as AsyncIterator<UploadArtifactRequest>;
      const first = await messages.next();
      const header = first.done === true ? undefined : first.value.header;
      if (first.done === true || first.value.part !== 'header' || header === undefined || header === null) {
        throw new SecurityError('invalid_argument', {
          details: { field: 'header' },
          reason: 'app.upload_header_missing',
        });
      }
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (;;) {
          const next = await messages.next();
          if (next.done === true) return;
          const { part, chunk } = next.value;
          if (part !== 'chunk' || chunk === undefined) {
            // A second header, or a message with neither part set.
            throw new SecurityError('invalid_argument', {
              details: { field: 'chunk' },
              reason: part === 'header' ? 'app.upload_header_repeated' : 'app.upload_part_missing',
            });
          }
          yield chunk;
        }
      }
      const info = await store.put(header.path, header.sha256, chunks(), signal);
      return { path: info.path, sha256: info.sha256, size: info.size };
    },

    DeleteArtifact: async (call) => {
      await store.delete(call.request.path);
      return {};
    },

    // The URL is the client's: fetched through the guard (https, no private address, checked
    // redirects, bounded) once the path and digest have passed, then stored like an upload,
    // digest and content checked.
    ImportArtifact: async (call) => {
      const { path, url, sha256 } = call.request;
      const signal = getSignal(call);
      const info = await store.putFetched(
        path,
        sha256,
        async () => (await urlGuard.open(url, { signal })).body,
        signal,
      );
      return { path: info.path, sha256: info.sha256, size: info.size };
    },
  };
}

/** Writes one message, waiting for the client to drain when the stream is full. */
/** The trailers of a listing that more artifacts may follow; new for each call, as grpc-js may add to them. */
function listTruncated(): Metadata {
  const trailers = new Metadata();
  trailers.set('x-list-truncated', 'true');
  return trailers;
}

async function write<T>(call: ServerWritableStream<unknown, T>, message: T, signal: AbortSignal): Promise<void> {
  if (!call.write(message)) await once(call, 'drain', { signal });
}

/** How long before the server's deadline a health watch is ended with OK. */
const WATCH_END_MARGIN_MS = 1_000;

/** Health: SERVING for the server as a whole (`""`) and for ArtifactStore; public. */
function healthHandlers() {
  const known = new Set(['', ARTIFACT_STORE_SERVICE, 'grpc.health.v1.Health']);
  const watchers = new Set<ServerWritableStream<unknown, { status: ServingStatus }>>();
  let serving: 'SERVING' | 'NOT_SERVING' = 'SERVING';
  const handlers: SafeImplementation<HealthHandlers> = {
    Check: (call) => {
      if (!known.has(call.request.service)) {
        throw new SecurityError('not_found', { reason: 'app.health_unknown_service' });
      }
      return { status: serving };
    },
    Watch: (call) => {
      // The protocol keeps the stream open and sends each change; this server only changes
      // once, to NOT_SERVING when it shuts down.
      call.write({ status: known.has(call.request.service) ? serving : 'SERVICE_UNKNOWN' });
      watchers.add(call);
      // Ended with OK a moment before the server's deadline, as the protocol lets a server end a
      // watch (the client watches again): ended by the deadline, every watch was logged as a
      // server failure, an error line any client could make without a credential. A deadline the
      // client chose is its own.
      const { deadline } = getCallContext(call);
      const ending =
        deadline !== undefined && deadline < Number(call.getDeadline())
          ? setTimeout(
              () => {
                watchers.delete(call);
                call.end();
              },
              Math.max(0, deadline - Date.now() - WATCH_END_MARGIN_MS),
            )
          : undefined;
      getSignal(call).addEventListener(
        'abort',
        () => {
          clearTimeout(ending);
          watchers.delete(call);
        },
        { once: true },
      );
    },
  };
  return {
    handlers,
    shutdown: () => {
      serving = 'NOT_SERVING';
      for (const call of watchers) {
        call.write({ status: 'NOT_SERVING' });
        call.end();
      }
      watchers.clear();
    },
  };
}

function artifactStoreService(): ServiceDefinition<ArtifactStoreHandlers> {
  return serviceDefinition(PROTO_PATH, ARTIFACT_STORE_SERVICE, {
    GetArtifact: [false, false],
    ListArtifacts: [false, true],
    UploadArtifact: [true, false],
    DeleteArtifact: [false, false],
    ImportArtifact: [false, false],
  });
}

function healthService(): ServiceDefinition<HealthHandlers> {
  return serviceDefinition(HEALTH_PROTO_PATH, 'grpc.health.v1.Health', { Check: [false, false], Watch: [false, true] });
}

/**
 * Loads a service from its proto and checks it has exactly the methods, of the kinds, that the
 * handler types say: the typed definition gives handlers their request and response types.
 */
function serviceDefinition<I>(
  protoPath: string,
  serviceName: string,
  kinds: Readonly<Record<keyof I & string, readonly [requestStream: boolean, responseStream: boolean]>>,
): ServiceDefinition<I> {
  const loaded = loadPackageDefinition(loadSync(protoPath, PROTO_OPTIONS));
  let node: unknown = loaded;
  for (const part of serviceName.split('.')) node = (node as GrpcObject | undefined)?.[part];
  const service = (node as { service?: ServiceDefinition } | undefined)?.service;
  if (service === undefined) throw new ConfigurationError(`${protoPath} has no service ${serviceName}`);
  const expected = Object.entries<readonly [boolean, boolean]>(kinds);
  for (const [method, [requestStream, responseStream]] of expected) {
    const definition = service[method];
    if (definition?.requestStream !== requestStream || definition.responseStream !== responseStream) {
      throw new ConfigurationError(`${serviceName}.${method} in ${protoPath} is not the method the server implements`);
    }
  }
  if (Object.keys(service).length !== expected.length) {
    throw new ConfigurationError(`${serviceName} in ${protoPath} has methods the server does not implement`);
  }
  return service as unknown as ServiceDefinition<I>;
}

function methodPaths(service: ServiceDefinition<object>): string[] {
  return Object.values<{ path: string }>(service as unknown as Record<string, { path: string }>).map((m) => m.path);
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
