import type { ServerInterceptor } from '@grpc/grpc-js';
import { resolveOptions, type AuditLogger } from '@fluxguard/core';
import { safeErrors, type SafeErrorsOptions } from './errors.js';

/**
 * Options of {@link fluxguardInterceptors}.
 *
 * @example
 * ```ts
 * const options: FluxguardInterceptorsOptions = { audit: createAuditLogger() };
 * ```
 */
export interface FluxguardInterceptorsOptions {
  /** The audit logger every failure and denial is written to. */
  readonly audit: AuditLogger;
}

const DEFAULTS: Readonly<{ audit: AuditLogger | undefined }> = Object.freeze({ audit: undefined });

/**
 * The fluxguard interceptors in the order they must run, for `new Server({ interceptors })`.
 * The error and audit interceptor ({@link safeErrors}) comes first, because an interceptor
 * that refuses a call with `sendStatus` skips its own responder: only the ones before it see
 * the status. Later controls (authentication, authorization, rate limits) join this list.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { createAuditLogger } from '@fluxguard/core';
 * import { fluxguardInterceptors } from '@fluxguard/grpc';
 * const server = new Server({ interceptors: fluxguardInterceptors({ audit: createAuditLogger() }) });
 * ```
 */
export function fluxguardInterceptors(options: FluxguardInterceptorsOptions): ServerInterceptor[] {
  // safeErrors validates the logger itself, with its own message.
  const resolved = resolveOptions('fluxguardInterceptors', DEFAULTS, options) as SafeErrorsOptions;
  return [safeErrors(resolved)];
}
