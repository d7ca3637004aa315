import type { RequestHandler } from 'express';
import type { RbacStepOptions } from '@fluxguard/core';
import { rbacControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link rbac}: the authorization step of `@fluxguard/core`.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuthorizer } from '@fluxguard/core';
 * const options: RbacMiddlewareOptions = { authorizer: createAuthorizer({ audit, rbac: compileRbac(rules) }) };
 * ```
 */
export type RbacMiddlewareOptions = RbacStepOptions;

/**
 * Authorization alone, the Express pipeline with one control: applies the RBAC rule of `METHOD /concrete/path` (`HEAD` checked as
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
  return controls('rbac', rbacControls('rbac', options));
}
