import type { ServerInterceptor } from '@grpc/grpc-js';
import type { GuardStepOptions } from '@fluxguard/core';
import { guardControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link guard}: the guard of `@fluxguard/core` (`createGuard`).
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard } from '@fluxguard/core';
 * const options: GuardInterceptorOptions = { guard: createGuard({ audit, jwt, rbac: compileRbac(rules) }) };
 * ```
 */
export type GuardInterceptorOptions = GuardStepOptions;

/**
 * The authentication and authorization interceptor: the gRPC pipeline ({@link controls}) with
 * the guard's two controls. For every call it authenticates the caller (a bearer token in the
 * `authorization` metadata entry, the identity of the VERIFIED client certificate) and applies
 * the RBAC rule of the full method `/pkg.Service/Method`. An allowed call goes on with its
 * `Principal` recorded in memory (`getPrincipal(call)` in the handler); a refused one ends with
 * the guard's `SecurityError` (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNAVAILABLE`), logged
 * once by `safeErrors`. Any other failure becomes `INTERNAL`: never let through on doubt.
 *
 * No request message, nor the end of the client's stream, reaches the handler before the
 * call is allowed. The certificate identity comes only from grpc-js `getAuthContext()`, which
 * (>= 1.14.5) reports a certificate only for connections whose handshake verified it;
 * construction fails on an older grpc-js.
 *
 * Must run after `safeErrors`: use `fluxguardInterceptors` with its `guard` option.
 *
 * @throws ConfigurationError when `guard` is missing or grpc-js is older than 1.14.5.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { guard, safeErrors } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const check = createGuard({ audit, jwt, rbac: compileRbac(rules, { servedOperations }) });
 * const server = new Server({ interceptors: [safeErrors({ audit }), guard({ guard: check })] });
 * ```
 */
export function guard(options: GuardInterceptorOptions): ServerInterceptor {
  return controls('guard', guardControls('guard', options));
}
