export { FluxguardError, ConfigurationError } from './errors/fluxguard-error.js';
export {
  ERROR_CODES,
  GrpcStatusCode,
  codeFromGrpcStatus,
  isSecurityErrorCode,
  type ErrorCodeEntry,
  type SecurityErrorCode,
} from './errors/codes.js';
export {
  SecurityError,
  type SecurityErrorDetails,
  type SecurityErrorOptions,
} from './errors/security-error.js';
export { toPublicError, type PublicError } from './errors/public-error.js';
export { resolveOptions } from './options/resolve-options.js';
export { REQUEST_ID_HEADER, resolveRequestId } from './request-id/request-id.js';
export {
  createAuditLogger,
  type AuditEvent,
  type AuditLogger,
  type AuditLoggerOptions,
  type FailureContext,
} from './audit/audit-logger.js';
export { REDACTED, REDACTED_PATHS, scrubSecrets } from './audit/redaction.js';
export type {
  AuthenticationMethod,
  CallInfo,
  CertificateIdentity,
  HeaderReader,
  Principal,
  Transport,
} from './call/call-info.js';
