import type { CallInfo, CertificateIdentity, HeaderReader, Principal, Transport } from '../call/call-info.js';
import { isFrozenThrough, isSoundPrincipal, isWellFormedPrincipal } from '../call/sound-principal.js';
import { FluxguardError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { MAX_TIMER_MS } from '../options/whole-number.js';

/**
 * Why the pipeline itself ended a call: `deadline_exceeded` when a control's tighter deadline
 * (`limitDeadline`) passed or had already passed. It repeats the code so that the audit line
 * says the pipeline, not a handler, gave up.
 *
 * @example
 * ```ts
 * import type { PipelineReason } from '@fluxguard/core';
 * const timedOut: PipelineReason = 'deadline_exceeded';
 * ```
 */
export type PipelineReason = 'deadline_exceeded';

/**
 * A typed slot for a per-call value that one control stores and a later control (or the
 * handler) reads, e.g. the rule that authorized the call. Created once, at module level.
 *
 * @example
 * ```ts
 * import { createContextKey } from '@fluxguard/core';
 * const TENANT = createContextKey<string>('tenant');
 * // in a control: context.set(TENANT, 'acme');  later: context.get(TENANT) // 'acme'
 * ```
 */
export interface ContextKey<T> {
  /** A label for debugging only: keys compare by identity, so two keys with one name are two slots. */
  readonly name: string;
  /** Only carries the type; never set. */
  readonly type?: T;
}

/**
 * A new {@link ContextKey}. Keys compare by identity: two keys with one name are two slots.
 *
 * @example
 * ```ts
 * import { createContextKey } from '@fluxguard/core';
 * export const RULE = createContextKey<string>('rbac.rule');
 * ```
 */
export function createContextKey<T>(name: string): ContextKey<T> {
  return Object.freeze({ name });
}

/**
 * What a handler may read about its call, the same on both transports (gRPC:
 * `getCallContext(call)`; Express: `req.fluxguard`). Only the request id may come from the
 * client (`x-request-id`, kept only when short and of a safe charset); the principal never
 * comes from a header or metadata entry.
 *
 * @example
 * ```ts
 * import type { RequestContext } from '@fluxguard/core';
 * function who(context: RequestContext): string { return context.principal?.subject ?? 'anonymous'; }
 * ```
 */
export interface RequestContext {
  /** The id returned to the client in `x-request-id` and written to every log line. */
  readonly requestId: string;
  /** The verified caller, set only by authentication controls. */
  readonly principal: Principal | undefined;
  /** The effective deadline in epoch milliseconds (the client's, or tighter), if any. */
  readonly deadline: number | undefined;
  /**
   * Aborted when the call ends in any way: the client went away, the deadline passed, or the
   * answer was sent. The reason is a `DOMException`: `TimeoutError` for the deadline,
   * `AbortError` otherwise. Pass it to file, database and HTTP calls so abandoned work stops.
   */
  readonly signal: AbortSignal;
  /** A value a control stored for this call. */
  get<T>(key: ContextKey<T>): T | undefined;
}

/**
 * The per-call context as a control sees it: the {@link RequestContext} plus what a control
 * may change. One per call, created by the adapter before the first control runs.
 *
 * @example
 * ```ts
 * import type { CallContext, Control } from '@fluxguard/core';
 * const tighten: Control = {
 *   name: 'short-deadline',
 *   stage: 'deadline',
 *   onStart(_call, context: CallContext) { context.limitDeadline(Date.now() + 5_000); },
 * };
 * ```
 */
export interface CallContext extends RequestContext {
  /**
   * Records the verified caller (checked, and frozen). On gRPC it throws once the handler has
   * started; on Express a later middleware may still replace it (see `setPrincipal` there).
   */
  setPrincipal(principal: Principal): void;
  /** Stores a value for a later control or the handler. */
  set<T>(key: ContextKey<T>, value: T): void;
  /**
   * Tightens the deadline (a later one than the current is ignored). At the deadline the
   * call ends with `deadline_exceeded` and the signal aborts, whatever the handler does.
   * Throws `deadline_exceeded` when `epochMs`, or the deadline the call already has (the
   * client's own: reason `client_deadline`), has already passed.
   */
  limitDeadline(epochMs: number): void;
  /** Ends the call now with `error` (its public form goes to the client); the handler's later output is dropped. */
  end(error: SecurityError): void;
  /**
   * Adds a response header (HTTP: on the answer, whether allowed or refused) or metadata entry
   * (gRPC: in the trailers of a refused call), e.g. `RateLimit`. A second value for one name is joined with `, `, as
   * structured-field lists are. Names are lowercase tokens; values must not hold control
   * characters. Never put a secret here: the client reads it.
   */
  addResponseHeader(name: string, value: string): void;
  /**
   * The error a start hook refused this call with, once one has (else `undefined`). A release
   * callback reads it to learn how the call ended.
   */
  readonly refusal: unknown;
  /**
   * Calls `listener` with the refusal as soon as a start hook refuses this call (at once when
   * one already has): before the answer is sent, and before the next call is checked. A control
   * that counts refusals (brute-force protection counts failed authentications) counts here
   * rather than in its release, which runs only once the answer is out: counted there, a
   * burst of concurrent attempts would all be checked before the first was counted.
   */
  whenRefused(listener: (refusal: unknown) => void): void;
  /**
   * Calls `listener` once every start hook has allowed this call (at once when they have), before
   * its handler runs; never for a call that is refused or ends first. With
   * {@link CallContext.whenRefused} it tells a control the verdict on a call it let through.
   *
   * @example
   * ```ts
   * onStart(_call, context) {
   *   checking += 1;
   *   const settled = () => { checking -= 1; };
   *   context.whenAllowed(settled);
   *   context.whenRefused(settled);
   * }
   * ```
   */
  whenAllowed(listener: () => void): void;
  /**
   * Runs `callback` once the call's handler has stopped: at once when it has (it answered,
   * threw, or its promise settled) or never started, else when it does, and at the latest
   * `maxWaitMs` after this call. A release that gives back what bounds the handlers' work (a
   * slot of a concurrency limit) goes through it: a client that cancels its call, or lets a
   * deadline end it, does not get the slot back while the handler still works on it.
   *
   * Handlers registered through the adapters (`addService` on gRPC, routes behind `fluxguard()`
   * on Express) are followed; for any other, the handler counts as stopped once the call ends.
   *
   * @example
   * ```ts
   * onStart(_call, context) {
   *   inFlight += 1;
   *   return () => { context.afterHandler(() => { inFlight -= 1; }, 5_000); };
   * }
   * ```
   */
  afterHandler(callback: () => void, maxWaitMs: number): void;
}

/**
 * Why a call ended, as its signal reports it.
 *
 * @example
 * ```ts
 * import type { EndCause } from '@fluxguard/core/adapter';
 * const cause: EndCause = res.writableFinished ? 'ended' : 'cancelled';
 * state.finish(cause);
 * ```
 */
export type EndCause = 'ended' | 'cancelled' | 'deadline';

/**
 * What an adapter gives {@link CallState}: the request id, the transport's deadline, and how
 * to end the call at once on its transport.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { CallState, type CallStateInit } from '@fluxguard/core/adapter';
 * const init: CallStateInit = { requestId, deadline: Date.now() + 30_000, end: (error) => answer(error),
 *   onReleaseError: (err) => audit.logger.error({ err }, 'a control release callback failed') };
 * const state = new CallState(init);
 * ```
 */
export interface CallStateInit {
  /**
   * The id of the call, sent back in `x-request-id` and written to every log line; the adapters
   * take it from `resolveRequestId`.
   */
  readonly requestId: string;
  /**
   * The transport's own deadline (gRPC: the client's), in epoch milliseconds; `undefined` when
   * none. Controls may only tighten it.
   */
  readonly deadline: number | undefined;
  /** Sends `error`'s public form to the client now (gRPC status, HTTP problem response). */
  readonly end: (error: SecurityError) => void;
  /** Told about a release callback that threw (the others still run). */
  readonly onReleaseError: (error: unknown, requestId: string) => void;
  /**
   * When the transport enforces `deadline` itself (grpc-js does), end the call here this long
   * after it if it is still going: the transport's own deadline answer can be stuck behind
   * response bytes a client never reads, and the call would hold what its controls counted
   * (an in-flight slot) for as long as the client liked. Default: no timer for the
   * transport's deadline (a tighter one set with `limitDeadline` has its timer either way).
   */
  readonly transportDeadlineGraceMs?: number | undefined;
  /**
   * Whatever the adapter attaching the state wants to recognise it by later (`state.origin`):
   * a call it has already run controls on, for one. Default `undefined`.
   */
  readonly origin?: object | undefined;
}

const HEADER_NAME = /^[a-z0-9][a-z0-9!#$%&'*+.^_`|~-]*$/;
const CHECKED_NAMES = new Set<string>();
// Visible ASCII and spaces: nothing that could split a header or reach a log as a control.
const HEADER_VALUE = /^[\x20-\x7e]*$/;

/** Pairs of header names and values, as `render` of {@link addResponseHeadersLater} makes them. */
type HeaderRender = () => readonly (readonly [string, string])[];

// Set by `CallState`'s static block, the one place with access to its private fields.
let deferResponseHeaders: (state: CallState, render: HeaderRender) => void;

/**
 * The one implementation of {@link CallContext}, shared by both adapters: the principal (one
 * validation and freeze for both transports), typed values, the deadline and its timer, the
 * signal (created only when read: most calls never need one), and the release callbacks,
 * each run exactly once when the call ends.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { CallState } from '@fluxguard/core/adapter';
 * const state = new CallState({ requestId, deadline: undefined, end: (error) => answer(error), onReleaseError: (err) => log(err) });
 * await pipeline.start(call, state);
 * state.finish('ended'); // once the answer is sent: the release callbacks run
 * ```
 */
export class CallState implements CallContext {
  readonly #requestId: string;
  readonly #end: (error: SecurityError) => void;
  readonly #onReleaseError: (error: unknown, requestId: string) => void;
  #principal: Principal | undefined;
  /** The authenticating pipeline the principal counts as recorded by; `undefined`: none had run. */
  #principalBy: object | undefined;
  /** The authenticating pipeline that started last on the call (`enterAuthentication`). */
  #lastAuthentication: object | undefined;
  #sealed = false;
  #deadline: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The armed deadline is the client's own (`transportDeadlineGraceMs`), not one a control set. */
  #clientsDeadline = false;
  #controller: AbortController | undefined;
  #abortCause: EndCause | undefined;
  /** Why `end` ended the call; wins over the cause the adapter reports when the call closes. */
  #endCause: EndCause | undefined;
  #endedEarly = false;
  #values: Map<ContextKey<unknown>, unknown> | undefined;
  #releases: (() => void)[] | undefined;
  #finished = false;
  #refusal: unknown;
  #refusalListeners: ((refusal: unknown) => void)[] | undefined;
  #allowed = false;
  #allowedListeners: (() => void)[] | undefined;
  #responseHeaders: Map<string, string> | undefined;
  /** Headers a control of core's made but left unwritten until read (`addResponseHeadersLater`). */
  #laterHeaders: HeaderRender[] | undefined;
  /** The handler: not started, running, or stopped (see `handlerStarted`). */
  #handler: 0 | 1 | 2 = 0;
  /** Start hooks of this call awaited now (see `deciding`). */
  #deciding = 0;
  /** What waits for the handler to stop (`afterHandler`), with the timer that ends each wait. */
  #afterHandler: Map<() => void, ReturnType<typeof setTimeout>> | undefined;
  /** The adapter's slot for the call's `CallInfo`, built once by the first pipeline that needs it. */
  callInfo: CallInfo | undefined = undefined;
  /**
   * The adapter's slot for naming the operation in an audit line (a pipeline's
   * `operationLabel`), asked only when the call fails.
   */
  labelOperation: ((operation: string) => string | undefined) | undefined = undefined;
  /** `CallStateInit.origin`. */
  readonly origin: object | undefined;

  constructor(init: CallStateInit) {
    this.origin = init.origin;
    this.#requestId = init.requestId;
    this.#deadline = init.deadline;
    this.#end = init.end;
    this.#onReleaseError = init.onReleaseError;
    const grace = init.transportDeadlineGraceMs;
    if (init.deadline !== undefined && grace !== undefined) {
      this.#clientsDeadline = true;
      this.#armDeadline(init.deadline + grace);
    }
  }

  // A getter without a setter: handlers get this object itself, and `context.requestId = ...`
  // must throw, not forge the id of the log lines.
  get requestId(): string {
    return this.#requestId;
  }

  get principal(): Principal | undefined {
    return this.#principal;
  }

  get deadline(): number | undefined {
    return this.#deadline;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#abortCause !== undefined) this.#controller.abort(abortReason(this.#abortCause));
    }
    return this.#controller.signal;
  }

  /** The call has ended: releases ran, the signal is aborted. */
  get finished(): boolean {
    return this.#finished;
  }

  get<T>(key: ContextKey<T>): T | undefined {
    return this.#values?.get(key) as T | undefined;
  }

  set<T>(key: ContextKey<T>, value: T): void {
    (this.#values ??= new Map()).set(key, value);
  }

  setPrincipal(principal: Principal): void {
    // The call ended while a control was still deciding (its client left during a token's
    // verification): nobody reads the principal now, and a throw would turn a good credential
    // into a failure line with a stack, one any client could cause by hanging up.
    if (this.#finished) return;
    if (this.#sealed) {
      throw new FluxguardError(
        'principal_sealed',
        'setPrincipal: the handler has started; only controls may set the principal',
      );
    }
    this.#principal = freezePrincipal(principal);
    this.#principalBy = this.#lastAuthentication;
  }

  /**
   * A pipeline with an authentication step of fluxguard (`owner`, the step, stands for it:
   * pipelines of one guard are one) starts on the call. A principal recorded since another such pipeline started (by it, as an app's guard in
   * front of a router's, or by code after it, which may copy its caller) is forgotten, so that
   * this pipeline's rules decide on the caller it verifies itself; one the application's own code
   * set before any such pipeline stays. From now on, what `setPrincipal` records counts as this
   * pipeline's.
   */
  enterAuthentication(owner: object): void {
    if (this.#principalBy !== undefined && this.#principalBy !== owner) {
      if (this.#sealed) {
        throw new FluxguardError('principal_sealed', 'a guard ran after the handler had started');
      }
      this.#principal = undefined;
      this.#principalBy = undefined;
    }
    this.#lastAuthentication = owner;
  }

  /** From now on the principal is fixed (the handler has started). */
  seal(): void {
    this.#sealed = true;
  }

  limitDeadline(epochMs: number): void {
    if (!Number.isFinite(epochMs)) throw new TypeError('limitDeadline: the deadline must be a finite epoch time in ms');
    if (this.#finished) return;
    // The transport's deadline (the client's own) already past ends the call here, before its
    // handler: grpc-js's timer for `grpc-timeout: 0S` fires on a later turn, after a handler
    // (a delete) had done its work for a call its client was told failed.
    const now = Date.now();
    if (this.#deadline !== undefined && this.#deadline <= now) {
      throw new SecurityError('deadline_exceeded', {
        reason: this.#clientsDeadline ? 'client_deadline' : 'deadline_exceeded',
      });
    }
    // The transport enforces its own deadline; only a tighter one needs a timer of ours.
    if (this.#deadline !== undefined && epochMs >= this.#deadline) return;
    const remaining = epochMs - now;
    if (remaining <= 0) throw new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded' });
    this.#deadline = epochMs;
    this.#clientsDeadline = false;
    // The time read above: each read is a call into the engine's runtime.
    this.#armDeadline(epochMs, now);
  }

  /** Ends the call at `at` (epoch ms) unless it has finished by then. */
  #armDeadline(at: number, now = Date.now()): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    // Node fires a longer timer at once: wait in steps of the longest it takes.
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (at > Date.now()) this.#armDeadline(at);
        // The client's own deadline is its budget (a refusal line, `client_deadline`); one a
        // control set is the server's (`deadline_exceeded`).
        else
          this.end(
            new SecurityError('deadline_exceeded', {
              reason: this.#clientsDeadline ? 'client_deadline' : 'deadline_exceeded',
            }),
          );
      },
      Math.min(Math.max(at - now, 0), MAX_TIMER_MS),
    );
    this.#timer.unref();
  }

  /** A control ended the call with `end` (a deadline, a refused message), before its handler answered. */
  get endedEarly(): boolean {
    return this.#endedEarly;
  }

  end(error: SecurityError): void {
    if (this.#finished) return;
    this.#endedEarly = true;
    // The handler's signal aborts once the answer is on its way (a handler that reacts by
    // tearing down its stream must not cut the answer off): as a timeout when the call ended
    // for time (a deadline, an idle limit), else as an abort.
    this.#endCause = error.code === 'deadline_exceeded' ? 'deadline' : 'ended';
    this.#end(error);
    this.#abort(this.#endCause);
  }

  get refusal(): unknown {
    return this.#refusal;
  }

  /** Records the refusal of a start hook (the first one only) and tells its listeners. */
  noteRefusal(error: unknown): void {
    if (this.#refusal !== undefined) return;
    this.#refusal = error;
    const listeners = this.#refusalListeners;
    this.#refusalListeners = undefined;
    if (listeners !== undefined) for (const listener of listeners) this.#tellRefusal(listener, error);
  }

  whenRefused(listener: (refusal: unknown) => void): void {
    if (this.#refusal !== undefined) this.#tellRefusal(listener, this.#refusal);
    else (this.#refusalListeners ??= []).push(listener);
  }

  /** Records that every start hook allowed the call, and tells the listeners of `whenAllowed`. */
  noteAllowed(): void {
    if (this.#allowed || this.#refusal !== undefined) return;
    this.#allowed = true;
    const listeners = this.#allowedListeners;
    this.#allowedListeners = undefined;
    if (listeners !== undefined) for (const listener of listeners) this.#runRelease(listener);
  }

  whenAllowed(listener: () => void): void {
    if (this.#allowed) this.#runRelease(listener);
    else if (this.#refusal === undefined) (this.#allowedListeners ??= []).push(listener);
  }

  #tellRefusal(listener: (refusal: unknown) => void, refusal: unknown): void {
    // The refusal stands whatever a listener does; a failure is reported like a release's.
    this.#runRelease(() => {
      listener(refusal);
    });
  }

  addResponseHeader(name: string, value: string): void {
    if (!CHECKED_NAMES.has(name)) {
      if (!HEADER_NAME.test(name)) throw new TypeError('addResponseHeader: the name must be a lowercase header token');
      // Controls use a handful of names: remember them (bounded) instead of testing every call.
      if (CHECKED_NAMES.size < 64) CHECKED_NAMES.add(name);
    }
    if (!HEADER_VALUE.test(value)) throw new TypeError('addResponseHeader: the value must be visible ASCII');
    // Those made earlier come first, as they would have had they been written at once.
    if (this.#laterHeaders !== undefined) this.#writeLaterHeaders();
    this.#joinResponseHeader(name, value);
  }

  static {
    // Not a method: a handler, given this object as its context, could otherwise write headers
    // that skip `addResponseHeader`'s checks.
    deferResponseHeaders = (state, render) => {
      (state.#laterHeaders ??= []).push(render);
    };
  }

  #writeLaterHeaders(): void {
    const later = this.#laterHeaders ?? [];
    this.#laterHeaders = undefined;
    for (const render of later) for (const [name, value] of render()) this.#joinResponseHeader(name, value);
  }

  #joinResponseHeader(name: string, value: string): void {
    const headers = (this.#responseHeaders ??= new Map<string, string>());
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }

  /** The headers controls added, for the adapter to send (HTTP headers, gRPC metadata). */
  get responseHeaders(): ReadonlyMap<string, string> | undefined {
    if (this.#laterHeaders !== undefined) this.#writeLaterHeaders();
    return this.#responseHeaders;
  }

  /** Registers a release callback; run at once when the call has already ended. */
  addRelease(release: () => void): void {
    if (this.#finished) {
      this.#runRelease(release);
      return;
    }
    (this.#releases ??= []).push(release);
  }

  /**
   * The adapter hands the call to its handler (the controls let it through). Until
   * `handlerStopped`, what waits in `afterHandler` waits.
   */
  handlerStarted(): void {
    if (this.#handler === 0) this.#handler = 1;
  }

  /**
   * The handler has stopped working on the call: it answered (or wrote its answer to a
   * connection already gone), threw, or its promise settled. Runs what waited for it.
   */
  handlerStopped(): void {
    if (this.#handler === 2) return;
    this.#handler = 2;
    const waiting = this.#afterHandler;
    if (waiting === undefined) return;
    this.#afterHandler = undefined;
    for (const [callback, timer] of waiting) {
      clearTimeout(timer);
      this.#runRelease(callback);
    }
  }

  /** The handler has started and not stopped yet. */
  get handlerRunning(): boolean {
    return this.#handler === 1;
  }

  /**
   * The call was handed to its handler ({@link handlerStarted}), whether or not it has stopped
   * since: a streaming handler that returned at once still works from its stream's events.
   */
  get handlerCalled(): boolean {
    return this.#handler !== 0;
  }

  /**
   * An asynchronous start hook is deciding on the call (a key set being fetched, a Redis-backed
   * limit answering), whether or not a handler was called before its pipeline (a later one of
   * an Express route). A call cut now has no handler at work: should the hook refuse it, the
   * refusal is its one line (`request.denied`), whatever the client did; else it has none.
   */
  get deciding(): boolean {
    return this.#deciding > 0;
  }

  /** The pipeline awaits a start hook of this call (`started`), or has its verdict. */
  noteDeciding(started: boolean): void {
    this.#deciding += started ? 1 : -1;
  }

  afterHandler(callback: () => void, maxWaitMs: number): void {
    if (!Number.isFinite(maxWaitMs) || maxWaitMs < 0) {
      throw new TypeError('afterHandler: the longest wait must be a finite number of ms, 0 or more');
    }
    if (this.#handler !== 1 || maxWaitMs === 0) {
      this.#runRelease(callback);
      return;
    }
    const waiting = (this.#afterHandler ??= new Map());
    if (waiting.has(callback)) return;
    const timer = setTimeout(
      () => {
        // The handler still works: the wait is over, its work goes on uncounted.
        if (this.#afterHandler?.delete(callback) === true) this.#runRelease(callback);
      },
      Math.min(maxWaitMs, MAX_TIMER_MS),
    );
    timer.unref();
    waiting.set(callback, timer);
  }

  /** Ends the call's life: aborts the signal with `cause`, stops the deadline timer, runs every release once. */
  finish(cause: EndCause): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#sealed = true;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#abort(this.#endCause ?? cause);
    const releases = this.#releases;
    this.#releases = undefined;
    if (releases !== undefined) for (const release of releases) this.#runRelease(release);
  }

  #abort(cause: EndCause): void {
    if (this.#abortCause !== undefined) return;
    this.#abortCause = cause;
    // No controller yet: nobody listens; `signal` creates it aborted if read later.
    this.#controller?.abort(abortReason(cause));
  }

  #runRelease(release: () => void): void {
    try {
      release();
    } catch (error) {
      try {
        this.#onReleaseError(error, this.#requestId);
      } catch {
        // The reporter failed too (a broken log sink): the other releases must still run.
      }
    }
  }
}

function abortReason(cause: EndCause): DOMException {
  switch (cause) {
    case 'deadline':
      return new DOMException('The deadline of the call passed.', 'TimeoutError');
    case 'cancelled':
      return new DOMException('The client cancelled the call.', 'AbortError');
    case 'ended':
      return new DOMException('The call has ended.', 'AbortError');
  }
}

/**
 * A copy of `principal` that later code cannot change (roles and scopes frozen too), after a
 * run-time check of its shape: callers may be plain JavaScript. A principal core made and
 * marked sound (a verified token's, on every call that carries the token) is taken as it is.
 */
function freezePrincipal(principal: Principal): Principal {
  if (isSoundPrincipal(principal)) return principal;
  if (!isWellFormedPrincipal(principal)) throw new TypeError('setPrincipal: principal is malformed');
  if (isFrozenThrough(principal)) return principal;
  return Object.freeze({
    subject: principal.subject,
    roles: Object.freeze([...principal.roles]),
    scopes: Object.freeze([...principal.scopes]),
    claims: Object.isFrozen(principal.claims) ? principal.claims : Object.freeze({ ...principal.claims }),
    certificate: principal.certificate,
    authenticatedBy: principal.authenticatedBy,
  });
}

/**
 * Adds response headers that `render` makes only when the adapter reads them: gRPC sends them
 * with a refusal only, so a served call never pays for them. On any context but core's call
 * state (a test's stand-in) they are added at once, through `addResponseHeader`. For core's own
 * controls, whose names and values are valid as made: they are not checked again.
 *
 * @internal
 */
export function addResponseHeadersLater(context: CallContext, render: HeaderRender): void {
  if (context instanceof CallState) deferResponseHeaders(context, render);
  else for (const [name, value] of render()) context.addResponseHeader(name, value);
}

/**
 * The error of an accessor or control that finds no fluxguard context on its call: the same
 * code on both transports, failing closed (no request id, signal or principal to guess).
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * throw missingContextError('getPrincipal', 'install fluxguardInterceptors() on the grpc-js Server');
 * ```
 */
export function missingContextError(accessor: string, remedy: string): FluxguardError {
  return new FluxguardError('missing_call_context', `${accessor}: no fluxguard context for this call; ${remedy}`);
}

/**
 * A fact of the transport that {@link StateCallInfo} reads only when a control asks for it: a
 * function, called once. gRPC's peer address and certificate each cost a walk through grpc-js
 * and Node's socket objects, about 2.5 % of a served call, and most calls have no control that
 * reads them.
 *
 * @example
 * ```ts
 * import type { LazyFact } from '@fluxguard/core/adapter';
 * const peer: LazyFact<string | undefined> = () => socket.remoteAddress; // read when first asked for
 * ```
 */
export type LazyFact<T> = T | (() => T);

/**
 * The `CallInfo` both adapters hand to controls: the transport's facts, fixed when the call
 * starts (the peer's address and certificate may be read when first asked for, see
 * {@link LazyFact}), and the request id, deadline and signal read live from the call's state (a
 * control may tighten the deadline; the signal is created only when read). A class, so that
 * building one per call allocates one small object.
 *
 * `peerCertificateError` (optional) is Node's verification error code of a client certificate the
 * connection presented and the TLS stack did not verify (see `untrustedCertificateError`);
 * a control reads it only when it refuses a call for want of a verified certificate.
 *
 * @example
 * ```ts
 * const info = new StateCallInfo(state, 'grpc', '/pkg.Svc/Get', '127.0.0.1:5000', undefined, headers);
 * const lazy = new StateCallInfo(state, 'grpc', '/pkg.Svc/Get', () => call.getPeer(), () => identityOf(call), headers);
 * const untrusted = new StateCallInfo(state, 'http', 'GET /x', peer, undefined, headers, 'CERT_HAS_EXPIRED');
 * ```
 */
export class StateCallInfo implements CallInfo {
  readonly transport: Transport;
  readonly operation: string;
  readonly headers: HeaderReader;
  readonly #state: CallState;
  #peerAddress: LazyFact<string | undefined>;
  #peerCertificate: LazyFact<CertificateIdentity | undefined>;
  #peerCertificateError: LazyFact<string | undefined>;

  constructor(
    state: CallState,
    transport: Transport,
    operation: string,
    peerAddress: LazyFact<string | undefined>,
    peerCertificate: LazyFact<CertificateIdentity | undefined>,
    headers: HeaderReader,
    peerCertificateError?: LazyFact<string | undefined>,
  ) {
    this.#state = state;
    this.transport = transport;
    this.operation = operation;
    this.#peerAddress = peerAddress;
    this.#peerCertificate = peerCertificate;
    this.headers = headers;
    this.#peerCertificateError = peerCertificateError;
  }

  get peerAddress(): string | undefined {
    const fact = this.#peerAddress;
    return typeof fact === 'function' ? (this.#peerAddress = fact()) : fact;
  }

  get peerCertificate(): CertificateIdentity | undefined {
    const fact = this.#peerCertificate;
    return typeof fact === 'function' ? (this.#peerCertificate = fact()) : fact;
  }

  get peerCertificateError(): string | undefined {
    const fact = this.#peerCertificateError;
    return typeof fact === 'function' ? (this.#peerCertificateError = fact()) : fact;
  }

  get requestId(): string {
    return this.#state.requestId;
  }

  get deadline(): number | undefined {
    return this.#state.deadline;
  }

  get signal(): AbortSignal {
    return this.#state.signal;
  }
}
