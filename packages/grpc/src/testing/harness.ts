// Shared by this package's tests: a real grpc-js server on an ephemeral port, a real client,
// a JSON-encoded four-method test service and a captured audit log.
import { once } from 'node:events';
import type { ClientHttp2Session } from 'node:http2';
import {
  Client,
  Metadata,
  Server,
  ServerCredentials,
  credentials,
  type CallOptions,
  type ChannelOptions,
  type ServerInterceptor,
  type ServiceDefinition,
  type StatusObject,
  type UntypedServiceImplementation,
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
} from '@grpc/grpc-js';
import { createAuditLogger, type AuditLogger, type AuditLoggerOptions } from '@fluxguard/core';
import type { SafeImplementation } from '../handlers.js';
import { captureLines } from '@fluxguard/test-support/log-lines';

export type Json = Record<string, unknown>;

export const serialize = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
export const deserialize = (bytes: Buffer): Json => JSON.parse(bytes.toString('utf8')) as Json;

/** A method definition of a test service with JSON messages (this file's and those of `tls.ts`). */
export function jsonMethod(path: string, requestStream: boolean, responseStream: boolean) {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: serialize,
    requestDeserialize: deserialize,
    responseSerialize: serialize,
    responseDeserialize: deserialize,
  };
}

const raw = (bytes: Buffer): Buffer => bytes;

/** A method definition whose messages are the bytes themselves, for tests that write raw frames. */
export function bufferMethod(path: string, requestStream: boolean, responseStream: boolean) {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  };
}

/** The grpc-js handler types of the test service. */
export interface TestImpl {
  Unary: handleUnaryCall<Json, Json>;
  ClientStream: handleClientStreamingCall<Json, Json>;
  ServerStream: handleServerStreamingCall<Json, Json>;
  Bidi: handleBidiStreamingCall<Json, Json>;
}

/** The test service: one method of each kind, JSON messages. */
export const testService: ServiceDefinition<TestImpl> = {
  Unary: jsonMethod('/fluxguard.test.v1.Test/Unary', false, false),
  ClientStream: jsonMethod('/fluxguard.test.v1.Test/ClientStream', true, false),
  ServerStream: jsonMethod('/fluxguard.test.v1.Test/ServerStream', false, true),
  Bidi: jsonMethod('/fluxguard.test.v1.Test/Bidi', true, true),
};

/** Captures pino lines written by an audit logger. */
export function captureAudit(options: Pick<AuditLoggerOptions, 'foldRefusals'> = {}): {
  audit: AuditLogger;
  lines: () => Json[];
} {
  const { destination, lines } = captureLines();
  return { audit: createAuditLogger({ ...options, destination, level: 'debug' }), lines: () => [...lines] };
}

export interface Started {
  readonly server: Server;
  readonly client: Client;
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Starts a server with the given interceptors and services on 127.0.0.1:0, and a client to it;
 * `options` are more of grpc-js's server options.
 */
export async function startServer(
  interceptors: ServerInterceptor[],
  register: (server: Server) => void,
  options: ChannelOptions = {},
): Promise<Started> {
  const server = new Server({ ...options, interceptors });
  register(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, boundPort) => {
      if (err) reject(err);
      else resolve(boundPort);
    });
  });
  const address = `127.0.0.1:${port}`;
  const client = new Client(address, credentials.createInsecure());
  return {
    server,
    client,
    address,
    close: async () => {
      client.close();
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          resolve();
        });
      });
    },
  };
}

/** Everything a client saw of one call. */
export interface Outcome {
  readonly status: StatusObject;
  readonly initialMetadata: Metadata | undefined;
  readonly messages: Json[];
}

export type Kind = 'unary' | 'clientStream' | 'serverStream' | 'bidi';
export const KINDS: readonly Kind[] = ['unary', 'clientStream', 'serverStream', 'bidi'];

const PATHS: Readonly<Record<Kind, string>> = {
  unary: testService.Unary.path,
  clientStream: testService.ClientStream.path,
  serverStream: testService.ServerStream.path,
  bidi: testService.Bidi.path,
};

/**
 * Makes one call of the given kind with `request` (streams send it once, then half-close)
 * and resolves with the status, the initial metadata and the messages received.
 */
export function callKind(
  client: Client,
  kind: Kind,
  request: Json,
  metadata: Metadata = new Metadata(),
  options: CallOptions = {},
  onCall?: (call: { cancel(): void }) => void,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const messages: Json[] = [];
    let initialMetadata: Metadata | undefined;
    const path = PATHS[kind];
    const onStatus = (status: StatusObject): void => {
      // Give the unary callback and pending 'data' events a turn before resolving.
      setImmediate(() => {
        resolve({ status, initialMetadata, messages });
      });
    };
    const onMetadata = (md: Metadata): void => {
      initialMetadata = md;
    };
    const onResponse = (_err: unknown, value?: Json): void => {
      if (value !== undefined) messages.push(value);
    };
    switch (kind) {
      case 'unary': {
        const call = client.makeUnaryRequest(path, serialize, deserialize, request, metadata, options, onResponse);
        call.on('metadata', onMetadata).on('status', onStatus);
        onCall?.(call);
        break;
      }
      case 'clientStream': {
        const call = client.makeClientStreamRequest(path, serialize, deserialize, metadata, options, onResponse);
        call.on('metadata', onMetadata).on('status', onStatus);
        call.write(request);
        call.end();
        onCall?.(call);
        break;
      }
      case 'serverStream': {
        const call = client.makeServerStreamRequest(path, serialize, deserialize, request, metadata, options);
        call.on('metadata', onMetadata).on('status', onStatus);
        call.on('data', (m: Json) => messages.push(m));
        call.on('error', () => undefined);
        onCall?.(call);
        break;
      }
      case 'bidi': {
        const call = client.makeBidiStreamRequest(path, serialize, deserialize, metadata, options);
        call.on('metadata', onMetadata).on('status', onStatus);
        call.on('data', (m: Json) => messages.push(m));
        call.on('error', () => undefined);
        call.write(request);
        call.end();
        onCall?.(call);
        break;
      }
    }
  });
}

/** Every text a client can see of a call: status details, trailing and initial metadata. */
export function visibleText(outcome: Outcome): string {
  return JSON.stringify({
    details: outcome.status.details,
    trailers: outcome.status.metadata.toJSON(),
    initial: outcome.initialMetadata?.toJSON() ?? null,
    messages: outcome.messages,
  });
}

/** Request metadata carrying `x-request-id: id`. */
export function withRequestId(id: string): Metadata {
  const metadata = new Metadata();
  metadata.set('x-request-id', id);
  return metadata;
}

/** The single value of a metadata key, as a string. */
export function metadataValue(metadata: Metadata | undefined, key: string): string | undefined {
  const values = metadata?.get(key) ?? [];
  const first = values[0];
  return values.length === 1 && typeof first === 'string' ? first : undefined;
}

export function implementation(impl: UntypedServiceImplementation): UntypedServiceImplementation {
  return impl;
}

/**
 * The test service with `Unary` answering `answer` and the three other methods answering at
 * once with nothing: for tests about one unary call.
 */
export function unaryAnswering(answer: Json): SafeImplementation<TestImpl> {
  return {
    Unary: (_call, callback) => {
      callback(null, answer);
    },
    ClientStream: (_call, callback) => {
      callback(null, {});
    },
    ServerStream: (call) => {
      call.end();
    },
    Bidi: (call) => {
      call.end();
    },
  };
}

/**
 * The `grpc-status` of one unary call of {@link testService} (the message `{}`) sent raw on
 * `session`, with `entries` among its headers (an array: one entry per value, as a client that
 * repeats a header sends it). Raw, because a grpc-js client refuses values the tests send.
 */
export async function rawUnaryStatus(
  session: ClientHttp2Session,
  entries: Readonly<Record<string, string | string[]>>,
): Promise<string | undefined> {
  const stream = session.request({
    ':method': 'POST',
    ':path': testService.Unary.path,
    'content-type': 'application/grpc',
    te: 'trailers',
    ...entries,
  });
  let status: string | undefined;
  const read = (headers: Readonly<Record<string, unknown>>): void => {
    if (typeof headers['grpc-status'] === 'string') status = headers['grpc-status'];
  };
  stream.on('response', read);
  stream.on('trailers', read);
  stream.on('error', () => undefined);
  stream.end(Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]));
  stream.resume();
  await once(stream, 'close');
  return status;
}
