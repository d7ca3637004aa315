import type { IncomingMessage, ServerResponse } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Application, NextFunction, Request, RequestHandler, Response } from 'express';
import parseUrl from 'parseurl';
import {
  ConfigurationError,
  SecurityError,
  isSecurityError,
  resolveRequestId,
  type CallInfo,
  type CertificateIdentity,
  type Control,
  type HeaderReader,
} from '@fluxguard/core';
import {
  StateCallInfo,
  createPipeline,
  type CallState,
  type Pipeline,
  httpOperation,
  isPlainPath,
  identityFromTlsSocket,
  isIdentityCurrent,
  missingContextError,
  untrustedCertificateError,
  toPublicError,
  type FinishedRequest,
  type UnreadRequest,
} from '@fluxguard/core/adapter';
import { standInCall, stateOf, writeControlHeaders } from './context.js';
import { peerOf, sendProblem } from './error-handler.js';
import { bodyStillComing, closeAfterAnswer, mayHaveBody } from './request-body.js';
import {
  caseInsensitiveRouting,
  isFluxguardMiddleware,
  parentOf,
  parentRoutingMismatch,
  markMiddleware,
  misplacedMiddleware,
  routingChangeCount,
  routingMismatch,
  stackLength,
  watchRouting,
} from './app-routing.js';
import { isExpressApp, routeNames, routerOf, walkRouter } from './routes.js';
import { guardHandOvers, passRefusalOn } from './hand-over.js';
import { refusedStandIn } from './stand-ins.js';
import { warnUnservedRoutes } from './unserved-routes.js';
import { warnTrustProxy } from './trust-proxy.js';

/**
 * The one Express pipeline: a middleware that runs `controls` (ordered by stage) on every
 * request. It builds the request's `CallInfo` once (shared with any other pipeline middleware
 * of the request), runs every start hook before the request goes on, and passes a refusal to
 * `next(err)` for the fluxguard error handler. Release callbacks run once when the response
 * closes, however it ends. With message hooks, every body chunk is handed to them as it
 * arrives, before any body parser or handler reads it; a refusal answers at once (413, 400, ...)
 * and the rest of the body is dropped.
 *
 * Every fluxguard middleware (`authorize`, `jwtAuth`, `rbac`, `mtls`) is this with its controls;
 * `fluxguard().before` ends with this for the whole list. Mount it after `fluxguard().before`.
 * When a control matches operation paths (RBAC), the app must route case-sensitively
 * (`app.set('case sensitive routing', true)`): a request to an app that does not is refused with
 * a 500 and a log line saying so.
 *
 * @throws ConfigurationError for an invalid control.
 *
 * @example
 * ```ts
 * import { controls, fluxguard } from '@fluxguard/express';
 * const { before, after } = fluxguard({ audit });
 * app.use(before, controls('limits', [oneAtATime]));
 * ```
 */
export function controls(owner: string, list: readonly Control[]): RequestHandler {
  const run = pipelineRunner(owner, list);
  const middleware: RequestHandler = function fluxguardControls(req, res, next) {
    if (refusedStandIn(req, res, next)) return;
    const state = stateOf(req);
    if (state === undefined) {
      answerWithoutContext(owner, res);
      return;
    }
    try {
      run(req, res, next, state);
    } catch (error) {
      // A configuration error, refused on every request: no more to be resumed than a refusal.
      passRefusalOn(error, req, next, state);
    }
  };
  // Guards the routes after it, as a `before` with a guard does (`authorize()` after a plain `before`).
  markMiddleware(middleware, 'before');
  return middleware;
}

const warnedWithoutContext = new Set<string>();

/**
 * Refuses a request that reached controls mounted without `fluxguard().before`: a 500 in
 * problem+json, answered here rather than passed to `next(err)`, since an app without `before`
 * has no fluxguard error handler either, and Express's own shows the error's stack outside
 * production. The reason goes to a warning, once per middleware.
 */
function answerWithoutContext(owner: string, res: Response): void {
  const error = missingContextError(owner, 'mount fluxguard().before (or requestId()) before it');
  if (!warnedWithoutContext.has(owner)) {
    warnedWithoutContext.add(owner);
    process.emitWarning(error.message, { code: 'FLUXGUARD_NO_CONTEXT' });
  }
  if (!res.headersSent) sendProblem(res, toPublicError(error, resolveRequestId(undefined)), undefined);
}

/**
 * Runs a pipeline on a request whose call state the caller holds already.
 *
 * @internal
 */
export type PipelineRunner = (req: Request, res: Response, next: NextFunction, state: CallState) => void;

/**
 * How a runner answers a refusal of its controls: by default `next(error)`, for the app's error
 * handler; `fluxguard().before` answers at once with its own.
 *
 * @internal
 */
export type RefusalAnswer = (error: unknown, req: Request, res: Response, next: NextFunction, state: CallState) => void;

const passToNext: RefusalAnswer = (error, req, _res, next, state) => {
  passRefusalOn(error, req, next, state);
};

/**
 * Where a pipeline reads what routing decides: inside an Express router (`app.use`), or in front
 * of the app, before Express has seen the request (`fluxguard().wrap(app)`).
 *
 * @internal
 */
export interface Placement {
  /** Whether the app that routes the request matches paths case-sensitively, as rules do. */
  readonly routesCaseSensitively: (req: Request) => boolean;
  /** The path the router matches routes against, mount path included. */
  readonly path: (req: Request) => string;
  /**
   * Checks the app that routes the request, where that was not done when it was served: where
   * fluxguard's middleware sits in it, and, under controls that match paths, how it routes and
   * its routes against the controls (`Pipeline.checkRoutes`); throws the refusal.
   */
  readonly checkApp: (req: Request, owner: string, pipeline: Pipeline, verdicts: WeakMap<object, AppVerdict>) => void;
}

/**
 * Mounted with `app.use`: Express has set `req.app`, `req.baseUrl` and `req.path`. The app's
 * routes are checked on its first request, when they are all there (an app served without
 * `wrap(app)` has no earlier moment), and the verdict kept: an app whose routes fail is refused
 * every request, with the reason in each line.
 */
const IN_ROUTER: Placement = {
  routesCaseSensitively: (req) => req.app.enabled('case sensitive routing'),
  path: (req) => `${req.baseUrl}${req.path}`,
  checkApp: (req, owner, pipeline, verdicts) => {
    // An object of the app's making run through a router, which, unlike an app, gives it no
    // prototype to find its app by: there are no routes to check it against.
    const app: unknown = req.app;
    if (typeof app !== 'function' || !isExpressApp(app)) throw noAppOf(owner);
    checkAppOnce(req.app, verdicts, () => {
      const error = misplacedMiddleware(req.app, owner) ?? checkMountedRouting(req.app, owner, pipeline);
      if (error === undefined) {
        warnUnservedRoutes(req.app, pipeline);
        warnTrustProxy(req.app, pipeline);
      }
      return error;
    });
  },
};

/** Why middleware is refused a request no Express app took in (logged, never sent). */
function noAppOf(owner: string): ConfigurationError {
  return new ConfigurationError(
    `${owner} ran on a request no Express app took in (req.app is missing): a router was run on an object made for the request; run an app on it, or give it the request's app (Object.create(req) inherits it)`,
  );
}

/** The verdict on an app, and the length of its router's stack and the routing changes it was given for. */
interface AppVerdict {
  readonly error: Error | null;
  readonly layers: number;
  readonly changes: number;
}

/**
 * Checks `app` with `check` on its first request, and again whenever its router has more or
 * fewer layers or a layer was pushed onto a stack of its routing (a route added to a router
 * mounted already, a method to a route); keeps the verdict in `verdicts` and throws a refusal.
 */
function checkAppOnce(
  app: Application,
  verdicts: WeakMap<object, AppVerdict>,
  check: () => ConfigurationError | undefined,
): void {
  const layers = stackLength(app);
  const changes = routingChangeCount(app);
  let verdict = verdicts.get(app);
  if (verdict?.layers !== layers || verdict.changes !== changes) {
    watchRouting(app);
    let error: Error | null;
    try {
      error = check() ?? null;
    } catch (thrown) {
      error = thrown instanceof Error ? thrown : new ConfigurationError("the app's routes cannot be checked");
    }
    verdict = { error, layers, changes: routingChangeCount(app) };
    verdicts.set(app, verdict);
  }
  if (verdict.error !== null) throw verdict.error;
}

/**
 * How the app routes, under controls that match paths (returned), then its routes against the
 * controls: letter case of every control's patterns, and each control's own check (thrown).
 * Used by `wrap(app)` at start-up and by both placements on an app's first request.
 *
 * @internal
 */
export function checkRouting(
  app: Application,
  owner: string,
  pipeline: Pipeline,
  prefix: string,
): ConfigurationError | undefined {
  if (pipeline.matchesOperation) {
    const mismatch = routingMismatch(app, owner);
    if (mismatch !== undefined) return mismatch;
  }
  const entries = walkRouter(app, prefix);
  const routes = routeNames(entries);
  pipeline.checkRoutes(routes);
  guardHandOvers(entries, prefix, pipeline, pipeline.handOver(routes), isFluxguardMiddleware, routerOf(app));
  return undefined;
}

/**
 * {@link checkRouting} for an app that may be mounted in another (`app.use('/admin', admin)`):
 * the apps above it must route as rules read paths too, and its routes are checked below each
 * path it is mounted at, from the top.
 */
function checkMountedRouting(app: Application, owner: string, pipeline: Pipeline): ConfigurationError | undefined {
  if (pipeline.matchesOperation) {
    const mismatch = parentRoutingMismatch(app, owner);
    if (mismatch !== undefined) return mismatch;
  }
  const prefixes = mountPathsOf(app);
  if (prefixes === undefined) {
    return new ConfigurationError(
      `${owner}: the app is mounted at a path that is no string (a regular expression), below which its routes cannot be read: mount it at a plain path`,
    );
  }
  for (const prefix of prefixes) {
    const error = checkRouting(app, owner, pipeline, prefix);
    if (error !== undefined) return error;
  }
  return undefined;
}

/**
 * Every path `app` is mounted at from the top, as its routes' prefixes ('' for the top app);
 * an app mounted at several paths (`app.use(['/a', '/b'], admin)`) has each, an app mounted in
 * a mounted app has the paths of both joined. `undefined` when one is no string.
 */
function mountPathsOf(app: Application): string[] | undefined {
  const mounted: unknown = (app as { mountpath?: unknown }).mountpath;
  const own = Array.isArray(mounted) ? (mounted as unknown[]) : [mounted ?? '/'];
  if (!own.every((path) => typeof path === 'string')) return undefined;
  const mine = own.map((path) => (path === '/' ? '' : path));
  const parent = parentOf(app);
  if (parent === undefined) return mine;
  return mountPathsOf(parent)?.flatMap((prefix) => mine.map((path) => `${prefix}${path}`));
}

/**
 * In front of `app`: the request is Node's own yet. Its path is what Express's router will
 * match at the top of the app, parsed by the same package (`parseurl`), which also keeps the
 * parse on the request for the router to reuse.
 *
 * @internal
 */
export function inFrontOf(app: Application): Placement {
  return {
    routesCaseSensitively: () => app.enabled('case sensitive routing'),
    path: (req) => parseUrl(req)?.pathname ?? '',
    // Checked by wrap(app) before the app was served, and again on the first request: routes
    // added after wrap(app) are there by then.
    checkApp: (_req, owner, pipeline, verdicts) => {
      checkAppOnce(app, verdicts, () => {
        const error = checkRouting(app, owner, pipeline, '');
        if (error === undefined) {
          warnUnservedRoutes(app, pipeline);
          warnTrustProxy(app, pipeline);
        }
        return error;
      });
    },
  };
}

/**
 * The body of {@link controls} without the look-up of the call state: `fluxguard().before`
 * passes the state it has just attached, and its own way to answer a refusal.
 *
 * @internal
 */
export function pipelineRunner(
  owner: string,
  list: readonly Control[],
  answer = passToNext,
  placement = IN_ROUTER,
): PipelineRunner {
  const pipeline = createPipeline(owner, list);
  const refuse = (
    body: BodyInspector | undefined,
    req: Request,
    res: Response,
    next: NextFunction,
    state: CallState,
    error: unknown,
  ) => {
    body?.refuse();
    answer(error, req, res, next, state);
  };
  const routeVerdicts = new WeakMap<object, AppVerdict>();
  return function runControls(req, res, next, state) {
    // The app first: an app refused guards its routes against a refusal resumed.
    placement.checkApp(req, owner, pipeline, routeVerdicts);
    if (pipeline.matchesOperation && !placement.routesCaseSensitively(req)) throw caseInsensitiveRouting(owner);
    const info = (state.callInfo ??= buildCallInfo(req, state, placement.path(req)));
    // Asked only if the request fails: the audit line names a rule pattern, never the raw path.
    state.labelOperation ??= pipeline.operationLabel;
    if (pipeline.matchesOperation && !isPlainPath(info.operation)) {
      // Rules read the path as sent; what serves it may decode and resolve it into another path.
      refuse(
        undefined,
        req,
        res,
        next,
        state,
        new SecurityError('invalid_argument', { reason: 'path_not_plain', details: { field: 'path' } }),
      );
      return;
    }
    // A stand-in for the call's request (an app replaced its prototype) carries no stream: the
    // body arrives on the call's own request, and a hook installed on the stand-in saw none of it.
    const call = pipeline.hasMessageHooks ? standInCall(req, state) : undefined;
    const stream: IncomingMessage = call?.request ?? req;
    if (pipeline.hasMessageHooks && (stream.readableLength > 0 || stream.readableDidRead)) {
      // Body bytes already arrived uninspected (an asynchronous middleware ran first): a hook
      // could not see them, so refuse rather than let them through.
      throw new ConfigurationError(
        `${owner}: body bytes arrived before this middleware; mount fluxguard().before (or these controls) before any asynchronous middleware`,
      );
    }
    // Installed before the start hooks run: chunks that arrive while an asynchronous hook
    // waits are held, then inspected once the call is allowed. A request without a body (or
    // whose body has arrived in full already) has nothing to hold, unless an earlier pipeline
    // still holds its chunks: this one then inspects them after it.
    const upstream = pipeline.hasMessageHooks ? inspectors.get(stream) : undefined;
    const body =
      pipeline.hasMessageHooks && mayHaveBody(stream) && (!stream.complete || upstream !== undefined)
        ? new BodyInspector(stream, call?.response ?? res, pipeline, info, state, upstream)
        : undefined;
    let pending: Promise<void> | undefined;
    try {
      pending = pipeline.start(info, state);
    } catch (error) {
      refuse(body, req, res, next, state, error);
      return;
    }
    if (pending === undefined) proceed(pipeline, info, state, req, res, body, next, answer);
    else {
      pending.then(
        () => {
          proceed(pipeline, info, state, req, res, body, next, answer);
        },
        (error: unknown) => {
          refuse(body, req, res, next, state, error);
        },
      );
    }
  };
}

/**
 * The client left while this pipeline's hooks decided, and they allowed the call: nothing after
 * the pipeline runs, so a handler an earlier pipeline counted as started (a route's `jwtAuth()`
 * after `fluxguard().before`) has stopped. Else the call's concurrency slot waited for an answer
 * no one would end, up to `holdForHandlerMs`, after every such hang-up. (A refusal's answer
 * ends the response, which stops it.)
 */
function stopIfLeft(state: CallState): void {
  if (state.finished && state.handlerRunning) state.handlerStopped();
}

function proceed(
  pipeline: Pipeline,
  info: CallInfo,
  state: CallState,
  req: Request,
  res: Response,
  body: BodyInspector | undefined,
  next: NextFunction,
  answer: RefusalAnswer,
): void {
  // The request ended (the client left, or a deadline answered it) while a hook waited.
  if (state.finished || res.headersSent) {
    stopIfLeft(state);
    return;
  }
  writeControlHeaders(state, res);
  if (body !== undefined) {
    // A held chunk may be refused as it is checked: the refusal has answered.
    if (!body.allow()) return;
    // The checked chunks go on after `next()`, so that a later pipeline with message hooks,
    // mounted right after this one, is in the chain before they pass and sees them too.
    state.handlerStarted();
    next();
    body.flush();
    return;
  } else if (pipeline.hasMessageHooks) {
    // No body to wait for: the inbound side is complete already.
    try {
      pipeline.inboundEnd(info, state);
    } catch (error) {
      answer(error, req, res, next, state);
      return;
    }
  }
  state.handlerStarted();
  next();
}

/**
 * Hands every body chunk to the message hooks as the HTTP parser delivers it (Node pushes each
 * into the request stream), so that sizes are enforced while streaming, whoever reads the
 * body. Until the call is allowed, chunks are held (and the socket paused by backpressure).
 *
 * Two ways to stop: refused before the handler ran, the rest of the body is discarded (Node
 * drains it before the next request of a keep-alive connection). Cut while the handler may be
 * reading (a hook refused a chunk, or a deadline or idle limit answered), the handler must not
 * see a clean end of a truncated body: no more chunks and no end reach it, the connection is
 * closed after the answer (RFC 9110 §15.5.14), and the request stream is destroyed then, so
 * that its reader fails.
 */
type Push = (chunk: unknown, encoding?: BufferEncoding) => boolean;

/**
 * The last body inspector of each request. Two pipelines with message hooks on one request
 * (`controls()` mounted after `fluxguard().before`) form a chain: the parser's chunks pass the
 * first, then the second, then reach the request stream.
 */
const inspectors = new WeakMap<IncomingMessage, BodyInspector>();

class BodyInspector {
  /** Where a chunk goes once inspected: the request stream, or the next inspector of the chain. */
  #push: Push;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #pipeline: Pipeline;
  readonly #info: CallInfo;
  readonly #state: CallState;
  #phase: 'pending' | 'allowed' | 'dropped' | 'cut' = 'pending';
  #held: Chunk[] = [];
  /** Chunks checked by `allow()` and not yet passed on (until `flush()`). */
  #outbox: Chunk[] | undefined;
  /** Shared by the inspectors of one request: when its oldest unread body bytes arrived. */
  readonly #arrival: Arrival;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    pipeline: Pipeline,
    info: CallInfo,
    state: CallState,
    upstream: BodyInspector | undefined,
  ) {
    this.#req = req;
    this.#res = res;
    this.#pipeline = pipeline;
    this.#info = info;
    this.#state = state;
    const onChunk: Push = (chunk, encoding) => this.#onChunk(chunk, encoding);
    if (upstream === undefined) {
      const arrival: Arrival = { startedAt: Date.now(), unreadSince: 0, heldSince: 0, heldMs: 0, endedAt: 0 };
      const push = req.push.bind(req);
      // A chunk that lands in an empty buffer is the oldest unread one until the reader has
      // taken everything: how long it waited tells a stuck handler from a late burst.
      this.#push = (chunk, encoding) => {
        if (chunk === null) arrival.endedAt = Date.now();
        else if (req.readableLength === 0) arrival.unreadSince = Date.now();
        const more = push(chunk, encoding);
        // A full buffer: Node's parser reads no more from the socket until the reader asks for more.
        if (!more && chunk !== null && arrival.heldSince === 0) arrival.heldSince = Date.now();
        return more;
      };
      // The reader asks for more: the parser reads the socket again, and the client is held back
      // no longer. (Until the next push instead, a client that filled the buffer once and then
      // paused had its own pause counted as the handler's.)
      const read = req._read.bind(req);
      req._read = (size) => {
        if (arrival.heldSince !== 0) {
          arrival.heldMs += Date.now() - arrival.heldSince;
          arrival.heldSince = 0;
        }
        read(size);
      };
      this.#arrival = arrival;
      req.push = onChunk;
    } else {
      this.#push = upstream.#push;
      this.#arrival = upstream.#arrival;
      upstream.#push = onChunk;
    }
    inspectors.set(req, this);
  }

  /** The body bytes waiting unread in the request stream, and how long the oldest has waited. */
  unread(): UnreadRequest {
    const req = this.#req;
    const bytes = req.readableLength;
    return { bytes, forMs: bytes === 0 ? 0 : Date.now() - this.#arrival.unreadSince, limit: req.readableHighWaterMark };
  }

  /** When the body ended, and how long the handler held the client back; true when its end came unseen. */
  finished(): FinishedRequest | true {
    const { startedAt, endedAt, heldMs } = this.#arrival;
    return endedAt === 0 ? true : { forMs: Date.now() - endedAt, sendingMs: endedAt - startedAt, heldMs };
  }

  /** Checks the held chunks with the hooks; `false` when one of them was refused. */
  allow(): boolean {
    if (this.#phase !== 'pending') return this.#phase === 'allowed';
    this.#phase = 'allowed';
    const held = this.#held;
    this.#held = [];
    this.#outbox = [];
    for (const { chunk, encoding } of held) {
      this.#onChunk(chunk, encoding);
      if (!this.#isAllowed()) return false;
    }
    return true;
  }

  /** Passes on the chunks `allow()` checked. */
  flush(): void {
    const outbox = this.#outbox ?? [];
    this.#outbox = undefined;
    for (const { chunk, encoding } of outbox) {
      if (!this.#isAllowed()) return;
      this.#push(chunk, encoding);
    }
  }

  // A method, not a field test: `#onChunk` changes the phase behind the compiler's back.
  #isAllowed(): boolean {
    return this.#phase === 'allowed';
  }

  /** Refused before the handler ran: the rest of the body is discarded. */
  refuse(): void {
    this.#phase = 'dropped';
    this.#held = [];
    this.#closeAfterAnswer();
  }

  #onChunk(chunk: unknown, encoding: BufferEncoding | undefined): boolean {
    // A deadline or idle limit answered the request meanwhile.
    if (this.#phase === 'allowed' && this.#state.endedEarly) this.#cut();
    switch (this.#phase) {
      case 'dropped':
        return chunk === null ? this.#push(null) : true;
      case 'cut':
        return true;
      case 'pending':
        this.#held.push({ chunk, encoding });
        return false;
      case 'allowed':
        break;
    }
    try {
      if (chunk === null) this.#pipeline.inboundEnd(this.#info, this.#state);
      else this.#pipeline.message(chunk, this.#info, this.#state, chunkBytes(chunk, encoding));
    } catch (error) {
      this.#cut();
      this.#state.end(asSecurityError(error));
      return true;
    }
    if (this.#outbox !== undefined) {
      // Checked before `flush()`: kept in order behind the released ones.
      this.#outbox.push({ chunk, encoding });
      return false;
    }
    return this.#push(chunk, encoding);
  }

  #cut(): void {
    this.#phase = 'cut';
    this.#held = [];
    this.#outbox = undefined;
    // A body still arriving: the connection is closed after the answer, and the reader fails
    // then. Destroying it here could reset the connection before the client has read the
    // answer (unread bytes of its upload make the kernel send a reset). A body that has fully
    // arrived leaves nothing unread: the stream is destroyed once the answer is out.
    if (!this.#req.complete) {
      closeAfterAnswer(this.#req, this.#res);
      return;
    }
    if (!this.#res.headersSent) this.#res.setHeader('connection', 'close');
    const destroy = (): void => {
      this.#req.destroy(new Error('the request body was cut off by a fluxguard control'));
    };
    if (this.#res.writableFinished) destroy();
    else this.#res.once('finish', destroy);
  }

  #closeAfterAnswer(): void {
    if (bodyStillComing(this.#req)) closeAfterAnswer(this.#req, this.#res);
  }
}

interface Arrival {
  /** When the pipeline took the request. */
  readonly startedAt: number;
  unreadSince: number;
  /** Since when the buffer has been full (0: it is not), and how long it was full before. */
  heldSince: number;
  heldMs: number;
  /** When the body's end came (0: not yet). */
  endedAt: number;
}

/**
 * Whether `req` has its whole body, and then when it ended and how long the handler held the
 * client back (see `blameUnfinishedRequest`); only `true` when no pipeline saw the end.
 *
 * @internal
 */
export function requestEnd(req: IncomingMessage): FinishedRequest | boolean {
  if (!req.complete) return false;
  return inspectors.get(req)?.finished() ?? true;
}

/**
 * The body bytes waiting unread in `req` (see `blameUnfinishedRequest`); only their count when
 * no pipeline inspected the body, which tells nothing of when they came.
 *
 * @internal
 */
export function unreadBody(req: IncomingMessage): UnreadRequest | number {
  return inspectors.get(req)?.unread() ?? req.readableLength;
}

interface Chunk {
  readonly chunk: unknown;
  readonly encoding: BufferEncoding | undefined;
}

function asSecurityError(error: unknown): SecurityError {
  return isSecurityError(error) ? error : new SecurityError('internal', { cause: error });
}

// `path` is the concrete path as the router matches it (mount path included), not a route
// pattern: the controls run before routing, and rules are matched against it.
function buildCallInfo(req: Request, state: CallState, path: string): CallInfo {
  const certificate = getClientCertificate(req);
  return new StateCallInfo(
    state,
    'http',
    httpOperation(req.method, path),
    peerOf(req),
    certificate,
    new RawHeaders(req.rawHeaders),
    certificate === undefined ? certificateErrorOf(req) : undefined,
  );
}

/**
 * Node's verification code of the client certificate the request's connection presented and the
 * TLS stack refused (per-operation mode), for the audit line of a refusal; `undefined` otherwise.
 * Only an unauthorized connection is looked at, and only once (see `untrustedCertificateError`).
 */
function certificateErrorOf(req: IncomingMessage): string | undefined {
  const socket: unknown = req.socket;
  return socket instanceof TLSSocket && !socket.authorized ? untrustedCertificateError(socket) : undefined;
}

/**
 * Case-insensitive, read-only view of the request headers, read from `rawHeaders` as the client
 * sent them: repeated headers stay separate (Node keeps only the first of two Authorization
 * headers in `headers`, and the verifier must see both to refuse the request). A scan of the
 * raw list, not `headersDistinct`: building that object costs every request a few
 * microseconds, and a request asks for one or two names.
 */
class RawHeaders implements HeaderReader {
  readonly #raw: readonly string[];

  constructor(raw: readonly string[]) {
    this.#raw = raw;
  }

  *entries(): Iterable<readonly [string, string]> {
    for (let i = 0; i + 1 < this.#raw.length; i += 2) {
      yield [(this.#raw[i] ?? '').toLowerCase(), this.#raw[i + 1] ?? ''];
    }
  }

  get(name: string): string | undefined {
    const lower = name.toLowerCase();
    for (let i = 0; i + 1 < this.#raw.length; i += 2) {
      if (sameName(this.#raw[i], lower)) return this.#raw[i + 1];
    }
    return undefined;
  }

  getAll(name: string): readonly string[] {
    const lower = name.toLowerCase();
    let values: string[] | undefined;
    for (let i = 0; i + 1 < this.#raw.length; i += 2) {
      if (sameName(this.#raw[i], lower)) (values ??= []).push(this.#raw[i + 1] ?? '');
    }
    return values ?? NO_VALUES;
  }
}

const NO_VALUES: readonly string[] = Object.freeze([]);

/** A raw header name against a lowercase one; the length first, so most names cost no copy. */
function sameName(raw: string | undefined, lower: string): boolean {
  return raw?.length === lower.length && (raw === lower || raw.toLowerCase() === lower);
}

// Identity is a property of the connection, not of the request: read and parse the peer
// certificate once per TLS socket. `null` records "no verified certificate on this socket".
const socketIdentities = new WeakMap<TLSSocket, CertificateIdentity | null>();

/**
 * The verified client certificate of the request's connection, or `undefined` when there is
 * none: a plain-HTTP socket, no certificate, a certificate the TLS stack did not verify
 * (per-operation mode lets such a handshake complete, and Node still reports the subject an
 * untrusted self-signed certificate claims: it is never read), or one that has expired since
 * the connection was made. Cached per connection.
 *
 * The cache assumes the peer certificate of a connection never changes: `createSecureServer`
 * disables TLS renegotiation; disable it on a server of your own too
 * (`server.on('secureConnection', (s) => s.disableRenegotiation())`).
 *
 * @throws SecurityError `unauthenticated` when a verified certificate cannot be parsed.
 *
 * @example
 * ```ts
 * import { getClientCertificate } from '@fluxguard/express';
 * app.get('/v1/whoami', (req, res) => {
 *   res.json({ spiffeId: getClientCertificate(req)?.spiffeId ?? null });
 * });
 * ```
 */
export function getClientCertificate(req: IncomingMessage): CertificateIdentity | undefined {
  const socket: unknown = req.socket;
  if (!(socket instanceof TLSSocket)) return undefined;
  let identity = socketIdentities.get(socket);
  if (identity === undefined) {
    identity = identityFromTlsSocket(socket) ?? null;
    socketIdentities.set(socket, identity);
  }
  // A keep-alive connection may outlive its client certificate.
  return identity !== null && isIdentityCurrent(identity) ? identity : undefined;
}

/** The bytes of a body chunk as Node's parser pushed it (a `Buffer`; a string only with an encoding set). */
function chunkBytes(chunk: unknown, encoding: BufferEncoding | undefined): number | undefined {
  if (Buffer.isBuffer(chunk) || chunk instanceof Uint8Array) return chunk.byteLength;
  return typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : undefined;
}
