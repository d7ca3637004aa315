import { constants as http2Constants, type ServerHttp2Stream } from 'node:http2';
import {
  status as Status,
  type Metadata,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { REQUEST_ID_HEADER, SecurityError, isSecurityError, resolveRequestId, type AuditLogger } from '@fluxguard/core';
import {
  UNREAD_PROBE_MS,
  answerWaiting,
  assertAuditLogger,
  blameUnfinishedRequest,
  blameUnreadAnswer,
  CallState,
  GrpcStatusCode,
  codeFromGrpcStatus,
  resolveOptions,
  retryInfoStatusDetails,
  serverEndingOf,
  toPublicError,
  type AnswerAfterProbe,
  type FailureContext,
  type PublicError,
} from '@fluxguard/core/adapter';
import { warnIfNotAdded } from './added-services.js';
import { GrpcCall, attachCall, callOf, http2StreamOf, safePeer, type FailureAfterEnd } from './context.js';
import { UNPARSABLE_MESSAGE } from './unparsable.js';
import { ForwardingCall, type InboundSink } from './forwarding-call.js';
import { closeIfLingering } from './lingering-streams.js';
import { FIELD_METADATA_KEY, responseMetadata, setRequestId } from './response-metadata.js';
import {
  errorOfGrpcJsRequestStatus,
  errorOfGrpcJsStatus,
  recordFailureSafely,
  rememberAudit,
  type PartialStatusObject,
} from './grpc-js-statuses.js';
import { compactMessageFragments } from './message-fragments.js';

/** grpc-js's own `sendStatus` of its base call, called with the call as `this`. */
type SendStatus = (this: unknown, status: PartialStatusObject) => void;

/** Where the prototype of grpc-js's base call keeps its own `sendStatus` once diverted. */
const GRPC_JS_SEND_STATUS = Symbol('fluxguard.grpcJsSendStatus');

/** An answer that waited unread at a deadline: the error to blame and the bytes waiting. */
interface UnreadProbe {
  readonly error: SecurityError;
  readonly waiting: number;
}

/** A status fluxguard built: code, vetted text and trailing metadata. */
interface SafeStatus {
  readonly code: Status;
  readonly details: string;
  readonly metadata: Metadata;
}

export { FIELD_METADATA_KEY };

/**
 * Trailing metadata key with the seconds to wait before a retry, on `rate_limited`.
 *
 * @example
 * ```ts
 * import { RETRY_AFTER_METADATA_KEY } from '@fluxguard/grpc';
 * const [seconds] = status.metadata.get(RETRY_AFTER_METADATA_KEY); // '3'
 * ```
 */
export const RETRY_AFTER_METADATA_KEY = 'retry-after';

/**
 * A cancel this close to the deadline counts as the deadline: the client cancels at its own
 * deadline, which races grpc-js's server-side timer for the same instant.
 */
const DEADLINE_SLACK_MS = 100;

/**
 * How long a stream may stay open after its status (behind response bytes the client does not
 * read, or with a request the client never ends) before it is closed; also how long after the
 * client's own deadline (which grpc-js enforces, and whose answer can wait the same way) the
 * call is ended here. The wait is the second in which an unread answer is watched, so it is
 * core's `UNREAD_PROBE_MS`.
 */
const STUCK_GRACE_MS = UNREAD_PROBE_MS;

/** The standard rich-error trailer (`google.rpc.Status`), here with a `RetryInfo` detail. */
const STATUS_DETAILS_METADATA_KEY = 'grpc-status-details-bin';

/** Adds the response headers the call's controls set (RateLimit, ...) to `metadata`, unless already there. */
function addResponseHeaders(state: CallState, metadata: Metadata): void {
  const headers = state.responseHeaders;
  if (headers === undefined) return;
  for (const [name, value] of headers) if (metadata.get(name).length === 0) metadata.set(name, value);
}

/**
 * Options of {@link safeErrors}.
 *
 * @example
 * ```ts
 * const options: SafeErrorsOptions = { audit: createAuditLogger({ level: 'info' }) };
 * ```
 */
export interface SafeErrorsOptions {
  /** Where every failure is logged with its full cause (one line per failed call). */
  readonly audit: AuditLogger;
}

const DEFAULTS: Readonly<{ audit: AuditLogger | undefined }> = Object.freeze({ audit: undefined });

/**
 * The error and audit interceptor, which must be the first of a server's interceptors (an
 * interceptor that refuses with `sendStatus` skips its own responder: only earlier ones see
 * that status). For every call it:
 *
 * - resolves the request id from incoming `x-request-id` (kept when well formed, else a new
 *   one), writes it back into the request metadata, and returns it in the initial metadata of
 *   every response and in the trailing metadata of every error (and of an answer sent without
 *   initial metadata);
 * - creates the call context (`getRequestId`, `getSignal`, `getPrincipal`), its signal aborted
 *   when the client cancels, the deadline passes or the call ends;
 * - turns every non-OK status into the safe public error: the error that a fluxguard handler
 *   wrapper or interceptor recorded goes through `toPublicError`; a status a handler chose
 *   itself keeps its code only when the error table knows it (`codeFromGrpcStatus`), always
 *   with the table's neutral text; any other code becomes `INTERNAL`. The handler's trailing
 *   metadata of a failed call is dropped (it may carry internals). `UNIMPLEMENTED` becomes
 *   `unimplemented` ("The method is not implemented.");
 * - writes one audit line per failure with the full cause (`audit.recordFailure`);
 * - adds `x-fluxguard-field` (the offending field) and `retry-after` (seconds) trailing
 *   metadata when the error carries them.
 *
 * Statuses that grpc-js's own call object sends below every interceptor (the client's deadline,
 * a message larger than the maximum or that does not decompress, an unknown compression, an
 * unparsable `grpc-timeout`, a response over the send limit) are caught on that object and
 * leave the same way, with the table's text, the request id and an audit line. A message that
 * cannot be parsed is refused `INVALID_ARGUMENT` here when the service was registered with
 * `addService`, which also gives grpc-js's answer to an unknown method a request id and a line.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { createAuditLogger } from '@fluxguard/core';
 * import { safeErrors } from '@fluxguard/grpc';
 * const server = new Server({ interceptors: [safeErrors({ audit: createAuditLogger() })] });
 * ```
 */
export function safeErrors(options: SafeErrorsOptions): ServerInterceptor {
  return safeErrorsWith('safeErrors', options, undefined);
}

/**
 * What runs inside the safeErrors interceptor of `fluxguardInterceptors`: the inbound events
 * of one call. What it lets through goes on to its {@link InboundSink}.
 *
 * @internal
 */
export interface InboundListener {
  onReceiveMetadata(metadata: Metadata): void;
  onReceiveMessage(message: unknown): void;
  onReceiveHalfClose(): void;
  onCancel(): void;
}

/**
 * Makes the {@link InboundListener} of one call: `call` is where its peer and certificate are
 * read, `target` where a refusal is sent (so that it passes safeErrors' responder), `sink`
 * where allowed events go.
 *
 * @internal
 */
export type InboundListenerFactory = (
  operation: string,
  call: ServerInterceptingCallInterface,
  target: Pick<ServerInterceptingCallInterface, 'sendStatus'>,
  sink: InboundSink,
) => InboundListener;

/**
 * {@link safeErrors}, optionally with `inner` run inside it for every call (after the context is
 * attached, before later interceptors). One grpc-js layer instead of two: each layer costs every
 * call several objects and closures on every event. `inner` refuses through `target`, this
 * interceptor's own call, so its refusals pass the same responder as any other status.
 *
 * @internal
 */
export function safeErrorsWith(
  owner: string,
  options: SafeErrorsOptions,
  inner: InboundListenerFactory | undefined,
): ServerInterceptor {
  const { audit } = resolveOptions(owner, DEFAULTS, options);
  assertAuditLogger(audit, owner);
  // The first call through this interceptor says whether its service came through addService.
  let checked = false;
  const interceptor: ServerInterceptor = (methodDescriptor, call) => {
    if (!checked) {
      checked = true;
      warnIfNotAdded(methodDescriptor.path, interceptor);
    }
    return new SafeErrorsCall(audit, methodDescriptor.path, call, inner);
  };
  rememberAudit(interceptor, audit);
  return interceptor;
}

/**
 * The safeErrors layer of one call (see {@link ForwardingCall}). Its responder methods answer
 * synchronously, so the ordering that grpc-js's `ServerInterceptingCall` keeps for
 * asynchronous responders is never needed.
 */
class SafeErrorsCall extends ForwardingCall implements FailureAfterEnd {
  readonly #audit: AuditLogger;
  readonly #operation: string;
  readonly #inner: InboundListenerFactory | undefined;
  /** The inner listener of this call, made when grpc-js starts the call. */
  #downstream: InboundListener | undefined;
  #grpcCall: GrpcCall | undefined;
  #requestId: string | undefined;
  #metadataSent = false;
  /** grpc-js has sent the client's deadline status (see `#grpcJsStatus`). */
  #clientDeadlineSent = false;
  /** A control is ending the call (its `end`): the status it sends is the call's own. */
  #endingByControl = false;
  /**
   * Since when the handler has not asked for a message (the call's start, or the last message
   * handed to it; 0 while it asks), and whether it has asked at all. grpc-js pauses the stream
   * until the handler asks, so bytes waiting in the stream have waited at most this long for
   * the handler; and how long in all it did not ask while what the client sent filled the
   * stream's buffer, so HTTP/2 flow control held the client back. See `FinishedRequest`, with
   * when the half-close came (0: not yet).
   */
  readonly #startedAt = Date.now();
  #notAskingSince = this.#startedAt;
  #asked = false;
  #heldMs = 0;
  #endedAt = 0;
  /** The HTTP/2 stream of the call, when the call below is grpc-js's own (safeErrors is first). */
  readonly #stream: ServerHttp2Stream | undefined;
  /**
   * The HTTP/2 session of the call, kept from its start: Node lets go of a stream's session once
   * it is destroyed, and a call cut by the server is told by its session ({@link serverEndingOf}).
   */
  readonly #session: object | undefined;
  /** grpc-js's own `sendStatus` of the call below, for the statuses this layer sends. */
  readonly #sendBelow: SendStatus | undefined;

  constructor(
    audit: AuditLogger,
    operation: string,
    below: ServerInterceptingCallInterface,
    inner: InboundListenerFactory | undefined,
  ) {
    super(below);
    this.#audit = audit;
    this.#operation = operation;
    this.#inner = inner;
    this.#stream = http2StreamOf(below);
    this.#session = this.#stream?.session;
    if (this.#stream !== undefined) {
      this.#sendBelow = SafeErrorsCall.#divertGrpcJsStatuses(below);
      compactMessageFragments(below);
    }
  }

  /**
   * grpc-js's base call sends some statuses itself (a deadline, an oversized message). Once per
   * prototype, its `sendStatus` is replaced by one that hands the status of a call whose
   * listener is a safeErrors layer (the first interceptor) to that layer, to leave with a vetted
   * text, the request id and an audit line; any other call's goes on as before. Returns grpc-js's
   * own, through which this layer sends its statuses. On the prototype, not on each call: a
   * property added to every call object cost the garbage collector a fifth of a served call.
   */
  static #divertGrpcJsStatuses(base: ServerInterceptingCallInterface): SendStatus | undefined {
    const proto = Object.getPrototypeOf(base) as Record<string | symbol, unknown> | null;
    if (proto === null) return undefined;
    const diverted = proto[GRPC_JS_SEND_STATUS];
    if (typeof diverted === 'function') return diverted as SendStatus;
    const own = proto.sendStatus;
    if (typeof own !== 'function') return undefined;
    const original = own as SendStatus;
    Object.defineProperty(proto, GRPC_JS_SEND_STATUS, { value: original });
    Object.defineProperty(proto, 'sendStatus', {
      configurable: true,
      writable: true,
      value(this: { listener?: unknown }, status: PartialStatusObject): void {
        const listener = this.listener;
        if (listener instanceof SafeErrorsCall && listener.#sendBelow !== undefined) listener.#grpcJsStatus(status);
        else original.call(this, status);
      },
    });
    return original;
  }

  override sendMetadata(metadata: Metadata | null): void {
    this.#metadataSent = true;
    this.below.sendMetadata(responseMetadata(this.#currentRequestId(), metadata));
  }

  override sendMessage(message: unknown, callback: () => void): void {
    // The response headers go first, and through this layer, so that they carry the request id.
    if (!this.#metadataSent) this.sendMetadata(null);
    this.below.sendMessage(message, callback);
  }

  override sendStatus(status: PartialStatusObject): void {
    const grpcCall = this.#grpcCall;
    if (this.#clientDeadlineSent && grpcCall !== undefined && !grpcCall.statusSent && !this.#endingByControl) {
      // grpc-js has answered the client's deadline; the handler's status comes after it (its
      // answer's write completed once the client took it) and is dropped, not the line.
      this.#clientDeadline(grpcCall);
      this.#forward(this.#neutralStatus());
      return;
    }
    if (grpcCall?.statusSent === true) {
      // The call is over (answered or abandoned): grpc-js drops this one, but never
      // forward text we have not vetted.
      const pending = grpcCall.takePendingError();
      if (pending !== undefined || status.code !== Status.OK)
        this.failedAfterEnd(pending?.error ?? statusCause(status));
      this.#forward(this.#neutralStatus());
      return;
    }
    if (
      grpcCall !== undefined &&
      status.code !== Status.OK &&
      this.#resetByClient() &&
      errorOfGrpcJsRequestStatus(status) !== undefined
    ) {
      // grpc-js took the reset for the end of a request without its message: the client left,
      // it sent no invalid request (a call reset before its handler ran writes no line).
      grpcCall.statusSent = true;
      grpcCall.cancelled = true;
      this.#forward(this.#neutralStatus());
      grpcCall.state.finish('cancelled');
      return;
    }
    if (grpcCall !== undefined) grpcCall.statusSent = true;
    const safe = this.#safeStatus(status, grpcCall?.takePendingError());
    // What the controls added (RateLimit) goes with a refusal only: on every answered call it
    // would cost each response its bytes and each client their parsing, for fields gRPC
    // clients do not read (HTTP sends them on every counted request, as the draft intends).
    if (grpcCall !== undefined && safe.code !== Status.OK && safe.metadata !== null && safe.metadata !== undefined) {
      addResponseHeaders(grpcCall.state, safe.metadata);
    }
    this.#forward(safe);
    this.#closeIfLingering();
    // The call is answered: release what its controls hold before the client can call again,
    // and only now abort the handler's signal, so that nothing it does in reaction can send
    // a status of its own first.
    grpcCall?.state.finish('ended');
  }

  protected override started(): void {
    if (this.#inner !== undefined) this.#downstream = this.#inner(this.#operation, this.below, this, this);
  }

  protected receiveMetadata(metadata: Metadata): void {
    const sent = stringValues(metadata.get(REQUEST_ID_HEADER));
    const requestId = resolveRequestId(sent);
    this.#requestId = requestId;
    // Handlers and later interceptors that forward the id read the checked value.
    if (sent.length !== 1 || sent[0] !== requestId) setRequestId(metadata, requestId);
    const state = new CallState({
      requestId,
      deadline: deadlineOf(this.below),
      transportDeadlineGraceMs: STUCK_GRACE_MS,
      // Sent through this interceptor's own responder, which logs and maps the pending error.
      end: (error) => {
        const stream = this.#stream;
        const waiting = stream?.writableLength ?? 0;
        // A deadline while the answer waits for the client: whether the client is to blame
        // (does it take any more of it?) is known a moment later, and the line written then.
        const probed = stream !== undefined && answerWaiting(error, waiting) ? new LoggedLater(error) : undefined;
        this.#grpcCall?.setPendingError(probed ?? this.#blameUnfinished(error));
        this.#endingByControl = true;
        this.sendStatus({ code: Status.INTERNAL, details: toPublicError(undefined, '').message });
        this.#resetIfStuck(probed === undefined ? undefined : { error, waiting });
      },
      onReleaseError: (err) => {
        this.#audit.logger.error({ ...this.#failureContext(), err }, 'a control release callback failed');
      },
    });
    const grpcCall = new GrpcCall(this.#operation, this.below, state, this.#session);
    // This layer itself, not a function made for each call.
    grpcCall.afterEnd = this;
    this.#grpcCall = grpcCall;
    attachCall(metadata, grpcCall);
    if (this.#downstream === undefined) this.passMetadata(metadata);
    else this.#downstream.onReceiveMetadata(metadata);
  }

  override startRead(): void {
    const stream = this.#stream;
    if (this.#notAskingSince !== 0 && stream !== undefined && stream.readableLength >= stream.readableHighWaterMark) {
      this.#heldMs += Date.now() - this.#notAskingSince;
    }
    this.#notAskingSince = 0;
    this.#asked = true;
    this.below.startRead();
  }

  protected receiveMessage(message: unknown): void {
    // A request that could not be parsed (see `addService`): refused here, with a request id.
    if (message === UNPARSABLE_MESSAGE) {
      this.#grpcCall?.sendFailure(new SecurityError('invalid_argument', { reason: 'message_unparsable' }));
      return;
    }
    this.#notAskingSince = Date.now();
    if (this.#downstream === undefined) this.passMessage(message);
    else this.#downstream.onReceiveMessage(message);
  }

  protected receiveHalfClose(): void {
    if (this.#grpcCall !== undefined) this.#grpcCall.requestFinished = true;
    this.#endedAt = Date.now();
    if (this.#downstream === undefined) this.passHalfClose();
    else this.#downstream.onReceiveHalfClose();
  }

  /**
   * grpc-js reports "cancel" once after every call, including after a status was sent: ends the
   * call state, as answered, cancelled by the client, or past its deadline (grpc-js answered
   * DEADLINE_EXCEEDED below every interceptor: the log still needs its line).
   */
  protected cancelled(): void {
    const grpcCall = this.#grpcCall;
    if (grpcCall !== undefined) {
      const { state } = grpcCall;
      if (grpcCall.statusSent) {
        state.finish('ended');
      } else {
        if (state.deadline !== undefined && Date.now() + DEADLINE_SLACK_MS >= state.deadline) {
          this.#clientDeadline(grpcCall);
        } else {
          grpcCall.statusSent = true;
          grpcCall.cancelled = true;
          // A client that leaves a call its handler works on gets one short info line, as the
          // Express error handler writes for a request whose client left; a call reset before
          // its handler ran (a flood of resets) writes none. A call the server cut itself (a
          // shutdown, a revoked certificate) has the line too, with why. A streaming handler
          // that returned at once is at work until it ends its stream, as an Express handler
          // is until it ends its answer.
          const stream = grpcCall.responseStream;
          const working =
            state.handlerRunning || (state.handlerCalled && stream !== undefined && !stream.writableEnded);
          state.finish('cancelled');
          if (working) this.#audit.recordCancelled(this.#failureContext(), undefined, serverEndingOf(this.#session));
          else if (!state.handlerCalled) {
            // Left while a control was still deciding (a key set fetched, a Redis-backed limit):
            // should it refuse the call, that refusal is the call's line, as on Express, so that
            // a client hanging up on each bad token still leaves its denials in the log.
            state.whenRefused((refusal) => {
              recordFailureSafely(this.#audit, refusal, this.#failureContext());
            });
          }
        }
      }
    }
    this.#downstream?.onCancel();
  }

  /**
   * The deadline grpc-js enforces is the one the client chose (a control's earlier one ends the
   * call through `end`): its budget, not a server failure. The call is over for everything
   * after it: a status the handler sends later (its answer's write completing) is dropped.
   */
  #clientDeadline(grpcCall: GrpcCall): void {
    grpcCall.statusSent = true;
    grpcCall.cancelled = true;
    grpcCall.state.finish('deadline');
    const error = this.#blameUnfinished(new SecurityError('deadline_exceeded', { reason: 'client_deadline' }));
    recordFailureSafely(this.#audit, error, this.#failureContext());
  }

  /**
   * After a control ended the call (a deadline, an idle limit): the status goes out behind any
   * response bytes still queued, and a client that never reads them (a flow-control window it
   * never opens) would keep the stream, those bytes and its memory for good. A stream still
   * open a moment later is reset (RST_STREAM CANCEL), which drops what is queued, or closed with
   * NO_ERROR when nothing waits (the client has not ended its request). `probe`: the
   * answer waited unread at the deadline; whether the client took any of it in that moment
   * decides whom the line blames.
   */
  #resetIfStuck(probe: UnreadProbe | undefined): void {
    const stream = this.#stream;
    if (stream === undefined || (stream.closed && probe === undefined)) return;
    setTimeout(() => {
      const open = !stream.closed && !stream.destroyed;
      if (probe !== undefined) {
        // Closed without a reset: the client took the rest, status included.
        const after: AnswerAfterProbe = open
          ? stream.writableLength
          : stream.rstCode === http2Constants.NGHTTP2_NO_ERROR
            ? 'delivered'
            : 'abandoned';
        const recorded = blameUnreadAnswer(probe.error, probe.waiting, after);
        recordFailureSafely(this.#audit, recorded, this.#failureContext());
      }
      if (open)
        stream.close(stream.writableLength > 0 ? http2Constants.NGHTTP2_CANCEL : http2Constants.NGHTTP2_NO_ERROR);
    }, STUCK_GRACE_MS).unref();
  }

  /**
   * After a status: a stream whose client had not ended its request is closed if it lingers
   * (see `closeIfLingering`); a call a control ended has `#resetIfStuck` instead.
   */
  #closeIfLingering(): void {
    const stream = this.#stream;
    const grpcCall = this.#grpcCall;
    if (stream === undefined || stream.closed) return;
    if (grpcCall?.requestFinished !== true && grpcCall?.state.endedEarly !== true) closeIfLingering(stream);
  }

  /**
   * A deadline that came while the client was still sending (no half-close yet) and nothing
   * it sent waited long unread in the stream, or just after its half-close with the handler
   * keeping up: the client's doing (`request_unfinished`, `request_late`).
   */
  #blameUnfinished(error: SecurityError): SecurityError {
    const stream = this.#stream;
    // The half-close sets both `requestFinished` and `#endedAt`.
    const finished = this.#endedAt !== 0 && {
      forMs: Date.now() - this.#endedAt,
      sendingMs: this.#endedAt - this.#startedAt,
      heldMs: this.#heldMs,
    };
    if (stream === undefined) return blameUnfinishedRequest(error, finished, 0);
    const since = this.#notAskingSince;
    const bytes = stream.readableLength;
    return blameUnfinishedRequest(error, finished, {
      bytes,
      forMs: !this.#asked ? Number.POSITIVE_INFINITY : since === 0 || bytes === 0 ? 0 : Date.now() - since,
      limit: stream.readableHighWaterMark,
    });
  }

  /**
   * A status grpc-js's base call sent on its own (see `errorOfGrpcJsStatus`): the client gets
   * its public form with the request id, and the audit log its line, as for any other status.
   * The client's deadline is logged by `cancelled`, which follows, or by the handler's own
   * status if that comes first (its answer's write completing once the client takes it).
   */
  #grpcJsStatus(status: PartialStatusObject): void {
    const grpcCall = this.#grpcCall;
    const stream = this.#stream;
    if (grpcCall?.statusSent === true || stream === undefined || stream.closed || stream.destroyed) {
      // grpc-js drops a status once the call is over; never forward its text.
      this.#forward(this.#neutralStatus());
      return;
    }
    const error = errorOfGrpcJsStatus(status);
    if (status.code === Status.DEADLINE_EXCEEDED) {
      this.#forward(publicStatus(toPublicError(error, this.#currentRequestId())));
      this.#clientDeadlineSent = true;
    } else {
      if (grpcCall !== undefined) grpcCall.statusSent = true;
      this.#forward(publicStatus(recordFailureSafely(this.#audit, error, this.#failureContext())));
      grpcCall?.state.finish('ended');
    }
    this.#closeIfLingering();
  }

  /**
   * {@link FailureAfterEnd}: what failed once the call was over (its handler's status, or a
   * streaming handler's failure after a cancel, a deadline or its own answer): one debug line
   * with the error, no second audit line. Most often it is the end's own doing (the aborted
   * signal, a stream destroyed under the handler), which a client can bring about at will; a
   * real bug shows on the calls that are not cut too.
   */
  failedAfterEnd(error: unknown): void {
    this.#audit.logger.debug({ ...this.#failureContext(), err: error }, 'status after the call ended');
  }

  #forward(status: PartialStatusObject): void {
    if (this.#sendBelow === undefined) this.below.sendStatus(status);
    else this.#sendBelow.call(this.below, status);
  }

  /** Whether the client reset the call's stream (RST_STREAM before its request ended). */
  #resetByClient(): boolean {
    const stream = this.#stream;
    // Node's types say `rstCode` is always a number; it is undefined until the stream closes.
    const code: unknown = stream?.rstCode;
    return (
      stream !== undefined && (stream.aborted || (typeof code === 'number' && code !== http2Constants.NGHTTP2_NO_ERROR))
    );
  }

  #neutralStatus(): SafeStatus {
    return { code: Status.INTERNAL, details: toPublicError(undefined, '').message, metadata: this.#trailers() };
  }

  #currentRequestId(): string {
    return (this.#requestId ??= resolveRequestId(undefined));
  }

  #trailers(): Metadata {
    return responseMetadata(this.#currentRequestId());
  }

  /**
   * The trailers of an answered call (status OK). Once the response headers have gone out with
   * the request id, the trailers carry only what the handler put there: an answered call has no
   * audit line to find, and a second header cost every call over 1 % of its instructions (Node
   * and HPACK take each header on its own). A trailers-only answer (no headers sent) carries
   * the id here, and a handler's own `x-request-id` is replaced by the call's.
   */
  #answeredTrailers(from: Metadata | null | undefined): Metadata | null {
    if (!this.#metadataSent) return responseMetadata(this.#currentRequestId(), from);
    if (from === undefined || from === null) return null;
    return from.get(REQUEST_ID_HEADER).length === 0 ? from : responseMetadata(this.#currentRequestId(), from);
  }

  #failureContext(): FailureContext {
    const grpcCall = this.#grpcCall;
    return {
      operation: this.#operation,
      peer: grpcCall?.peer ?? safePeer(this.below),
      requestId: this.#currentRequestId(),
      transport: 'grpc',
      subject: grpcCall?.state.principal?.subject,
    };
  }

  /**
   * The status the client gets for the first status of a call: OK as it is (with the request
   * id unless the headers carried it), anything else (or the error a hook or handler recorded)
   * through the audit log's mapping to its public form.
   */
  #safeStatus(status: PartialStatusObject, pending: { readonly error: unknown } | undefined): PartialStatusObject {
    if (pending === undefined && status.code === Status.OK) {
      return { code: status.code, details: status.details, metadata: this.#answeredTrailers(status.metadata) };
    }
    const error = pending !== undefined ? pending.error : errorFromStatus(status);
    // Answered now, logged once who is to blame is known (see `end` of the call state).
    if (error instanceof LoggedLater) return publicStatus(toPublicError(error.error, this.#currentRequestId()));
    // `publicStatus` writes the request id the audit log gave the failure.
    return publicStatus(recordFailureSafely(this.#audit, error, this.#failureContext()));
  }
}

/**
 * The status a client may see for a public error, with the request id and the safe details
 * in trailing metadata.
 */
function publicStatus(publicError: PublicError): SafeStatus {
  const trailers = responseMetadata(publicError.requestId);
  if (publicError.details?.field !== undefined) trailers.set(FIELD_METADATA_KEY, publicError.details.field);
  // As HTTP sends `Retry-After` only on 429: a retry hint belongs to a rate limit alone.
  if (publicError.code === 'rate_limited' && publicError.details?.retryAfterSeconds !== undefined) {
    trailers.set(RETRY_AFTER_METADATA_KEY, String(publicError.details.retryAfterSeconds));
    trailers.set(
      STATUS_DETAILS_METADATA_KEY,
      retryInfoStatusDetails(publicError.grpcStatus, publicError.message, publicError.details.retryAfterSeconds),
    );
  }
  return { code: grpcStatus(publicError.grpcStatus), details: publicError.message, metadata: trailers };
}

/** core's table holds the numeric codes of the gRPC specification: the values of this enum. */
function grpcStatus(code: number): Status {
  const name = Status[code] as keyof typeof Status | undefined;
  return name === undefined ? Status.INTERNAL : Status[name];
}

/** A pending error whose audit line is written later, not when its status is sent. */
class LoggedLater {
  constructor(readonly error: SecurityError) {}
}

/**
 * The error behind a status that a handler (or grpc-js on its behalf) chose itself: the code
 * keeps its meaning when the error table knows it, and the original text becomes the cause,
 * for the log only. grpc-js's `UNIMPLEMENTED` for a request with no message or two is the
 * client's `invalid_argument`.
 */
export function errorFromStatus(status: {
  readonly code?: number | undefined;
  readonly details?: string | undefined;
}): SecurityError {
  const code = typeof status.code === 'number' ? status.code : Status.UNKNOWN;
  return (
    errorOfGrpcJsRequestStatus(status) ??
    new SecurityError(codeFromGrpcStatus(code), { reason: statusReason(code), cause: statusCause(status) })
  );
}

/** `UNIMPLEMENTED` says the method is missing (grpc-js's default handler sends it), not that a handler failed. */
function statusReason(code: number): 'unimplemented' | 'handler_status' {
  return code === GrpcStatusCode.UNIMPLEMENTED ? 'unimplemented' : 'handler_status';
}

function statusCause(status: { readonly code?: number | undefined; readonly details?: string | undefined }): Error {
  const name = typeof status.code === 'number' ? (Status[status.code] ?? String(status.code)) : 'UNKNOWN';
  return new Error(`gRPC status ${name}: ${status.details ?? ''}`);
}

/**
 * Turns anything a handler failed with into an error for {@link toPublicError}: a
 * `SecurityError` as it is; a grpc-js style status object or `ServiceError` (numeric `code`)
 * through {@link errorFromStatus}, keeping the original for the log; anything else as it is
 * (it becomes `internal`).
 */
export function normalizeFailure(error: unknown): unknown {
  if (isSecurityError(error)) return error;
  if (isStatusLike(error)) {
    const { code, details } = error;
    const text = typeof details === 'string' ? details : error instanceof Error ? error.message : '';
    return new SecurityError(codeFromGrpcStatus(code), {
      reason: statusReason(code),
      cause: error instanceof Error ? error : statusCause({ code, details: text }),
    });
  }
  return error;
}

/**
 * For authors of fluxguard interceptors (jwtAuth, rbac, rate limits): refuses a call from
 * `onReceiveMetadata` or `onReceiveMessage`. The error is kept for {@link safeErrors}, which
 * logs it once (with its `reason` and cause) and sends its public form; the status sent from
 * here is already the public one, so nothing leaks even if `safeErrors` is missing. Do not call
 * `next` afterwards.
 *
 * @example
 * ```ts
 * const requireAuth: ServerInterceptor = (method, call) =>
 *   new ServerInterceptingCall(call, new ResponderBuilder().withStart((next) => {
 *     next(new ServerListenerBuilder().withOnReceiveMetadata((metadata, nextMetadata) => {
 *       if (metadata.get('authorization').length === 0) {
 *         rejectCall(call, metadata, new SecurityError('unauthenticated', { reason: 'missing_token' }));
 *         return;
 *       }
 *       nextMetadata(metadata);
 *     }).build());
 *   }).build());
 * ```
 */
export function rejectCall(
  call: Pick<ServerInterceptingCallInterface, 'sendStatus'>,
  metadata: Metadata,
  error: unknown,
): void {
  call.sendStatus(prepareFailure(error, callOf(metadata)));
}

/**
 * Records a failure's real error on the call (for {@link safeErrors} to log) and returns the
 * status to send for it, already public so that nothing leaks even without the interceptor.
 *
 * @internal
 */
export function prepareFailure(error: unknown, grpcCall: GrpcCall | undefined): SafeStatus {
  const normalized = normalizeFailure(error);
  grpcCall?.setPendingError(normalized);
  return publicStatus(toPublicError(normalized, grpcCall?.state.requestId ?? resolveRequestId(undefined)));
}

function isStatusLike(error: unknown): error is { readonly code: number; readonly details?: unknown } {
  return typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'number';
}

function stringValues(values: readonly (string | Buffer)[]): string[] {
  return values.filter((v): v is string => typeof v === 'string');
}

function deadlineOf(call: ServerInterceptingCallInterface): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}
