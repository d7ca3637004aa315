import type { SecureContextOptions } from 'node:tls';
import { ServerCredentials, type ServerOptions } from '@grpc/grpc-js';
import {
  type AuditLogger,
  type ClientCertificateMode,
  type ReloadOptions,
  type TlsMaterial,
  type TlsSettingsOptions,
} from '@fluxguard/core';
import {
  assertAuditLogger,
  connectionBudget,
  checkConnectionsPerAddress,
  defaultConnectionsPerAddress,
  trustChanged,
  createReloadingTlsSettings,
  type ReloadingTlsSettings,
  resolveOptions,
  type TlsSettings,
  wholeNumber,
  type WholeNumberRange,
} from '@fluxguard/core/adapter';

/**
 * Options of {@link createServerCredentials} (the second argument). `reload` and
 * `reloadIntervalMs` (`ReloadOptions` of `@fluxguard/core`): reload certificate, key, CA bundle
 * (and CRL) when the files change on disk; default on when the TLS options name files.
 *
 * @example
 * ```ts
 * const options: ServerCredentialsOptions = { audit, reload: true, reloadIntervalMs: 1000 };
 * ```
 */
export interface ServerCredentialsOptions extends ReloadOptions {
  /** Where reloads (`tls.reloaded`) and reload failures (`tls.reload_failed`) are logged. Required. */
  readonly audit: AuditLogger;
  /**
   * A connection whose TLS handshake has not completed this long after it opened is closed.
   * Default 10 s (Node: 120 s, which lets idle sockets pile up to the descriptor limit).
   */
  readonly handshakeTimeoutMs?: number | undefined;
}

/**
 * grpc-js server credentials from fluxguard's TLS settings, from {@link createServerCredentials}.
 * Pass it to `server.bindAsync`; {@link FluxguardServerCredentials.close} stops the file watch.
 *
 * @example
 * ```ts
 * const credentials = createServerCredentials(tlsOptions, { audit });
 * credentials.clientCertificates; // 'strict' | 'per-operation'
 * credentials.current.certFingerprint256; // the certificate new connections get
 * credentials.close();
 * ```
 */
export interface FluxguardServerCredentials extends ServerCredentials {
  /**
   * The client-certificate mode of the TLS options: `strict` refuses a client without a valid
   * certificate at the handshake, `per-operation` leaves it to the rules.
   */
  readonly clientCertificates: ClientCertificateMode;
  /** The material in use: the initial files, or the last valid reload. */
  readonly current: TlsMaterial;
  /** Stops reloading. Idempotent. Open and new connections keep the last material. */
  close(): void;
}

interface Resolved {
  readonly audit: AuditLogger | undefined;
  readonly reload: boolean | undefined;
  readonly reloadIntervalMs: number | undefined;
  readonly handshakeTimeoutMs: number;
}

const DEFAULTS: Resolved = Object.freeze({
  audit: undefined,
  reload: undefined,
  reloadIntervalMs: undefined,
  handshakeTimeoutMs: 10_000,
});

const FACTORY = 'createServerCredentials';

/**
 * Our own grpc-js credentials, because neither of grpc-js's fits: `createSsl(..., false)` does
 * not even ask for a client certificate (no per-operation mode), and certificate-provider
 * credentials hand `setSecureContext` only CA, certificate and key on each update, dropping
 * the CRL, the cipher list and the minimum TLS version. The base class keeps the constructor
 * options (`requestCert`, `rejectUnauthorized`) on the server and pushes every context update
 * to the bound servers' `setSecureContext`: each update carries the complete options.
 */
class HardenedServerCredentials extends ServerCredentials implements FluxguardServerCredentials {
  readonly clientCertificates: ClientCertificateMode;
  readonly #tls: ReloadingTlsSettings;

  constructor(tls: ReloadingTlsSettings, handshakeTimeoutMs: number) {
    const { settings } = tls;
    super(
      {
        requestCert: true,
        rejectUnauthorized: settings.serverOptions.rejectUnauthorized,
        handshakeTimeout: handshakeTimeoutMs,
      },
      // Material is in place from the start: grpc-js drops connections while it has none.
      settings.secureContextOptions(tls.current),
    );
    this.clientCertificates = settings.clientCertificates;
    this.#tls = tls;
  }

  get current(): TlsMaterial {
    return this.#tls.current;
  }

  /** @internal */
  update(options: SecureContextOptions): void {
    this.updateSecureContextOptions(options);
  }

  readonly #trustListeners = new Set<(material: TlsMaterial) => void>();

  /** @internal Called when a reload changes the CA bundle or the CRL; returns its removal. */
  onTrustChange(listener: (material: TlsMaterial) => void): () => void {
    this.#trustListeners.add(listener);
    return () => {
      this.#trustListeners.delete(listener);
    };
  }

  /** @internal */
  trustChanged(material: TlsMaterial): void {
    for (const listener of this.#trustListeners) listener(material);
  }

  close(): void {
    this.#tls.close();
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

/**
 * grpc-js server credentials with fluxguard's hardened TLS: TLS 1.2 minimum (1.3 preferred),
 * ECDHE + AEAD suites only, our key-exchange groups, the optional CRL, and client certificates
 * requested in both modes — `strict` (the handshake refuses a missing or unverifiable
 * certificate: another CA, expired, not yet valid, revoked) and `per-operation` (every
 * handshake completes and the {@link guard} interceptor decides per operation, reading only a
 * verified certificate).
 *
 * With files, the certificate, key, CA bundle and CRL are reloaded without restart
 * (`createReloadingTlsSettings` of `@fluxguard/core`): new connections get the new material within
 * about two intervals, with the same ciphers, minimum version and CRL; a broken set of files
 * keeps the last good material and logs `tls.reload_failed`. Material is loaded before the
 * credentials exist, so no connection is dropped for want of a certificate (a grpc-js trap of
 * certificate providers). Call `close()` when the server shuts down.
 *
 * @throws ConfigurationError on bad options or unreadable, mismatched or invalid material.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { createServerCredentials, secureServerOptions } from '@fluxguard/grpc';
 * const credentials = createServerCredentials(
 *   { certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt', clientCertificates: 'per-operation' },
 *   { audit },
 * );
 * const server = new Server({ ...secureServerOptions(), interceptors });
 * server.bindAsync('0.0.0.0:9000', credentials, (err) => { if (err) throw err; });
 * // on shutdown: server.tryShutdown(() => credentials.close());
 * ```
 */
export function createServerCredentials(
  tls: TlsSettingsOptions | TlsSettings,
  options: ServerCredentialsOptions,
): FluxguardServerCredentials {
  const o = resolveOptions<Resolved>(FACTORY, DEFAULTS, options);
  const audit = o.audit;
  assertAuditLogger(audit, FACTORY);
  wholeNumber(o.handshakeTimeoutMs, `${FACTORY}: "handshakeTimeoutMs"`, { unit: 'ms' });
  const reloading = createReloadingTlsSettings(tls, {
    audit,
    reload: o.reload,
    reloadIntervalMs: o.reloadIntervalMs,
    where: FACTORY,
    // Never bare key and certificate: Node rebuilds the whole context from these. Called from
    // a timer, once the credentials exist.
    onUpdate: (contextOptions, material) => {
      const before = reloading.current;
      credentials.update(contextOptions);
      // A connection keeps the certificate it was verified with: those made under the old CA
      // bundle or CRL are sent away (a revoked client's open connection was served on).
      if (trustChanged(before, material)) credentials.trustChanged(material);
    },
  });
  const credentials = new HardenedServerCredentials(reloading, o.handshakeTimeoutMs);
  auditByCredentials.set(credentials, audit);
  return credentials;
}

const auditByCredentials = new WeakMap<object, AuditLogger>();

/**
 * The audit logger of credentials made by {@link createServerCredentials}: where the HTTP/2
 * server grpc-js builds for them writes what happens to connections (no call exists yet).
 *
 * @internal
 */
export function auditOfCredentials(credentials: object): AuditLogger | undefined {
  return auditByCredentials.get(credentials);
}

/**
 * Calls `listener` whenever a reload of fluxguard's credentials changes the CA bundle or the
 * CRL; returns its removal, or `undefined` for other credentials.
 *
 * @internal
 */
export function whenTrustChanges(
  credentials: object,
  listener: (material: TlsMaterial) => void,
): (() => void) | undefined {
  return credentials instanceof HardenedServerCredentials ? credentials.onTrustChange(listener) : undefined;
}

/**
 * Options of {@link secureServerOptions}; each overrides one default.
 *
 * @example
 * ```ts
 * const options: SecureServerLimits = { maxReceiveMessageBytes: 8 * 1024 * 1024 };
 * ```
 */
export interface SecureServerLimits {
  /** Largest request message. Default 4 MiB (grpc-js's own default, made explicit). */
  readonly maxReceiveMessageBytes?: number | undefined;
  /** Largest response message. Default 16 MiB. */
  readonly maxSendMessageBytes?: number | undefined;
  /** Concurrent calls (HTTP/2 streams) per connection. Default 100 (grpc-js: unlimited). */
  readonly maxConcurrentStreams?: number | undefined;
  /** HTTP/2 session memory per connection, in MB. Default 32 (grpc-js: unlimited). */
  readonly maxSessionMemoryMb?: number | undefined;
  /**
   * Close a connection with no call in flight after this long, including one that never sends
   * a request (an idle TLS connection holds a descriptor and memory). Default 10 s; clients
   * reconnect on their next call.
   */
  readonly maxConnectionIdleMs?: number | undefined;
  /** Ping a quiet connection after this long. Default 2 minutes. */
  readonly keepaliveTimeMs?: number | undefined;
  /** Drop the connection when a ping is not answered within this. Default 20 s. */
  readonly keepaliveTimeoutMs?: number | undefined;
  /**
   * Connections held at once by each listening port. At the cap, a connection still in its TLS
   * handshake, or one with no call open, is closed to make room for a new one (the oldest of the client address holding the most); when
   * none can go, the new one is closed at once. Default: 70 % of the process's open-file limit
   * (`descriptorBudget()` of core), else 10,000. Applied by `addService` of this package, which
   * is how fluxguard reaches the HTTP/2 server grpc-js makes.
   */
  readonly maxConnections?: number | undefined;
  /**
   * Connections one client address (an IPv6 client by its /64) may hold at once on a port; one
   * more is closed at once. Default: half of `maxConnections`, at least 16: one client
   * holding the whole cap, and reopening what the server closed, shut out everyone. Behind a
   * load balancer whose connections all come from one address, raise it. Refusals are logged
   * (`connection.refused`, at most one line per 10 s) when the credentials are fluxguard's.
   * Applied by `addService` of this package, as `maxConnections` is.
   */
  readonly maxConnectionsPerAddress?: number | undefined;
  /**
   * How long a connection the server has closed (every call finished, its GOAWAY and the end of
   * its side sent: after the idle limit, at shutdown) waits for the client to close the other
   * side before it is dropped. Default 5 s. Node waits for the client for ever, so a client that
   * stops reading and never closes held the connection, and its place under `maxConnections`,
   * for good. It is also how long a session asked to close waits, once no call is open, before
   * it is dropped: a client holding a header block open kept it until the keepalive. Applied by
   * `addService` of this package, as `maxConnections` is.
   */
  readonly closingGraceMs?: number | undefined;
  /**
   * How long a connection may have answers waiting in its socket, none of them taken by the
   * client, before it is dropped. Default 20 s. A client that stops reading its connection
   * leaves what the server wrote queued in the process for as long as the connection lives,
   * past every call's end, and Node never finishes closing a session whose writes are stuck:
   * one reader held 1.3 GB with six connections of two 60 MiB answers each. Applied by
   * `addService` of this package, as `maxConnections` is.
   */
  readonly maxWriteStallMs?: number | undefined;
  /**
   * Header fields (metadata entries and pseudo-headers) one request may carry; Node resets the
   * stream of one with more before any JavaScript sees it (`ENHANCE_YOUR_CALM`, counted as
   * `stream_reset` in `http2.session_refused`). Default 256, where Node's own is 128: keep it
   * above the header limits' `maxCount` (100 by default) plus about ten, so that they refuse a
   * call of too many entries with its request id and audit line. Each field costs the server
   * before any control runs (Node builds the header object, grpc-js its metadata): a call of
   * 990 one-byte (HPACK-indexed) entries cost about 3.7 ms of CPU, one of 250 about 1.3 ms and
   * a plain call 0.7 to 1 ms. Binary (`-bin`) metadata that grpc-js would split into more values
   * than this is refused as well, before grpc-js splits it. Applied by `addService` of this
   * package, as `maxConnections` is.
   */
  readonly maxHeaderFields?: number | undefined;
}

/** The `new Server(options)` key that carries {@link SecureServerLimits.maxConnections} to `addService`. */
export const MAX_CONNECTIONS_OPTION = 'fluxguard.max_connections';
/** The `new Server(options)` key that carries {@link SecureServerLimits.maxConnectionsPerAddress} to `addService`. */
export const MAX_PER_ADDRESS_OPTION = 'fluxguard.max_connections_per_address';
/** The `new Server(options)` key that carries {@link SecureServerLimits.closingGraceMs} to `addService`. */
export const CLOSING_GRACE_OPTION = 'fluxguard.closing_grace_ms';
/** {@link SecureServerLimits.closingGraceMs} when the server's options do not say. */
export const DEFAULT_CLOSING_GRACE_MS = 5_000;
/** The `new Server(options)` key that carries {@link SecureServerLimits.maxWriteStallMs} to `addService`. */
export const WRITE_STALL_OPTION = 'fluxguard.max_write_stall_ms';
/** {@link SecureServerLimits.maxWriteStallMs} when the server's options do not say. */
export const DEFAULT_WRITE_STALL_MS = 20_000;
/** The `new Server(options)` key that carries {@link SecureServerLimits.maxHeaderFields} to `addService`. */
export const MAX_HEADER_FIELDS_OPTION = 'fluxguard.max_header_fields';
/** {@link SecureServerLimits.maxHeaderFields} when the server's options do not say. */
export const DEFAULT_MAX_HEADER_FIELDS = 256;
/** The fewest header fields a request may be allowed: a gRPC call's pseudo-headers and its own. */
const FEWEST_HEADER_FIELDS = 16;

const LIMIT_DEFAULTS: Required<{ readonly [K in keyof SecureServerLimits]: number }> = Object.freeze({
  maxReceiveMessageBytes: 4 * 1024 * 1024,
  maxSendMessageBytes: 16 * 1024 * 1024,
  maxConcurrentStreams: 100,
  maxSessionMemoryMb: 32,
  maxConnectionIdleMs: 10_000,
  keepaliveTimeMs: 2 * 60_000,
  keepaliveTimeoutMs: 20_000,
  maxConnections: connectionBudget(),
  maxConnectionsPerAddress: 0,
  closingGraceMs: DEFAULT_CLOSING_GRACE_MS,
  maxWriteStallMs: DEFAULT_WRITE_STALL_MS,
  maxHeaderFields: DEFAULT_MAX_HEADER_FIELDS,
});

/** The bounds of the limit `name` of {@link SecureServerLimits}. */
function rangeOf(name: string): WholeNumberRange {
  if (name === 'maxHeaderFields') return { min: FEWEST_HEADER_FIELDS };
  // A time above Node's longest timer would fire after 1 ms.
  return name.endsWith('Ms') ? { unit: 'ms' } : {};
}

/**
 * grpc-js `Server` options with limits grpc-js leaves open: concurrent streams and HTTP/2
 * session memory per connection (both unlimited by default), message sizes, idle connections
 * and keepalive. Spread it into `new Server({...})` with the interceptors.
 *
 * @throws ConfigurationError when a limit is not a positive integer.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * const server = new Server({
 *   ...secureServerOptions({ maxReceiveMessageBytes: 8 * 1024 * 1024 }),
 *   interceptors: fluxguardInterceptors({ audit, guard }),
 * });
 * ```
 */
export function secureServerOptions(limits: SecureServerLimits = {}): ServerOptions {
  const given = resolveOptions('secureServerOptions', LIMIT_DEFAULTS, limits);
  for (const [name, value] of Object.entries(given)) {
    // A share not given is derived from the cap below, once the cap is known to be a number.
    if (name === 'maxConnectionsPerAddress' && limits.maxConnectionsPerAddress === undefined) continue;
    wholeNumber(value, `secureServerOptions: "${name}"`, rangeOf(name));
  }
  const l = {
    ...given,
    maxConnectionsPerAddress: limits.maxConnectionsPerAddress ?? defaultConnectionsPerAddress(given.maxConnections),
  };
  checkConnectionsPerAddress(
    'secureServerOptions: "maxConnectionsPerAddress"',
    l.maxConnectionsPerAddress,
    limits.maxConnections,
  );
  return {
    'grpc.max_receive_message_length': l.maxReceiveMessageBytes,
    'grpc.max_send_message_length': l.maxSendMessageBytes,
    'grpc.max_concurrent_streams': l.maxConcurrentStreams,
    'grpc-node.max_session_memory': l.maxSessionMemoryMb,
    'grpc.max_connection_idle_ms': l.maxConnectionIdleMs,
    'grpc.keepalive_time_ms': l.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': l.keepaliveTimeoutMs,
    [MAX_CONNECTIONS_OPTION]: l.maxConnections,
    [MAX_PER_ADDRESS_OPTION]: l.maxConnectionsPerAddress,
    [CLOSING_GRACE_OPTION]: l.closingGraceMs,
    [WRITE_STALL_OPTION]: l.maxWriteStallMs,
    [MAX_HEADER_FIELDS_OPTION]: l.maxHeaderFields,
  };
}
