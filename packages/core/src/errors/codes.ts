/**
 * The public error codes: all a client is ever told about a failure. Each has one gRPC status,
 * one HTTP status and one neutral text, in {@link ERROR_CODES} (one exception: HTTP answers a
 * `deadline_exceeded` that came while the client was still sending its request `408`, see
 * `toPublicError`). gRPC statuses are the numeric
 * codes of the gRPC specification, so that core needs no transport import.
 *
 * @example
 * ```ts
 * import type { SecurityErrorCode } from '@fluxguard/core';
 * const code: SecurityErrorCode = 'permission_denied';
 * ```
 */
export type SecurityErrorCode =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'conflict'
  | 'payload_too_large'
  | 'rate_limited'
  | 'unimplemented'
  | 'deadline_exceeded'
  | 'unavailable'
  | 'internal';

/**
 * Numeric gRPC status codes (grpc/doc/statuscodes.md) used by the error table.
 *
 * @example
 * ```ts
 * import { GrpcStatusCode } from '@fluxguard/core/adapter';
 * GrpcStatusCode.PERMISSION_DENIED; // 7
 * ```
 */
export const GrpcStatusCode = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const);

/**
 * One row of the error table.
 *
 * @example
 * ```ts
 * import { ERROR_CODES, type ErrorCodeEntry } from '@fluxguard/core';
 * const notFound: ErrorCodeEntry = ERROR_CODES.not_found;
 * notFound.httpStatus; // 404
 * ```
 */
export interface ErrorCodeEntry {
  /** The numeric gRPC status sent for the code. */
  readonly grpcStatus: number;
  /** The HTTP status sent for the code. */
  readonly httpStatus: number;
  /** The neutral public text sent when an error names no message of its own. */
  readonly message: string;
  /** The RFC 9457 `title` for HTTP problem responses. */
  readonly title: string;
}

/**
 * The error table: code to gRPC status, HTTP status and neutral text.
 *
 * @example
 * ```ts
 * import { ERROR_CODES } from '@fluxguard/core';
 * ERROR_CODES.rate_limited.httpStatus; // 429
 * ```
 */
export const ERROR_CODES: Readonly<Record<SecurityErrorCode, ErrorCodeEntry>> = Object.freeze({
  invalid_argument: entry(GrpcStatusCode.INVALID_ARGUMENT, 400, 'Bad Request', 'The request is invalid.'),
  unauthenticated: entry(GrpcStatusCode.UNAUTHENTICATED, 401, 'Unauthorized', 'Authentication is required.'),
  permission_denied: entry(GrpcStatusCode.PERMISSION_DENIED, 403, 'Forbidden', 'Permission denied.'),
  not_found: entry(GrpcStatusCode.NOT_FOUND, 404, 'Not Found', 'Not found.'),
  conflict: entry(GrpcStatusCode.FAILED_PRECONDITION, 409, 'Conflict', 'The request conflicts with what is stored.'),
  payload_too_large: entry(GrpcStatusCode.RESOURCE_EXHAUSTED, 413, 'Content Too Large', 'The request is too large.'),
  rate_limited: entry(GrpcStatusCode.RESOURCE_EXHAUSTED, 429, 'Too Many Requests', 'Too many requests.'),
  unimplemented: entry(GrpcStatusCode.UNIMPLEMENTED, 501, 'Not Implemented', 'The method is not implemented.'),
  deadline_exceeded: entry(GrpcStatusCode.DEADLINE_EXCEEDED, 504, 'Gateway Timeout', 'The request took too long.'),
  unavailable: entry(GrpcStatusCode.UNAVAILABLE, 503, 'Service Unavailable', 'The service is unavailable.'),
  internal: entry(GrpcStatusCode.INTERNAL, 500, 'Internal Server Error', 'An internal error occurred.'),
});

function entry(grpcStatus: number, httpStatus: number, title: string, message: string): ErrorCodeEntry {
  return Object.freeze({ grpcStatus, httpStatus, title, message });
}

/**
 * True when `value` is one of the public error codes.
 *
 * @example
 * ```ts
 * isSecurityErrorCode('not_found'); // true
 * ```
 */
export function isSecurityErrorCode(value: unknown): value is SecurityErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/**
 * The public code for a gRPC status a handler chose itself. Statuses with a row in the table
 * keep their meaning; every other status becomes `internal`, because its text was never
 * reviewed for what it may leak.
 *
 * @example
 * ```ts
 * codeFromGrpcStatus(5); // 'not_found'
 * codeFromGrpcStatus(2); // 'internal' (UNKNOWN)
 * ```
 */
export function codeFromGrpcStatus(status: number): SecurityErrorCode {
  switch (status) {
    case GrpcStatusCode.INVALID_ARGUMENT:
    case GrpcStatusCode.OUT_OF_RANGE:
      return 'invalid_argument';
    case GrpcStatusCode.UNAUTHENTICATED:
      return 'unauthenticated';
    case GrpcStatusCode.PERMISSION_DENIED:
      return 'permission_denied';
    case GrpcStatusCode.NOT_FOUND:
      return 'not_found';
    case GrpcStatusCode.FAILED_PRECONDITION:
      return 'conflict';
    case GrpcStatusCode.RESOURCE_EXHAUSTED:
      return 'rate_limited';
    case GrpcStatusCode.UNIMPLEMENTED:
      return 'unimplemented';
    case GrpcStatusCode.DEADLINE_EXCEEDED:
      return 'deadline_exceeded';
    case GrpcStatusCode.UNAVAILABLE:
      return 'unavailable';
    default:
      return 'internal';
  }
}
