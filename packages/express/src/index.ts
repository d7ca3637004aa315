// For its effect: Express apps made from here on keep a request's call state on a stand-in for it.
import './stand-ins.js';

export { setPrincipal, type FluxguardRequestContext } from './context.js';
export { requestId } from './request-id.js';
export { securityHeaders, type SecurityHeadersOptions } from './security-headers.js';
export {
  PROBLEM_CONTENT_TYPE,
  errorHandler,
  notFound,
  type ErrorHandlerOptions,
  type ProblemDetails,
} from './error-handler.js';
export { fluxguard, type FluxguardMiddleware, type FluxguardOptions } from './fluxguard.js';
export { routesOf } from './routes.js';
export { authorize, mtls, type AuthorizeOptions, type MtlsOptions } from './authorize.js';
export { controls, getClientCertificate } from './pipeline.js';
export { jwtAuth, type JwtAuthOptions } from './jwt-auth.js';
export { rbac, type RbacMiddlewareOptions } from './rbac.js';
export { createSecureServer, type SecureServerOptions } from './secure-server.js';
export { createMtlsAgent, type MtlsAgentOptions } from './mtls-agent.js';
export { jsonBody, validate, type JsonBodyOptions, type ValidateOptions } from './validate.js';
