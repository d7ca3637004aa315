import type { CallInfo } from '../call/call-info.js';
import type { CallContext } from './call-context.js';

/**
 * Where a control runs in the pipeline. The order is fixed, the same on both transports:
 * after the request id and the safe-error layer (which the adapters always install first),
 * `client-certificate` → `pre-authentication` (limits by peer, before any token costs a
 * signature check) → `authentication` → `caller-limit` (limits by principal) →
 * `authorization` → `input` (sizes, validation) → `deadline` → the handler.
 *
 * @example
 * ```ts
 * import { CONTROL_STAGES, type ControlStage } from '@fluxguard/core';
 * const stage: ControlStage = 'caller-limit';
 * CONTROL_STAGES.indexOf(stage); // 3
 * ```
 */
export type ControlStage =
  | 'client-certificate'
  | 'pre-authentication'
  | 'authentication'
  | 'caller-limit'
  | 'authorization'
  | 'input'
  | 'deadline';

/**
 * The stages in the order they run.
 *
 * @example
 * ```ts
 * import { CONTROL_STAGES } from '@fluxguard/core';
 * CONTROL_STAGES[0]; // 'client-certificate'
 * ```
 */
export const CONTROL_STAGES: readonly ControlStage[] = Object.freeze([
  'client-certificate',
  'pre-authentication',
  'authentication',
  'caller-limit',
  'authorization',
  'input',
  'deadline',
]);

/**
 * What a start hook may hand back: nothing, or a release callback that the pipeline runs
 * exactly once when the call ends in any way (finished, failed, refused by a later control,
 * cancelled by the client, deadline).
 *
 * @example
 * ```ts
 * import type { StartResult } from '@fluxguard/core';
 * let inFlight = 0;
 * function onStart(): StartResult { inFlight += 1; return () => { inFlight -= 1; }; }
 * ```
 */
// `void` too, so that a start hook without a return statement needs no `return undefined`.
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type
export type StartResult = void | undefined | (() => void);

/**
 * One security control, written once against the transport-neutral {@link CallInfo} and the
 * per-call {@link CallContext}; each adapter runs it through its one pipeline. A hook refuses
 * the call by throwing (or rejecting with) a `SecurityError`; anything else thrown becomes
 * `internal`, never a pass.
 *
 * - `onStart`, once per call before the handler (and before any message reaches it): may
 *   refuse, set the principal (`context.setPrincipal`), store typed per-call values for a later
 *   control (`context.set`), tighten the deadline (`context.limitDeadline`), and return a
 *   release callback.
 * - `onMessage`, for every inbound message of every call kind (gRPC: each deserialized request
 *   message; HTTP: each body chunk, a `Buffer`, as it arrives), after `onStart` allowed the
 *   call, with its size on the wire in bytes (`undefined` when the adapter cannot tell: a gRPC
 *   service not registered through fluxguard's `addService`). Synchronous: it sizes or
 *   validates, it does not wait. On gRPC, with `replacesMessages`, a value it returns replaces
 *   the message the handler gets (message validation hands on its schema's output).
 * - `onInboundEnd`, once the client has sent everything (an idle limit stops watching then).
 *
 * @example
 * ```ts
 * import { SecurityError, type Control } from '@fluxguard/core';
 * let inFlight = 0;
 * const oneAtATime: Control = {
 *   name: 'one-at-a-time',
 *   stage: 'caller-limit',
 *   onStart() {
 *     if (inFlight >= 1) throw new SecurityError('unavailable', { reason: 'app.concurrency_limit' });
 *     inFlight += 1;
 *     return () => { inFlight -= 1; };
 *   },
 * };
 * ```
 */
export interface Control {
  /** A short name for logs and errors, e.g. `rbac`. */
  readonly name: string;
  /** Where the control runs: the pipeline sorts controls by stage, in the fixed order of {@link CONTROL_STAGES}. */
  readonly stage: ControlStage;
  /**
   * The control matches `call.operation` against path patterns (RBAC, limits per route): an
   * Express app must then route case-sensitively, or `GET /V1/x` would reach the handler of
   * `/v1/x` under another rule. The Express pipeline refuses to serve an app that does not.
   */
  readonly matchesOperation?: boolean | undefined;
  /**
   * The operation patterns of this control's rules. The adapters hold them against what the
   * server serves at start-up (`Pipeline.checkServed`): a pattern that names a served operation
   * only in other letter case (`/pkg.Items/deleteItem` for `DeleteItem`) is refused, since rules
   * match letter for letter and the operation would fall under a broader rule.
   */
  readonly operationPatterns?: readonly string[] | undefined;
  /**
   * The names of this control's limits that count a client by its connection's address and
   * trust no proxy to name the client (a `peer` rule without `trustedProxies`). Behind a proxy
   * every client shares the proxy's address, and so one allowance: the Express adapter warns
   * (`FLUXGUARD_TRUST_PROXY`) when the app says it is behind one (`app.set('trust proxy', ...)`).
   */
  readonly countsSocketAddress?: readonly string[] | undefined;
  /**
   * The bounded name this control gives an operation (e.g. the RBAC rule `GET /v1/items/:id`),
   * used in the audit line of an HTTP request refused before routing instead of the raw path.
   */
  readonly operationLabel?: ((operation: string) => string | undefined) | undefined;
  /**
   * The most bytes one inbound gRPC message of `operation` may have, when this control limits
   * it (the input limits do). The gRPC adapter hands the smallest to grpc-js for the call, which
   * then refuses a larger message as soon as its length prefix says so, or as decompression
   * passes it, instead of buffering or decompressing all of it first. `onMessage` still checks
   * every message.
   */
  readonly maxMessageBytes?: ((operation: string) => number | undefined) | undefined;
  /**
   * Checks an HTTP app's routes, as `METHOD /path` in the order its router tries them, against
   * what this control decides by operation; throws a `ConfigurationError` for routes it cannot
   * guard as they stand. RBAC's: a request two overlapping routes match reaches the first, and
   * must be decided by that route's rule. The Express adapter runs it when it serves the app
   * (`wrap(app)`), or on the app's first request (`before` mounted in the app).
   */
  readonly checkRoutes?: ((routes: readonly string[]) => void) | undefined;
  /**
   * For an HTTP app's routes: a test of whether a route (`METHOD /path`) may serve a request
   * of an operation when an earlier route passed it on (`next()`), which this control decided
   * for the earlier route, or when a middleware rewrote the request's method or URL (`current`:
   * the operation the request now names, when it differs). RBAC's refuses a route whose own rule
   * is not the one that decided the request, and a request that now names another rule's
   * operation. The Express adapter asks it as each route is reached, and as each middleware
   * after the controls is (`route` then `undefined`: only `current` can be judged, as a file
   * server or a router's middleware serves paths no route names).
   */
  readonly handOver?:
    | ((routes: readonly string[]) => (operation: string, route: string | undefined, current?: string) => boolean)
    | undefined;
  /** Once per call, before the handler: refuses by throwing a `SecurityError`, and may return a release callback. */
  readonly onStart?: ((call: CallInfo, context: CallContext) => StartResult | Promise<StartResult>) | undefined;
  /**
   * `onMessage` returns what goes on in the message's place (`undefined`: the message as it
   * is), as message validation returns its schema's output. gRPC only: an HTTP body chunk is
   * never replaced. Without it, what `onMessage` returns is ignored.
   */
  readonly replacesMessages?: boolean | undefined;
  /**
   * For every inbound message (gRPC: each request message; HTTP: each body chunk), with its size on
   * the wire in bytes when known; see `replacesMessages` for what it returns.
   */
  readonly onMessage?:
    ((message: unknown, call: CallInfo, context: CallContext, bytes: number | undefined) => unknown) | undefined;
  /**
   * Once, when the client has sent its last inbound message (gRPC: the half-close; HTTP: the
   * end of the body, at once for a request without one), after `onStart` allowed the call.
   */
  readonly onInboundEnd?: ((call: CallInfo, context: CallContext) => void) | undefined;
}

const AUTHENTICATIONS = new WeakSet<object>();
/** The start hooks of the marked steps, by which a copy of one is known. */
const AUTHENTICATION_STARTS = new WeakSet<object>();

/**
 * Marks `control` as an authentication step of fluxguard (`createAuthenticator`, a guard's):
 * a pipeline that runs one decides on the caller it verifies itself, never on one another such
 * pipeline recorded (see `CallState.enterAuthentication`).
 *
 * @internal
 */
export function markAuthentication<T extends Control>(control: T): T {
  AUTHENTICATIONS.add(control);
  if (control.onStart !== undefined) AUTHENTICATION_STARTS.add(control.onStart);
  return control;
}

/** @internal Whether `control` was marked by {@link markAuthentication}. */
export function isAuthentication(control: Control): boolean {
  return AUTHENTICATIONS.has(control);
}

/** @internal Whether `control` is a copy of a marked step (`{ ...authenticator }`): its hook, not it. */
export function isAuthenticationCopy(control: Control): boolean {
  return !AUTHENTICATIONS.has(control) && control.onStart !== undefined && AUTHENTICATION_STARTS.has(control.onStart);
}
