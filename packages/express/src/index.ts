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
