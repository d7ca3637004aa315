import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { status as Status, type Server, type ServerInterceptingCallInterface } from '@grpc/grpc-js';
import { REQUEST_ID_HEADER, SecurityError, resolveRequestId, type AuditLogger } from '@fluxguard/core';
import { scrubSecrets, toPublicError, type FailureContext, type PublicError } from '@fluxguard/core/adapter';
import { FIELD_METADATA_KEY, responseMetadata } from './response-metadata.js';
import { peerString } from './context.js';
import { takeHeadersFault, type HeadersFault } from './http2-servers.js';

/** A status as an interceptor sends it (not exported by grpc-js under a name). */
export type PartialStatusObject = Parameters<ServerInterceptingCallInterface['sendStatus']>[0];

/** grpc-js's texts echo what the client sent (an encoding, a timeout): the log keeps this much. */
const MAX_CAUSE_CHARS = 200;
/** What the audit line names as the operation of an unknown method: a well-formed path, else this. */
const MALFORMED_METHOD = 'unknown';
const METHOD_PATH = /^\/[A-Za-z0-9_.]{1,200}\/[A-Za-z0-9_]{1,100}$/;

/**
 * The error behind a status that grpc-js sent on its own, below every interceptor (from its
 * base call): what the client did wrong, or, for anything else (a response it could not
 * serialize or that is over `grpc.max_send_message_length`), an internal error. grpc-js's text
 * becomes the cause, for the log only: it echoes what the client sent and names the server's
 * limits.
 *
 * @internal
 */
export function errorOfGrpcJsStatus(status: PartialStatusObject): SecurityError | Error {
  const details = detailsOf(status);
  const cause = grpcJsCause(details);
  const { code } = status;
  if (code === Status.DEADLINE_EXCEEDED) {
    return new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded', cause });
  }
  // "Received message larger than max (N vs M)", "...that decompresses to a size larger than M".
  if (code === Status.RESOURCE_EXHAUSTED && details.startsWith('Received message')) {
    return new SecurityError('payload_too_large', { reason: 'message_too_large', cause });
  }
  if (code === Status.UNIMPLEMENTED && details.startsWith('Received message compressed with unsupported encoding')) {
    return new SecurityError('unimplemented', {
      reason: 'message_encoding_unsupported',
      message: 'The message encoding is not supported.',
      cause,
    });
  }
  if (code === Status.INTERNAL) {
    if (details === 'Failed to decompress message') {
      return new SecurityError('invalid_argument', { reason: 'message_decompression_failed', cause });
    }
    if (details.startsWith('Invalid grpc-timeout value')) {
      return new SecurityError('invalid_argument', {
        reason: 'deadline_header_invalid',
        details: { field: 'grpc-timeout' },
        cause,
      });
    }
    if (details.startsWith('Error deserializing request')) {
      return new SecurityError('invalid_argument', { reason: 'message_unparsable', cause });
    }
  }
  return cause;
}

/**
 * The error behind a status that grpc-js's handler runner (not a handler) sends through the
 * interceptors for a unary or server-streaming request with no message or a second one:
 * the client's fault, where grpc-js says `UNIMPLEMENTED`. `undefined` for any other status.
 *
 * @internal
 */
export function errorOfGrpcJsRequestStatus(status: {
  readonly code?: number | undefined;
  readonly details?: string | undefined;
}): SecurityError | undefined {
  const details = detailsOf(status);
  if (
    status.code !== Status.UNIMPLEMENTED ||
    !(details.startsWith('Received no request message') || details.startsWith('Received a second request message'))
  ) {
    return undefined;
  }
  return new SecurityError('invalid_argument', {
    reason: 'message_count_invalid',
    cause: grpcJsCause(details),
  });
}

function detailsOf(status: { readonly details?: string | undefined }): string {
  return typeof status.details === 'string' ? status.details : '';
}

/**
 * grpc-js's text as the cause of a fluxguard error, for the log only, cut to its first characters.
 * Scrubbed before the cut: a token the client put in a method path or an encoding, cut within its
 * claims, is no longer found by the log's scrubbing, and its header and claims were logged.
 */
function grpcJsCause(details: string): Error {
  return new Error(`grpc-js: ${scrubSecrets(details).slice(0, MAX_CAUSE_CHARS)}`);
}

/**
 * Records a failure and returns its public form; a broken log destination must not turn into a
 * leaking or hanging call, so a logger that throws still yields the public error.
 *
 * @internal
 */
export function recordFailureSafely(audit: AuditLogger, error: unknown, context: FailureContext): PublicError {
  try {
    return audit.recordFailure(error, context);
  } catch {
    return toPublicError(error, context.requestId);
  }
}

const auditOfInterceptor = new WeakMap<object, AuditLogger>();

/**
 * Remembers the audit logger of a safeErrors interceptor, for the answers grpc-js makes before
 * any interceptor exists (an unknown method, a request that is not gRPC).
 *
 * @internal
 */
export function rememberAudit(interceptor: object, audit: AuditLogger): void {
  auditOfInterceptor.set(interceptor, audit);
}

/**
 * Whether `server` (a grpc-js `Server`) runs no safeErrors interceptor of fluxguard: its calls
 * would be neither authenticated by fluxguard nor logged. `false` where the server's
 * interceptors cannot be read (another grpc-js).
 *
 * @internal
 */
export function lacksSafeErrors(server: object): boolean {
  const interceptors = (server as ServerInternals).interceptors;
  return (
    Array.isArray(interceptors) &&
    !interceptors.some(
      (interceptor: unknown) => typeof interceptor === 'function' && auditOfInterceptor.has(interceptor),
    )
  );
}

const vetted = new WeakSet<object>();

type RespondWithError = (error: PartialStatusObject, stream: ServerHttp2Stream, ...rest: unknown[]) => void;
type VerifyContentType = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean;

/**
 * Wraps the two answers grpc-js's `server.js` makes before any interceptor exists, on `server`:
 * - a method that no registered service has (`_respondWithError`): grpc-js's text quotes the
 *   path the client sent, and nothing is logged. The client gets `UNIMPLEMENTED` "The method
 *   is not implemented." with its request id (its own `x-request-id` when well formed, else a
 *   new one), and the audit logger of the server's safeErrors interceptor (the first one) the
 *   `unimplemented` refusal under that id;
 * - a request that is not gRPC (`_verifyContentType`: a `content-type` other than
 *   `application/grpc...`): grpc-js answers HTTP 415 with nothing else. The answer keeps its
 *   415 and gets an `x-request-id`, and the log a `content_type_unsupported` refusal. A
 *   `:method` other than `POST`, which grpc-js serves, is answered HTTP 405 (`allow: POST`)
 *   the same way, with a `method_not_allowed` refusal;
 * - binary metadata that grpc-js would split into more values than the server's
 *   `maxHeaderFields` (`secureServerOptions`, 256 by default): refused `RESOURCE_EXHAUSTED` "The request is too large." (`too_many_headers`, field
 *   `headers`) before grpc-js builds the call's metadata (counted by `hardenHttp2Servers`);
 * - an `:authority` that is no host and optional port (`u@a`, `[::1`, `a:99999`): refused
 *   `INVALID_ARGUMENT` "The request is invalid." (`malformed_request`, `headFault: 'host_invalid'`),
 *   as the Express adapter refuses such a `Host` (read by `hardenHttp2Servers`).
 * Refusals are folded like any other under a flood. With a grpc-js that has no such methods it
 * does nothing (the adapter checks the grpc-js version it supports at start-up).
 *
 * @internal
 */
export function vetServerAnswers(server: Pick<Server, 'addService'>): void {
  if (vetted.has(server)) return;
  vetted.add(server);
  const target = server as unknown as { _respondWithError?: RespondWithError; _verifyContentType?: VerifyContentType };
  const respondWithError = target._respondWithError;
  const verifyContentType = target._verifyContentType;
  if (typeof respondWithError !== 'function' || typeof verifyContentType !== 'function') return;
  // grpc-js checks the content type of every stream first, then looks its method up and
  // answers an unknown one, all in the same turn: the headers of the stream being handled.
  let currentStream: ServerHttp2Stream | undefined;
  let currentHeaders: IncomingHttpHeaders = {};

  Object.defineProperty(server, '_verifyContentType', {
    configurable: true,
    writable: true,
    value(this: ServerInternals, stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
      currentStream = stream;
      currentHeaders = headers;
      // gRPC is POST only. grpc-js serves any method, where a cache or a proxy in front may
      // treat a GET as safe to repeat or keep, and a rule of its may look at POSTs only.
      if (headers[':method'] !== 'POST') {
        answerNotGrpc(this, stream, headers, 'method_not_allowed', { ':status': 405, allow: 'POST' });
        return false;
      }
      const contentType = headers['content-type'];
      if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
        answerNotGrpc(this, stream, headers, 'content_type_unsupported', { ':status': 415 });
        return false;
      }
      const fault = takeHeadersFault(headers);
      if (fault === undefined) return true;
      const requestId = requestIdOf(headers);
      const refusal = refusalOf(fault);
      const publicError = refuse(this, refusal, stream, headers, requestId);
      const metadata = responseMetadata(requestId);
      if (fault === 'too_many_binary_values') metadata.set(FIELD_METADATA_KEY, 'headers');
      answerIfOpen(stream, () => {
        respondWithError.call(this, { code: publicError.grpcStatus, details: publicError.message, metadata }, stream);
      });
      return false;
    },
  });

  Object.defineProperty(server, '_respondWithError', {
    configurable: true,
    writable: true,
    value(this: ServerInternals, error: PartialStatusObject, stream: ServerHttp2Stream, ...rest: unknown[]) {
      const headers = currentStream === stream ? currentHeaders : {};
      const requestId = requestIdOf(headers);
      const path = headers[':path'];
      // grpc-js's text repeats the path: kept only where the line cannot name the method (its
      // `operation` is then `unknown`), so that a long path is not logged twice.
      const refusal = new SecurityError(
        'unimplemented',
        typeof path === 'string' && METHOD_PATH.test(path)
          ? { reason: 'unimplemented' }
          : { reason: 'unimplemented', cause: grpcJsCause(detailsOf(error)) },
      );
      const publicError = refuse(this, refusal, stream, headers, requestId);
      const metadata = responseMetadata(requestId);
      answerIfOpen(stream, () => {
        respondWithError.call(
          this,
          { code: publicError.grpcStatus, details: publicError.message, metadata },
          stream,
          ...rest,
        );
      });
    },
  });
}

/**
 * The refusal of a call whose headers have `fault`: too many binary values as the header limits
 * refuse too many entries, an `:authority` that is no host as the Express adapter refuses such a
 * `Host` (`malformed_request`, `headFault: 'host_invalid'`).
 */
function refusalOf(fault: HeadersFault): SecurityError {
  if (fault === 'authority_invalid') {
    return new SecurityError('invalid_argument', {
      reason: 'malformed_request',
      auditFields: { headFault: 'host_invalid' },
    });
  }
  return new SecurityError('payload_too_large', { reason: 'too_many_headers', details: { field: 'headers' } });
}

/**
 * Answers a stream that is no gRPC call with a bare HTTP status and its request id, no body and
 * no `grpc-status`, and logs the refusal.
 */
function answerNotGrpc(
  server: ServerInternals,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  reason: 'method_not_allowed' | 'content_type_unsupported',
  answer: Readonly<Record<string, string | number>>,
): void {
  const requestId = requestIdOf(headers);
  refuse(server, new SecurityError('invalid_argument', { reason }), stream, headers, requestId);
  answerIfOpen(stream, () => {
    stream.respond({ ...answer, [REQUEST_ID_HEADER]: requestId }, { endStream: true });
  });
}

/**
 * Answers a stream grpc-js is handling in its `stream` event, unless it is gone: a client that
 * writes calls faster than the stream limit lets them in has Node refuse streams, then drop
 * the connection, while the calls already read still reach grpc-js. `respond` on such a stream
 * throws, and from that event the throw ended the process (grpc-js's own answer to an unknown
 * method does the same without fluxguard).
 */
function answerIfOpen(stream: ServerHttp2Stream, answer: () => void): void {
  if (stream.destroyed || stream.closed) return;
  try {
    answer();
  } catch {
    // Closed while answering: nothing is left to answer, and nothing may escape to the loop.
    stream.destroy();
  }
}

/** The client's own `x-request-id` when well formed, else a new one (as safeErrors does). */
function requestIdOf(headers: IncomingHttpHeaders): string {
  return resolveRequestId(headers[REQUEST_ID_HEADER]);
}

/** What {@link vetServerAnswers} reads of grpc-js's server: its interceptors, safeErrors first. */
interface ServerInternals {
  readonly interceptors?: unknown;
}

/** Logs a refusal made before any interceptor, with the audit logger of the server's safeErrors. */
function refuse(
  server: ServerInternals,
  refusal: SecurityError,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  requestId: string,
): PublicError {
  const first: unknown = Array.isArray(server.interceptors) ? server.interceptors[0] : undefined;
  const audit = typeof first === 'function' ? auditOfInterceptor.get(first) : undefined;
  if (audit === undefined) return toPublicError(refusal, requestId);
  const path = headers[':path'];
  return recordFailureSafely(audit, refusal, {
    operation: typeof path === 'string' && METHOD_PATH.test(path) ? path : MALFORMED_METHOD,
    peer: peerOf(stream),
    requestId,
    transport: 'grpc',
  });
}

/** The client's address, as {@link peerString} writes it. */
function peerOf(stream: ServerHttp2Stream): string {
  const socket = stream.session?.socket;
  return peerString(socket?.remoteAddress, socket?.remotePort);
}
