import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { ErrorRequestHandler, Express, NextFunction, Request, RequestHandler, Response } from 'express';
import { ConfigurationError, type AuditLogger, type Control, type Guard, type TimeoutsOptions } from '@fluxguard/core';
import {
  answerWaiting,
  assertAuditLogger,
  blameUnfinishedRequest,
  createPipeline,
  resolveOptions,
  refuseUndefinedGuard,
  stackControls,
} from '@fluxguard/core/adapter';
import {
  answerFailures,
  notFound,
  reachedFromApp,
  recordCancelledRequest,
  recordRequestFailure,
} from './error-handler.js';
import { probeUnreadAnswer } from './unread-answer.js';
import { standInCall, stateOf, type EndRequest, type WriteCancelled } from './context.js';
import { refusedStandIn } from './stand-ins.js';
import { aheadOfBefore, markMiddleware } from './app-routing.js';
import {
  checkRouting,
  inFrontOf,
  pipelineRunner,
  requestEnd,
  unreadBody,
  type PipelineRunner,
  type RefusalAnswer,
} from './pipeline.js';
import { dropLaterWrites, startOrRefuse } from './request-id.js';
import { securityHeaderWriter, type SecurityHeadersOptions } from './security-headers.js';
import { bodyStillComing, closeAfterAnswer } from './request-body.js';

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
   * Omitted: no request is authenticated (the baseline alone). Given as `undefined` (a guard
   * read from a configuration that holds none): refused, so that no app runs unguarded by mistake.
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
  /**
   * `app` behind fluxguard, as the request listener to serve (`http.createServer`,
   * `createSecureServer`): what `before` does, done before Express takes the request. The same
   * answers as `before`, for less work per request: no pass through the router, and
   * `req.fluxguard` attached while the request is still Node's own object (Express changes its
   * prototype, after which every property added costs more).
   *
   * Keep `before` mounted in the app as well: it passes on at once a request that this listener
   * has already run, and it still guards the app if the app is ever served without the
   * listener (a test, a copied template). The path that RBAC and rate-limit rules match is the
   * one Express's router matches at the top of the app. With the security headers on, `wrap`
   * turns the app's `x-powered-by` setting off, as Express would add the header after the
   * listener has removed it.
   *
   * With `guard` (or controls with `checkRoutes`), its rules are checked against the app's
   * routes as they stand (`rbac.checkRouteOrder(routesOf(app))`): where two routes overlap, the
   * request both match reaches the one registered first, and must be decided by that route's
   * rule. Without `wrap`, `before` runs the same check on the app's first request, and refuses
   * every request of an app whose routes fail it (`500`, the reason in each line).
   *
   * @throws ConfigurationError when `app` is not an Express app, or a route's requests would be
   *   decided by another route's rule.
   *
   * @example
   * ```ts
   * const guard = fluxguard({ audit, guard: createGuard({ audit, jwt, rbac }) });
   * const app = express();
   * app.set('case sensitive routing', true);
   * app.use(guard.before);
   * app.get('/hello', (req, res) => { res.json({ hello: req.fluxguard.principal?.subject }); });
   * app.use(guard.after);
   * http.createServer(guard.wrap(app)).listen(8080);
   * ```
   */
  readonly wrap: (app: Express) => RequestListener;
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
 * routes and `after` behind them, and serve `wrap(app)` for less work per request; every option
 * is checked here, once.
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
 * const { before, after, wrap } = fluxguard({ audit, guard: createGuard({ audit, jwt, rbac: compileRbac(rules) }) });
 * const app = express();
 * app.set('case sensitive routing', true);
 * app.use(before);
 * app.get('/hello', (req, res) => { res.json({ hello: req.fluxguard.principal?.subject }); });
 * app.use(after);
 * http.createServer(wrap(app)).listen(8080);
 * ```
 */
export function fluxguard(options: FluxguardOptions): FluxguardMiddleware {
  refuseUndefinedGuard('fluxguard', options);
  const opts = resolveOptions('fluxguard', DEFAULTS, options);
  assertAuditLogger(opts.audit, 'fluxguard');
  const audit = opts.audit;
  const handleErrors = answerFailures({ audit, realm: opts.realm }, 'fluxguard');
  const list = stackControls('fluxguard', opts.guard, opts.controls, opts.timeouts);
  const endRequest: EndRequest = (error, req, res) => {
    // Ended before the client sent the whole body (a stalled upload): close the connection
    // after the answer instead of waiting for bytes nobody will read.
    if (bodyStillComing(req)) closeAfterAnswer(req, res);
    const waiting = res.writableLength;
    if (answerWaiting(error, waiting)) {
      // The deadline came while the answer waits for the client: whether the client is to
      // blame (does it take any more of it?) is known a moment later; the connection is cut
      // and the line written then.
      dropLaterWrites(res);
      probeUnreadAnswer(error, waiting, req, res, (recorded, delivered) => {
        // Delivered in full: nothing to cut, and the error handler would take it for answered.
        if (delivered) recordRequestFailure(audit, recorded, req as Request, res);
        else handleErrors(recorded, req as Request, res as Response, ignoreNext);
      });
      return;
    }
    // A deadline while the client was still sending, nothing of it left unread for long, is
    // its doing.
    handleErrors(
      blameUnfinishedRequest(error, requestEnd(req), unreadBody(req)),
      req as Request,
      res as Response,
      ignoreNext,
    );
    dropLaterWrites(res);
  };
  // A request cut while its handler works gets its line when its connection closes, as gRPC's
  // call does when it is cancelled: a handler that returns, or writes to the closed response,
  // never reaches the error handler.
  const writeCancelled: WriteCancelled = (req, res, state) => {
    recordCancelledRequest(audit, req, res, state);
  };
  const onReleaseError = (err: unknown, requestId: string): void => {
    audit.logger.error({ err, requestId }, 'a control release callback failed');
  };
  // A `before` of a sub-app run on a stand-in for the request (a copy, `Object.create(req)`)
  // answers on the call's own request and response: the stand-in response may lead nowhere once
  // the sub-app replaced its prototype, and the request would have had no answer at all.
  const answerOnCall: RefusalAnswer = (error, req, res, next, state) => {
    const call = standInCall(req, state);
    if (call === undefined) handleErrors(error, req, res, next);
    else handleErrors(error, call.request as Request, call.response as Response, next);
  };
  const writeSecurityHeaders = opts.securityHeaders === false ? undefined : securityHeaderWriter(opts.securityHeaders);
  // One step, not three: what requestId(), securityHeaders() and controls() do, in that order,
  // without two trips through the router and a second look-up of the call state. A refusal is
  // answered here and now, not passed to `next(err)`: it never walks the app's router, and an
  // error middleware of the app that calls `next()` cannot resume it.
  const beforeWith = (run: PipelineRunner | undefined, origin: object | undefined) =>
    function fluxguardBefore(req: Request, res: Response, next: NextFunction): void {
      if (refusedStandIn(req, res, next)) return;
      const state = startOrRefuse(
        req,
        res,
        next,
        endRequest,
        onReleaseError,
        origin,
        writeSecurityHeaders,
        writeCancelled,
      );
      if (state === undefined) return;
      if (run === undefined) {
        // No control to pass: what follows is the handler's work (a pipeline says so itself),
        // whose request, if cut, gets its `request.cancelled` line.
        state.handlerStarted();
        next();
      } else {
        try {
          run(req, res, next, state);
        } catch (error) {
          // A check of the app that failed (routing rules cannot follow): answered here, as a
          // refusal is. Thrown on, it reached an error handler of the app, which showed its text.
          answerOnCall(error, req, res, ignoreNext, state);
        }
      }
    };
  // The mark of the requests that wrap() has run this instance's `before` on.
  const wrapped = Object.freeze({});
  const inRouter = beforeWith(list.length > 0 ? pipelineRunner('fluxguard', list, answerOnCall) : undefined, undefined);
  const before: RequestHandler[] = [
    function fluxguardBefore(req, res, next) {
      if (stateOf(req)?.origin === wrapped) next();
      else inRouter(req, res, next);
    },
  ];
  const wrap = (app: Express): RequestListener => {
    if (typeof app !== 'function' || typeof (app as Partial<Express>).enabled !== 'function') {
      throw new ConfigurationError('fluxguard: wrap(app) takes an Express app');
    }
    // Said at start-up rather than in every request's line (which checks again: a setting
    // changed, or a route added, after wrap is refused too).
    const mismatch = checkRouting(app, 'fluxguard', createPipeline('fluxguard', list), '');
    if (mismatch !== undefined) throw mismatch;
    const ahead = aheadOfBefore(app);
    if (ahead.length > 0) {
      process.emitWarning(
        `fluxguard: under wrap(app) the controls run in front of the app, so the middleware mounted ahead of fluxguard().before in it (${ahead.join(', ')}) run after them: a method override or URL rewrite there is refused (500), cors adds no headers to refusals, an access log misses them. Run such middleware in front of the wrapped listener, or mount them after before`,
        { code: 'FLUXGUARD_WRAP_ORDER' },
      );
    }
    if (writeSecurityHeaders !== undefined) app.disable('x-powered-by');
    const inFront = beforeWith(
      list.length > 0 ? pipelineRunner('fluxguard', list, handleErrors, inFrontOf(app)) : undefined,
      wrapped,
    );
    return function fluxguardListener(req: IncomingMessage, res: ServerResponse): void {
      // Express's own types for Node's objects: what runs before `app` reads only what Node's
      // request and response have (the router's properties are looked for, never assumed).
      const request = req as Request;
      const response = res as Response;
      const toApp = (error?: unknown): void => {
        if (error === undefined) app(request, response);
        else handleErrors(error, request, response, ignoreNext);
      };
      try {
        inFront(request, response, toApp);
      } catch (error) {
        // Whatever a step throws before the app takes over (a configuration error found on the
        // request, say) is answered here: no router is there to catch it for the error handler.
        handleErrors(error, request, response, ignoreNext);
      }
    };
  };
  const after: FluxguardMiddleware['after'] = [notFound(), reachedFromApp(handleErrors, audit)];
  // Found in the app's stack by the checks of where they sit (`createSecureServer`, first request).
  // A `before` guards when it authenticates or runs controls of the application's: the
  // timeouts control alone, there by default, guards nothing.
  const guards = opts.guard !== undefined || (opts.controls?.length ?? 0) > 0;
  for (const handler of before) markMiddleware(handler, guards ? 'before' : 'plain-before');
  for (const handler of after) markMiddleware(handler, 'after');
  const middleware: FluxguardMiddleware = { before, after, wrap };
  return Object.freeze(middleware);
}

const ignoreNext: NextFunction = () => undefined;
