import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { isAuthentication, type Control } from '../pipeline/control.js';
import { checkControl } from '../pipeline/pipeline.js';
import type { Authenticator } from './authenticate.js';
import { isAuthorizer, type Authorizer } from './authorize.js';
import type { Guard } from './guard.js';
import { compileTimeouts, type TimeoutsOptions } from '../timeouts/timeouts.js';
import { certificateCheckFrom, type CertificateCheckOptions } from '../mtls/certificate-check.js';

/**
 * Options of the adapters' `jwtAuth` (gRPC interceptor, Express middleware).
 *
 * @example
 * ```ts
 * import { createAuthenticator, type JwtAuthOptions } from '@fluxguard/core';
 * const options: JwtAuthOptions = { authenticator: createAuthenticator({ jwt }) };
 * ```
 */
export interface JwtAuthOptions {
  /** The authentication step (`createAuthenticator`, or `createGuard(...).authenticator`). */
  readonly authenticator: Authenticator;
}

/**
 * Options of the adapters' `rbac` (gRPC interceptor, Express middleware).
 *
 * @example
 * ```ts
 * import { compileRbac, createAuthorizer, type RbacStepOptions } from '@fluxguard/core';
 * const options: RbacStepOptions = { authorizer: createAuthorizer({ audit, rbac: compileRbac(rules) }) };
 * ```
 */
export interface RbacStepOptions {
  /** The authorization step (`createAuthorizer`, or `createGuard(...).authorizer`). */
  readonly authorizer: Authorizer;
}

/**
 * Options of the adapters' `guard` (gRPC) and `authorize` (Express).
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard, type GuardStepOptions } from '@fluxguard/core';
 * const options: GuardStepOptions = { guard: createGuard({ audit, jwt, rbac: compileRbac(rules) }) };
 * ```
 */
export interface GuardStepOptions {
  /** Authentication and authorization (`createGuard` or `createGuardFromPolicy`). */
  readonly guard: Guard;
}

/**
 * The controls of an adapter's `jwtAuth`, its options checked once (`owner` names it in errors).
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { jwtAuthControls } from '@fluxguard/core/adapter';
 * const controls = jwtAuthControls('jwtAuth', { authenticator: createAuthenticator({ jwt }) });
 * ```
 */
export function jwtAuthControls(owner: string, options: JwtAuthOptions): readonly Control[] {
  const { authenticator } = resolveOptions(owner, { authenticator: undefined as Authenticator | undefined }, options);
  // The step itself, not a copy: a copy would lose the mark by which a second guard forgets the
  // caller this one recorded (see `CallState.enterAuthentication`).
  if (authenticator === undefined || !isAuthentication(authenticator)) {
    throw new ConfigurationError(
      `${owner}: "authenticator" must be the result of createAuthenticator() of @fluxguard/core (not a copy of it)`,
    );
  }
  return [authenticator];
}

/**
 * The controls of an adapter's `rbac`, its options checked once.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { rbacControls } from '@fluxguard/core/adapter';
 * const controls = rbacControls('rbac', { authorizer: createAuthorizer({ audit, rbac }) });
 * ```
 */
export function rbacControls(owner: string, options: RbacStepOptions): readonly Control[] {
  const { authorizer } = resolveOptions(owner, { authorizer: undefined as Authorizer | undefined }, options);
  // Any other control here (the guard's authenticator, named one line above it) would authorize
  // nothing: every call, anonymous ones too, would reach the handler.
  if (!isAuthorizer(authorizer)) {
    throw new ConfigurationError(
      `${owner}: "authorizer" must be the result of createAuthorizer() or createGuard(...).authorizer of @fluxguard/core (not an authenticator, another control or a copy)`,
    );
  }
  return [authorizer];
}

/**
 * The controls of an adapter's `mtls` (see `createCertificateCheck`), its options checked once
 * and named after `owner` in errors.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { mtlsControls } from '@fluxguard/core/adapter';
 * const controls = mtlsControls('mtls', { allow: [{ spiffeId: 'spiffe://example.org/ns/ops/**' }] });
 * ```
 */
export function mtlsControls(owner: string, options: CertificateCheckOptions | undefined): readonly Control[] {
  return [certificateCheckFrom(owner, options)];
}

/**
 * The controls of an adapter's `guard`/`authorize`, its options checked once.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { guardControls } from '@fluxguard/core/adapter';
 * const controls = guardControls('authorize', { guard: createGuard({ audit, jwt, rbac }) });
 * ```
 */
export function guardControls(owner: string, options: GuardStepOptions): readonly Control[] {
  const { guard } = resolveOptions(owner, { guard: undefined as Guard | undefined }, options);
  return controlsOfGuard(guard) ?? missingGuard(owner);
}

/**
 * The controls of the adapters' whole-stack factories (`fluxguardInterceptors`, `fluxguard`):
 * the guard's, if any, then `controls`, which the pipeline orders by stage; and, unless a
 * control of the `deadline` stage is already listed or `timeouts` is `false`, the timeouts
 * control with `timeouts` (its secure defaults when omitted). `timeouts` given next to a listed
 * deadline control is refused: it would be ignored.
 *
 * @throws ConfigurationError for `controls` that is no array, a guard that is none, `timeouts`
 *   next to a listed deadline control, or bad `timeouts`.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { stackControls } from '@fluxguard/core/adapter';
 * const limits = createInputLimits({ maxBodyBytes: 1_048_576 });
 * const controls = stackControls('fluxguard', guard, [limits], { defaultMs: 30_000 }); // the guard's, limits, timeouts
 * ```
 */
export function stackControls(
  owner: string,
  guard: Guard | undefined,
  controls: readonly Control[] | undefined,
  timeouts: TimeoutsOptions | false | undefined,
): readonly Control[] {
  const own: unknown = controls;
  if (own !== undefined && !Array.isArray(own)) throw new ConfigurationError(`${owner}: "controls" must be an array`);
  // Checked here, where the index is the one in the user's list (the guard's controls come first
  // in the pipeline's), and before anything reads an entry's stage.
  controls?.forEach((control, index) => checkControl(owner, control, index));
  const list = [...(guard === undefined ? [] : (controlsOfGuard(guard) ?? missingGuard(owner))), ...(controls ?? [])];
  const deadlines = list.filter((control) => control.stage === 'deadline');
  if (deadlines.length > 1) {
    // Each would set the call's deadline and idle limits: whichever ran last would decide,
    // and the other's limits would read as in force.
    throw new ConfigurationError(
      `${owner}: two controls of the deadline stage are listed ("${deadlines[0]?.name ?? ''}" and "${deadlines[1]?.name ?? ''}"; a guard from createGuardFromPolicy has one, from the policy's timeouts section): a call has one deadline, so list one`,
    );
  }
  if (deadlines.length === 1) {
    // A deadline control is listed already (a guard from a policy always has one): limits given
    // here, or `false`, would be ignored, and a tighter maximum read as in force.
    if (timeouts !== undefined) {
      throw new ConfigurationError(
        `${owner}: "timeouts" is given, but a control of the deadline stage is listed already (a guard from createGuardFromPolicy has one, from the policy's timeouts section): set the limits there, and leave "timeouts" out`,
      );
    }
    return list;
  }
  if (timeouts === false) return list;
  return [...list, compileTimeouts(timeouts ?? {}, `${owner}: timeouts`)];
}

/**
 * Refuses an options object that names `guard` with the value `undefined`: most often a guard
 * read from a configuration that does not hold one (`guard: config.guard`), which would leave
 * every request unauthenticated without a word. Leaving the key out says so on purpose.
 *
 * @example
 * ```ts
 * import { refuseUndefinedGuard } from '@fluxguard/core/adapter';
 * refuseUndefinedGuard('fluxguard', { audit });                  // fine: no guard, on purpose
 * refuseUndefinedGuard('fluxguard', { audit, guard: undefined }); // throws ConfigurationError
 * ```
 *
 * @internal
 */
export function refuseUndefinedGuard(owner: string, options: object): void {
  if (Object.hasOwn(options, 'guard') && (options as { guard?: unknown }).guard === undefined) {
    throw new ConfigurationError(
      `${owner}: "guard" is undefined: pass the guard of createGuard() or createGuardFromPolicy(); to serve without authentication on purpose, leave "guard" out`,
    );
  }
}

function controlsOfGuard(guard: Guard | undefined): readonly Control[] | undefined {
  const list: unknown = guard?.controls;
  if (!Array.isArray(list)) return undefined;
  // A guard's own authentication step, not a copy: see `jwtAuthControls`.
  const controls = list as readonly Control[];
  return controls.some((control) => control.stage === 'authentication' && !isAuthentication(control))
    ? undefined
    : controls;
}

function missingGuard(owner: string): never {
  throw new ConfigurationError(`${owner}: "guard" must be the result of createGuard() of @fluxguard/core`);
}
