import type { ServerInterceptor } from '@grpc/grpc-js';
import type { AuditLogger, Control, Guard, TimeoutsOptions } from '@fluxguard/core';
import { refuseUndefinedGuard, resolveOptions, stackControls } from '@fluxguard/core/adapter';
import { safeErrorsWith, type SafeErrorsOptions } from './errors.js';
import { linkPipeline, pipelineListeners } from './pipeline.js';

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
   * Authentication and authorization of every call (`createGuard` of `@fluxguard/core`): its
   * controls run first in the pipeline, as the {@link guard} interceptor would. Omitted: no call is
   * authenticated and `getPrincipal` is always `undefined`. Given as `undefined` (a guard read
   * from a configuration that holds none): refused, so that no server runs unguarded by mistake.
   */
  readonly guard?: Guard | undefined;
  /**
   * More controls of your own (or of fluxguard), run in the same pipeline as the guard's and
   * ordered with them by stage (see `ControlStage` of `@fluxguard/core`).
   */
  readonly controls?: readonly Control[] | undefined;
  /**
   * Deadlines and idle limits (`createTimeouts` of `@fluxguard/core`): on by default with its
   * secure defaults (a call without a client deadline ends after 60 s, no deadline is longer
   * than 15 minutes, an inbound stream may pause 30 s); options here override them; `false`
   * turns it off. Ignored when `guard` or `controls` already hold a `deadline` control (a guard
   * from `createGuardFromPolicy` has the policy's).
   */
  readonly timeouts?: TimeoutsOptions | false | undefined;
}

const DEFAULTS: Readonly<{
  audit: AuditLogger | undefined;
  guard: Guard | undefined;
  controls: readonly Control[] | undefined;
  timeouts: TimeoutsOptions | false | undefined;
}> = Object.freeze({ audit: undefined, guard: undefined, controls: undefined, timeouts: undefined });

/**
 * The fluxguard interceptors for `new Server({ interceptors })`, to be placed before any of
 * yours (an interceptor that refuses a call with `sendStatus` skips its own responder: only the
 * ones before it see the status). Today this is one interceptor: the error and audit
 * interceptor (`safeErrors`) with one pipeline inside it that runs the guard's controls and
 * `controls` in the fixed stage order, so that every refusal is logged once and answered
 * safely. It behaves as `[safeErrors({ audit }), controls(...)]` and costs a call less.
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
  refuseUndefinedGuard('fluxguardInterceptors', options);
  const { audit, guard, controls, timeouts } = resolveOptions('fluxguardInterceptors', DEFAULTS, options);
  const list = stackControls('fluxguardInterceptors', guard, controls, timeouts);
  const inner = list.length > 0 ? pipelineListeners('fluxguardInterceptors', list) : undefined;
  // One interceptor, not safeErrors followed by a pipeline interceptor: every grpc-js layer
  // costs each call several objects and closures. The logger is validated there.
  const interceptor = safeErrorsWith('fluxguardInterceptors', { audit } as SafeErrorsOptions, inner);
  if (inner !== undefined) linkPipeline(interceptor, inner);
  return [interceptor];
}
