import type { Application, NextFunction, Request, Response } from 'express';
import { ConfigurationError, SecurityError, isSecurityError } from '@fluxguard/core';
import { CallState, httpOperation, isPlainPath } from '@fluxguard/core/adapter';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import parseUrl from 'parseurl';
import { contestedCalls, keptForStandIn, stateOf } from './context.js';
import { translateExpressError } from './error-handler.js';
import { parentOf, routingChangeCount, stackLength } from './app-routing.js';
import { isExpressApp, routerOf, type RouterEntry } from './routes.js';

/** A route's own `dispatch` (the `router` package's `Route.prototype.dispatch`), or a layer's `handleRequest`. */
type Dispatch = (this: object, req: Request, res: Response, done: NextFunction) => unknown;

/** The test of a pipeline's controls: `route` is the name a route is reached under, `undefined` for a middleware. */
type MayServe = (operation: string, route: string | undefined, current?: string) => boolean;

/** What one pipeline asks of a route or middleware it checked: the route's names (`METHOD /path`; none for a middleware) and the controls' test. */
interface HandOverCheck {
  readonly names: readonly string[];
  readonly mayServe: MayServe;
}

/**
 * The checks on each route object and each middleware's layer: for each pipeline that checked
 * the app it is in, one for each path the app is mounted at (a request reaches it below one of
 * them).
 */
const checks = new WeakMap<object, Map<object, Map<string, HandOverCheck>>>();

/**
 * Refusals passed to `next(err)` by fluxguard's middleware mounted on their own (`controls()`,
 * `authorize()`, `validate()`, ...), by request, by response and by call state: an error
 * middleware of the app that calls `next()` resumes the request into the layers behind it, which
 * the refusal was to keep it from. All three are keys, since a function of the app may run an
 * app on stand-ins (a `Proxy`) of the request, the response or both, and the layers behind it
 * get the real ones; the call state is the same object seen through any of them.
 */
const passedOn = new WeakMap<object, unknown>();

/**
 * How many calls with a refusal passed on have not ended yet: while none has, a layer asks
 * nothing more.
 */
let openRefusals = 0;

/** The refusal passed on for the request of `req` and `res`, if any ({@link passedOn}). */
function refusalOf(req: Request, res: Response): { refusal: unknown } | undefined {
  if (openRefusals === 0) return undefined;
  if (passedOn.has(req)) return { refusal: passedOn.get(req) };
  if (passedOn.has(res)) return { refusal: passedOn.get(res) };
  const state = stateOf(req);
  if (state !== undefined && passedOn.has(state)) return { refusal: passedOn.get(state) };
  return undefined;
}

/**
 * Passes a refusal (or a failure) of fluxguard's middleware to `next(err)`, as Express
 * middleware do, and remembers it: wherever an error middleware resumes the request (`next()`
 * without the error), in this app or in any app it is reached from, the request is answered
 * with it ({@link guardLayerPrototypes}). `state` is the call the refusing middleware decided
 * (by default the request's): looked up again when an asynchronous check refuses, a stand-in
 * may stand for another call by then.
 *
 * @internal
 */
export function passRefusalOn(error: unknown, req: Request, next: NextFunction, state = stateOf(req)): void {
  // Not an object that stands in for calls that overlap: it would refuse the others with this one's refusal.
  if (state !== undefined) remember(error, contestedCalls(req).length > 0 ? [state] : [req, state], state);
  else if (keptForStandIn(req)) {
    // One object the app fills anew for every request, taken in for calls that overlap, stands
    // for none of them: the refusal is each such call's. Keyed by the object, it outlived them
    // all, and refused every later request through it with one client's refusal.
    for (const call of contestedCalls(req)) remember(error, [call], call);
  } else {
    // Express's own `req.res` (the stand-in's, when the app ran on one), only for a request with
    // no call state: a response made up for a sub-app may be shared by every request, and keyed
    // by it, one client's refusal was applied to another's request while the refusing call
    // lasted.
    const res: unknown = req.res;
    remember(error, typeof res === 'object' && res !== null ? [req, res] : [req], res);
  }
  if (req.method === 'OPTIONS' && typeof req.res === 'object') refuseAllowAnswer(req.res, error);
  guardLayerPrototypes(req);
  next(error);
}

/**
 * Keys `error` by each of `keys` not keyed yet, until the call ends: a response or a stand-in
 * the app uses again for the next request (one made up for a sub-app, shared) must not refuse
 * that request with this one's refusal. Until the call ends, not until `req.res` says it closed:
 * a response made up for a sub-app could say so at once, and the layers behind would ask
 * nothing. Without a call state (`until` a response), until that response closes; one that never
 * says so only keeps the layers asking.
 */
function remember(error: unknown, keys: readonly object[], until: unknown): void {
  const added = keys.filter((key) => !passedOn.has(key));
  if (added.length === 0) return;
  // None known: the first refusal of this call.
  const fresh = added.length === keys.length;
  for (const key of added) passedOn.set(key, error);
  if (fresh) openRefusals += 1;
  const forget = (): void => {
    for (const key of added) if (passedOn.get(key) === error) passedOn.delete(key);
    if (fresh) openRefusals -= 1;
  };
  if (until instanceof CallState) until.addRelease(forget);
  else if (until instanceof EventEmitter) until.once('close', forget);
}

/**
 * A router answers an `OPTIONS` request no route handles itself with the methods of the routes
 * that match it (`Allow`), once its stack runs out: no layer of those routes runs, so none
 * answers a resumed refusal, and the answer told a route that exists (`GET, DELETE`) from one
 * that does not (the refusal). Setting `Allow` on this response throws the refusal instead, which
 * the router hands on as an error (every copy catches what its answer throws).
 */
function refuseAllowAnswer(res: object, refusal: unknown): void {
  const setHeader: unknown = (res as { setHeader?: unknown }).setHeader;
  if (typeof setHeader !== 'function') return;
  Object.defineProperty(res, 'setHeader', {
    configurable: true,
    writable: true,
    value: function allowRefused(this: Response, name: unknown, value: unknown): unknown {
      if (typeof name === 'string' && name.toLowerCase() === 'allow' && !this.headersSent) throw refusal;
      return Reflect.apply(setHeader as (...args: unknown[]) => unknown, this, [name, value]);
    },
  });
}

/** The layer prototypes whose methods {@link guardPrototype} has wrapped. */
const guardedPrototypes = new WeakSet<object>();

/** The state of each app's routing (its stack length and change count) when its layers' prototypes were last collected. */
const prototypesCollected = new WeakMap<object, string>();

type HandleRequest = (this: object, req: Request, res: Response, next: NextFunction) => unknown;
type HandleError = (this: object, error: unknown, req: Request, res: Response, next: NextFunction) => unknown;

/** The names a layer's two methods have: in the `router` package 2 (Express 5), and in 1 and Express 4's own router. */
const LAYER_METHODS = [
  ['handleRequest', 'handleError'],
  ['handle_request', 'handle_error'],
] as const;

/**
 * Wraps the two methods every layer of every router the request may pass runs: the layer
 * prototype of the app's router (shared by all the apps, routers and routes made with the same
 * `router` package), and that of any router of another copy found in its routing (Express 4's
 * router, or another version of the package, whose layers have a prototype of their own); and
 * the routers' own `handle`, for a router the app's routing does not hold (one a function of
 * the app builds per request and runs). Collected again when the app's routing changes.
 */
function guardLayerPrototypes(req: Request): void {
  // The route running the middleware that refused (a route's own handlers): its router may be
  // one no stack holds, run by a function of the app.
  const routeStack = (req.route as { stack?: unknown } | undefined)?.stack;
  const routeLayer: unknown = Array.isArray(routeStack) ? routeStack[0] : undefined;
  if (typeof routeLayer === 'object' && routeLayer !== null) {
    const proto: unknown = Object.getPrototypeOf(routeLayer);
    if (typeof proto === 'object' && proto !== null) guardPrototype(proto);
  }
  guardLoadedRouterCopies();
  const app = req.app as Application | undefined;
  if (app === undefined) return;
  const state = `${stackLength(app)}/${routingChangeCount(app)}`;
  if (prototypesCollected.get(app) === state) return;
  prototypesCollected.set(app, state);
  const { layers, routers } = routingPrototypes(app);
  for (const proto of layers) guardPrototype(proto);
  for (const proto of routers) guardRouterPrototype(proto);
}

/**
 * The files of the `router` package (every version) and of Express 4's own router, as the
 * module cache names them: `index.js` exports the router, `layer.js` the layer.
 */
const ROUTER_FILE = /[\\/](?:router|express[\\/]lib[\\/]router)[\\/](?:lib[\\/])?(index|layer)\.js$/;

/** The module cache's size when {@link guardLoadedRouterCopies} last read it, and when. */
let modulesRead = -1;
let modulesReadAt = 0;
const requireHere = createRequire(import.meta.url);

/**
 * Wraps the layer and router prototypes of every copy of the router package loaded in the
 * process (Express 4's router, `router@1`, another version): a router of another copy that
 * the app's routing does not show (a sub-app mounted in it, which has no `parent` link; one a
 * function holds in a closure) has prototypes of its own, which no walk of the app finds. Read
 * from the module cache again when it has grown, at most once a second (a refusal flood does
 * not list it each time).
 */
function guardLoadedRouterCopies(): void {
  const now = Date.now();
  if (modulesRead !== -1 && now - modulesReadAt < 1_000) return;
  modulesReadAt = now;
  const cache = requireHere.cache;
  const files = Object.keys(cache);
  if (files.length === modulesRead) return;
  modulesRead = files.length;
  for (const file of files) {
    const kind = ROUTER_FILE.exec(file)?.[1];
    if (kind === undefined) continue;
    const exported: unknown = cache[file]?.exports;
    if (typeof exported !== 'function') continue;
    const proto: unknown = (exported as { prototype?: unknown }).prototype;
    if (kind === 'layer') {
      if (typeof proto === 'object' && proto !== null) guardPrototype(proto);
      continue;
    }
    // The router package's `Router.prototype` holds `handle`; Express 4's router module is itself the prototype its routers get.
    const holder = [proto, exported].find(holdsRouterMethods);
    if (holder !== undefined) guardRouterPrototype(holder);
  }
}

/** The most stacks {@link routingPrototypes} reads of one app's routing: a bound on a routing built in a loop. */
const MAX_STACKS = 10_000;

/**
 * The prototypes of the layers in `app`'s routing and in the apps it is mounted in (their
 * routers' stacks, those of the routers mounted in them and of their routes, and those of apps
 * given as a route's handler), and the prototypes that hold the routers' `handle`.
 */
function routingPrototypes(app: Application): { layers: Set<object>; routers: Set<object> } {
  const layers = new Set<object>();
  const routers = new Set<object>();
  const seen = new Set<unknown>();
  const pending: unknown[] = [];
  for (let at: Application | undefined = app; at !== undefined; at = parentOf(at)) pending.push(routerOf(at));
  while (pending.length > 0 && seen.size < MAX_STACKS) {
    const holder = pending.pop() as { stack?: unknown } | undefined;
    const stack = holder?.stack;
    if (!Array.isArray(stack) || seen.has(stack)) continue;
    seen.add(stack);
    const handling = typeof holder === 'function' ? handlePrototypeOf(holder) : undefined;
    if (handling !== undefined) routers.add(handling);
    for (const layer of stack as unknown[]) {
      if (typeof layer !== 'object' || layer === null) continue;
      const proto: unknown = Object.getPrototypeOf(layer);
      if (typeof proto === 'object' && proto !== null) layers.add(proto);
      const { route, handle } = layer as { route?: unknown; handle?: unknown };
      pending.push(route, handle);
      // An app given as a route's handler: its own router.
      if (typeof handle === 'function' && isExpressApp(handle)) pending.push((handle as { router?: unknown }).router);
    }
  }
  return { layers, routers };
}

/**
 * The object on a router's prototype chain that holds its `handle`: the router package's
 * `Router.prototype`, itself a function (so that a router can be called).
 */
function handlePrototypeOf(router: object): object | undefined {
  for (let proto: object | null = Object.getPrototypeOf(router) as object | null; proto !== null;) {
    if (holdsRouterMethods(proto)) return proto;
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return undefined;
}

/** Whether `candidate` itself holds a router's `handle`, `route` and `use`: a router prototype of some copy. */
function holdsRouterMethods(candidate: unknown): candidate is object {
  return (
    (typeof candidate === 'object' || typeof candidate === 'function') &&
    candidate !== null &&
    Object.hasOwn(candidate, 'handle') &&
    Object.hasOwn(candidate, 'route') &&
    Object.hasOwn(candidate, 'use')
  );
}

/** The router prototypes whose `handle` {@link guardRouterPrototype} has wrapped. */
const guardedRouters = new WeakSet<object>();

/**
 * Wraps a router prototype's `handle` (once): a refused request entering a router answers its
 * refusal there. A router a function of the app built for the request (and so in no stack
 * fluxguard could walk) ran its param callbacks for a request whose refusal that function had
 * swallowed, before its first layer answered the refusal: a callback that loads a record
 * answered 404 for one that does not exist.
 */
function guardRouterPrototype(proto: object): void {
  if (guardedRouters.has(proto)) return;
  const { handle } = proto as { handle?: unknown };
  if (typeof handle !== 'function') return;
  guardedRouters.add(proto);
  Object.defineProperty(proto, 'handle', {
    configurable: true,
    writable: true,
    value: answeringRefusals(handle as HandleRequest),
  });
}

/** `run` (a router's `handle`, a layer's `handleRequest`) for a request not refused; a refused one is answered with its refusal. */
function answeringRefusals(run: HandleRequest): HandleRequest {
  return function refusalChecked(this: object, req: Request, res: Response, next: NextFunction): unknown {
    const passed = refusalOf(req, res);
    if (passed === undefined) return run.call(this, req, res, next);
    answerRefusal(req, passed.refusal, next);
    return undefined;
  };
}

/**
 * Wraps a layer prototype's two methods (once): an error middleware that resumes a refused
 * request (`next()`, `next('route')` or `next('router')`) has it answered with its refusal
 * instead, and a layer reached after a refusal anyway (a function that swallowed the error of
 * an app it ran) answers it too. The apps a request passed through cannot be read from the app
 * it is in (an app given as a route handler or mounted through a router has no `parent`), so
 * every layer is guarded, each at the cost of one look-up.
 */
function guardPrototype(proto: object): void {
  if (guardedPrototypes.has(proto)) return;
  const methods = proto as Record<string, unknown>;
  const names = LAYER_METHODS.find(
    ([request, error]) => typeof methods[request] === 'function' && typeof methods[error] === 'function',
  );
  if (names === undefined) return;
  guardedPrototypes.add(proto);
  const [requestName, errorName] = names;
  const failure = methods[errorName] as HandleError;
  Object.defineProperty(proto, requestName, {
    configurable: true,
    writable: true,
    value: answeringRefusals(methods[requestName] as HandleRequest),
  });
  Object.defineProperty(proto, errorName, {
    configurable: true,
    writable: true,
    value: function resumeChecked(this: object, error: unknown, req: Request, res: Response, next: NextFunction) {
      const passed = refusalOf(req, res);
      if (passed === undefined) return failure.call(this, error, req, res, next);
      const resumeRefused: NextFunction = (err?: unknown) => {
        // The router reads these as "carry on": the request would be served after all.
        if (!err || err === 'route' || err === 'router') answerRefusal(req, passed.refusal, next);
        else next(err);
      };
      return failure.call(this, error, req, res, resumeRefused);
    },
  });
}

/** A function of more than three parameters, which Express's router runs only for an error. */
function isErrorHandler(handle: object): boolean {
  const { length } = handle as { length?: unknown };
  return typeof length !== 'number' || length > 3;
}

/**
 * Makes every route and middleware among `entries` (an app's, walked below `prefix`) ask, as it
 * is reached, whether it may serve the request: the controls decided the request for the first
 * route that matched it, and a handler that calls `next()` hands it to the next one, which may
 * be another rule's, as does a middleware that rewrites `req.method` or `req.url` after the
 * controls (a rewritten request may reach a file server or a middleware that answers, as well as
 * a route). `mayServe` is the pipeline's `handOver` test for the app's routes; `owner` keys it,
 * so that another pipeline in the same app keeps its own. fluxguard's own middleware (`isOwn`)
 * and error handlers are left as they are. A route or middleware that may not serve the request
 * ends it with fluxguard's own `500` (never through an error handler of the app), and the line
 * says why.
 *
 * @internal
 */
export function guardHandOvers(
  entries: readonly RouterEntry[],
  prefix: string,
  owner: object,
  mayServe: MayServe | undefined,
  isOwn: (handle: object) => boolean,
  appRouter: object | undefined,
): void {
  // A router's param callbacks (`app.param`) run as a layer matches, before the layer itself: a
  // request resumed by a function rather than an error middleware reaches them first.
  const routers = [appRouter, ...entries.map((entry) => (entry.kind === 'router' ? entry.handle : undefined))];
  for (const router of routers) if (router !== undefined) guardParams(router);
  if (mayServe === undefined) return;
  const names = new Map<object, string[]>();
  for (const router of routers) if (router !== undefined && paramRouters.has(router)) names.set(router, []);
  for (const entry of entries) {
    if (entry.kind === 'middleware') {
      // An error handler is only run for an error, which no rewrite makes.
      if (!isOwn(entry.handle) && !isErrorHandler(entry.handle) && !names.has(entry.layer)) {
        names.set(entry.layer, []);
      }
      continue;
    }
    if (entry.kind !== 'route' || entry.opaque) continue;
    // The controls name a HEAD request as GET: a `.head()` route serves GET's operations.
    const name = entry.route.startsWith('HEAD ') ? `GET ${entry.route.slice(5)}` : entry.route;
    const list = names.get(entry.handle);
    if (list === undefined) names.set(entry.handle, [name]);
    else list.push(name);
  }
  for (const [guarded, guardedNames] of names) {
    let byOwner = checks.get(guarded);
    if (byOwner === undefined) {
      const guarding =
        paramRouters.has(guarded) ||
        guardEntry(guarded, guardedNames.length === 0 ? requestMethodOf(guarded) : 'dispatch');
      if (!guarding) continue;
      byOwner = new Map();
      checks.set(guarded, byOwner);
    }
    let byPrefix = byOwner.get(owner);
    if (byPrefix === undefined) byOwner.set(owner, (byPrefix = new Map<string, HandOverCheck>()));
    byPrefix.set(prefix, { names: guardedNames, mayServe });
  }
}

/** The name of the method a layer runs its function with: Express 4's router and the `router` package 1 spell it `handle_request`. */
function requestMethodOf(layer: object): 'handleRequest' | 'handle_request' {
  return typeof (layer as { handle_request?: unknown }).handle_request === 'function'
    ? 'handle_request'
    : 'handleRequest';
}

/** The routes and layers whose `dispatch` or `handleRequest` {@link guardEntry} has wrapped. */
const entriesGuarded = new WeakSet<object>();

/**
 * Puts the hand-over check in front of a route's own `dispatch`, or of a layer's
 * `handleRequest` (once); `false` when `guarded` has no such method.
 */
function guardEntry(guarded: object, method: 'dispatch' | 'handleRequest' | 'handle_request'): boolean {
  if (entriesGuarded.has(guarded)) return true;
  const own: unknown = (guarded as Record<string, unknown>)[method];
  if (typeof own !== 'function') return false;
  entriesGuarded.add(guarded);
  const run = own as Dispatch;
  Object.defineProperty(guarded, method, {
    configurable: true,
    writable: true,
    value: function handOverChecked(this: object, req: Request, res: Response, done: NextFunction): unknown {
      if (method === 'dispatch' && skipsMethod(this, req.method)) return run.call(this, req, res, done);
      if (handedOver(this, req, res, done)) return run.call(this, req, res, done);
      return undefined;
    },
  });
  return true;
}

/**
 * Whether `route` runs nothing for `method`: the router hands a HEAD request to every route of
 * its path, whatever their methods (a `.post()` route before the `.get()` one), and such a route
 * passes it on untouched. Checked as a hand-over, a monitor's HEAD got a 500.
 */
function skipsMethod(route: object, method: string): boolean {
  const { _handlesMethod: handles, stack } = route as { _handlesMethod?: unknown; stack?: unknown };
  if (typeof handles !== 'function' || (handles as (method: string) => boolean).call(route, method)) return false;
  // A layer with no method (one pushed into the stack by hand) runs for every method.
  return Array.isArray(stack) && stack.every((layer: { method?: unknown }) => typeof layer.method === 'string');
}

/** The param callbacks already checked. */
const checkedParams = new WeakSet<object>();

/** The routers whose param callbacks are checked, those their `param` adds later too. */
const paramRouters = new WeakSet<object>();

type ParamCallback = (
  this: unknown,
  req: Request,
  res: Response,
  next: NextFunction,
  value: unknown,
  name: string,
) => unknown;

/**
 * Puts the rewrite check in front of each of a router's param callbacks (`app.param`), now and
 * as they are added: the router runs them as a layer matches, before the layer, so a request
 * rewritten to another rule's path had them load (or answer) for it. Checked as a middleware
 * is: the request must still name an operation of the rule that decided it. `false` for a
 * router without `params`.
 */
function guardParams(router: object): boolean {
  const params = (router as { params?: unknown }).params;
  if (typeof params !== 'object' || params === null) return false;
  const checked = (callback: unknown): unknown => {
    if (typeof callback !== 'function' || checkedParams.has(callback)) return callback;
    const own = callback as ParamCallback;
    const wrapped: ParamCallback = function paramChecked(req, res, next, value, name) {
      // The router names the route it is about to run (`req.route`) before its callbacks: held to
      // that route's check, a `next()` from another rule's route does not reach them either.
      const route = req.route as object | undefined;
      const guarded = route !== undefined && checks.has(route) ? route : router;
      if (handedOver(guarded, req, res, next, true)) return own.call(this, req, res, next, value, name);
      return undefined;
    };
    checkedParams.add(wrapped);
    return wrapped;
  };
  for (const callbacks of Object.values(params as Record<string, unknown>)) {
    if (Array.isArray(callbacks)) callbacks.forEach((callback, i) => (callbacks[i] = checked(callback)));
  }
  const param = (router as { param?: unknown }).param;
  const first = !paramRouters.has(router);
  paramRouters.add(router);
  if (first && typeof param === 'function') {
    Object.defineProperty(router, 'param', {
      configurable: true,
      writable: true,
      value: function paramAdded(this: unknown, name: unknown, callback: unknown): unknown {
        return Reflect.apply(param as (...args: unknown[]) => unknown, this, [name, checked(callback)]);
      },
    });
  }
  return true;
}

/**
 * Whether `guarded` may serve `req`; if not, the request is answered here and `false` returned.
 * `param` says a param callback is asking, for the line.
 */
function handedOver(guarded: object, req: Request, res: Response, done: NextFunction, param = false): boolean {
  // Refused once, refused wherever an error middleware resumes it.
  const refusal = refusalOf(req, res)?.refusal ?? handOverRefusal(guarded, req, param);
  if (refusal === undefined) return true;
  answerRefusal(req, refusal, done);
  return false;
}

/**
 * Answers `req` with `refusal` as fluxguard answers a refusal: passed to `done`, it reached an
 * error handler of the app, which showed its text, and no line was written. Without fluxguard's
 * state on the request (no `before`), it goes on to `done` as an error, never as a resume.
 */
function answerRefusal(req: Request, refusal: unknown, done: NextFunction): void {
  const state = stateOf(req);
  if (state === undefined) {
    done(refusal);
    return;
  }
  // body-parser's own refusals (a malformed body) read as the error handler reads them.
  const translated = translateExpressError(refusal);
  state.end(isSecurityError(translated) ? translated : new SecurityError('internal', { cause: refusal }));
}

function handOverRefusal(guarded: object, req: Request, param: boolean): ConfigurationError | undefined {
  const operation = stateOf(req)?.callInfo?.operation;
  const byOwner = checks.get(guarded);
  if (operation === undefined || byOwner === undefined) return undefined;
  const current = currentOperation(req);
  // A rewritten path is held to what the controls hold a client's to: `/static/public/../private`
  // was decided by the public rule and resolved by `express.static` into the private tree.
  if (current !== operation && !isPlainPath(current)) {
    return new ConfigurationError(
      'a middleware after the controls rewrote the request to a path with a dot segment or an encoded character, which rules cannot read as whatever serves it does: rewrite before the controls',
    );
  }
  for (const byPrefix of byOwner.values()) {
    let allowed = false;
    for (const { names, mayServe } of byPrefix.values()) {
      if (names.length === 0) {
        if (mayServe(operation, undefined, current)) allowed = true;
        continue;
      }
      // One route object holds every method of an `app.route()` chain: only the names of the
      // method the request has now are its own (a POST rewritten to DELETE reaches `.delete()`).
      const own =
        names.length === 1
          ? names
          : names.filter((name) => name.startsWith('* ') || name.startsWith(`${methodOf(current)} `));
      if ((own.length > 0 ? own : names).some((name) => mayServe(operation, name, current))) allowed = true;
    }
    if (!allowed) {
      const [first] = byPrefix.values();
      const route = first?.names[0];
      const reached = param ? `a param callback (app.param) of the route "${route}"` : `the route "${route}"`;
      return new ConfigurationError(
        route === undefined
          ? `${nameOf(guarded)} was reached by a request that a middleware after the controls rewrote (its method or URL) to an operation of another rule: rewrite before the controls`
          : `${reached} was reached by a request another rule decided: a route passed it on (next()), or a middleware after the controls rewrote its method or URL; answer in the route that matched, and rewrite before the controls`,
      );
    }
  }
  return undefined;
}

/** What was reached, for the line: a middleware by its function's name (`serveStatic`), or a router's param callback. */
function nameOf(guarded: object): string {
  if (paramRouters.has(guarded)) return 'a param callback (app.param)';
  const name = (guarded as { handle?: { name?: unknown } }).handle?.name;
  return `a middleware (${typeof name === 'string' && name !== '' ? name : '(anonymous)'})`;
}

/**
 * The operation the request names as its route or middleware sees it: its method and path, as a
 * middleware may have rewritten them, read as the controls read them (`parseurl`'s path: an
 * absolute-form target's scheme and host, the query and a fragment are no part of it).
 */
function currentOperation(req: Request): string {
  return httpOperation(req.method, `${req.baseUrl}${parseUrl(req)?.pathname ?? ''}`);
}

function methodOf(operation: string): string {
  return operation.slice(0, operation.indexOf(' '));
}
