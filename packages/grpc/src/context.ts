import type { ServerHttp2Stream } from 'node:http2';
import { TLSSocket } from 'node:tls';
import type {
  Metadata,
  ServerInterceptingCallInterface,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
} from '@grpc/grpc-js';
import { SecurityError, type ContextKey, type Principal, type RequestContext } from '@fluxguard/core';
import {
  UNIX_SOCKET_PEER,
  hiddenSlot,
  missingContextError,
  untrustedCertificateError,
  type CallState,
} from '@fluxguard/core/adapter';

/**
 * What fluxguard knows about one gRPC call, as a handler or a later interceptor sees it: core's
 * `RequestContext` (request id, principal, deadline, signal, values a control stored) plus the
 * full method and the peer. Built by the {@link safeErrors} interceptor when the call's
 * metadata arrives.
 *
 * @example
 * ```ts
 * import { getCallContext, type GrpcCallContext } from '@fluxguard/grpc';
 * const context: GrpcCallContext = getCallContext(call);
 * audit.logger.info({ requestId: context.requestId, operation: context.operation }, 'started');
 * ```
 */
export interface GrpcCallContext extends RequestContext {
  /** The full method, `/pkg.Service/Method`. */
  readonly operation: string;
  /** The remote address as grpc-js reports it, e.g. `127.0.0.1:51234`. */
  readonly peer: string;
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

/**
 * What logs, at debug level, a handler's failure once its call is over (see `GrpcCall.afterEnd`).
 *
 * @example
 * ```ts
 * grpcCall.afterEnd?.failedAfterEnd(error);
 * ```
 *
 * @internal
 */
export interface FailureAfterEnd {
  failedAfterEnd(error: unknown): void;
}

/**
 * One gRPC call as this package tracks it: core's per-call state (principal, deadline,
 * signal, values, releases) and what only the gRPC side needs. Internal to this package.
 */
export class GrpcCall {
  readonly state: CallState;
  readonly operation: string;
  readonly #below: Pick<ServerInterceptingCallInterface, 'getConnectionInfo'>;
  #peer: string | undefined;
  #view: GrpcCallContext | undefined;
  #pendingError: { readonly error: unknown } | undefined;
  /** A status left our interceptor for the client; later ones are dropped. */
  statusSent = false;
  /** The client went away (cancel or deadline) before any status. */
  cancelled = false;
  /** The client has sent its whole request (half-close). */
  requestFinished = false;
  /** The call's HTTP/2 session, when grpc-js's own call is below safeErrors: what one connection's calls share. */
  readonly session: object | undefined;
  /**
   * Logs a failure of the call's handler once the call is over (answered, cancelled by its
   * client, ended by a deadline): set by safeErrors as it makes the call. A streaming handler's
   * failure then never reaches safeErrors as a status (grpc-js destroys the stream of a call
   * that ended under it), where a unary handler's still does.
   */
  afterEnd: FailureAfterEnd | undefined = undefined;
  /**
   * The response stream a streaming handler writes, set as the handler is called: while it is
   * not ended, the handler is at work on the call, even one that returned at once and works
   * from the stream's events.
   */
  responseStream: { readonly writableEnded: boolean } | undefined = undefined;

  /**
   * @param below - the grpc-js call the peer address is read from, when first asked for.
   * @param session - the call's HTTP/2 session, when known.
   */
  constructor(
    operation: string,
    below: Pick<ServerInterceptingCallInterface, 'getConnectionInfo'>,
    state: CallState,
    session?: object,
  ) {
    this.operation = operation;
    this.#below = below;
    this.state = state;
    this.session = session;
  }

  /** The client's address as grpc-js reports it (`unknown` when it cannot), read once, when first asked for. */
  get peer(): string {
    return (this.#peer ??= safePeer(this.#below));
  }

  /**
   * Node's verification code of the client certificate the call's connection presented and the
   * TLS stack refused (per-operation mode), or `undefined`. grpc-js tells such a connection from
   * one without TLS by nothing (`getAuthContext()` is empty for both), so the socket of the
   * call's HTTP/2 session is asked: only when a refusal for want of a certificate reads it, and
   * once per connection (`untrustedCertificateError`).
   */
  get certificateError(): string | undefined {
    const socket: unknown = http2StreamOf(this.#below)?.session?.socket;
    return socket instanceof TLSSocket ? untrustedCertificateError(socket) : undefined;
  }

  /** What handlers see of the call; made when first asked for (most handlers never do). */
  get view(): GrpcCallContext {
    return (this.#view ??= Object.freeze(new ContextView(this)));
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

  /** Ends the call now with `error`, through the safeErrors interceptor (streams already destroyed included). */
  sendFailure(error: unknown): void {
    // The real error is what gets logged and mapped; the one handed to `end` only carries it.
    this.setPendingError(error);
    this.state.end(new SecurityError('internal', { cause: error }));
  }
}

/** The read-only face of a {@link GrpcCall}, handed to handlers. */
class ContextView implements GrpcCallContext {
  readonly #state: CallState;
  readonly requestId: string;
  readonly operation: string;
  readonly peer: string;

  constructor(call: GrpcCall) {
    this.#state = call.state;
    this.requestId = call.state.requestId;
    this.operation = call.operation;
    this.peer = call.peer;
  }

  get principal(): Principal | undefined {
    return this.#state.principal;
  }

  get signal(): AbortSignal {
    return this.#state.signal;
  }

  get deadline(): number | undefined {
    return this.#state.deadline;
  }

  get<T>(key: ContextKey<T>): T | undefined {
    return this.#state.get(key);
  }
}

// The call rides on the Metadata object that grpc-js hands from the first interceptor through
// every later one to the handler's call (`call.metadata`), for all four call kinds, in a slot
// only this module holds: no metadata value a client sends can reach it (values live in the
// object's internal map). On the object rather than in a WeakMap: under load, one WeakMap entry
// per call cost the garbage collector about a quarter of a served call's CPU.
const calls = hiddenSlot<GrpcCall>();

/** @internal */
export function attachCall(metadata: Metadata, call: GrpcCall): void {
  calls.set(metadata, call);
}

/** @internal */
export function callOf(metadata: Metadata): GrpcCall | undefined {
  return calls.get(metadata);
}

/** What to do when no fluxguard context exists: said the same way by every accessor. */
export const INSTALL_INTERCEPTORS = 'install fluxguardInterceptors() (safeErrors first) on the grpc-js Server';

function requireCall(call: ServerCall, accessor: string): GrpcCall {
  const found = callOf(call.metadata);
  // Fail closed and loudly: without the interceptor there is no request id, no signal and
  // no verified principal, and guessing one would be worse than refusing the call.
  if (found === undefined) throw missingContextError(accessor, INSTALL_INTERCEPTORS);
  return found;
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
  return requireCall(call, 'getCallContext').view;
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
  return requireCall(call, 'getRequestId').state.requestId;
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
  return requireCall(call, 'getPrincipal').state.principal;
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
  return requireCall(call, 'getSignal').state.signal;
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
  return callOf(metadata)?.view;
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
  const found = callOf(metadata);
  if (found === undefined) throw missingContextError('setPrincipal', INSTALL_INTERCEPTORS);
  found.state.setPrincipal(principal);
}

/**
 * The client's address (see {@link peerString}), from the connection facts grpc-js
 * keeps for each call: read when the call started, they outlive its stream, where `getPeer()`
 * reads the live socket through the session each time. `unix` for a connection to a server on a
 * Unix socket, `unknown` when there are none.
 *
 * @internal
 */
export function safePeer(call: Pick<ServerInterceptingCallInterface, 'getConnectionInfo'>): string {
  try {
    const { remoteAddress, remotePort, localAddress } = call.getConnectionInfo();
    if (remoteAddress === undefined && localAddress?.startsWith(UNIX_LOCAL_ADDRESS) === true) return UNIX_SOCKET_PEER;
    return peerString(remoteAddress, remotePort);
  } catch {
    return 'unknown';
  }
}

/**
 * How the local address of a Unix socket's connection begins, the socket's path after it: set
 * as the connection is accepted (`hardenHttp2Servers`), read per call by {@link safePeer}.
 *
 * @internal
 */
export const UNIX_LOCAL_ADDRESS = `${UNIX_SOCKET_PEER}:`;

/**
 * `address:port`, an IPv6 address in brackets (`[::1]:5000`, as HTTP peers are written): the
 * address alone without a port, `unknown` without an address. grpc-js's `getPeer()` leaves
 * IPv6 unbracketed, where `2001:db8::c:d:e:f` and port 5000 read as one address
 * (`2001:db8::c:d:e:f:5000`), so that a client's source port became part of its address key.
 *
 * @internal
 */
export function peerString(address: string | undefined, port: number | undefined): string {
  if (address === undefined || address === '') return 'unknown';
  if (port === undefined || port === 0) return address;
  return address.includes(':') ? `[${address}]:${String(port)}` : `${address}:${String(port)}`;
}

/**
 * The HTTP/2 stream of a call, read from grpc-js's own call object (`stream`, not part of its
 * typed interface), which is the one below safeErrors when safeErrors is the first interceptor.
 * `undefined` when it is not there or does not look like a stream.
 *
 * @internal
 */
export function http2StreamOf(call: object): ServerHttp2Stream | undefined {
  const stream: unknown = (call as { stream?: unknown }).stream;
  if (typeof stream !== 'object' || stream === null) return undefined;
  const candidate = stream as Partial<ServerHttp2Stream>;
  return typeof candidate.close === 'function' && typeof candidate.closed === 'boolean'
    ? (stream as ServerHttp2Stream)
    : undefined;
}
