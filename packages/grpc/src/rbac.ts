import type { ServerInterceptor } from '@grpc/grpc-js';
import type { RbacStepOptions } from '@fluxguard/core';
import { rbacControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link rbac}: the authorization step of `@fluxguard/core`.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuthorizer } from '@fluxguard/core';
 * const options: RbacInterceptorOptions = { authorizer: createAuthorizer({ audit, rbac: compileRbac(rules) }) };
 * ```
 */
export type RbacInterceptorOptions = RbacStepOptions;

/**
 * The authorization interceptor alone, the gRPC pipeline with one control: applies the RBAC rule of the call's full method to the
 * principal an earlier interceptor recorded (normally {@link jwtAuth}; read from the call's
 * in-memory context, never from metadata) and to the VERIFIED client certificate. Without an
 * earlier authentication interceptor every caller is anonymous: public methods pass, others
 * are refused `UNAUTHENTICATED`; an unmet rule or a method no rule names is refused
 * `PERMISSION_DENIED`. Shadow mode logs would-be denials and lets the call go on.
 *
 * Place it after {@link safeErrors} and after the authentication interceptor:
 * `[safeErrors({ audit }), jwtAuth({ authenticator }), rbac({ authorizer })]`.
 *
 * @throws ConfigurationError when `authorizer` is missing or grpc-js is older than 1.14.5.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { jwtAuth, rbac, safeErrors } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const { authenticator, authorizer } = createGuard({ audit, jwt, rbac: compileRbac(rules) });
 * const server = new Server({
 *   interceptors: [safeErrors({ audit }), jwtAuth({ authenticator }), rbac({ authorizer })],
 * });
 * ```
 */
export function rbac(options: RbacInterceptorOptions): ServerInterceptor {
  return controls('rbac', rbacControls('rbac', options));
}
