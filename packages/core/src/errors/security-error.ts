import { FluxguardError, brandOf, brandedHasInstance, setBrand } from './fluxguard-error.js';
import { ERROR_CODES, isSecurityErrorCode, type SecurityErrorCode } from './codes.js';
import type { DenylistReason } from '../denylist/denylist.js';
import type { GuardReason } from '../guard/authorize.js';
import type { JwtReason } from '../jwt/verifier.js';
import type { CertificateReason } from '../mtls/certificate-check.js';
import type { PipelineReason } from '../pipeline/call-context.js';
import type { RbacReason } from '../rbac/rbac.js';
import type { PathReason } from '../sanitize/safe-path.js';
import type { TimeoutReason } from '../timeouts/timeouts.js';
import type { ConcurrencyReason } from '../ratelimit/concurrency.js';
import type { RateLimitReason } from '../ratelimit/rate-limit.js';
import type { LimitsReason } from '../limits/input-limits.js';
import type { HeaderLimitsReason } from '../limits/header-limits.js';
import type { ValidationReason } from '../validation/standard-schema.js';
import type { UploadReason } from '../uploads/upload-check.js';
import type { UrlGuardReason } from '../outbound/url-guard.js';

/**
 * Reasons the transport adapters give at the edge, for failures no control raised. They live
 * in core, not in each adapter, because {@link SecurityErrorReason} must name them and core
 * cannot depend on an adapter.
 *
 * - gRPC: `handler_status` (a handler answered with a status of its own), `unimplemented`
 *   (no such method), `message_unparsable` (a request message that could not be decoded),
 *   `client_deadline` (the deadline the client chose passed before the answer: its budget, so
 *   a refusal line, not a server failure), `message_count_invalid` (a unary or
 *   server-streaming request with no message or a second one, which grpc-js calls
 *   `UNIMPLEMENTED`), and what grpc-js refuses below every interceptor:
 *   `message_decompression_failed`, `message_encoding_unsupported` (a `grpc-encoding` grpc-js
 *   cannot decompress) and `deadline_header_invalid` (a `grpc-timeout` it cannot parse), and
 *   `content_type_unsupported` (a request that is not gRPC, answered HTTP 415), and
 *   `method_not_allowed` (a `:method` other than `POST`, answered HTTP 405). A
 *   request message over its limit there (the operation's, else
 *   `grpc.max_receive_message_length`; before or after decompression) is the input limits'
 *   `message_too_large`.
 * - HTTP: `route_not_found`, `path_not_plain` (a dot segment, an encoded `/` or `\`, or an
 *   encoded letter, digit, `-`, `.`, `_` or `~` in the path of a request to controls that match
 *   paths), `malformed_uri`, `body_too_large`, and the body-parser failures
 *   `body_parse_failed`, `body_verify_failed`, `body_aborted`, `body_size_mismatch`,
 *   `body_encoding_unsupported`, `body_charset_unsupported`, `body_too_many_parameters`,
 *   `body_decompression_failed` (a gzip, deflate or br body that does not decompress), and
 *   what Node's parser refuses before any request exists: `malformed_request`,
 *   `request_head_too_large`, `request_timeout`, and in a chunked body
 *   `chunk_extensions_too_large` (the extensions of a chunk past Node's 16 KiB), and
 *   `too_many_pipelined` (requests pipelined on one connection past what Node holds while their
 *   answers wait: it stops reading the connection and refuses what comes meanwhile); and
 *   `expectation_unsupported` (an `Expect` header other than `100-continue`, answered before the
 *   application sees the request).
 * - Both: `answer_unread` (a deadline that ended a call while its answer waited for the client
 *   to read it; see `blameUnreadAnswer`), `request_unfinished` (a deadline that came while
 *   the client was still sending its request; see `blameUnfinishedRequest`), `request_late` (a
 *   deadline less than a second after the client finished sending, the handler having kept
 *   up with it) and
 *   `request_unread` (a deadline or idle limit that came while what the client sent had waited
 *   a second or more for a handler that stopped reading it: a server failure).
 *
 * @example
 * ```ts
 * import type { TransportReason } from '@fluxguard/core';
 * const clientFaults: TransportReason[] = ['message_unparsable', 'body_parse_failed', 'malformed_uri'];
 * ```
 */
export type TransportReason =
  // gRPC adapter
  | 'handler_status'
  | 'unimplemented'
  | 'message_unparsable'
  | 'message_decompression_failed'
  | 'message_encoding_unsupported'
  | 'deadline_header_invalid'
  | 'client_deadline'
  | 'message_count_invalid'
  | 'content_type_unsupported'
  | 'method_not_allowed'
  // Express adapter
  | 'route_not_found'
  | 'path_not_plain'
  | 'malformed_uri'
  | 'body_too_large'
  | 'body_parse_failed'
  | 'body_verify_failed'
  | 'body_aborted'
  | 'body_size_mismatch'
  | 'body_encoding_unsupported'
  | 'body_charset_unsupported'
  | 'body_too_many_parameters'
  | 'body_decompression_failed'
  | 'malformed_request'
  | 'request_head_too_large'
  | 'chunk_extensions_too_large'
  | 'too_many_pipelined'
  | 'request_timeout'
  | 'expectation_unsupported'
  // both adapters
  | 'answer_unread'
  | 'request_unfinished'
  | 'request_late'
  | 'request_unread';

/**
 * An application's own reason: `app.` and any text. The prefix keeps fluxguard's reasons
 * checked by the compiler (a typo in one is an error, not a new reason) while leaving an
 * application free to name its refusals, and tells an audit reader whose reason a line carries.
 *
 * @example
 * ```ts
 * import { SecurityError, type AppReason } from '@fluxguard/core';
 * const reason: AppReason = 'app.digest_mismatch';
 * throw new SecurityError('invalid_argument', { details: { field: 'sha256' }, reason });
 * ```
 */
export type AppReason = `app.${string}`;

/**
 * Every reason a {@link SecurityError} may carry: one union per control that refuses, the
 * adapters' edge reasons, and {@link AppReason} for the application's own.
 *
 * @example
 * ```ts
 * import type { SecurityErrorReason } from '@fluxguard/core';
 * const pageOn: SecurityErrorReason[] = ['jwks_unavailable', 'denylist_unavailable', 'app.store_offline'];
 * ```
 */
export type SecurityErrorReason =
  | JwtReason
  | DenylistReason
  | GuardReason
  | RbacReason
  | CertificateReason
  | PipelineReason
  | TimeoutReason
  | ConcurrencyReason
  | RateLimitReason
  | LimitsReason
  | HeaderLimitsReason
  | ValidationReason
  | UploadReason
  | UrlGuardReason
  | PathReason
  | TransportReason
  | AppReason;

/**
 * Details that may safely reach a client. Nothing here ever echoes a value the client sent:
 * a field is named, never quoted.
 *
 * @example
 * ```ts
 * import type { SecurityErrorDetails } from '@fluxguard/core';
 * const details: SecurityErrorDetails = { field: 'path' };
 * ```
 */
export interface SecurityErrorDetails {
  /** The offending request field, header or metadata key (e.g. `path`, `header.sha256`). */
  readonly field?: string;
  /** For `rate_limited`: seconds until a retry may succeed. */
  readonly retryAfterSeconds?: number;
}

/**
 * Options of {@link SecurityError}.
 *
 * @example
 * ```ts
 * import { SecurityError, type SecurityErrorOptions } from '@fluxguard/core';
 * const options: SecurityErrorOptions = { details: { field: 'path' }, reason: 'path_traversal' };
 * throw new SecurityError('invalid_argument', options);
 * ```
 */
export interface SecurityErrorOptions {
  /** A public message; defaults to the neutral text of the code. Never put input or secrets here. */
  readonly message?: string | undefined;
  /** Safe details for the client. */
  readonly details?: SecurityErrorDetails | undefined;
  /** A short machine reason for the audit log only (e.g. `token_expired`; an application's own is `app.…`). */
  readonly reason?: SecurityErrorReason | undefined;
  /** The internal cause, written to the server log only. */
  readonly cause?: unknown;
  /** The authenticated subject the refusal concerns, for the audit log (never sent to the client). */
  readonly subject?: string | undefined;
  /**
   * A few more facts for the audit line only (e.g. a rate limit's rule and key kind): short
   * names and values, never a token, a secret or raw input.
   */
  readonly auditFields?: Readonly<Record<string, string | number>> | undefined;
  /**
   * The client brought this about at will (a budget of the server's it filled, a time it used
   * up): the audit log writes it as a refusal (`request.denied`, folded under a flood) even with
   * `unavailable` or `deadline_exceeded`, which are otherwise server failures (`request.failed`,
   * level error). Core's own such reasons (`concurrency_limit`, `inbound_idle`, ...) count so
   * without it. Default false.
   */
  readonly clientCaused?: boolean | undefined;
}

const SAFE_FIELD = /^[A-Za-z0-9_.[\]-]{1,100}$/;

/**
 * True when `value` is a {@link SecurityError} of any copy of `@fluxguard/core` in the process:
 * it carries the fluxguard brand of a security error and a `code` of {@link ERROR_CODES}. The
 * adapters map errors with this, not with `instanceof` alone, so that a refusal thrown by the
 * application's copy of core keeps its status when the adapter resolved another copy; a code
 * this copy does not know is not trusted and becomes `internal`.
 *
 * @example
 * ```ts
 * import { isSecurityError } from '@fluxguard/core';
 * function statusOf(err: unknown): string { return isSecurityError(err) ? err.code : 'internal'; }
 * ```
 */
export function isSecurityError(value: unknown): value is SecurityError {
  return brandOf(value) === 'security' && isSecurityErrorCode((value as { code?: unknown }).code);
}

/**
 * A refusal or failure with a public meaning. Every control throws one; adapters map its
 * `code` to a gRPC or HTTP status at the edge (see {@link ERROR_CODES}). `instanceof` also
 * recognises a refusal of another copy of `@fluxguard/core` (see {@link isSecurityError}).
 *
 * @example
 * ```ts
 * import { SecurityError } from '@fluxguard/core';
 * throw new SecurityError('invalid_argument', { details: { field: 'path' }, reason: 'path_traversal' });
 * ```
 */
export class SecurityError extends FluxguardError {
  declare readonly code: SecurityErrorCode;
  /** Safe details for the client; a field name that is not a plain identifier is dropped. */
  readonly details: SecurityErrorDetails | undefined;
  /** A short machine reason for the audit log; never sent to the client. */
  readonly reason: SecurityErrorReason | undefined;
  /** The authenticated subject the refusal concerns, for the audit log; never sent to the client. */
  readonly subject: string | undefined;
  /** More facts for the audit line (`detail`); never sent to the client. */
  readonly auditFields: Readonly<Record<string, string | number>> | undefined;
  /** The client brought this about at will: logged as a refusal whatever its code (see the option). */
  readonly clientCaused: boolean;

  constructor(code: SecurityErrorCode, options: SecurityErrorOptions = {}) {
    // A refusal is expected, often by the thousand under a flood: capturing a stack for each
    // is most of its cost and says nothing (an unexpected failure keeps its own in `cause`).
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(code, options.message ?? ERROR_CODES[code].message, { cause: options.cause });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    this.details = cleanDetails(options.details);
    this.reason = options.reason;
    this.subject = options.subject;
    this.auditFields = options.auditFields;
    this.clientCaused = options.clientCaused === true;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return brandedHasInstance(SecurityError, this, value, isSecurityError);
  }
}
setBrand(SecurityError.prototype, 'security');

function cleanDetails(details: SecurityErrorDetails | undefined): SecurityErrorDetails | undefined {
  if (details === undefined) return undefined;
  const out: { field?: string; retryAfterSeconds?: number } = {};
  if (details.field !== undefined && SAFE_FIELD.test(details.field)) out.field = details.field;
  if (
    details.retryAfterSeconds !== undefined &&
    Number.isFinite(details.retryAfterSeconds) &&
    details.retryAfterSeconds >= 0
  ) {
    out.retryAfterSeconds = Math.ceil(details.retryAfterSeconds);
  }
  return Object.keys(out).length > 0 ? Object.freeze(out) : undefined;
}
