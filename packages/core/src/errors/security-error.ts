import { FluxguardError } from './fluxguard-error.js';
import { ERROR_CODES, type SecurityErrorCode } from './codes.js';

/**
 * Details that may safely reach a client. Nothing here ever echoes a value the client sent:
 * a field is named, never quoted.
 */
export interface SecurityErrorDetails {
  /** The offending request field, header or metadata key (e.g. `path`, `header.sha256`). */
  readonly field?: string;
  /** For `rate_limited`: seconds until a retry may succeed. */
  readonly retryAfterSeconds?: number;
}

/** Options of {@link SecurityError}. */
export interface SecurityErrorOptions {
  /** A public message; defaults to the neutral text of the code. Never put input or secrets here. */
  readonly message?: string | undefined;
  /** Safe details for the client. */
  readonly details?: SecurityErrorDetails | undefined;
  /** A short machine reason for the audit log only (e.g. `token_expired`). */
  readonly reason?: string | undefined;
  /** The internal cause, written to the server log only. */
  readonly cause?: unknown;
  /** The authenticated subject the refusal concerns, for the audit log (never sent to the client). */
  readonly subject?: string | undefined;
}

const SAFE_FIELD = /^[A-Za-z0-9_.[\]-]{1,100}$/;

/**
 * A refusal or failure with a public meaning. Every control throws one; adapters map its
 * `code` to a gRPC or HTTP status at the edge (see {@link ERROR_CODES}).
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
  readonly reason: string | undefined;
  /** The authenticated subject the refusal concerns, for the audit log; never sent to the client. */
  readonly subject: string | undefined;

  constructor(code: SecurityErrorCode, options: SecurityErrorOptions = {}) {
    super(code, options.message ?? ERROR_CODES[code].message, { cause: options.cause });
    this.details = cleanDetails(options.details);
    this.reason = options.reason;
    this.subject = options.subject;
  }
}

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
