import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ConfigurationError, resolveOptions, type AuditLogger, type Guard } from '@fluxguard/core';
import { authorize } from './authorize.js';
import { errorHandler, notFound } from './error-handler.js';
import { requestId } from './request-id.js';
import { securityHeaders, type SecurityHeadersOptions } from './security-headers.js';

/**
 * Options of {@link fluxguard}.
 *
 * @example
 * ```ts
 * const options: FluxguardOptions = { audit: createAuditLogger(), securityHeaders: { hstsPreload: true } };
 * const guard = fluxguard(options);
 * ```
 */
export interface FluxguardOptions {
  /** The audit logger shared with the rest of the application (and the gRPC adapter). */
  readonly audit: AuditLogger;
  /** Options of {@link securityHeaders}, or `false` when a proxy in front sets these headers. */
  readonly securityHeaders?: SecurityHeadersOptions | false | undefined;
  /** The `realm` of 401 challenges; see `ErrorHandlerOptions.realm`. */
  readonly realm?: string | undefined;
  /**
   * The guard of `@fluxguard/core` (`createGuard`): when given, `before` ends with
   * `authorize({ guard })`, so every route is authenticated and authorized by the RBAC rules.
   */
  readonly guard?: Guard | undefined;
}

/**
 * The middleware of {@link fluxguard}, in mounting order.
 *
 * @example
 * ```ts
 * const { before, after }: FluxguardMiddleware = fluxguard({ audit });
 * app.use(before);
 * app.use('/v1', apiRouter);
 * app.use(after);
 * ```
 */
export interface FluxguardMiddleware {
  /** Mount before any route: `requestId()`, then `securityHeaders()`, then `authorize()` when a guard is given. */
  readonly before: RequestHandler[];
  /** Mount after every route: `notFound()`, then `errorHandler()`. */
  readonly after: [RequestHandler, ErrorRequestHandler];
}

const DEFAULTS: Readonly<{
  audit: AuditLogger | undefined;
  securityHeaders: SecurityHeadersOptions | false | undefined;
  realm: string | undefined;
  guard: Guard | undefined;
}> = Object.freeze({ audit: undefined, securityHeaders: undefined, realm: undefined, guard: undefined });

/**
 * fluxguard's HTTP baseline in one call: request ids and `req.fluxguard`, security headers,
 * and problem+json answers for unknown routes and every error. Mount `before` ahead of your
 * routes and `after` behind them; every option is checked here, once.
 *
 * With `guard`, authentication and authorization join `before` (see {@link authorize}; route
 * case-sensitively). Other controls go between `before` and your routes, so that they see the
 * request id and their refusals reach the error handler.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { fluxguard } from '@fluxguard/express';
 *
 * const audit = createAuditLogger();
 * const { before, after } = fluxguard({ audit, guard: createGuard({ audit, jwt, rbac: compileRbac(rules) }) });
 * const app = express();
 * app.set('case sensitive routing', true);
 * app.use(before);
 * app.get('/hello', (req, res) => { res.json({ hello: req.fluxguard.principal?.subject }); });
 * app.use(after);
 * app.listen(8080);
 * ```
 */
export function fluxguard(options: FluxguardOptions): FluxguardMiddleware {
  const opts = resolveOptions('fluxguard', DEFAULTS, options);
  if (opts.audit === undefined) throw new ConfigurationError('fluxguard: "audit" is required');
  const handleErrors = errorHandler({ audit: opts.audit, realm: opts.realm });
  const before: RequestHandler[] = [requestId()];
  if (opts.securityHeaders !== false) before.push(securityHeaders(opts.securityHeaders));
  if (opts.guard !== undefined) before.push(authorize({ guard: opts.guard }));
  const middleware: FluxguardMiddleware = { before, after: [notFound(), handleErrors] };
  return Object.freeze(middleware);
}
