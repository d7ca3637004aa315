import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { AuditLogger, Control, Guard, TimeoutsOptions } from '@fluxguard/core';
import { assertAuditLogger, resolveOptions, stackControls } from '@fluxguard/core/adapter';
import { errorHandler, notFound } from './error-handler.js';
import type { EndRequest } from './context.js';
import { pipelineRunner } from './pipeline.js';
import { dropLaterWrites, startRequest } from './request-id.js';
import { securityHeaderWriter, type SecurityHeadersOptions } from './security-headers.js';

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
  /** Options of `securityHeaders()`, or `false` when a proxy in front sets these headers. */
  readonly securityHeaders?: SecurityHeadersOptions | false | undefined;
  /** The `realm` of 401 challenges; see `ErrorHandlerOptions.realm`. */
  readonly realm?: string | undefined;
  /**
   * The guard of `@fluxguard/core` (`createGuard`): when given, `before` ends with
   * the guard's controls, so every route is authenticated and authorized by the RBAC rules.
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
  /**
   * Mount before any route: one middleware that does what `requestId()`, then
   * `securityHeaders()`, then the pipeline of the guard's controls and `controls` do.
   */
  readonly before: RequestHandler[];
  /** Mount after every route: `notFound()`, then `errorHandler()`. */
  readonly after: [RequestHandler, ErrorRequestHandler];
}

const DEFAULTS: Readonly<{
  audit: AuditLogger | undefined;
  securityHeaders: SecurityHeadersOptions | false | undefined;
  realm: string | undefined;
  guard: Guard | undefined;
  controls: readonly Control[] | undefined;
  timeouts: TimeoutsOptions | false | undefined;
}> = Object.freeze({
  audit: undefined,
  securityHeaders: undefined,
  realm: undefined,
  guard: undefined,
  controls: undefined,
  timeouts: undefined,
});

/**
 * fluxguard's HTTP baseline in one call: request ids and `req.fluxguard`, security headers,
 * and problem+json answers for unknown routes and every error. Mount `before` ahead of your
 * routes and `after` behind them; every option is checked here, once.
 *
 * With `guard` (and `controls`), one pipeline joins `before`: the controls in their fixed stage
 * order (see `controls`; with RBAC, route case-sensitively). A refusal of these controls is
 * answered at once by the error handler of `after`: it never reaches the app's routes or error
 * middleware. A request that a control ends early (a deadline, a refused body chunk) is
 * answered and logged by the same error handler.
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
  assertAuditLogger(opts.audit, 'fluxguard');
  const audit = opts.audit;
  const handleErrors = errorHandler({ audit, realm: opts.realm });
  const list = stackControls('fluxguard', opts.guard, opts.controls, opts.timeouts);
  const endRequest: EndRequest = (error, req, res) => {
    // Ended before the client sent the whole body (a stalled upload): close the connection
    // after the answer instead of waiting for bytes nobody will read.
    if (!req.complete && !res.headersSent) res.setHeader('connection', 'close');
    handleErrors(error, req as Request, res as Response, () => undefined);
    dropLaterWrites(res);
  };
  const onReleaseError = (err: unknown, requestId: string): void => {
    audit.logger.error({ err, requestId }, 'a control release callback failed');
  };
  const writeSecurityHeaders = opts.securityHeaders === false ? undefined : securityHeaderWriter(opts.securityHeaders);
  // A refusal is answered here and now, not passed to `next(err)`: it never walks the app's
  // router, and an error middleware of the app that calls `next()` cannot resume it.
  const runControls = list.length > 0 ? pipelineRunner('fluxguard', list, handleErrors) : undefined;
  // One middleware, not three: what requestId(), securityHeaders() and controls() do, in that
  // order, without two trips through the router and a second look-up of the call state.
  const before: RequestHandler[] = [
    function fluxguardBefore(req, res, next) {
      const state = startRequest(req, res, endRequest, onReleaseError);
      writeSecurityHeaders?.(res);
      if (runControls === undefined) next();
      else runControls(req, res, next, state);
    },
  ];
  const middleware: FluxguardMiddleware = { before, after: [notFound(), handleErrors] };
  return Object.freeze(middleware);
}
