import { IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ConfigurationError, type Principal, type RequestContext, type SecurityError } from '@fluxguard/core';
import { CallState, missingContextError, type CallStateInit } from '@fluxguard/core/adapter';
import { bodyStillComing, closeLingering } from './request-body.js';

/**
 * What fluxguard knows about one HTTP request, available to every later middleware and
 * handler as `req.fluxguard`: core's `RequestContext`, the same as a gRPC handler gets.
 *
 * - `requestId`: the id sent back in `x-request-id` and written to every log line.
 * - `signal`: aborted when the request ends in any way (the client went away, the deadline
 *   passed, or the answer was sent); pass it to any long operation (file system, database,
 *   outgoing fetch) so that abandoned work stops early.
 * - `principal`: the verified caller, `undefined` until an authentication control of fluxguard
 *   has accepted a credential (or a middleware of yours called {@link setPrincipal}).
 * - `deadline`: the deadline a control set for the request, if any; `get(key)`: values that
 *   controls stored for the request.
 *
 * The object is attached by `requestId()` as a non-writable, non-configurable property:
 * `req.fluxguard = ...` and `req.fluxguard.principal = ...` both throw (and fail to compile).
 * Nothing in it is ever read from a client header.
 *
 * @example
 * ```ts
 * app.get('/v1/me', (req, res) => {
 *   const { requestId, principal } = req.fluxguard;
 *   res.json({ requestId, subject: principal?.subject ?? null });
 * });
 * ```
 */
export type FluxguardRequestContext = RequestContext;

declare global {
  // Express documents declaration merging on its global namespace as the way to type new
  // request properties; a module augmentation of express-serve-static-core would need that
  // package to be resolvable from every consumer.
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /**
       * fluxguard's per-request context; present once `requestId()` (or `fluxguard().before`)
       * has run. See {@link FluxguardRequestContext}.
       */
      readonly fluxguard: FluxguardRequestContext;
    }
  }
}

const PROPERTY = 'fluxguard';

/**
 * Writes the response headers the request's controls added (`RateLimit`, ...), once each, when
 * the pipeline has allowed the request or when an error answers it: a control that adds one
 * header per rule costs one `setHeader` per name, not one per rule.
 *
 * @internal
 */
export function writeControlHeaders(state: CallState | undefined, res: ServerResponse): void {
  const headers = state?.responseHeaders;
  if (headers === undefined || res.headersSent) return;
  for (const [name, value] of headers) res.setHeader(name, value);
}

/**
 * The call state of an HTTP request, with the request and response it was attached to: what
 * tells a stand-in of them (a copy, `Object.create`, a `Proxy`) from another call's objects, and
 * where a stand-in's call reads its body and sends its answer.
 *
 * @internal
 */
export class HttpCallState extends CallState {
  constructor(
    init: CallStateInit,
    /** The request Node made for the call. */
    readonly request: IncomingMessage,
    /** Its response. */
    readonly response: ServerResponse,
  ) {
    super(init);
  }
}

/**
 * The call state of a request, or `undefined` when `requestId()` has not run on it.
 *
 * @internal
 */
export function stateOf(req: IncomingMessage): CallState | undefined {
  // Most requests have no such property yet: `hasOwn` answers without allocating a descriptor.
  if (!Object.hasOwn(req, PROPERTY)) return linkedState(req);
  return ownState(req);
}

/**
 * The call state a stand-in for a request shares with it: inherited (`Object.create(req)`),
 * found through the response it carries (`req.res`, which Express sets on the request and a copy
 * `{ ...req }` takes along), or kept for it when an app took it in ({@link keepStandInState}).
 * The response comes first: an object the app fills anew for every request carries the response
 * of the call it was filled for last, and a call it was found for before is still kept.
 */
function linkedState(standIn: IncomingMessage): CallState | undefined {
  const inherited = inheritedState(standIn);
  if (inherited !== undefined) return inherited;
  const carried = stateOfCarried(standIn, (standIn as { res?: unknown }).res);
  if (carried !== undefined) return keepCall(standIn, carried);
  const kept = keptStates.get(standIn);
  return kept !== undefined && 'call' in kept && !kept.call.finished ? kept.call : undefined;
}

/**
 * The call state of the call `res` answers, when `res` is that call's response or a stand-in of
 * it (`Object.create(res)`, a `Proxy`): code that runs an app on a request of its own making and
 * the call's response runs it for that call. Found through the response's request (`res.req`,
 * a stand-in itself once an app took one in), and held to the response that call was attached
 * with: a response made up for a sub-app, shared by every request, says nothing of any call.
 */
function stateOfCarried(standIn: object, res: unknown): CallState | undefined {
  if (typeof res !== 'object' || res === null) return undefined;
  const original: unknown = (res as { req?: unknown }).req;
  if (typeof original !== 'object' || original === null || original === standIn) return undefined;
  let state: CallState | undefined;
  if (Object.hasOwn(original, PROPERTY)) state = ownState(original);
  else {
    state = inheritedState(original);
    const kept = state === undefined ? keptStates.get(original) : undefined;
    if (kept !== undefined && 'call' in kept) state = kept.call;
  }
  if (!(state instanceof HttpCallState) || state.finished) return undefined;
  return answersFor(res, state.response) ? state : undefined;
}

/**
 * Whether `candidate` is `response` or a stand-in of it: `Object.create(response)` inherits its
 * listeners, and a `Proxy` reads them through; a response made up for a sub-app has its own, or
 * none.
 */
function answersFor(candidate: object, response: object): boolean {
  if (candidate === response) return true;
  const events: unknown = (response as { _events?: unknown })._events;
  return typeof events === 'object' && events !== null && (candidate as { _events?: unknown })._events === events;
}

/** The call state `holder` has as its own property. */
function ownState(holder: object): CallState | undefined {
  // The descriptor, not `req.fluxguard`: a getter someone else defined must not run.
  const value: unknown = Object.getOwnPropertyDescriptor(holder, PROPERTY)?.value;
  return value instanceof CallState ? value : undefined;
}

/** How far up a stand-in's prototypes the request it stands in for is looked for. */
const STAND_IN_DEPTH = 32;

/**
 * The call state of the request a stand-in inherits from (`Object.create(req)`, as code that
 * runs an app or a router on a request of its own making does): the same call, so the same
 * principal and the same refusals. A plain request stops at `IncomingMessage.prototype`, after
 * the one or two prototypes Express gave it.
 */
function inheritedState(standIn: object): CallState | undefined {
  let holder = Object.getPrototypeOf(standIn) as object | null;
  for (let depth = 0; holder !== null && depth < STAND_IN_DEPTH; depth += 1) {
    if (holder === IncomingMessage.prototype) return undefined;
    if (Object.hasOwn(holder, PROPERTY)) return ownState(holder);
    holder = Object.getPrototypeOf(holder) as object | null;
  }
  return undefined;
}

/**
 * Why a request through one object that stands in for the requests of calls that overlap is
 * refused (logged, never sent).
 *
 * @internal
 */
export const SHARED_STAND_IN =
  'one object stood in for the requests of two calls at once (an app that fills a single object anew for every request, and hands it to a sub-app or router): it stands for neither, and each request through it is refused while both last; give every request its own stand-in (Object.create(req), or a copy made for it)';

/**
 * The call a stand-in was taken in for, and the responses it was taken in with for that call
 * (the call's, or one made up for a sub-app): an app or router within handed one of them runs
 * for that call.
 */
interface Kept {
  readonly call: CallState;
  readonly responses: object[];
}

/**
 * A stand-in taken in for calls that overlapped (or, with a response none of them gave, for a
 * request fluxguard cannot tell): it stands for none of them while one lasts.
 */
interface Contested {
  readonly calls: CallState[];
  /** Taken in for a request fluxguard cannot tell too, which may still be using it. */
  readonly unknown?: true;
}

/** The most responses {@link Kept} lists for one call: beyond, another is a request unknown. */
const MAX_KEPT_RESPONSES = 8;

/**
 * The call state each stand-in an app took in was found to share ({@link keepStandInState}).
 * Not a property of the stand-in: an app may use one object again for the next request, which
 * would then have kept the first request's call, principal and all.
 */
const keptStates = new WeakMap<object, Kept | Contested>();

/**
 * Keeps, for a stand-in, the call state of the request it stands in for (inherited, or found
 * through the response it carries or is handed with), found again each time an app or a router
 * takes it in: an Express app replaces the prototype of every request it handles
 * (`app.handle`), which would cut a stand-in off from that request, and from its refusals.
 * Returns the call it was taken in for, if known, and whether it stands for that call alone
 * ({@link keepCall}). Found for no call, it keeps what it had when handed a response it was
 * taken in with for that call (a sub-app or router within the app that took it in); handed
 * another while that call lasts, it is taken in for a request fluxguard cannot tell, and stands
 * for neither: `{ call: undefined, alone: false }`.
 *
 * @internal
 */
export function keepStandInState(
  standIn: IncomingMessage,
  res: unknown,
): { readonly call: CallState | undefined; readonly alone: boolean } | undefined {
  if (Object.hasOwn(standIn, PROPERTY)) return undefined;
  const response = typeof res === 'object' && res !== null ? res : undefined;
  const carried = inheritedState(standIn) ?? stateOfCarried(standIn, (standIn as { res?: unknown }).res);
  const kept = keptStates.get(standIn);
  const found = stateOfCarried(standIn, response);
  // A response it was taken in with for a call still open, which leads nowhere once an app
  // within pointed it at the stand-in (`res.req`): a sub-app or router within that app.
  const keptFor = found === undefined && response !== undefined ? callTakenInWith(kept, response) : undefined;
  const handed = found ?? keptFor;
  if (carried !== undefined && handed !== undefined && carried !== handed) {
    // It carries one open call (a `res` or a prototype left from it) and is handed another's
    // response: it stands for neither. Taken for the call it carries, a forged token passed
    // with that call's principal; filled by a call that never handed it on, the call that did
    // was refused for the other.
    keepCall(standIn, carried);
    return { call: handed, alone: keepCall(standIn, handed, response) !== undefined };
  }
  const state = carried ?? found;
  if (state !== undefined) return { call: state, alone: keepCall(standIn, state, response) !== undefined };
  if (keptFor !== undefined) {
    // Kept by identity too: the app replaces the prototype of a stand-in of the response it is
    // handed, which then leads to the call's response no longer, for the router within it.
    keepCall(standIn, keptFor, response);
    return undefined;
  }
  if (kept === undefined || !('call' in kept) || kept.call.finished || response === undefined) return undefined;
  keptStates.set(standIn, { calls: [kept.call], unknown: true });
  return { call: undefined, alone: false };
}

/**
 * The open call a stand-in was kept for that `response` answers ({@link takenInWith}); or, for
 * one contested by calls of which only that one has not ended, that call when `response` is its
 * own: the call goes on through the object (a sub-app it hands the object to again).
 */
function callTakenInWith(kept: Kept | Contested | undefined, response: object): CallState | undefined {
  if (kept === undefined) return undefined;
  if ('call' in kept) return !kept.call.finished && takenInWith(kept, response) ? kept.call : undefined;
  if (kept.unknown === true) return undefined;
  const open = kept.calls.filter((call) => !call.finished);
  const sole = open.length === 1 ? open[0] : undefined;
  return sole instanceof HttpCallState && answersFor(response, sole.response) ? sole : undefined;
}

/**
 * Whether `response` is one a stand-in was taken in with for its kept call, the call's own, or
 * a stand-in of either (`Object.create`, a `Proxy`): an app within the one that took it in,
 * handed what that app was.
 */
function takenInWith(kept: Kept, response: object): boolean {
  const own = kept.call instanceof HttpCallState ? kept.call.response : undefined;
  return (
    (own !== undefined && answersFor(response, own)) || kept.responses.some((known) => answersFor(response, known))
  );
}

/** Adds `response` to those a stand-in was taken in with for its call, up to {@link MAX_KEPT_RESPONSES}. */
function keepResponse(kept: Kept, response: object): void {
  const { responses } = kept;
  if (!responses.includes(response) && responses.length < MAX_KEPT_RESPONSES) responses.push(response);
}

/**
 * Records that `standIn` was found to stand for `state`'s call (taken in with `response`, if
 * known), and returns that call; or `undefined` when it was found for another call that has not
 * ended yet (one object an app fills anew for every request, two requests overlapping): it then
 * stands for neither until every such call has ended. The first call's handler, resumed after
 * an `await`, would read the second call's principal, and a guard of the second would decide by
 * the first's.
 */
function keepCall(standIn: object, state: CallState, response?: object): CallState | undefined {
  const kept = keptStates.get(standIn);
  if (kept !== undefined && 'call' in kept && kept.call === state) {
    if (response !== undefined) keepResponse(kept, response);
    return state;
  }
  const calls = kept === undefined ? [] : 'call' in kept ? [kept.call] : kept.calls;
  const open = calls.filter((call) => !call.finished);
  // The calls it was contested by have ended but this one: it stands for this one again (the
  // other call's request was refused; this one refills the object before handing it on).
  const aloneAgain = open.length === 1 && open[0] === state && !(kept !== undefined && 'calls' in kept && kept.unknown);
  if (open.length === 0 || aloneAgain) {
    keptStates.set(standIn, { call: state, responses: response === undefined ? [] : [response] });
    return state;
  }
  if (!open.includes(state)) open.push(state);
  // A request fluxguard could not tell may still be using it: it stays contested.
  keptStates.set(
    standIn,
    kept !== undefined && 'calls' in kept && kept.unknown ? { calls: open, unknown: true } : { calls: open },
  );
  return undefined;
}

/**
 * Whether a call was ever kept for `standIn`: a refusal found for no call is not keyed by the
 * response such a stand-in carries now, which may be another call's.
 *
 * @internal
 */
export function keptForStandIn(standIn: object): boolean {
  return keptStates.has(standIn);
}

/**
 * The calls that have not ended of those a stand-in was taken in for while they overlapped
 * ({@link keepCall}): it stands for none of them, and what is refused through it is refused to
 * all of them. Empty for a stand-in that stands for one call, or none.
 *
 * @internal
 */
export function contestedCalls(standIn: object): readonly CallState[] {
  const kept = keptStates.get(standIn);
  if (kept === undefined || 'call' in kept) return [];
  return kept.calls.filter((call) => !call.finished);
}

/**
 * The call state of `req`'s call when `req` is a stand-in for that call's request: the request
 * whose stream carries the body, and the response its answers go to, are the state's (an app
 * replaced the stand-in's prototype, and a body read or an answer sent there would go nowhere).
 * `undefined` for the call's own request.
 *
 * @internal
 */
export function standInCall(req: IncomingMessage, state: CallState): HttpCallState | undefined {
  return state instanceof HttpCallState && state.request !== req ? state : undefined;
}

/** How a request is ended early (deadline, a refused body chunk): sends `error`'s public answer. */
export type EndRequest = (error: SecurityError, req: IncomingMessage, res: ServerResponse) => void;

/** Writes the `request.cancelled` line of a request cut while its handler worked. */
export type WriteCancelled = (req: IncomingMessage, res: ServerResponse, state: CallState) => void;

/** The calls whose `request.cancelled` line was written when they were cut: only cut ones are ever added. */
const cancelledAtWork = new WeakSet<CallState>();

/**
 * Whether the `request.cancelled` line of the call was written when its connection closed under
 * its handler: a failure of that handler afterwards gets no second line.
 *
 * @internal
 */
export function cancelledLineWritten(state: CallState): boolean {
  return cancelledAtWork.has(state);
}

/**
 * Attaches the call state to `req` once: a second call (the middleware mounted twice, or in an
 * app and a sub-app) returns the existing one rather than creating a second id. `origin` is
 * kept on the state for the attaching middleware to recognise it later. The state is
 * finished (signal aborted, release callbacks run) when the response closes, however it ends;
 * closed under a handler at work, before the handler's answer, `writeCancelled` writes the
 * request's `request.cancelled` line then (without it, the error handler writes the line if the
 * handler's failure reaches it).
 *
 * @internal
 */
export function attachContext(
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  endRequest: EndRequest,
  onReleaseError: (error: unknown, requestId: string) => void,
  origin?: object,
  writeCancelled?: WriteCancelled,
): CallState {
  const existing = stateOf(req);
  if (existing !== undefined) return existing;
  // A stand-in an app took in for a call, standing for none now (taken in for calls that
  // overlap, or for one that has ended): a state of its own would be its own for good, shared
  // by every later request through it, and the guards behind would decide by neither call.
  if (keptStates.has(req)) throw new ConfigurationError(SHARED_STAND_IN);
  const state = new HttpCallState(
    {
      requestId,
      deadline: undefined,
      end: (error) => {
        endRequest(error, req, res);
      },
      onReleaseError,
      origin,
    },
    req,
    res,
  );
  // 'close' fires both when the response has been sent and when the connection dies first;
  // only the second is a client that went away. `on`, not `once`: 'close' is emitted once and
  // `finish` runs once anyway, so the wrapper `once` allocates per request buys nothing. A
  // closure, not the state kept on `res`: Express sets a new prototype on every request and
  // response, after which V8 builds a new hidden class for each property added (about 2 µs on
  // Node 20); `req.fluxguard` is the only property fluxguard adds.
  let forgetQueued: (() => void) | undefined;
  const onClose = (): void => {
    forgetQueued?.();
    const answered = res.writableFinished;
    let cut = false;
    if (state.handlerRunning) {
      // The handler's own answer went out: it has stopped. Otherwise (the client left, or a
      // control answered early) it may still be at work: it has stopped once it ends its answer.
      // Ended, its answer never sent (queued behind one whose connection closed): stopped too.
      if ((answered || res.writableEnded) && !state.endedEarly) state.handlerStopped();
      else {
        stoppedOnEnd(res, state);
        // Cut under the handler (the client left, or the server ended the connection), as gRPC
        // notices a cancelled call: the line is written now, whatever the handler does next
        // (returns, writes to the closed response, fails, never ends). A request a control
        // answered early has its line already. Marked before the signal aborts: a handler that
        // fails at once on it reaches the error handler within `finish`. A later pipeline still
        // deciding (a route's `jwtAuth()` verifying a token) has no handler at work under it:
        // its verdict is the request's line, a refusal's `request.denied`, or none.
        cut = !state.endedEarly && !state.deciding && writeCancelled !== undefined;
        if (cut) cancelledAtWork.add(state);
      }
    }
    state.finish(answered ? 'ended' : 'cancelled');
    if (cut) writeCancelled?.(req, res, state);
    if (answered && bodyStillComing(req)) lingerForBody(req);
  };
  res.on('close', onClose);
  // Pipelined behind an answer still going out: Node gives this response the connection only
  // once that answer is done. If the connection closes first (the answer before it said
  // `Connection: close`, the client left), it never gets one and never emits 'close', and the
  // call would hold its slots for good.
  // Node's types say the socket is always there; a request made by hand may have none.
  const connection = req.socket as Duplex | null;
  if (res.socket === null && connection !== null) {
    forgetQueued = whenClosed(connection, () => {
      if (res.socket === null && !res.writableFinished) onClose();
    });
  }
  // Throws if something else already defined a non-configurable `fluxguard` on this request:
  // better a 500 than a context we did not build.
  Object.defineProperty(req, PROPERTY, {
    value: state,
    enumerable: false,
    writable: false,
    configurable: false,
  });
  return state;
}

/**
 * How long a connection may go on sending the body of a request already answered. Node reads
 * and drops the rest of such a body to keep the connection, for as long as the request timeout
 * allows: a client trickling it held its connection for 15 minutes, under no deadline.
 */
const BODY_LINGER_MS = 5_000;

/**
 * The most of a body, by its `Content-Length`, that Node may read and drop after the answer to
 * keep the connection: the body is not seen by anything then (Node's parser drops it before the
 * request stream), so only its declared length bounds it.
 */
const BODY_LINGER_BYTES = 1_048_576;

/**
 * Closes the connection of an answered request whose body is still coming: at once when the
 * body has no declared end (chunked) or declares more than {@link BODY_LINGER_BYTES}, else once
 * it has not ended within {@link BODY_LINGER_MS}. Node would read and drop the rest of it to
 * keep the connection: a chunked body, with no end, had the server read 100 MB a second from a
 * client, past every body limit, for a route that answered without reading it.
 */
function lingerForBody(req: IncomingMessage): void {
  const socket = req.socket as (Duplex & { destroySoon?: () => void }) | null;
  if (socket === null) return;
  const declared = req.headers['content-length'];
  if (
    req.headers['transfer-encoding'] !== undefined ||
    declared === undefined ||
    !(Number(declared) <= BODY_LINGER_BYTES)
  ) {
    // Once the answer is out, reading and dropping what still comes for a moment: closed at
    // once, the unread bytes would reset the connection under the answer.
    closeLingering(socket);
    return;
  }
  const timer = setTimeout(() => {
    if (!req.complete) socket.destroy();
  }, BODY_LINGER_MS);
  timer.unref();
  req.once('end', () => {
    clearTimeout(timer);
  });
}

/** The calls waiting for each connection, one 'close' listener a connection however many. */
const queuedOn = new WeakMap<Duplex, Set<() => void>>();

/** Runs `then` when `socket` closes, unless the returned function is called first. */
function whenClosed(socket: Duplex, then: () => void): () => void {
  let waiting = queuedOn.get(socket);
  if (waiting === undefined) {
    const calls = new Set<() => void>();
    waiting = calls;
    queuedOn.set(socket, calls);
    socket.once('close', () => {
      queuedOn.delete(socket);
      for (const call of calls) call();
    });
  }
  const calls = waiting;
  calls.add(then);
  return () => {
    calls.delete(then);
  };
}

/**
 * Tells `state` that the handler has stopped when it ends its answer, to a connection already
 * gone or after a control answered (then `dropLaterWrites` has made `end` do nothing else).
 */
function stoppedOnEnd(res: ServerResponse, state: CallState): void {
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  res.end = ((...args: unknown[]) => {
    state.handlerStopped();
    return end(...args);
  }) as ServerResponse['end'];
}

/**
 * Records the verified caller of a request. This is the only way to set
 * `req.fluxguard.principal`; fluxguard's authentication controls do it after verifying a
 * credential, and a custom authenticator may call it the same way. It must never be called
 * with anything a client merely claimed (a header, a query parameter).
 *
 * The principal is checked, copied and frozen (with its `roles` and `scopes`) by the same
 * function as on gRPC, so later code cannot grant itself a role by mutating it. A later call
 * replaces it, e.g. a JWT middleware that upgrades an mTLS identity to `authenticatedBy: 'both'`.
 *
 * Throws when `requestId()` has not run on this request (fail closed: the error handler turns
 * this into a 500) or when `principal` is malformed.
 *
 * @example
 * ```ts
 * import { SecurityError } from '@fluxguard/core';
 * import { setPrincipal } from '@fluxguard/express';
 *
 * app.use(async (req, _res, next) => {
 *   const token = req.get('authorization')?.replace(/^Bearer /, '');
 *   if (token === undefined) throw new SecurityError('unauthenticated', { reason: 'missing_token' });
 *   const claims = await verifyToken(token, req.fluxguard.signal); // throws SecurityError on failure
 *   setPrincipal(req, { subject: claims.sub, roles: claims.roles, scopes: [], claims,
 *     certificate: undefined, authenticatedBy: 'jwt' });
 *   next();
 * });
 * ```
 */
export function setPrincipal(req: IncomingMessage, principal: Principal): void {
  requireState(req, 'setPrincipal').setPrincipal(principal);
}

/** What to do when no fluxguard context exists, said the same way by every middleware. */
const MOUNT_FIRST = 'mount fluxguard().before (or requestId()) before it';

/**
 * The call state of a request; throws the missing-context error when `requestId()` has not run.
 *
 * @internal
 */
export function requireState(req: IncomingMessage, accessor: string): CallState {
  const state = stateOf(req);
  if (state === undefined) throw missingContextError(accessor, MOUNT_FIRST);
  return state;
}
