import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  REQUEST_ID_HEADER,
  SecurityError,
  resolveRequestId,
  type AuditLogger,
  type TransportReason,
} from '@fluxguard/core';
import { canonicalHost, isValidHostField, noteServerEnding, type PublicError } from '@fluxguard/core/adapter';
import { problemDetails, socketPeer } from './error-handler.js';

interface ClientFault {
  readonly status: number;
  readonly code: PublicError['code'];
  readonly reason: TransportReason;
}

/** Node's own answers to a request it could not parse or wait for (its `socketOnError`). */
const FAULTS: Readonly<Record<string, ClientFault>> = Object.freeze({
  HPE_HEADER_OVERFLOW: { status: 431, code: 'payload_too_large', reason: 'request_head_too_large' },
  // The extensions of a chunk of the body (`1;name=value`) past Node's 16 KiB: not the head.
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, code: 'payload_too_large', reason: 'chunk_extensions_too_large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'deadline_exceeded', reason: 'request_timeout' },
  // Node stops reading a connection whose answers wait behind too many pipelined requests, and
  // refuses what arrives meanwhile: well-formed requests past a budget the client overran.
  HPE_PAUSED: { status: 429, code: 'rate_limited', reason: 'too_many_pipelined' },
});
const MALFORMED: ClientFault = { status: 400, code: 'invalid_argument', reason: 'malformed_request' };

/**
 * Connections whose refused request has a `Transfer-Encoding` that does not frame its body.
 * Whatever follows that head is its body (RFC 9112 section 6.3), which Node's parser refuses
 * once it arrives: that request's own line already stands, so the parser's adds none.
 */
const unframed = new WeakSet<Duplex>();

/**
 * Answers what Node's HTTP parser refuses before any request object exists (a malformed
 * request line or header, a duplicate `Content-Length`, headers over `maxHeaderSize`, a
 * request that timed out), in place of Node's bare `400`/`408`/`431`: the same status, with
 * an `x-request-id`, a problem+json body and an audit line that carries that id, like every
 * other refusal. The connection is closed after it, as Node does. Behind a pipelined request
 * whose answer has started, only the line is written (`answered` says so). Installed by
 * `createSecureServer` as the server's `clientError` listener.
 *
 * @internal
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, audit: AuditLogger): void {
  const code = err.code ?? '';
  // Not the parser's (a reset, a TLS handshake that never completed), or a connection already
  // gone: nothing can be written, and nothing was asked.
  const fault = FAULTS[code] ?? (code.startsWith('HPE_') ? MALFORMED : undefined);
  if (fault === undefined || !socket.writable || leftMidBody(code, socket) || unframed.has(socket)) {
    socket.destroy();
    return;
  }
  const requestId = resolveRequestId(undefined);
  const pipelined = requestInFlight(socket);
  // Node's error is not the cause: it carries the raw bytes of the request (`rawPacket`), an
  // `Authorization` header included. Its code says what the parser refused.
  const refusal = new SecurityError(fault.code, {
    reason: fault.reason,
    auditFields: {
      parserCode: code.slice(0, 64),
      ...(pipelined ? { answered: 'no: behind a request in flight' } : {}),
    },
  });
  if (pipelined) {
    // Sent behind (or inside the body of) a request still being answered: a 400 written now
    // would be read as that request's answer, while its handler carries it out. Nothing is
    // written; the connection is closed as Node closes it, which cancels that request, whose
    // own line says so. This line is written too, so that a malformed request cannot hide from
    // the log behind a good one.
    recordOutsideExpress(refusal, requestId, socket, audit);
    // The server cuts the request in flight itself, and its line says so, not that its client
    // left: Node's request timeout, that request still sending, or a refusal behind it. A fault
    // in its own body (a bad chunk) is that request's own: its line says no more, as before.
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') noteServerEnding(socket, 'request_timeout');
    else if (!inOwnBody(socket)) noteServerEnding(socket, 'pipelined_refused');
    socket.destroy();
    return;
  }
  writeAndClose(socket, fault, problemAnswer(fault, refusal, requestId, socket, audit));
}

/**
 * Writes a refusal on a socket no response object owns, then destroys it at once, as Node does
 * with its own answers: a client that does not read it must not keep the connection.
 */
function writeAndClose(socket: Duplex, fault: ClientFault, answer: ProblemAnswer): void {
  socket.write(
    `HTTP/1.1 ${String(fault.status)} ${STATUS_CODES[fault.status] ?? ''}\r\n` +
      Object.entries(answer.headers)
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('') +
      '\r\n' +
      answer.body,
  );
  socket.destroy();
}

const CONNECT_REFUSED: ClientFault = { status: 404, code: 'not_found', reason: 'route_not_found' };

/**
 * Answers a `CONNECT` request (a tunnel, which no route of an application serves) as an unknown
 * route is answered, with a request id, a problem+json body and an audit line, and closes the
 * connection: without a `connect` listener Node drops the connection with no answer at all.
 * Installed by `createSecureServer` as the server's `connect` listener.
 *
 * @internal
 */
export function answerConnect(req: IncomingMessage, socket: Duplex, audit: AuditLogger): void {
  const inFlight = requestInFlight(socket);
  const refusal = new SecurityError(CONNECT_REFUSED.code, {
    reason: CONNECT_REFUSED.reason,
    ...(inFlight ? { auditFields: { answered: 'no: behind a request in flight' } } : {}),
  });
  if (inFlight) {
    // Pipelined behind a request still being answered: a 404 now would be read as its answer.
    // That request is cut with the connection, by the server, and its line says so.
    recordOutsideExpress(refusal, clientRequestId(req), socket, audit);
    noteServerEnding(socket, 'pipelined_refused');
    socket.destroy();
    return;
  }
  writeAndClose(socket, CONNECT_REFUSED, problemAnswer(CONNECT_REFUSED, refusal, clientRequestId(req), socket, audit));
}

const MALFORMED_HEAD: ClientFault = { status: 400, code: 'invalid_argument', reason: 'malformed_request' };

/**
 * What makes a request head Node has parsed one a server must refuse with 400 (RFC 9112):
 * - `version_unsupported`: a version other than HTTP/1.x. Node serves a request line without
 *   one as HTTP/0.9, and `HTTP/2.0` in a request line, headers and all.
 * - `host_repeated`: more than one `Host` line (section 3.2). Node keeps the first, where a
 *   proxy in front may have routed by the last.
 * - `host_missing`: HTTP/1.1 without a `Host`, or with an empty one: the test of Node's
 *   `requireHostHeader`, which `createSecureServer` turns off to answer it itself.
 * - `host_invalid`: a `Host` that is not a host and an optional port (section 3.2: `a b`,
 *   `u@a`, `a/b`, `[::1`, `a:99999`, non-ASCII). Node serves any value, and `req.hostname`
 *   hands it to the application, where a proxy in front may have read it otherwise.
 * - `transfer_coding_unsupported`: a `Transfer-Encoding` other than `chunked` alone. One whose
 *   last coding is not `chunked` must be answered 400 (section 6.1), and Node's parser refuses
 *   it only once the body begins, after the handler has run: a `DELETE` sent so was carried out
 *   and answered 400. A coding before `chunked` (`gzip, chunked`) Node does not undo, so the
 *   handler read the encoded bytes as the body, past the refusal of a `Content-Encoding` no one
 *   decodes (section 6.1 asks for 501 here; 400 keeps one answer for every such head).
 * - `target_malformed`: a request target that is neither a path (`/...`), nor `http://` or
 *   `https://` with a host and a path, nor `*` (section 3.2), or one with a fragment (`#`),
 *   which no request target has: Node serves both, and a rule reads a path a proxy in front may
 *   not have.
 * - `host_mismatch`: an absolute target (`GET http://a.example/x`) whose host is not the
 *   `Host` header's. The server must take the target's (section 3.2.2), where a proxy in front
 *   may have routed by the header.
 *
 * Undefined for a head without fault. See {@link answerMalformedHead}.
 *
 * @internal
 */
export function headFault(
  req: IncomingMessage,
):
  | 'version_unsupported'
  | 'host_repeated'
  | 'host_missing'
  | 'host_invalid'
  | 'transfer_coding_unsupported'
  | 'target_malformed'
  | 'host_mismatch'
  | undefined {
  if (req.httpVersionMajor !== 1) return 'version_unsupported';
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name?.length === 4 && name.toLowerCase() === 'host') hosts += 1;
  }
  if (hosts > 1) return 'host_repeated';
  if (req.httpVersionMinor === 1 && !req.headers.host) return 'host_missing';
  // Empty only on HTTP/1.0, which needs no `Host`.
  const host = req.headers.host;
  if (host !== undefined && host !== '' && !isValidHostField(host)) return 'host_invalid';
  const coding = req.headers['transfer-encoding'];
  if (coding !== undefined && coding.trim().toLowerCase() !== 'chunked') return 'transfer_coding_unsupported';
  const target = req.url ?? '';
  if (target.includes('#')) return 'target_malformed';
  if (target.startsWith('/') || (target === '*' && req.method === 'OPTIONS')) return undefined;
  const absolute = ABSOLUTE_TARGET.exec(target);
  if (absolute === null) return 'target_malformed';
  const scheme = absolute[1] ?? '';
  const named = canonicalHost(scheme, absolute[2] ?? '');
  if (named === undefined) return 'target_malformed';
  // HTTP/1.0 needs no `Host`: the target's is the only one.
  const header = req.headers.host;
  if (header === undefined) return undefined;
  return named === canonicalHost(scheme, header) ? undefined : 'host_mismatch';
}

/**
 * An absolute request target: its scheme, its host (with any port), then a path, a query or
 * nothing. The host is a name of letters, digits, `.`, `-` and `_`, or an IPv6 address in
 * brackets: Node's URL parser, which Express routes by, ends a host at any other character and
 * reads the rest as the path (`http://a%2Db/x` was routed as `%2Db/x`, a path no proxy saw).
 */
const ABSOLUTE_TARGET = /^(https?):\/\/((?:[\w.-]+|\[[\d:a-f.]+\])(?::\d*)?)(?:[/?]|$)/i;

/**
 * Answers a request whose head has a {@link headFault} with 400, a request id, a problem+json
 * body and an audit line naming the fault, and closes the connection. No handler runs.
 *
 * @internal
 */
export function answerMalformedHead(
  req: IncomingMessage,
  res: ServerResponse,
  audit: AuditLogger,
  fault: NonNullable<ReturnType<typeof headFault>>,
): void {
  // Whatever the fault named, such a coding leaves the bytes after the head unframed.
  const coding = req.headers['transfer-encoding'];
  if (coding !== undefined && !/(?:^|,)\s*chunked\s*$/i.test(coding)) unframed.add(req.socket);
  answerRequest(MALFORMED_HEAD, req, res, audit, { headFault: fault });
}

const EXPECTATION_UNSUPPORTED: ClientFault = {
  status: 417,
  code: 'invalid_argument',
  reason: 'expectation_unsupported',
};

/**
 * Answers a request whose `Expect` header is not `100-continue`, in place of Node's bare
 * `417`: the same status, with an `x-request-id`, a problem+json body and an audit line, and
 * the connection closed (the body the client holds back is never read). No handler runs.
 * Installed by `createSecureServer` as the server's `checkExpectation` listener, and asked by its
 * `checkContinue` listener for a value that names `100-continue` among other expectations.
 *
 * @internal
 */
export function answerExpectationFailed(req: IncomingMessage, res: ServerResponse, audit: AuditLogger): void {
  // The header's value is the client's: neither echoed nor logged.
  answerRequest(EXPECTATION_UNSUPPORTED, req, res, audit);
}

/** Refuses a request Node has parsed, before any handler, and closes its connection. */
function answerRequest(
  fault: ClientFault,
  req: IncomingMessage,
  res: ServerResponse,
  audit: AuditLogger,
  auditFields?: Readonly<Record<string, string>>,
): void {
  const refusal = new SecurityError(fault.code, { reason: fault.reason, ...(auditFields ? { auditFields } : {}) });
  const answer = problemAnswer(fault, refusal, clientRequestId(req), req.socket, audit);
  res.writeHead(fault.status, answer.headers);
  res.end(answer.body);
}

/** The request id the client sent when it is well formed, else a new one. */
function clientRequestId(req: IncomingMessage): string {
  const sent = req.headers[REQUEST_ID_HEADER];
  return resolveRequestId(typeof sent === 'string' ? sent : undefined);
}

interface ProblemAnswer {
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** The audit line, then the headers and problem+json body of a refusal made outside Express. */
function problemAnswer(
  fault: ClientFault,
  refusal: SecurityError,
  requestId: string,
  socket: Duplex,
  audit: AuditLogger,
): ProblemAnswer {
  const publicError = recordOutsideExpress(refusal, requestId, socket, audit);
  const body = JSON.stringify(
    problemDetails(publicError, fault.status, STATUS_CODES[fault.status] ?? publicError.title),
  );
  return {
    headers: {
      connection: 'close',
      'content-type': 'application/problem+json',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      [REQUEST_ID_HEADER]: requestId,
      'content-length': String(Buffer.byteLength(body)),
    },
    body,
  };
}

/** The audit line of a refusal made outside Express; returns what the client may see. */
function recordOutsideExpress(
  refusal: SecurityError,
  requestId: string,
  socket: Duplex,
  audit: AuditLogger,
): PublicError {
  return audit.recordFailure(refusal, {
    operation: 'HTTP <unparsed>',
    peer: socketPeer(socket as Duplex & { remoteAddress?: string; remotePort?: number }),
    requestId,
    transport: 'http',
  });
}

/**
 * Whether the client closed its side while sending a request's body. That request exists: its
 * handler sees it end early and its own line records it (cancelled, or the answer it already
 * had), so this is not a second, malformed request. Where a Node version lacks the parser
 * state, the close is answered as a malformed request, as before.
 */
function leftMidBody(code: string, socket: Duplex): boolean {
  return code === 'HPE_INVALID_EOF_STATE' && parsedRequest(socket) != null;
}

/**
 * Whether the parser failed in the body of the request being answered (a bad chunk, chunk
 * extensions past Node's limit), not in a request pipelined behind it. Node's parser holds the
 * request it reads until the head of the next one is complete.
 */
function inOwnBody(socket: Duplex): boolean {
  const incoming = parsedRequest(socket);
  if (incoming == null || incoming.complete === true) return false;
  return (socket as Duplex & { _httpMessage?: { req?: unknown } | null })._httpMessage?.req === incoming;
}

/**
 * The request Node's HTTP parser is reading on this connection (`parser.incoming`), if any: set
 * once a head is complete, kept until the head of the next one is.
 */
function parsedRequest(socket: Duplex): { readonly complete?: boolean } | null | undefined {
  return (socket as Duplex & { parser?: { incoming?: { complete?: boolean } | null } | null }).parser?.incoming;
}

/**
 * Whether a request of this connection is being answered: Node attaches the response of the
 * current request to the socket until it has been sent, whether or not it has started.
 */
function requestInFlight(socket: Duplex): boolean {
  return (socket as Duplex & { _httpMessage?: unknown })._httpMessage != null;
}
