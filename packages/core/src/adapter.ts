/**
 * `@fluxguard/core/adapter`: what an adapter for a transport needs and an application does
 * not. The gRPC and Express adapters are built on exactly these: the per-call state behind
 * `CallContext` and the pipeline runner; the mapping of errors to public answers; the
 * identity of a verified peer certificate; TLS settings, reload and client material; the
 * option resolver and the bounded cache.
 *
 * @example
 * ```ts
 * import { CallState, createPipeline, toPublicError } from '@fluxguard/core/adapter';
 * ```
 *
 * @packageDocumentation
 */
export {
  CallState,
  StateCallInfo,
  missingContextError,
  type CallStateInit,
  type EndCause,
  type LazyFact,
} from './pipeline/call-context.js';
export { createPipeline, type Pipeline } from './pipeline/pipeline.js';
export { UNIX_SOCKET_PEER } from './ratelimit/client-address.js';
export { isUnixSocketConnection } from './transport/unix-socket.js';
export { canonicalHost, isValidHostField } from './transport/host-field.js';
export { checkUnservedLater, warnUnservedPatterns } from './policy/served.js';
export {
  guardControls,
  jwtAuthControls,
  mtlsControls,
  rbacControls,
  refuseUndefinedGuard,
  stackControls,
} from './guard/step-options.js';
export { GrpcStatusCode, codeFromGrpcStatus } from './errors/codes.js';
export { toPublicError, type PublicError } from './errors/public-error.js';
export { retryInfoStatusDetails } from './errors/status-details.js';
export type { FailureContext } from './audit/audit-logger.js';
export { bearerChallenge, httpOperation, isPlainPath } from './guard/guard.js';
export { declaresBody } from './call/declared-body.js';
export { refuseOptions } from './options/unknown-keys.js';
export {
  identityFromCertificate,
  identityFromTlsSocket,
  isIdentityCurrent,
  untrustedCertificateError,
  type CertificateInput,
  type PeerTlsSocket,
  type UnverifiedTlsSocket,
} from './mtls/peer-identity.js';
export {
  createTlsSettings,
  TLS_CIPHERS,
  TLS_ECDH_CURVES,
  type GrpcTlsMaterial,
  type TlsServerOptions,
  type TlsSettings,
} from './mtls/tls-settings.js';
export {
  createReloadingTlsSettings,
  type ReloadingTlsSettings,
  type ReloadingTlsSettingsOptions,
} from './mtls/reloading-settings.js';
export { watchTlsMaterial, type TlsMaterialWatcher, type WatchTlsMaterialOptions } from './mtls/reload.js';
export { trustChanged } from './mtls/material.js';
export { createTrustRecheck, type TrustRecheck } from './mtls/trust-recheck.js';
export { CLIENT_TLS_OPTION_NAMES, loadClientTlsMaterial, type ClientTlsMaterial } from './mtls/client-material.js';
export { resolveOptions } from './options/resolve-options.js';
export { closestKey } from './options/unknown-keys.js';
export { MAX_TIMER_MS, wholeNumber, type WholeNumberRange } from './options/whole-number.js';
export { assertAuditLogger } from './audit/check.js';
export { scrubSecrets } from './audit/redaction.js';
export { LruCache } from './cache/lru.js';
export { hiddenSlot, type HiddenSlot } from './hidden-slot/hidden-slot.js';
export { checkSchema, validateWith } from './validation/standard-schema.js';
export { connectionBudget } from './transport/descriptor-budget.js';
export {
  checkConnectionsPerAddress,
  createConnectionGate,
  defaultConnectionsPerAddress,
  gateConnections,
  type ConnectionGate,
  type GateConnectionsOptions,
  type GatedConnections,
} from './transport/connection-gate.js';
export { noteServerEnding, serverEndingOf, type ServerEndReason } from './transport/server-ending.js';
export {
  UNREAD_PROBE_MS,
  UNREAD_REQUEST_MS,
  answerWaiting,
  blameUnfinishedRequest,
  blameUnreadAnswer,
  type FinishedRequest,
  type UnreadRequest,
  type AnswerAfterProbe,
} from './timeouts/deadline-blame.js';
