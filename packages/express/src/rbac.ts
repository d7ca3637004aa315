import type { RequestHandler } from 'express';
import { ConfigurationError, resolveOptions, type Authorizer } from '@fluxguard/core';
import { requestCallInfo } from './authorize.js';
import { setOperationLabel } from './context.js';

/**
 * Options of {@link rbac}.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuthorizer } from '@fluxguard/core';
 * const options: RbacMiddlewareOptions = { authorizer: createAuthorizer({ audit, rbac: compileRbac(rules) }) };
 * ```
 */
export interface RbacMiddlewareOptions {
  /** The authorization step of `@fluxguard/core` (`createAuthorizer`, or `createGuard(...).authorizer`). */
  readonly authorizer: Authorizer;
}

const DEFAULTS: Readonly<{ authorizer: Authorizer | undefined }> = Object.freeze({ authorizer: undefined });

/**
 * Authorization alone: applies the RBAC rule of `METHOD /concrete/path` (`HEAD` checked as
 * `GET`) to `req.fluxguard.principal` — set by an earlier authentication middleware, normally
 * {@link jwtAuth}; anonymous without one — and to the verified client certificate. Public
 * routes pass; an anonymous caller on a protected one gets `401` with a bare `Bearer`
 * challenge; an unmet rule or a route no rule names `403` problem+json. Shadow mode logs
 * would-be denials and lets the request go on.
 *
 * Mount it after `fluxguard().before` and the authentication middleware, before the routes.
 * Like {@link authorize}, it refuses every request of an app that does not route
 * case-sensitively (`app.set('case sensitive routing', true)`).
 *
 * @throws ConfigurationError when `authorizer` is missing.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { fluxguard, jwtAuth, rbac } from '@fluxguard/express';
 * const audit = createAuditLogger();
 * const { authenticator, authorizer } = createGuard({ audit, jwt, rbac: compileRbac(rules) });
 * const { before, after } = fluxguard({ audit });
 * app.set('case sensitive routing', true);
 * app.use(before, jwtAuth({ authenticator }), rbac({ authorizer }));
 * ```
 */
export function rbac(options: RbacMiddlewareOptions): RequestHandler {
  const { authorizer } = resolveOptions('rbac', DEFAULTS, options);
  if (typeof authorizer?.authorize !== 'function') {
    throw new ConfigurationError('rbac: "authorizer" must be the result of createAuthorizer() of @fluxguard/core');
  }
  return function fluxguardRbac(req, _res, next) {
    const call = requestCallInfo(req, 'rbac', true);
    const rule = authorizer.rbac.ruleFor(call.operation);
    if (rule !== undefined) setOperationLabel(req, rule);
    authorizer.authorize(call, req.fluxguard.principal);
    next();
  };
}
