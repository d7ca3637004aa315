// @fluxguard/core: what an application needs. What only an adapter for a transport needs is
// under `@fluxguard/core/adapter`; the development PKI is `@fluxguard/core/dev-pki` (it loads
// reflect-metadata).

// Errors, request ids and the audit log
export {
  FluxguardError,
  ConfigurationError,
  FLUXGUARD_ERROR_BRAND,
  isFluxguardError,
  isConfigurationError,
} from './errors/fluxguard-error.js';
export { ERROR_CODES, isSecurityErrorCode, type ErrorCodeEntry, type SecurityErrorCode } from './errors/codes.js';
export {
  SecurityError,
  isSecurityError,
  type AppReason,
  type SecurityErrorDetails,
  type SecurityErrorOptions,
  type SecurityErrorReason,
  type TransportReason,
} from './errors/security-error.js';
export { REQUEST_ID_HEADER, resolveRequestId } from './request-id/request-id.js';
export {
  createAuditLogger,
  type AuditEvent,
  type AuditLogger,
  type AuditLoggerOptions,
  type AuditReason,
} from './audit/audit-logger.js';
export type { ServerEndReason } from './transport/server-ending.js';

// The control contract: what a control sees of a call, what it is, and the per-call context
export type {
  AuthenticationMethod,
  CallInfo,
  CertificateIdentity,
  HeaderReader,
  Principal,
  Transport,
} from './call/call-info.js';
export { CONTROL_STAGES, type Control, type ControlStage, type StartResult } from './pipeline/control.js';
export {
  createContextKey,
  type CallContext,
  type ContextKey,
  type PipelineReason,
  type RequestContext,
} from './pipeline/call-context.js';

// Authentication and authorization of one call, shared by both adapters
export { createGuard, type ComposedGuard, type Guard, type GuardOptions } from './guard/guard.js';
export { createAuthenticator, type Authenticator, type AuthenticatorOptions } from './guard/authenticate.js';
export { createAuthorizer, type Authorizer, type AuthorizerOptions, type GuardReason } from './guard/authorize.js';
export { createGuardFromPolicy, type GuardFromPolicyOptions } from './guard/from-policy.js';
export type { GuardStepOptions, JwtAuthOptions, RbacStepOptions } from './guard/step-options.js';

// JWT, key sources, revocation
export {
  DEFAULT_JWT_ALGORITHMS,
  type AsymmetricAlgorithm,
  type HmacAlgorithm,
  type JwsAlgorithm,
} from './jwt/algorithms.js';
export { extractBearerToken } from './jwt/bearer.js';
export {
  createLocalJwksSource,
  createPublicKeySource,
  createRemoteJwksSource,
  type JwksSource,
  type PublicKeySource,
  type RemoteJwksOptions,
  type RemoteJwksSource,
  type TokenHeader,
  type VerificationKey,
} from './jwt/key-source.js';
export type { ClaimPath } from './jwt/principal.js';
export {
  createJwtVerifier,
  type JwtReason,
  type JwtVerifier,
  type JwtVerifierOptions,
  type VerifiedToken,
} from './jwt/verifier.js';
export { MAX_JTI_LENGTH, type Denylist, type DenylistReason } from './denylist/denylist.js';
export { createMemoryDenylist, type MemoryDenylistOptions } from './denylist/memory.js';
export { createRedisDenylist, type RedisDenylistClient, type RedisDenylistOptions } from './denylist/redis.js';

// RBAC
export {
  compileRbac,
  type CompiledRbac,
  type RbacDecision,
  type RbacMode,
  type RbacOptions,
  type RbacReason,
  type RbacRequirement,
  type RbacRule,
  type RbacRules,
  type ServedReport,
} from './rbac/rbac.js';

// mTLS: identity rules, the certificate check, TLS settings and reload options
export type { IdentityRule } from './mtls/identity-rules.js';
export {
  createCertificateCheck,
  type CertificateCheck,
  type CertificateCheckOptions,
  type CertificateReason,
} from './mtls/certificate-check.js';
export { isSpiffeId } from './mtls/spiffe.js';
export type { TlsMaterial } from './mtls/material.js';
export type { ClientCertificateMode, TlsMinVersion, TlsSettingsOptions } from './mtls/tls-settings.js';
export type { ReloadOptions } from './mtls/reloading-settings.js';
export type { ClientTlsOptions } from './mtls/client-material.js';

// The policy file: one section per control
export type { JwtPolicy } from './jwt/policy.js';
export type { RbacPolicy } from './rbac/policy.js';
export type { MtlsPolicy } from './mtls/policy.js';
export { loadSecurityPolicy, parseSecurityPolicy, readPolicyDocument, type SecurityPolicy } from './policy/policy.js';

// Deadlines and idle limits
export {
  createTimeouts,
  TIMEOUT_DEFAULTS,
  type TimeoutLimits,
  type TimeoutReason,
  type TimeoutRule,
  type Timeouts,
  type TimeoutsOptions,
} from './timeouts/timeouts.js';
export type { TimeoutsPolicy } from './timeouts/policy.js';
export {
  CONNECTION_DEFAULTS,
  resolveConnectionLimits,
  type ConnectionLimits,
  type ResolvedConnectionLimits,
} from './transport/connections.js';
export { descriptorBudget, type DescriptorBudget } from './transport/descriptor-budget.js';

// Concurrency limits
export {
  createConcurrencyLimit,
  type ConcurrencyKey,
  type ConcurrencyLimit,
  type ConcurrencyLimitOptions,
  type OperationShare,
  type ConcurrencyReason,
} from './ratelimit/concurrency.js';

// Input size limits
export {
  createInputLimits,
  SIZE_LIMIT_DEFAULTS,
  type InputLimitsOptions,
  type LimitsReason,
  type SizeLimitRule,
  type SizeLimits,
} from './limits/input-limits.js';
export type { LimitsPolicy } from './limits/policy.js';
export { createHeaderLimits, type HeaderLimitsOptions, type HeaderLimitsReason } from './limits/header-limits.js';

// Validation
export {
  type StandardIssue,
  type StandardResult,
  type StandardSchemaV1,
  type ValidationReason,
} from './validation/standard-schema.js';
export { compileJsonShape, type JsonShapeLimits } from './validation/json-shape.js';
export {
  createMessageValidation,
  type MessageSchemaRule,
  type MessageValidationOptions,
} from './validation/message-validation.js';

// Outbound URLs
export {
  createUrlGuard,
  type GuardedResponse,
  type GuardedStream,
  type LookupAll,
  type UrlGuard,
  type UrlGuardOptions,
  type UrlGuardReason,
} from './outbound/url-guard.js';

// Uploads
export {
  contentKind,
  createUploadCheck,
  type ContentKind,
  type UploadCheck,
  type UploadCheckOptions,
  type UploadInProgress,
  type UploadReason,
} from './uploads/upload-check.js';

// Rate limits and brute-force protection
export {
  createRateLimit,
  type RateLimit,
  type RateLimitKey,
  type RateLimitKeyFunction,
  type RateLimitOptions,
  type RateLimitReason,
  type RateLimitRule,
} from './ratelimit/rate-limit.js';
export { createBruteForceProtection, type BruteForceOptions, type FailureLimit } from './ratelimit/brute-force.js';
export {
  createMemoryRateLimitStore,
  RateLimitStoreError,
  type LimiterResult,
  type LimiterSpec,
  type MemoryRateLimitStoreOptions,
  type RateLimitStore,
  type StoreLimiter,
} from './ratelimit/store.js';
export {
  createRedisRateLimitStore,
  type RedisRateLimitClient,
  type RedisRateLimitStoreOptions,
} from './ratelimit/redis-store.js';
export { compileClientAddress, type ClientAddress, type ClientAddressOptions } from './ratelimit/client-address.js';
export type { RateLimitsPolicy } from './ratelimit/policy.js';

// Input and path sanitization
export {
  ASCII_SEGMENT,
  NAME_SEGMENT,
  createPathResolver,
  type PathReason,
  type PathResolver,
  type PathResolverOptions,
  type SafePath,
} from './sanitize/safe-path.js';
export { PINNED_DIRECTORIES_SUPPORTED, type PinnedDirectory } from './sanitize/pinned-directory.js';
