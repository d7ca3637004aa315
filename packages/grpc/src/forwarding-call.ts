import { ServerInterceptingCall, type Metadata, type ServerInterceptingCallInterface } from '@grpc/grpc-js';

/** The listener a grpc-js call is started with (not exported by grpc-js under a name). */
export type InterceptingServerListener = Parameters<ServerInterceptingCallInterface['start']>[0];

/**
 * Where an inbound listener passes the events it lets through: the interceptors and handler
 * after it.
 *
 * @internal
 */
export interface InboundSink {
  passMetadata(metadata: Metadata): void;
  passMessage(message: unknown): void;
  passHalfClose(): void;
}

/**
 * One fluxguard interceptor layer of one call, as one object: the call that later interceptors
 * (and the handler) use, and the listener of the call below it. grpc-js's builders make a
 * responder, a listener and a closure per event for every call and layer; this makes none.
 * The responder methods it does not override (sending, peer, deadline, auth context, reads) are
 * grpc-js's own, which forward to the call below. Subclasses handle the inbound events with
 * the `receive*` methods and let them through with `pass*`; no event reaches them after the
 * call was cancelled.
 *
 * @internal
 */
export abstract class ForwardingCall extends ServerInterceptingCall implements InterceptingServerListener, InboundSink {
  protected readonly below: ServerInterceptingCallInterface;
  /** The listener of the interceptors and handler after this layer, given to `start`. */
  #above: InterceptingServerListener | undefined;
  #cancelled = false;

  constructor(below: ServerInterceptingCallInterface) {
    super(below);
    this.below = below;
  }

  override start(listener: InterceptingServerListener): void {
    this.#above = listener;
    this.started();
    this.below.start(this);
  }

  onReceiveMetadata(metadata: Metadata): void {
    if (!this.#cancelled) this.receiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    if (!this.#cancelled) this.receiveMessage(message);
  }

  onReceiveHalfClose(): void {
    if (!this.#cancelled) this.receiveHalfClose();
  }

  onCancel(): void {
    this.#cancelled = true;
    this.cancelled();
    this.#above?.onCancel();
  }

  passMetadata(metadata: Metadata): void {
    if (!this.#cancelled) this.#above?.onReceiveMetadata(metadata);
  }

  passMessage(message: unknown): void {
    if (!this.#cancelled) this.#above?.onReceiveMessage(message);
  }

  passHalfClose(): void {
    if (!this.#cancelled) this.#above?.onReceiveHalfClose();
  }

  /** grpc-js starts the call: the layers after this one are in place. Nothing to do by default. */
  protected started(): void {
    // A layer that needs the later layers in place first overrides this.
  }
  protected abstract receiveMetadata(metadata: Metadata): void;
  protected abstract receiveMessage(message: unknown): void;
  protected abstract receiveHalfClose(): void;
  /** The call ended for the client (grpc-js reports this once after every call). */
  protected abstract cancelled(): void;
}
