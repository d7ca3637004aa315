import type { ServerInterceptor } from '@grpc/grpc-js';
import { resolveOptions, type AuditLogger, type Guard } from '@fluxguard/core';
import { safeErrors, type SafeErrorsOptions } from './errors.js';
import { guard as guardInterceptor } from './guard.js';

/**
 * Options of {@link fluxguardInterceptors}.
 *
 * @example
 * ```ts
 * const options: FluxguardInterceptorsOptions = { audit: createAuditLogger(), guard: createGuard({ audit, rbac }) };
 * ```
 */
export interface FluxguardInterceptorsOptions {
  /** The audit logger every failure and denial is written to. */
  readonly audit: AuditLogger;
  /**
   * Authentication and authorization of every call (`createGuard` of `@fluxguard/core`): the
   * {@link guard} interceptor, placed right after `safeErrors`. Omitted: no call is
   * authenticated and `getPrincipal` is always `undefined`.
   */
  readonly guard?: Guard | undefined;
}

const DEFAULTS: Readonly<{ audit: AuditLogger | undefined; guard: Guard | undefined }> = Object.freeze({
  audit: undefined,
  guard: undefined,
});

/**
 * The fluxguard interceptors in the order they must run, for `new Server({ interceptors })`.
 * The error and audit interceptor ({@link safeErrors}) comes first, because an interceptor
 * that refuses a call with `sendStatus` skips its own responder: only the ones before it see
 * the status. With `guard`, the authentication and authorization interceptor ({@link guard})
 * follows, so that its refusals are logged once and answered safely.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { fluxguardInterceptors } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const guard = createGuard({ audit, jwt, rbac: compileRbac(rules) });
 * const server = new Server({ interceptors: fluxguardInterceptors({ audit, guard }) });
 * ```
 */
export function fluxguardInterceptors(options: FluxguardInterceptorsOptions): ServerInterceptor[] {
  const { audit, guard } = resolveOptions('fluxguardInterceptors', DEFAULTS, options);
  // safeErrors validates the logger itself, with its own message.
  const interceptors = [safeErrors({ audit } as SafeErrorsOptions)];
  if (guard !== undefined) interceptors.push(guardInterceptor({ guard }));
  return interceptors;
}
