import { createRequire } from 'node:module';
import { type Metadata, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';
import {
  ConfigurationError,
  type CallInfo,
  type CertificateIdentity,
  type Control,
  type HeaderReader,
} from '@fluxguard/core';
import {
  StateCallInfo,
  LruCache,
  createPipeline,
  missingContextError,
  type Pipeline,
  identityFromCertificate,
  hiddenSlot,
} from '@fluxguard/core/adapter';
import { warnUnservedMethods } from './added-services.js';
import { INSTALL_INTERCEPTORS, callOf, type GrpcCall } from './context.js';
import { rejectCall, type InboundListener, type InboundListenerFactory } from './errors.js';
import { limitReceivedMessages } from './message-limit.js';
import { ForwardingCall, type InboundSink } from './forwarding-call.js';
import { messageSize, setMessageSize } from './unparsable.js';
import { storedEntries } from './stored-entries.js';

/**
 * The one gRPC pipeline: an interceptor that runs `controls` (ordered by stage) on every call.
 * It builds the call's `CallInfo` once (shared with any other pipeline interceptor of the
 * call), runs every start hook when the metadata arrives, holds request messages and the
 * half-close until the call is allowed, runs the message hooks on every inbound message of
 * every call kind, and refuses the call through the safe-error layer when a hook throws.
 * Release callbacks run once when the call ends (answered, failed, cancelled, deadline): the
 * safeErrors interceptor, which must come first, ends the call's state.
 *
 * Every fluxguard interceptor (`guard`, `jwtAuth`, `rbac`, `mtls`) is this with its controls;
 * `fluxguardInterceptors` is `safeErrors` with this pipeline (the whole list) run inside it.
 *
 * @throws ConfigurationError for an invalid control, or grpc-js older than 1.14.5.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { controls, safeErrors } from '@fluxguard/grpc';
 * const server = new Server({ interceptors: [safeErrors({ audit }), controls('limits', [oneAtATime])] });
 * ```
 */
export function controls(owner: string, list: readonly Control[]): ServerInterceptor {
  const listenerFor = pipelineListeners(owner, list);
  const interceptor: ServerInterceptor = (methodDescriptor, call) =>
    new PipelineCall(listenerFor, methodDescriptor.path, call);
  linkPipeline(interceptor, listenerFor);
  return interceptor;
}

/** The pipeline of each listener factory, and of each interceptor that runs one. */
const pipelines = new WeakMap<object, Pipeline>();

/** What `#runInbound` returns when the controls refused the call. */
const REFUSED = Symbol('refused');

/**
 * Notes that `interceptor` runs the pipeline of `listenerFor`, for `addService` to hold the
 * pipeline's patterns against the methods it registers ({@link pipelineOf}).
 *
 * @internal
 */
export function linkPipeline(interceptor: object, listenerFor: InboundListenerFactory): void {
  const pipeline = pipelines.get(listenerFor);
  if (pipeline !== undefined) pipelines.set(interceptor, pipeline);
}

/**
 * The pipeline an interceptor of `controls()` or `fluxguardInterceptors()` runs, if any.
 *
 * @internal
 */
export function pipelineOf(interceptor: unknown): Pipeline | undefined {
  return typeof interceptor === 'function' ? pipelines.get(interceptor) : undefined;
}

/** The layer of {@link controls} for one call: its pipeline listener between the calls around it. */
class PipelineCall extends ForwardingCall {
  readonly #listener: InboundListener;

  constructor(listenerFor: InboundListenerFactory, operation: string, below: ServerInterceptingCallInterface) {
    super(below);
    // Refusals go out through `below`: the interceptor before this one (safeErrors) sees them.
    this.#listener = listenerFor(operation, below, below, this);
  }

  protected receiveMetadata(metadata: Metadata): void {
    this.#listener.onReceiveMetadata(metadata);
  }

  protected receiveMessage(message: unknown): void {
    this.#listener.onReceiveMessage(message);
  }

  protected receiveHalfClose(): void {
    this.#listener.onReceiveHalfClose();
  }

  protected cancelled(): void {
    this.#listener.onCancel();
  }
}

/**
 * Makes the pipeline of `list` (checked once, here) and returns a factory of its per-call
 * listener. `call` is where the call's peer certificate is read; `target` is where a refusal
 * is sent: the previous interceptor's call for {@link controls}, the merged interceptor itself
 * for `fluxguardInterceptors`.
 *
 * @internal
 */
export function pipelineListeners(owner: string, list: readonly Control[]): InboundListenerFactory {
  const pipeline = createPipeline(owner, list);
  assertVerifiedAuthContext(owner);
  let firstCall = true;
  const listenerFor: InboundListenerFactory = (operation, call, target, sink) => {
    if (firstCall) {
      firstCall = false;
      warnUnservedMethods(pipeline);
    }
    const maxMessageBytes = pipeline.maxMessageBytes(operation);
    if (maxMessageBytes !== undefined) limitReceivedMessages(call, maxMessageBytes);
    return new PipelineListener(owner, pipeline, operation, call, target, sink);
  };
  pipelines.set(listenerFor, pipeline);
  return listenerFor;
}

type Phase = 'pending' | 'allowed' | 'refused';

/**
 * The pipeline's side of one call. It runs every start hook when the metadata arrives, holds
 * request messages and the half-close until the call is allowed, runs the message hooks on
 * every inbound message, and refuses the call when a hook throws. A class rather than a set of
 * closures: a served call costs one object here, and events of an allowed call allocate nothing.
 */
class PipelineListener implements InboundListener {
  readonly #owner: string;
  readonly #pipeline: Pipeline;
  readonly #operation: string;
  readonly #call: ServerInterceptingCallInterface;
  readonly #target: Pick<ServerInterceptingCallInterface, 'sendStatus'>;
  readonly #sink: InboundSink;
  #phase: Phase = 'pending';
  #grpcCall: GrpcCall | undefined;
  #metadata: Metadata | undefined;
  // Messages and the half-close that arrive while the start hooks run, in order.
  #held: (() => void)[] | undefined;

  constructor(
    owner: string,
    pipeline: Pipeline,
    operation: string,
    call: ServerInterceptingCallInterface,
    target: Pick<ServerInterceptingCallInterface, 'sendStatus'>,
    sink: InboundSink,
  ) {
    this.#owner = owner;
    this.#pipeline = pipeline;
    this.#operation = operation;
    this.#call = call;
    this.#target = target;
    this.#sink = sink;
  }

  onReceiveMetadata(metadata: Metadata): void {
    this.#metadata = metadata;
    try {
      const grpcCall = callOf(metadata);
      // Fail closed: without safeErrors there is no request id, signal or place for the principal.
      if (grpcCall === undefined) throw missingContextError(this.#owner, INSTALL_INTERCEPTORS);
      this.#grpcCall = grpcCall;
      const info = (grpcCall.state.callInfo ??= callInfo(this.#operation, this.#call, metadata, grpcCall));
      const pending = this.#pipeline.start(info, grpcCall.state);
      if (pending === undefined) {
        this.#allow(metadata);
        return;
      }
      pending.then(
        () => {
          this.#allow(metadata);
        },
        (error: unknown) => {
          this.#refuse(metadata, error);
        },
      );
    } catch (error) {
      this.#refuse(metadata, error);
    }
  }

  onReceiveMessage(message: unknown): void {
    if (this.#phase === 'allowed') this.#deliverMessage(message);
    else if (this.#phase === 'pending') {
      (this.#held ??= []).push(() => {
        this.#deliverMessage(message);
      });
    }
  }

  onReceiveHalfClose(): void {
    if (this.#phase === 'allowed') this.#deliverHalfClose();
    else if (this.#phase === 'pending') {
      (this.#held ??= []).push(() => {
        this.#deliverHalfClose();
      });
    }
  }

  onCancel(): void {
    if (this.#phase === 'pending') this.#phase = 'refused';
    this.#held = undefined;
  }

  // A held event is delivered only while the call is still allowed: never after a refusal (of
  // an earlier held event, say).
  #deliverMessage(message: unknown): void {
    if (this.#phase !== 'allowed') return;
    const handedOn = this.#runInbound(message, true);
    if (handedOn !== REFUSED) this.#sink.passMessage(handedOn);
  }

  #deliverHalfClose(): void {
    if (this.#phase === 'allowed' && this.#runInbound(undefined, false) !== REFUSED) this.#sink.passHalfClose();
  }

  /**
   * Runs the message hooks (or the end-of-input hooks); returns the message to hand on (a
   * schema's output in its place), or `REFUSED` when they refused the call.
   */
  #runInbound(message: unknown, isMessage: boolean): unknown {
    const grpcCall = this.#grpcCall;
    const info = grpcCall?.state.callInfo;
    const metadata = this.#metadata;
    if (!this.#pipeline.hasMessageHooks || grpcCall === undefined || info === undefined || metadata === undefined) {
      return message;
    }
    try {
      if (!isMessage) {
        this.#pipeline.inboundEnd(info, grpcCall.state);
        return undefined;
      }
      const bytes = messageSize(message);
      const handedOn = this.#pipeline.message(message, info, grpcCall.state, bytes);
      if (handedOn !== message && bytes !== undefined) setMessageSize(handedOn, bytes);
      return handedOn;
    } catch (error) {
      this.#refuse(metadata, error);
      return REFUSED;
    }
  }

  #allow(metadata: Metadata): void {
    const state = this.#grpcCall?.state;
    if (this.#phase !== 'pending' || state?.finished === true || state?.endedEarly === true) return;
    this.#phase = 'allowed';
    this.#sink.passMetadata(metadata);
    const held = this.#held;
    this.#held = undefined;
    if (held !== undefined) for (const deliver of held) deliver();
  }

  #refuse(metadata: Metadata, error: unknown): void {
    if (this.#phase === 'refused') return;
    this.#phase = 'refused';
    this.#held = undefined;
    rejectCall(this.#target, metadata, error);
  }
}

function callInfo(
  operation: string,
  call: ServerInterceptingCallInterface,
  metadata: Metadata,
  grpcCall: GrpcCall,
): CallInfo {
  return new StateCallInfo(
    grpcCall.state,
    'grpc',
    operation,
    () => grpcCall.peer,
    () => connectionPeerIdentity(call, grpcCall.session),
    metadataHeaders(metadata),
    // Read only by a refusal for want of a verified certificate.
    () => grpcCall.certificateError,
  );
}

/**
 * Read-only, case-insensitive access to gRPC metadata as core's `HeaderReader`: only text
 * values (binary `-bin` entries are skipped).
 *
 * @example
 * ```ts
 * import { metadataHeaders } from '@fluxguard/grpc';
 * const headers = metadataHeaders(call.metadata);
 * headers.get('Authorization'); // 'Bearer eyJ...'
 * ```
 */
export function metadataHeaders(metadata: Metadata): HeaderReader {
  return new MetadataHeaders(metadata);
}

class MetadataHeaders implements HeaderReader {
  readonly #metadata: Metadata;

  constructor(metadata: Metadata) {
    this.#metadata = metadata;
  }

  get(name: string): string | undefined {
    return this.getAll(name)[0];
  }

  getAll(name: string): readonly string[] {
    // grpc-js's `get` lowercases the name itself.
    return this.#metadata.get(name).filter((value): value is string => typeof value === 'string');
  }

  entries(): Iterable<readonly [string, string | Buffer]> {
    return metadataEntries(this.#metadata);
  }
}

/**
 * Every (name, value) pair of `metadata`, repeated names once per value, as grpc-js stores them
 * (names lowercase, `-bin` values as Buffers), read one at a time from grpc-js's `internalRepr`
 * (a `Map` of name to values in 1.14.5 to 1.14.7, declared `protected`): the header limits stop
 * at the first entry over their count, where `toJSON` copies every entry into a plain object
 * first (a call refused for 900 entries paid for all 900). A grpc-js that keeps its entries
 * otherwise is read through `toJSON`.
 *
 * @example
 * ```ts
 * for (const [name, value] of metadataEntries(call.metadata)) count += 1;
 * ```
 *
 * @internal
 */
export function* metadataEntries(metadata: Metadata): Generator<readonly [string, string | Buffer], void, undefined> {
  const stored = storedEntries(metadata);
  if (stored !== undefined) {
    for (const [name, values] of stored) {
      for (const value of values) yield [name, value];
    }
    return;
  }
  for (const [name, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) yield [name, value];
  }
  // toJSON fills a plain object, where an entry named __proto__ sets the prototype instead:
  // without this, its values escaped every header limit and check.
  for (const value of metadata.get('__proto__')) yield ['__proto__', value];
}

// Keyed by the fingerprint Node computed for the verified certificate: a hit skips hashing and
// parsing the DER again on every call of a connection.
const identities = new LruCache<string, CertificateIdentity>(1024);

/**
 * The identity of the client certificate that the TLS handshake verified, or `undefined`.
 * grpc-js >= 1.14.5 fills `sslPeerCertificate` only for authorized connections; an untrusted
 * certificate (per-operation mode lets its handshake complete) is never read.
 *
 * @internal
 */
export function verifiedPeerIdentity(
  call: Pick<ServerInterceptingCallInterface, 'getAuthContext'>,
): CertificateIdentity | undefined {
  const context = call.getAuthContext();
  const peer = context.transportSecurityType === 'ssl' ? context.sslPeerCertificate : undefined;
  if (peer === undefined || !(peer.raw instanceof Uint8Array) || peer.raw.length === 0) return undefined;
  const key = typeof peer.fingerprint256 === 'string' ? peer.fingerprint256 : undefined;
  const cached = key === undefined ? undefined : identities.get(key);
  if (cached !== undefined) return cached;
  const identity = identityFromCertificate({ raw: peer.raw });
  if (key !== undefined) identities.set(key, identity);
  return identity;
}

// One connection, one client certificate: its identity is read on the first call that asks and
// kept on the HTTP/2 session. Asked on every call, grpc-js tested the session's socket, a proxy
// of Node's, with `instanceof` (a call into the runtime, about 0.5 % of a served call). The
// certificate cannot change under a connection: a hardened server keeps the first one its
// socket reported, and HTTP/2 forbids renegotiation. `null`: the connection has none.
const sessionIdentities = hiddenSlot<CertificateIdentity | null>();

/**
 * The verified client certificate of a call's connection ({@link verifiedPeerIdentity}), read
 * once per HTTP/2 session. Without a session (grpc-js's own call is not below safeErrors), read
 * from the call each time.
 *
 * @internal
 */
export function connectionPeerIdentity(
  call: Pick<ServerInterceptingCallInterface, 'getAuthContext'>,
  session: object | undefined,
): CertificateIdentity | undefined {
  if (session === undefined) return verifiedPeerIdentity(call);
  const known = sessionIdentities.get(session);
  if (known !== undefined) return known ?? undefined;
  const identity = verifiedPeerIdentity(call);
  sessionIdentities.set(session, identity ?? null);
  return identity;
}

const MIN_GRPC_JS = [1, 14, 5] as const;
let checkedVersion = false;

/**
 * grpc-js 1.14.0–1.14.4 report unverified client certificates in `getAuthContext()`.
 *
 * @internal
 */
export function assertVerifiedAuthContext(name: string): void {
  if (checkedVersion) return;
  let version: unknown;
  try {
    version = (createRequire(import.meta.url)('@grpc/grpc-js/package.json') as { version?: unknown }).version;
  } catch (cause) {
    throw new ConfigurationError(`${name}: cannot read the version of @grpc/grpc-js`, { cause });
  }
  const parts = typeof version === 'string' ? version.split(/[.-]/).slice(0, 3).map(Number) : [];
  const [major = 0, minor = 0, patch = 0] = parts;
  const [wantMajor, wantMinor, wantPatch] = MIN_GRPC_JS;
  const ok = major !== wantMajor ? major > wantMajor : minor !== wantMinor ? minor > wantMinor : patch >= wantPatch;
  if (!ok) {
    throw new ConfigurationError(
      `${name}: @grpc/grpc-js ${String(version)} is too old; >= 1.14.5 is required (earlier versions expose unverified client certificates)`,
    );
  }
  checkedVersion = true;
}
