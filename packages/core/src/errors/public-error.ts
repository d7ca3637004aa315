import { ERROR_CODES, type ErrorCodeEntry, type SecurityErrorCode } from './codes.js';
import { isSecurityError, type SecurityErrorDetails, type SecurityErrorReason } from './security-error.js';

/**
 * A deadline that passed while the client was still sending its request (stalled, or too slow
 * for its deadline), or just after it finished, is the client's doing: HTTP answers it `408 Request Timeout`, not the
 * table's `504`, which monitoring counts as the server's fault. The code stays
 * `deadline_exceeded` (and gRPC's status `DEADLINE_EXCEEDED`), so a client reads it the same.
 */
const CLIENT_TOO_SLOW: ReadonlySet<SecurityErrorReason | undefined> = new Set([
  'inbound_idle',
  'request_unfinished',
  'request_late',
]);
const REQUEST_TIMEOUT: ErrorCodeEntry = Object.freeze({
  ...ERROR_CODES.deadline_exceeded,
  httpStatus: 408,
  title: 'Request Timeout',
});

/**
 * What a client may see of an error; everything else stays in the server log.
 *
 * @example
 * ```ts
 * import { toPublicError, type PublicError } from '@fluxguard/core/adapter';
 * const answer: PublicError = toPublicError(new SecurityError('not_found'), requestId);
 * res.status(answer.httpStatus); // 404
 * ```
 */
export interface PublicError {
  /** The public error code; anything that is not a `SecurityError` is `internal`. */
  readonly code: SecurityErrorCode;
  /** The error's public message, else the neutral text of its code; never an internal cause. */
  readonly message: string;
  /** Safe details (a field name, a retry delay), never a value the client sent. */
  readonly details: SecurityErrorDetails | undefined;
  /** The numeric gRPC status of `code`. */
  readonly grpcStatus: number;
  /**
   * The HTTP status of `code`; `408` for a `deadline_exceeded` that came while the client was
   * still sending its request, or had only just finished (reasons `inbound_idle`,
   * `request_unfinished`, `request_late`).
   */
  readonly httpStatus: number;
  /** The RFC 9457 title for HTTP, the standard text of `httpStatus`. */
  readonly title: string;
  /** The id returned to the client in `x-request-id`, to find the call's log lines. */
  readonly requestId: string;
}

/**
 * Turns anything thrown into the error a client may see. A {@link SecurityError} keeps its
 * code, public message and safe details; anything else (an `Error` from a library, an errno
 * from the file system, a string) becomes `internal` with the generic text, whatever it says.
 * The statuses are the error table's, but for a `deadline_exceeded` with reason `inbound_idle`
 * `request_unfinished` or `request_late` (the client was still sending its request, or had
 * only just finished): HTTP `408`, not `504`.
 *
 * @example
 * ```ts
 * import { toPublicError } from '@fluxguard/core/adapter';
 * const pub = toPublicError(new Error('ENOENT: /srv/data/x'), 'req-1');
 * pub.message; // 'An internal error occurred.'
 * ```
 */
export function toPublicError(err: unknown, requestId: string): PublicError {
  const securityError = isSecurityError(err) ? err : undefined;
  const code: SecurityErrorCode = securityError?.code ?? 'internal';
  const row =
    code === 'deadline_exceeded' && CLIENT_TOO_SLOW.has(securityError?.reason) ? REQUEST_TIMEOUT : ERROR_CODES[code];
  return Object.freeze({
    code,
    message: securityError?.message ?? row.message,
    details: securityError?.details,
    grpcStatus: row.grpcStatus,
    httpStatus: row.httpStatus,
    title: row.title,
    requestId,
  });
}
