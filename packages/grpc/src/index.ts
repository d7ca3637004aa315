export {
  findCallContext,
  getCallContext,
  getPrincipal,
  getRequestId,
  getSignal,
  setPrincipal,
  type GrpcCallContext,
  type ServerCall,
} from './context.js';
export {
  FIELD_METADATA_KEY,
  RETRY_AFTER_METADATA_KEY,
  rejectCall,
  safeErrors,
  type SafeErrorsOptions,
} from './errors.js';
export {
  addService,
  wrapImplementation,
  type AddServiceOptions,
  type SafeBidiStreamingHandler,
  type SafeClientStreamingHandler,
  type SafeHandler,
  type SafeImplementation,
  type SafeServerStreamingHandler,
  type SafeUnaryHandler,
} from './handlers.js';
export { fluxguardInterceptors, type FluxguardInterceptorsOptions } from './interceptors.js';
export { routeGrpcJsLogs, type GrpcJsLogOptions } from './grpc-js-logs.js';
export { guard, type GuardInterceptorOptions } from './guard.js';
export { controls, metadataHeaders } from './pipeline.js';
export { jwtAuth, type JwtAuthOptions } from './jwt-auth.js';
export { rbac, type RbacInterceptorOptions } from './rbac.js';
export { mtls, type MtlsInterceptorOptions } from './mtls.js';
export {
  createServerCredentials,
  secureServerOptions,
  type FluxguardServerCredentials,
  type SecureServerLimits,
  type ServerCredentialsOptions,
} from './server-credentials.js';
export { createClientCredentials, defaultDeadline, type ClientCredentialsOptions } from './client.js';
