import { ERROR_CODES, type SecurityErrorCode } from './codes.js';
import { isSecurityError, type SecurityErrorDetails } from './security-error.js';

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
  /** The HTTP status of `code`. */
  readonly httpStatus: number;
  /** The RFC 9457 title for HTTP. */
  readonly title: string;
  /** The id returned to the client in `x-request-id`, to find the call's log lines. */
  readonly requestId: string;
}

/**
 * Turns anything thrown into the error a client may see. A {@link SecurityError} keeps its
 * code, public message and safe details; anything else (an `Error` from a library, an errno
 * from the file system, a string) becomes `internal` with the generic text, whatever it says.
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
  const row = ERROR_CODES[code];
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
