import { createRequire } from 'node:module';
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  type Metadata,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
} from '@grpc/grpc-js';
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
  type CallState,
  type Pipeline,
  identityFromCertificate,
} from '@fluxguard/core/adapter';
import { INSTALL_INTERCEPTORS, callOf, type GrpcCall } from './context.js';
import { rejectCall } from './errors.js';
import { messageSize } from './unparsable.js';

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
 * `fluxguardInterceptors` is `safeErrors` followed by this with the whole list.
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
  const pipeline = createPipeline(owner, list);
  assertVerifiedAuthContext(owner);
  return (methodDescriptor, call) => interceptCall(owner, pipeline, methodDescriptor.path, call);
}

type Phase = 'pending' | 'allowed' | 'refused';

function interceptCall(
  owner: string,
  pipeline: Pipeline,
  operation: string,
  call: ServerInterceptingCallInterface,
): ServerInterceptingCall {
  let phase: Phase = 'pending';
  let grpcCall: GrpcCall | undefined;
  let callMetadata: Metadata | undefined;
  // Messages and the half-close that arrive while the start hooks run, in order.
  let held: (() => void)[] = [];

  // A function, not a test of `phase`: refusals change it behind the compiler's back.
  const isAllowed = (): boolean => phase === 'allowed';

  const refuse = (metadata: Metadata, error: unknown): void => {
    if (phase === 'refused') return;
    phase = 'refused';
    held = [];
    rejectCall(call, metadata, error);
  };

  const allow = (metadata: Metadata, next: (metadata: Metadata) => void): void => {
    if (phase !== 'pending' || grpcCall?.state.finished === true || grpcCall?.state.endedEarly === true) return;
    phase = 'allowed';
    next(metadata);
    const pending = held;
    held = [];
    for (const deliver of pending) deliver();
  };

  // Delivers an inbound event now, or once the call is allowed; never after a refusal (of an
  // earlier held event, say).
  const whenAllowed = (deliver: () => void): void => {
    const guarded = (): void => {
      if (isAllowed()) deliver();
    };
    if (phase === 'allowed') guarded();
    else if (phase === 'pending') held.push(guarded);
  };

  // Runs an inbound hook of the pipeline; `false` when it refused the call.
  const runInbound = (hook: (info: CallInfo, state: CallState) => void): boolean => {
    const info = grpcCall?.state.callInfo;
    if (!pipeline.hasMessageHooks || grpcCall === undefined || info === undefined || callMetadata === undefined) {
      return true;
    }
    try {
      hook(info, grpcCall.state);
      return true;
    } catch (error) {
      refuse(callMetadata, error);
      return false;
    }
  };

  const listener = new ServerListenerBuilder()
    .withOnReceiveMetadata((metadata, next) => {
      callMetadata = metadata;
      try {
        grpcCall = callOf(metadata);
        // Fail closed: without safeErrors there is no request id, signal or place for the principal.
        if (grpcCall === undefined) throw missingContextError(owner, INSTALL_INTERCEPTORS);
        const info = (grpcCall.state.callInfo ??= callInfo(operation, call, metadata, grpcCall));
        const pending = pipeline.start(info, grpcCall.state);
        if (pending === undefined) {
          allow(metadata, next);
          return;
        }
        pending.then(
          () => {
            allow(metadata, next);
          },
          (error: unknown) => {
            refuse(metadata, error);
          },
        );
      } catch (error) {
        refuse(metadata, error);
      }
    })
    .withOnReceiveMessage((message, next) => {
      whenAllowed(() => {
        if (
          runInbound((info, state) => {
            pipeline.message(message, info, state, messageSize(message));
          })
        )
          next(message);
      });
    })
    .withOnReceiveHalfClose((next) => {
      whenAllowed(() => {
        if (
          runInbound((info, state) => {
            pipeline.inboundEnd(info, state);
          })
        )
          next();
      });
    })
    .withOnCancel(() => {
      if (phase === 'pending') phase = 'refused';
      held = [];
    })
    .build();

  return new ServerInterceptingCall(
    call,
    new ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .build(),
  );
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
    grpcCall.peer,
    verifiedPeerIdentity(call),
    metadataHeaders(metadata),
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
    return this.#metadata.get(name.toLowerCase()).filter((value): value is string => typeof value === 'string');
  }

  *entries(): Iterable<readonly [string, string | Buffer]> {
    for (const [name, values] of Object.entries(this.#metadata.toJSON())) {
      for (const value of values) yield [name, value];
    }
  }
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
