import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import {
  ConfigurationError,
  REQUEST_ID_HEADER,
  SecurityError,
  isSecurityError,
  resolveRequestId,
  type AuditLogger,
  type TransportReason,
} from '@fluxguard/core';
import {
  UNIX_SOCKET_PEER,
  assertAuditLogger,
  isUnixSocketConnection,
  bearerChallenge,
  refuseOptions,
  resolveOptions,
  serverEndingOf,
  type CallState,
  type PublicError,
} from '@fluxguard/core/adapter';
import { cancelledLineWritten, stateOf, writeControlHeaders } from './context.js';
import { bodyStillComing, closeAfterAnswer } from './request-body.js';

/**
 * Options of {@link errorHandler}.
 *
 * @example
 * ```ts
 * const options: ErrorHandlerOptions = { audit: createAuditLogger(), realm: 'artifacts' };
 * app.use(errorHandler(options));
 * ```
 */
export interface ErrorHandlerOptions {
  /** The audit logger that maps and logs every failure (`createAuditLogger` of @fluxguard/core). */
  readonly audit: AuditLogger;
  /**
   * The `realm` of `WWW-Authenticate: Bearer` challenges on 401 (RFC 6750 section 3). Default:
   * no realm. 1 to 100 printable ASCII characters, not all spaces, without `"` or `\`.
   */
  readonly realm?: string | undefined;
}

/**
 * The RFC 9457 body fluxguard sends for every error.
 *
 * @example
 * ```ts
 * const res = await fetch(`${base}/v1/artifacts/missing.bin`);
 * const problem = (await res.json()) as ProblemDetails;
 * problem.code; // 'not_found'
 * problem.requestId === res.headers.get('x-request-id'); // true
 * ```
 */
export interface ProblemDetails {
  /** Always `about:blank`: the `code` says what went wrong. */
  readonly type: 'about:blank';
  /** The HTTP status text of the error code (RFC 9457 `title`), e.g. `Forbidden`. */
  readonly title: string;
  /** The HTTP status of the response, repeated in the body. */
  readonly status: number;
  /**
   * The public message of the error table, or of a refusal made with a public message of its
   * own (a validation failure names the field and the broken rule); never input, library text or
   * internals.
   */
  readonly detail: string;
  /** The public error code (`permission_denied`, `rate_limited`, ...), stable for clients to branch on. */
  readonly code: PublicError['code'];
  /** The request id, the same as the `x-request-id` response header. */
  readonly requestId: string;
  /** The offending field (`invalid_argument`), named, never quoted. */
  readonly field?: string;
}

/**
 * The media type of every error body (RFC 9457).
 *
 * @example
 * ```ts
 * if (res.headers.get('content-type') === PROBLEM_CONTENT_TYPE) console.error(await res.json());
 * ```
 */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

const DEFAULTS: Readonly<{ audit: AuditLogger | undefined; realm: string | undefined }> = Object.freeze({
  audit: undefined,
  realm: undefined,
});

const SAFE_REALM = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,100}$/;

// The responses this handler has answered, so that an error after that answer (a handler that
// fails once the deadline answered for it) is told apart from the handler's own answer still
// on its way when the deadline came.
const answered = new WeakSet<ServerResponse>();

/**
 * body-parser / raw-body error types that describe a bad request, not a server fault. Others
 * (`stream.not.readable`, `stream.encoding.set`) are programming errors and stay `internal`.
 */
const CLIENT_BODY_ERRORS: ReadonlyMap<string, TransportReason> = new Map<string, TransportReason>([
  ['entity.parse.failed', 'body_parse_failed'],
  ['entity.verify.failed', 'body_verify_failed'],
  ['request.aborted', 'body_aborted'],
  ['request.size.invalid', 'body_size_mismatch'],
  ['encoding.unsupported', 'body_encoding_unsupported'],
  ['charset.unsupported', 'body_charset_unsupported'],
  ['parameters.too.many', 'body_too_many_parameters'],
]);

/**
 * What a body that does not parse is logged as: V8's `JSON.parse` message quotes the body
 * around the fault (a password after its key, out of reach of the log's key redaction), so
 * only the position is kept.
 */
function parseFailure(err: unknown): Error {
  const message = err instanceof Error ? err.message : '';
  const position = /\bposition (\d{1,10})\b/.exec(message)?.[1];
  return new SyntaxError(`the body is not valid JSON${position === undefined ? '' : ` (at position ${position})`}`);
}

/**
 * Headers a failing handler may have set for the representation it meant to send; they would
 * describe the problem body wrongly (or leak what the handler was serving).
 */
const REPRESENTATION_HEADERS = [
  'content-length',
  'content-encoding',
  'content-language',
  'content-range',
  'content-disposition',
  'content-location',
  'content-digest',
  'repr-digest',
  'digest',
  'etag',
  'last-modified',
  'accept-ranges',
  'x-powered-by',
] as const;

/** Sent if building the real answer fails: a constant that cannot leak anything. */
const LAST_RESORT_BODY = JSON.stringify({
  type: 'about:blank',
  title: 'Internal Server Error',
  status: 500,
  detail: 'An internal error occurred.',
  code: 'internal',
});

/**
 * Routes nothing matched: hands a `not_found` `SecurityError` to {@link errorHandler}, so
 * that Express's HTML "Cannot GET /path" page (which echoes the path) is never sent. Mount it
 * after every route and before `errorHandler`.
 *
 * @throws ConfigurationError when given an argument: it takes no options.
 *
 * @example
 * ```ts
 * import { errorHandler, notFound } from '@fluxguard/express';
 * app.use(notFound());
 * app.use(errorHandler({ audit }));
 * ```
 */
export function notFound(...none: readonly never[]): RequestHandler {
  refuseOptions('notFound', none);
  return function fluxguardNotFound(_req, _res, next) {
    next(new SecurityError('not_found', { reason: 'route_not_found' }));
  };
}

/**
 * The last error handler of an app: turns anything a middleware or handler threw, rejected or
 * passed to `next(err)` into an RFC 9457 `application/problem+json` answer, through
 * `audit.recordFailure` of @fluxguard/core (the same mapping and audit line as the gRPC
 * adapter). A `SecurityError` keeps its code, public text and field; Express's own errors
 * (body too large, malformed JSON, malformed URI) become `payload_too_large` or
 * `invalid_argument` with the neutral text; anything else becomes a generic 500. Stack traces,
 * paths, errno text and library messages go to the log only, whatever `NODE_ENV` says.
 *
 * 401 answers carry `WWW-Authenticate: Bearer` (with `error="invalid_token"` unless the error's
 * reason is `missing_token`, RFC 6750 section 3.1); 429 answers carry `Retry-After` when the
 * error has `details.retryAfterSeconds`. If the response had already started, the connection
 * is destroyed so the client sees a truncated answer rather than a seemingly complete one; so
 * is the connection of a client that has not taken the handler's whole answer by the
 * request's deadline (a client that never reads would otherwise hold it, and the answer's
 * memory, for good).
 *
 * A failure that reaches it means the handler has stopped: a concurrency limit holding the slot
 * of a request whose client left (`holdForHandlerMs` of @fluxguard/core) gives it back then.
 *
 * It never calls `next`, so Express's final handler (which renders HTML with the stack
 * outside production) never runs for an error that reaches it.
 *
 * @example
 * ```ts
 * import { createAuditLogger } from '@fluxguard/core';
 * import { errorHandler, notFound } from '@fluxguard/express';
 *
 * const audit = createAuditLogger();
 * // ... routes ...
 * app.use(notFound());
 * app.use(errorHandler({ audit, realm: 'artifacts' }));
 * ```
 */
export function errorHandler(options: ErrorHandlerOptions): ErrorRequestHandler {
  return reachedFromApp(answerFailures(options), options.audit);
}

/**
 * The error handler as the app's chain reaches it: whatever handler ran has stopped (it threw,
 * rejected, or passed the request on), which is what `CallContext.afterHandler` waits for. A
 * request a control answered early (a deadline) has its answer and its line already: what the
 * handler throws after that, typically over its aborted signal or a download cut off, is
 * written at debug level only, never as a second failure.
 *
 * @internal
 */
export function reachedFromApp(answer: ErrorRequestHandler, audit: AuditLogger): ErrorRequestHandler {
  return function fluxguardErrorHandler(err: unknown, req: Request, res: Response, next: NextFunction) {
    const state = stateOf(req);
    state?.handlerStopped();
    if (state?.endedEarly === true) {
      try {
        audit.logger.debug(
          { requestId: state.requestId, err: translateExpressError(err) },
          'failure after the request was answered',
        );
      } catch {
        // A broken log sink: the request has its answer already.
      }
      return;
    }
    answer(err, req, res, next);
  };
}

/**
 * The body of {@link errorHandler}, for fluxguard's own answers too (a deadline's answer, while
 * the handler may still be running); `owner` is the factory its errors name.
 *
 * @internal
 */
export function answerFailures(options: ErrorHandlerOptions, owner = 'errorHandler'): ErrorRequestHandler {
  const opts = resolveOptions(owner, DEFAULTS, options);
  const audit = opts.audit;
  assertAuditLogger(audit, owner);
  // A blank realm names no protection space in the challenge (RFC 7235 §2.2).
  if (
    opts.realm !== undefined &&
    (typeof opts.realm !== 'string' || !SAFE_REALM.test(opts.realm) || opts.realm.trim() === '')
  ) {
    throw new ConfigurationError(
      `${owner}: "realm" must be 1 to 100 printable ASCII characters, not all spaces, without a quote or backslash`,
    );
  }
  const realm = opts.realm;

  // Express recognises an error handler by its four declared parameters; `next` is never
  // called, so Express's final handler never renders an error.
  return function fluxguardAnswerFailure(err: unknown, req: Request, res: Response, _next: NextFunction) {
    try {
      const translated = translateExpressError(err);
      const state = stateOf(req);
      const requestId = state?.requestId ?? resolveRequestId(req.headers[REQUEST_ID_HEADER]);
      const endedEarly = res.writableEnded && state?.endedEarly === true;
      if (endedEarly && (answered.has(res) || res.writableFinished)) {
        // A control answered the request early (a deadline) and the handler failed after it,
        // typically with its aborted signal: the request has its audit line already.
        audit.logger.debug({ requestId, err: translated }, 'failure after the request was answered');
        return;
      }
      if (state?.finished === true && state.refusal !== undefined && !state.endedEarly && !res.writableFinished) {
        // A control refused the request after its client left (it decided late: a key set
        // fetched, a Redis-backed limit): no handler ran, and a refusal is the request's line
        // whatever the client did, as on gRPC. Nobody is left to read the answer.
        recordRequestFailure(audit, translated, req, res, requestId);
        if (!res.destroyed) res.destroy();
        return;
      }
      if (state?.finished === true && !state.endedEarly && !res.writableFinished) {
        // The client went away before the answer (what the handler threw is most likely its
        // aborted signal): nobody is left to answer, and a client that leaves is no server
        // fault. Its one short info line was written when the connection closed under the
        // handler; here only when it was not (`requestId()` without `fluxguard().before`).
        // What failed goes to a debug line, as on gRPC: most often the abort, or what the cut
        // caused (a stream closed early), which no more than the abort may cost an error line
        // a client can repeat at will; a real bug shows on the requests that are not cut too.
        if (!cancelledLineWritten(state)) recordCancelledRequest(audit, req, res, state);
        audit.logger.debug({ requestId, err: translated }, 'failure after the request was cancelled');
        if (!res.destroyed) res.destroy();
        return;
      }
      const publicError = recordRequestFailure(audit, translated, req, res, requestId);
      if (endedEarly) {
        // The handler's whole answer was written, but the client had not taken it when the
        // deadline came: the deadline covers sending too. Left open, a client that never reads
        // would hold the connection, its in-flight slot and the answer's memory for good.
        cutConnection(res);
        return;
      }
      // Already answered in full (a control ended the request early): the log line is all that is left.
      if (res.writableEnded) return;
      // Answer started: cut it off, so the client sees a truncated answer, not a complete-looking one.
      if (res.headersSent || res.destroyed) {
        cutConnection(res);
        return;
      }
      // RFC 6750 section 3: the challenge (and its error attribute) is core's, shared with gRPC.
      const challenge =
        publicError.code === 'unauthenticated'
          ? bearerChallenge(isSecurityError(translated) ? translated : new SecurityError('unauthenticated'), realm)
          : undefined;
      // A refusal carries what the controls added too (a 429 its RateLimit fields).
      writeControlHeaders(state, res);
      // A handler that refused before reading the body (a bad digest, a conflict): Node would
      // keep the connection to read the rest of it, and a client trickling it would hold the
      // connection until the request timeout, then get a second answer and line.
      if (bodyStillComing(req)) closeAfterAnswer(req, res);
      sendProblem(res, publicError, challenge);
    } catch (failure) {
      lastResort(req, res, failure, audit);
    }
  };
}

/**
 * Writes the audit line of a request's failure (operation, peer, subject and request id read
 * from the request) and returns what the client may see.
 *
 * @internal
 */
export function recordRequestFailure(
  audit: AuditLogger,
  err: unknown,
  req: Request,
  res: ServerResponse,
  requestId = stateOf(req)?.requestId ?? resolveRequestId(req.headers[REQUEST_ID_HEADER]),
): PublicError {
  return audit.recordFailure(err, {
    operation: operationOf(req),
    peer: peerOf(req, res),
    subject: stateOf(req)?.principal?.subject ?? refusedSubject(err),
    requestId,
    transport: 'http',
  });
}

/**
 * Writes the `request.cancelled` line (`audit.recordCancelled`) of a request cut before its
 * answer: its client left, or the server ended its connection (a shutdown, a revoked
 * certificate), which the line's `reason` then says. The one place its context is built, for
 * the line written when the connection closes and for the error handler's. Never throws: it
 * runs in a 'close' listener too.
 *
 * @internal
 */
export function recordCancelledRequest(
  audit: AuditLogger,
  req: IncomingMessage,
  res: ServerResponse,
  state: CallState,
): void {
  try {
    audit.recordCancelled(
      {
        requestId: state.requestId,
        operation: operationOf(req as Request),
        peer: peerOf(req, res),
        subject: state.principal?.subject,
        transport: 'http',
      },
      undefined,
      serverEndingOf(req.socket),
    );
  } catch {
    // A label of the app that throws: the request is over, and the audit logger reports its
    // own write failures.
  }
}

/**
 * The subject a refusal names (the guard of @fluxguard/core sets it when it refuses an
 * authenticated caller, whose principal the request never got), for the audit line only.
 */
function refusedSubject(err: unknown): string | undefined {
  if (!isSecurityError(err)) return undefined;
  const subject: unknown = (err as { subject?: unknown }).subject;
  return typeof subject === 'string' ? subject : undefined;
}

/**
 * Express's and body-parser's own errors carry a `status` and a message meant for developers
 * ("Unexpected token } in JSON at position 12", "Failed to decode param '%E0%A4%A'"). Known
 * client faults become a `SecurityError` with a neutral text; the original stays as the cause
 * for the log. Anything else is left for `toPublicError`, which makes it `internal`.
 *
 * @internal
 */
export function translateExpressError(err: unknown): unknown {
  if (isSecurityError(err) || !(err instanceof Error)) return err;
  const props = err as Error & { type?: unknown; status?: unknown; statusCode?: unknown };
  const status = typeof props.status === 'number' ? props.status : props.statusCode;
  if (typeof props.type === 'string') {
    if (props.type === 'entity.too.large') {
      return new SecurityError('payload_too_large', { reason: 'body_too_large', cause: err });
    }
    const reason = CLIENT_BODY_ERRORS.get(props.type);
    if (reason !== undefined) {
      const cause = reason === 'body_parse_failed' ? parseFailure(err) : err;
      return new SecurityError('invalid_argument', { reason, details: { field: 'body' }, cause });
    }
  }
  // A compressed body that does not decompress: body-parser passes zlib's own error on with a
  // 400 but no type. zlib's codes are `Z_DATA_ERROR`, `Z_BUF_ERROR`, ...; brotli's `ERR__ERROR_...`.
  if (status === 400 && isZlibError(err)) {
    return new SecurityError('invalid_argument', {
      reason: 'body_decompression_failed',
      details: { field: 'body' },
      cause: err,
    });
  }
  // The router's decodeURIComponent failure on a route or mount parameter.
  if (err instanceof URIError && status === 400) {
    return new SecurityError('invalid_argument', { reason: 'malformed_uri', details: { field: 'path' }, cause: err });
  }
  return err;
}

function isZlibError(err: Error): boolean {
  const { code, errno } = err as Error & { code?: unknown; errno?: unknown };
  return typeof code === 'string' && typeof errno === 'number' && /^(Z_|ERR__)/.test(code);
}

/**
 * `METHOD /route/pattern` when Express matched a route; else the pattern of the RBAC rule that
 * `authorize()` applied (`DELETE /v1/artifacts/*path`); else `METHOD <unmatched>`: a bounded
 * label, never the raw path a client chose. (An error handler of the app sees the base URL of
 * the app, so a route of a mounted router is labelled with the router's own pattern.)
 */
function operationOf(req: Request): string {
  const route: unknown = req.route;
  const pattern = typeof route === 'object' && route !== null ? (route as { path?: unknown }).path : undefined;
  if (typeof pattern === 'string') return `${req.method} ${req.baseUrl}${pattern}`;
  // Refused by authorize() before routing: the pattern of the RBAC rule that applied.
  const state = stateOf(req);
  const info = state?.callInfo;
  return (info === undefined ? undefined : state?.labelOperation?.(info.operation)) ?? `${req.method} <unmatched>`;
}

/**
 * The remote address as `host:port` (`[v6]:port`). Package-internal.
 *
 * @internal
 */
export function peerOf(req: IncomingMessage, res?: ServerResponse): string | undefined {
  // Node detaches req.socket when the request stream is destroyed (a handler that stopped
  // reading the body after an error, say); the response may still hold it.
  const socket = (req.socket as Socket | null) ?? res?.socket;
  return socketPeer(socket);
}

/**
 * The remote address of a connection as `host:port` (`[v6]:port`), for a connection that has
 * no request (yet). Package-internal.
 *
 * @internal
 */
export function socketPeer(
  socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined } | null | undefined,
): string | undefined {
  const remoteAddress = socket?.remoteAddress;
  const remotePort = socket?.remotePort;
  if (remoteAddress === undefined) return isUnixSocketConnection(socket) ? UNIX_SOCKET_PEER : undefined;
  const host = remoteAddress.includes(':') ? `[${remoteAddress}]` : remoteAddress;
  return remotePort === undefined ? host : `${host}:${remotePort}`;
}

/**
 * The problem+json body of a public error; `status` and `title` when the answer keeps another
 * status than the error table's (Node's 431, 408, 417).
 *
 * @internal
 */
export function problemDetails(
  publicError: PublicError,
  status = publicError.httpStatus,
  title = publicError.title,
): ProblemDetails | (Omit<ProblemDetails, 'field'> & { field: undefined }) {
  // One shape whatever the error: an absent field is `undefined`, which JSON leaves out.
  return {
    type: 'about:blank',
    title,
    status,
    detail: publicError.message,
    code: publicError.code,
    requestId: publicError.requestId,
    field: publicError.details?.field,
  };
}

/**
 * Answers `publicError` as problem+json with its request id (and `challenge`, a
 * `WWW-Authenticate` value), dropping what a handler had set about its own representation.
 *
 * @internal
 */
export function sendProblem(res: ServerResponse, publicError: PublicError, challenge: string | undefined): void {
  const body = problemDetails(publicError);
  // Usually none of them is set (a refusal comes before the handler): asking is cheaper than removing.
  for (const name of REPRESENTATION_HEADERS) if (res.hasHeader(name)) res.removeHeader(name);
  res.setHeader('content-type', PROBLEM_CONTENT_TYPE);
  res.setHeader('cache-control', 'no-store');
  res.setHeader(REQUEST_ID_HEADER, publicError.requestId);
  if (challenge !== undefined) res.setHeader('www-authenticate', challenge);
  const retryAfter = publicError.details?.retryAfterSeconds;
  if (publicError.code === 'rate_limited' && retryAfter !== undefined) res.setHeader('retry-after', String(retryAfter));
  const payload = JSON.stringify(body);
  res.setHeader('content-length', Buffer.byteLength(payload));
  // The status and its standard message (one set earlier by the handler could carry anything)
  // through writeHead, which stores both anyway: Express gives every response a new prototype,
  // after which each property first written on it costs V8 a new hidden class (about 2 µs).
  res.writeHead(publicError.httpStatus, STATUS_CODES[publicError.httpStatus] ?? publicError.title);
  answered.add(res);
  res.end(payload);
}

/**
 * Ends a response cut off midway with a TCP reset, not a graceful close: after a close, the
 * kernel would keep trying to deliver what the socket still holds (megabytes, to a client that
 * does not read) for as long as the client keeps the connection. A TLS socket is reset through
 * the TCP socket below it (`_parent`, Node's own, not in its typed interface); where there is
 * none, or it cannot be reset, the response is destroyed as before.
 *
 * @internal
 */
export function cutConnection(res: ServerResponse): void {
  const socket = res.socket;
  const below: unknown = (socket as { _parent?: unknown } | null)?._parent ?? socket;
  if (below instanceof Socket && !below.destroyed) {
    try {
      below.resetAndDestroy();
    } catch {
      // Not a TCP socket (a pipe, a test double): destroyed below all the same.
    }
  }
  res.destroy();
}

/** Building or logging the answer failed (a broken logger, say): still never call `next`. */
function lastResort(req: IncomingMessage, res: ServerResponse, failure: unknown, audit: AuditLogger): void {
  try {
    audit.logger.error({ err: failure, requestId: stateOf(req)?.requestId }, 'fluxguard error handler failed');
  } catch {
    // Nothing left to report to.
  }
  if (res.headersSent || res.destroyed) {
    cutConnection(res);
    return;
  }
  try {
    for (const name of res.getHeaderNames()) {
      if (name !== REQUEST_ID_HEADER) res.removeHeader(name);
    }
    res.statusCode = 500;
    res.statusMessage = 'Internal Server Error';
    res.setHeader('content-type', PROBLEM_CONTENT_TYPE);
    res.setHeader('cache-control', 'no-store');
    answered.add(res);
    res.end(LAST_RESORT_BODY);
  } catch {
    res.destroy();
  }
}
