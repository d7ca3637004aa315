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
  FluxguardError,
  identityFromCertificate,
  resolveOptions,
  type CallInfo,
  type CertificateIdentity,
  type Guard,
  type HeaderReader,
  type Principal,
} from '@fluxguard/core';
import { findCallContext, setPrincipal, type GrpcCallContext } from './context.js';
import { rejectCall } from './errors.js';

/**
 * Options of {@link guard}.
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard } from '@fluxguard/core';
 * const options: GuardInterceptorOptions = { guard: createGuard({ audit, jwt, rbac: compileRbac(rules) }) };
 * ```
 */
export interface GuardInterceptorOptions {
  /** The transport-neutral guard of `@fluxguard/core` (`createGuard`): JWT, certificate, RBAC. */
  readonly guard: Guard;
}

const DEFAULTS: Readonly<{ guard: Guard | undefined }> = Object.freeze({ guard: undefined });

/**
 * The authentication and authorization interceptor: for every call it builds the
 * transport-neutral `CallInfo` (operation = the full method `/pkg.Service/Method`, the
 * metadata as read-only headers — a bearer token in `authorization` —, the peer address, the
 * identity of the VERIFIED client certificate, deadline, request id and abort signal) and runs
 * `guard.check` on it. An allowed call goes on with its `Principal` recorded in memory
 * (`getPrincipal(call)` in the handler); a refused one ends with the guard's `SecurityError`
 * (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNAVAILABLE`), logged once by {@link safeErrors}.
 * Any other failure of the check becomes `INTERNAL`: the call is never let through on doubt.
 *
 * No request message, nor the end of the client's stream, reaches the handler before the
 * check has allowed the call (grpc-js only reads messages once the metadata has passed every
 * interceptor; messages that would arrive earlier are held here too).
 *
 * The certificate identity comes only from grpc-js `getAuthContext()`, which (>= 1.14.5)
 * reports a certificate only for connections whose handshake verified it against the CA;
 * construction fails on an older grpc-js, whose `getAuthContext()` exposed unverified ones.
 *
 * Must run after {@link safeErrors}: use {@link fluxguardInterceptors} with its `guard` option.
 *
 * @throws ConfigurationError when `guard` is missing or grpc-js is older than 1.14.5.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
 * import { guard, safeErrors } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const check = createGuard({ audit, jwt, rbac: compileRbac(rules, { servedOperations }) });
 * const server = new Server({ interceptors: [safeErrors({ audit }), guard({ guard: check })] });
 * ```
 */
export function guard(options: GuardInterceptorOptions): ServerInterceptor {
  const { guard: check } = resolveOptions('guard', DEFAULTS, options);
  if (typeof check?.check !== 'function') {
    throw new ConfigurationError('guard: "guard" is required (createGuard() of @fluxguard/core)');
  }
  assertVerifiedAuthContext('guard');
  const step: CallStep = (info) => check.check(info);
  return (methodDescriptor, call) => interceptCall('guard', step, methodDescriptor.path, call);
}

/**
 * One security step over a call: resolves with the principal to record (or `undefined` to
 * record none), or rejects to refuse the call.
 *
 * @internal
 */
export type CallStep = (
  info: CallInfo,
  context: GrpcCallContext,
) => Promise<Principal | undefined> | Principal | undefined;

type Phase = 'pending' | 'allowed' | 'refused';

/**
 * Runs `step` when the call's metadata arrives, holding messages and the half-close until it
 * has allowed the call; refuses the call (through `rejectCall`) when it fails in any way.
 * Shared by {@link guard} and the separate `jwtAuth` and `rbac` interceptors.
 *
 * @internal
 */
export function interceptCall(
  name: string,
  step: CallStep,
  operation: string,
  call: ServerInterceptingCallInterface,
): ServerInterceptingCall {
  let phase: Phase = 'pending';
  // Messages and the half-close that arrive while the check runs, in order.
  let held: (() => void)[] = [];

  const refuse = (metadata: Metadata, error: unknown): void => {
    if (phase !== 'pending') return;
    phase = 'refused';
    held = [];
    rejectCall(call, metadata, error);
  };

  const listener = new ServerListenerBuilder()
    .withOnReceiveMetadata((metadata, next) => {
      let info: CallInfo;
      let context: GrpcCallContext;
      try {
        [info, context] = callInfo(name, operation, call, metadata);
      } catch (error) {
        refuse(metadata, error);
        return;
      }
      // A step that throws synchronously is refused like one that rejects.
      Promise.resolve()
        .then(() => step(info, context))
        .then(
          (principal) => {
            if (phase !== 'pending') return;
            if (principal !== undefined) setPrincipal(metadata, principal);
            phase = 'allowed';
            next(metadata);
            const pending = held;
            held = [];
            for (const deliver of pending) deliver();
          },
          (error: unknown) => {
            refuse(metadata, error);
          },
        )
        .catch((error: unknown) => {
          // setPrincipal or a later interceptor threw: never let the call through.
          refuse(metadata, error);
        });
    })
    .withOnReceiveMessage((message, next) => {
      if (phase === 'allowed') next(message);
      else if (phase === 'pending') {
        held.push(() => {
          next(message);
        });
      }
    })
    .withOnReceiveHalfClose((next) => {
      if (phase === 'allowed') next();
      else if (phase === 'pending') held.push(next);
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
  name: string,
  operation: string,
  call: ServerInterceptingCallInterface,
  metadata: Metadata,
): [CallInfo, GrpcCallContext] {
  const context = findCallContext(metadata);
  if (context === undefined) {
    // Fail closed: without safeErrors there is no request id, signal or place for the principal.
    throw new FluxguardError(
      'missing_call_context',
      `${name}: no fluxguard context for this call; safeErrors() must run before ${name}() (use fluxguardInterceptors)`,
    );
  }
  const info: CallInfo = {
    transport: 'grpc',
    operation,
    requestId: context.requestId,
    peerAddress: context.peer,
    peerCertificate: verifiedPeerIdentity(call),
    headers: metadataHeaders(metadata),
    deadline: context.deadline,
    signal: context.signal,
  };
  return [info, context];
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
  const getAll = (name: string): readonly string[] =>
    metadata.get(name.toLowerCase()).filter((value): value is string => typeof value === 'string');
  return Object.freeze({
    get: (name: string) => getAll(name)[0],
    getAll,
  });
}

const IDENTITY_CACHE_LIMIT = 1024;
// Keyed by the fingerprint Node computed for the verified certificate: a hit skips hashing and
// parsing the DER again on every call of a connection.
const identities = new Map<string, CertificateIdentity>();

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
  if (key !== undefined) {
    if (identities.size >= IDENTITY_CACHE_LIMIT) {
      const oldest = identities.keys().next();
      if (oldest.done !== true) identities.delete(oldest.value);
    }
    identities.set(key, identity);
  }
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
