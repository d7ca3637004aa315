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

// Input and path sanitization
export {
  createPathResolver,
  type PathResolver,
  type PathResolverOptions,
  type SafePath,
} from './sanitize/safe-path.js';

// --- mTLS (issue 4): identity rules, peer identity, TLS settings, reload ---
export {
  certificateSubject,
  compileCertificateRoles,
  compileIdentityRules,
  mergePrincipals,
  normalizeFingerprint256,
  principalFromCertificate,
  rolesFromCertificate,
  type CertificateRoleMapper,
  type IdentityMatcher,
  type IdentityRule,
} from './mtls/identity-rules.js';
export { createCertificateCheck, type CertificateCheck, type CertificateCheckOptions } from './mtls/certificate-check.js';
export { isSpiffeId } from './mtls/spiffe.js';
export {
  identityFromCertificate,
  identityFromTlsSocket,
  isIdentityCurrent,
  type CertificateInput,
  type PeerTlsSocket,
} from './mtls/peer-identity.js';
export type { TlsMaterial } from './mtls/material.js';
export {
  createTlsSettings,
  TLS_CIPHERS,
  TLS_ECDH_CURVES,
  type ClientCertificateMode,
  type GrpcTlsMaterial,
  type TlsMinVersion,
  type TlsServerOptions,
  type TlsSettings,
  type TlsSettingsOptions,
} from './mtls/tls-settings.js';
export { watchTlsMaterial, type TlsMaterialWatcher, type WatchTlsMaterialOptions } from './mtls/reload.js';
export {
  createReloadingTlsSettings,
  type ReloadingTlsSettings,
  type ReloadingTlsSettingsOptions,
  type ReloadOptions,
} from './mtls/reloading-settings.js';
export {
  CLIENT_TLS_OPTION_NAMES,
  loadClientTlsMaterial,
  type ClientTlsMaterial,
  type ClientTlsOptions,
} from './mtls/client-material.js';
// The development PKI is the subpath `@fluxguard/core/dev-pki` (it loads reflect-metadata).

// --- JWT, revocation, RBAC, policy (issue 3) ---
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
export { claimsToPrincipal, type ClaimPath, type ClaimsToPrincipalOptions } from './jwt/principal.js';
export { createJwtVerifier, type JwtVerifier, type JwtVerifierOptions, type VerifiedToken } from './jwt/verifier.js';
export { MAX_JTI_LENGTH, type Denylist } from './denylist/denylist.js';
export { createMemoryDenylist, type MemoryDenylistOptions } from './denylist/memory.js';
export { createRedisDenylist, type RedisDenylistClient, type RedisDenylistOptions } from './denylist/redis.js';
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
export { jwtVerifierOptionsFromPolicy, type JwtPolicy, type JwtPolicyExtras } from './jwt/policy.js';
export { rbacRulesForTransport, type RbacPolicy } from './rbac/policy.js';
export type { MtlsPolicy } from './mtls/policy.js';
export {
  loadSecurityPolicy,
  readPolicyDocument,
  parseSecurityPolicy,
  type SecurityPolicy,
} from './policy/policy.js';

// Authentication and authorization of one call, shared by both adapters
export {
  createGuard,
  httpOperation,
  bearerChallenge,
  type ComposedGuard,
  type Guard,
  type GuardOptions,
} from './guard/guard.js';
export { createAuthenticator, type Authenticator, type AuthenticatorOptions } from './guard/authenticate.js';
export { createAuthorizer, type Authorizer, type AuthorizerOptions } from './guard/authorize.js';
export { createGuardFromPolicy, type GuardFromPolicyOptions } from './guard/from-policy.js';

// The control contract: what a control is, and the per-call context it works with
export { CONTROL_STAGES, type Control, type ControlStage, type StartResult } from './pipeline/control.js';
export {
  createContextKey,
  type CallContext,
  type ContextKey,
  type RequestContext,
} from './pipeline/call-context.js';
