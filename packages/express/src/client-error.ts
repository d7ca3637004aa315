import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { SecurityError, resolveRequestId, type AuditLogger, type TransportReason } from '@fluxguard/core';
import type { PublicError } from '@fluxguard/core/adapter';
import { socketPeer, type ProblemDetails } from './error-handler.js';

interface ClientFault {
  readonly status: number;
  readonly code: PublicError['code'];
  readonly reason: TransportReason;
}

/** Node's own answers to a request it could not parse or wait for (its `socketOnError`). */
const FAULTS: Readonly<Record<string, ClientFault>> = Object.freeze({
  HPE_HEADER_OVERFLOW: { status: 431, code: 'payload_too_large', reason: 'request_head_too_large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, code: 'payload_too_large', reason: 'request_head_too_large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'deadline_exceeded', reason: 'request_timeout' },
});
const MALFORMED: ClientFault = { status: 400, code: 'invalid_argument', reason: 'malformed_request' };

/**
 * Answers what Node's HTTP parser refuses before any request object exists (a malformed
 * request line or header, a duplicate `Content-Length`, headers over `maxHeaderSize`, a
 * request that timed out), in place of Node's bare `400`/`408`/`431`: the same status, with
 * an `x-request-id`, a problem+json body and an audit line that carries that id, like every
 * other refusal. The connection is closed after it, as Node does. Installed by
 * `createSecureServer` as the server's `clientError` listener.
 *
 * @internal
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, audit: AuditLogger): void {
  const code = err.code ?? '';
  // Not the parser's (a reset, a TLS handshake that never completed), or a connection already
  // answering a request: nothing can be written cleanly.
  const fault = FAULTS[code] ?? (code.startsWith('HPE_') ? MALFORMED : undefined);
  if (fault === undefined || !socket.writable || responseStarted(socket)) {
    socket.destroy();
    return;
  }
  const requestId = resolveRequestId(undefined);
  // Node's error is not the cause: it carries the raw bytes of the request (`rawPacket`), an
  // `Authorization` header included. Its code says what the parser refused.
  const refusal = new SecurityError(fault.code, {
    reason: fault.reason,
    auditFields: { parserCode: code.slice(0, 64) },
  });
  const publicError = audit.recordFailure(refusal, {
    operation: 'HTTP <unparsed>',
    peer: socketPeer(socket as Duplex & { remoteAddress?: string; remotePort?: number }),
    requestId,
    transport: 'http',
  });
  const body: ProblemDetails = {
    type: 'about:blank',
    title: STATUS_CODES[fault.status] ?? publicError.title,
    status: fault.status,
    detail: publicError.message,
    code: publicError.code,
    requestId,
  };
  const payload = JSON.stringify(body);
  // Written, then destroyed at once, as Node does with its own answer: a client that does not
  // read it must not keep the connection.
  socket.write(
    `HTTP/1.1 ${String(fault.status)} ${STATUS_CODES[fault.status] ?? ''}\r\n` +
      'connection: close\r\n' +
      'content-type: application/problem+json\r\n' +
      'cache-control: no-store\r\n' +
      'x-content-type-options: nosniff\r\n' +
      `x-request-id: ${requestId}\r\n` +
      `content-length: ${String(Buffer.byteLength(payload))}\r\n\r\n` +
      payload,
  );
  socket.destroy();
}

/** Node's response object of the connection's current request, when one has started. */
function responseStarted(socket: Duplex): boolean {
  const message = (socket as Duplex & { _httpMessage?: { headersSent?: unknown } | null })._httpMessage;
  return message?.headersSent === true;
}
