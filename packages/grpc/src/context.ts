import type {
  Metadata,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
} from '@grpc/grpc-js';
import { FluxguardError, type Principal } from '@fluxguard/core';

/**
 * What fluxguard knows about one gRPC call, as a handler or a later interceptor sees it.
 * Built by the {@link safeErrors} interceptor when the call's metadata arrives.
 *
 * @example
 * ```ts
 * import { getCallContext, type GrpcCallContext } from '@fluxguard/grpc';
 * const context: GrpcCallContext = getCallContext(call);
 * audit.logger.info({ requestId: context.requestId, operation: context.operation }, 'started');
 * ```
 */
export interface GrpcCallContext {
  /** The id returned to the client in `x-request-id` and written to every log line. */
  readonly requestId: string;
  /**
   * Aborted when the client cancels, the deadline passes or the call ends. The reason is a
   * `DOMException` named `AbortError` (cancelled or ended) or `TimeoutError` (deadline).
   */
  readonly signal: AbortSignal;
  /** The verified caller, set only by fluxguard's authentication interceptors. */
  readonly principal: Principal | undefined;
  /** The full method, `/pkg.Service/Method`. */
  readonly operation: string;
  /** The remote address as grpc-js reports it, e.g. `127.0.0.1:51234`. */
  readonly peer: string;
  /** The client's deadline in epoch milliseconds, when it set one. */
  readonly deadline: number | undefined;
}

/**
 * A handler's call, of any of the four kinds: what the accessors accept.
 *
 * @example
 * ```ts
 * import { getRequestId, type ServerCall } from '@fluxguard/grpc';
 * function tag(call: ServerCall): string { return `request ${getRequestId(call)}`; }
 * ```
 */
export type ServerCall =
  | ServerUnaryCall<unknown, unknown>
  | ServerReadableStream<unknown, unknown>
  | ServerWritableStream<unknown, unknown>
  | ServerDuplexStream<unknown, unknown>;

/** Why a call's signal was aborted. */
export type AbortCause = 'cancelled' | 'deadline' | 'ended';

/**
 * The mutable per-call record behind {@link GrpcCallContext}. Internal to this package:
 * only the interceptor, the handler wrapper and the hooks below touch it.
 */
export class CallState {
  readonly requestId: string;
  readonly operation: string;
  readonly peer: string;
  readonly deadline: number | undefined;
  readonly view: GrpcCallContext;
  readonly #controller = new AbortController();
  #principal: Principal | undefined;
  #sealed = false;
  #pendingError: { readonly error: unknown } | undefined;
  /** A status left our interceptor for the client; later ones are dropped. */
  finished = false;
  /** The client went away (cancel or deadline) before any status. */
  cancelled = false;
  /** Sends a failure status through the fluxguard interceptor itself, for streams already destroyed. */
  readonly #sendFailure: () => void;

  constructor(init: {
    requestId: string;
    operation: string;
    peer: string;
    deadline: number | undefined;
    sendFailure: () => void;
  }) {
    this.requestId = init.requestId;
    this.operation = init.operation;
    this.peer = init.peer;
    this.deadline = init.deadline;
    this.#sendFailure = init.sendFailure;
    this.view = Object.freeze(new ContextView(this));
  }

  get principal(): Principal | undefined {
    return this.#principal;
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  setPrincipal(principal: Principal): void {
    if (this.#sealed) {
      throw new FluxguardError(
        'principal_sealed',
        'setPrincipal: the handler has started; only interceptors may set the principal',
      );
    }
    this.#principal = freezePrincipal(principal);
  }

  /** Called when the handler starts: from then on the principal is fixed. */
  seal(): void {
    this.#sealed = true;
  }

  /** Keeps the real error of a failure so that the interceptor logs it, whatever status carries it. */
  setPendingError(error: unknown): void {
    this.#pendingError ??= { error };
  }

  takePendingError(): { readonly error: unknown } | undefined {
    const pending = this.#pendingError;
    this.#pendingError = undefined;
    return pending;
  }

  sendFailure(error: unknown): void {
    this.setPendingError(error);
    this.#sendFailure();
  }

  abort(cause: AbortCause): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(
      cause === 'deadline'
        ? new DOMException('The deadline of the call passed.', 'TimeoutError')
        : new DOMException(
            cause === 'cancelled' ? 'The client cancelled the call.' : 'The call has ended.',
            'AbortError',
          ),
    );
  }
}

/** The read-only face of a {@link CallState}, handed to handlers. */
class ContextView implements GrpcCallContext {
  readonly #state: CallState;
  readonly requestId: string;
  readonly signal: AbortSignal;
  readonly operation: string;
  readonly peer: string;
  readonly deadline: number | undefined;

  constructor(state: CallState) {
    this.#state = state;
    this.requestId = state.requestId;
    this.signal = state.signal;
    this.operation = state.operation;
    this.peer = state.peer;
    this.deadline = state.deadline;
  }

  get principal(): Principal | undefined {
    return this.#state.principal;
  }
}

function freezePrincipal(principal: Principal): Principal {
  return Object.freeze({
    ...principal,
    roles: Object.freeze([...principal.roles]),
    scopes: Object.freeze([...principal.scopes]),
    claims: Object.freeze({ ...principal.claims }),
  });
}

// Keyed by the Metadata object that grpc-js hands from the first interceptor through every
// later one to the handler's call (`call.metadata`), for all four call kinds. A WeakMap
// keeps the association in-process: no metadata value a client sends can reach it.
const states = new WeakMap<Metadata, CallState>();

/** @internal */
export function attachCallState(metadata: Metadata, state: CallState): void {
  states.set(metadata, state);
}

/** @internal */
export function callStateOf(metadata: Metadata): CallState | undefined {
  return states.get(metadata);
}

function requireState(call: ServerCall, accessor: string): CallState {
  const state = states.get(call.metadata);
  if (state === undefined) {
    // Fail closed and loudly: without the interceptor there is no request id, no signal and
    // no verified principal, and guessing one would be worse than refusing the call.
    throw new FluxguardError(
      'missing_call_context',
      `${accessor}: no fluxguard context for this call; install fluxguardInterceptors() (safeErrors first) on the grpc-js Server`,
    );
  }
  return state;
}

/**
 * The fluxguard context of a call: request id, abort signal, principal, operation, peer.
 * Throws when the server was built without fluxguard's interceptors.
 *
 * @example
 * ```ts
 * import { getCallContext } from '@fluxguard/grpc';
 * const getThing: handleUnaryCall<Req, Res> = (call, callback) => {
 *   const { requestId, operation } = getCallContext(call);
 *   // ...
 * };
 * ```
 */
export function getCallContext(call: ServerCall): GrpcCallContext {
  return requireState(call, 'getCallContext').view;
}

/**
 * The request id of a call, as returned to the client in `x-request-id` trailing metadata.
 * Works for all four handler call kinds.
 *
 * @example
 * ```ts
 * import { getRequestId } from '@fluxguard/grpc';
 * audit.logger.info({ requestId: getRequestId(call) }, 'artifact read');
 * ```
 */
export function getRequestId(call: ServerCall): string {
  return requireState(call, 'getRequestId').requestId;
}

/**
 * The verified caller of a call, or `undefined` when no authentication interceptor set one.
 * A client cannot set or alter it through any metadata entry (`x-principal`, `x-user`, ...):
 * it lives in memory, keyed by the call, and only fluxguard's interceptors write it.
 *
 * @example
 * ```ts
 * import { getPrincipal } from '@fluxguard/grpc';
 * const principal = getPrincipal(call);
 * if (principal === undefined) throw new SecurityError('unauthenticated');
 * ```
 */
export function getPrincipal(call: ServerCall): Principal | undefined {
  return requireState(call, 'getPrincipal').principal;
}

/**
 * An `AbortSignal` that aborts when the client cancels, the deadline passes or the call ends.
 * Pass it to file, database and HTTP calls so that abandoned work stops.
 *
 * @example
 * ```ts
 * import { getSignal } from '@fluxguard/grpc';
 * const content = await readFile(file, { signal: getSignal(call) });
 * ```
 */
export function getSignal(call: ServerCall): AbortSignal {
  return requireState(call, 'getSignal').signal;
}

/**
 * For authors of fluxguard interceptors (jwtAuth, mtls): the context of a call, from the
 * `Metadata` object received in `onReceiveMetadata`. `undefined` when {@link safeErrors} did
 * not run first.
 *
 * @example
 * ```ts
 * new ServerListenerBuilder().withOnReceiveMetadata((metadata, next) => {
 *   const context = findCallContext(metadata);
 *   // ...
 *   next(metadata);
 * });
 * ```
 */
export function findCallContext(metadata: Metadata): GrpcCallContext | undefined {
  return states.get(metadata)?.view;
}

/**
 * For authors of fluxguard authentication interceptors: records the verified principal of a
 * call, keyed by the `Metadata` object received in `onReceiveMetadata`, before calling `next`.
 * Throws when {@link safeErrors} did not run first (fail closed) or once the handler has
 * started. Never derive the principal from a metadata value without verifying it.
 *
 * @example
 * ```ts
 * new ServerListenerBuilder().withOnReceiveMetadata((metadata, next) => {
 *   const principal = verifyBearer(metadata.get('authorization')); // throws SecurityError
 *   setPrincipal(metadata, principal);
 *   next(metadata);
 * });
 * ```
 */
export function setPrincipal(metadata: Metadata, principal: Principal): void {
  const state = states.get(metadata);
  if (state === undefined) {
    throw new FluxguardError(
      'missing_call_context',
      'setPrincipal: no fluxguard context for this metadata; safeErrors() must be the first interceptor',
    );
  }
  state.setPrincipal(principal);
}
