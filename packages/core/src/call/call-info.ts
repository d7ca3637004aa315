/**
 * Which transport a call arrived on.
 *
 * @example
 * ```ts
 * import type { Transport } from '@fluxguard/core';
 * const transport: Transport = call.transport; // 'grpc' or 'http'
 * ```
 */
export type Transport = 'grpc' | 'http';

/**
 * The identity read from a verified client certificate. Filled only from a certificate the TLS
 * stack verified against the configured CA; never from an unverified one.
 *
 * @example
 * ```ts
 * import type { CertificateIdentity } from '@fluxguard/core';
 * function isDevClient(identity: CertificateIdentity | undefined): boolean {
 *   return identity?.spiffeId === 'spiffe://fluxguard.dev/client';
 * }
 * ```
 */
export interface CertificateIdentity {
  /** The SPIFFE ID (`spiffe://trust-domain/path`) among the SAN URIs, if exactly one. */
  readonly spiffeId: string | undefined;
  /** Every SAN URI. */
  readonly uris: readonly string[];
  /** Every SAN DNS name. */
  readonly dnsNames: readonly string[];
  /** The subject CN; an identity of last resort. */
  readonly commonName: string | undefined;
  /** SHA-256 fingerprint, lowercase hex without separators. */
  readonly fingerprint256: string;
  /** Start of the certificate's validity (`notBefore`). */
  readonly validFrom: Date;
  /**
   * End of the certificate's validity (`notAfter`): past it, the certificate identifies nobody,
   * even on a connection opened before.
   */
  readonly validTo: Date;
}

/**
 * How a {@link Principal} was authenticated.
 *
 * @example
 * ```ts
 * import type { AuthenticationMethod } from '@fluxguard/core';
 * const withCertificate: AuthenticationMethod[] = ['mtls', 'both'];
 * ```
 */
export type AuthenticationMethod = 'jwt' | 'mtls' | 'both';

/**
 * The verified caller. Built only by fluxguard's authentication controls; handlers read it
 * through `getPrincipal(call)` (gRPC) or `req.fluxguard.principal` (Express), never from a
 * header or metadata entry a client could send.
 *
 * @example
 * ```ts
 * import type { Principal } from '@fluxguard/core';
 * function canDelete(p: Principal): boolean { return p.roles.includes('artifacts.admin'); }
 * ```
 */
export interface Principal {
  /**
   * From the token's `sub`; with a certificate alone, its SPIFFE ID, else first SAN DNS name, else
   * CN, else `sha256:<fingerprint>`.
   */
  readonly subject: string;
  /**
   * From the token's roles claim (`rolesClaim`); with a certificate alone, the roles of the
   * matching identity rules (possibly none).
   */
  readonly roles: readonly string[];
  /** From the token's `scope` (space-delimited) or else `scp`; empty for a certificate alone. */
  readonly scopes: readonly string[];
  /** Every claim of the verified token (frozen); empty for a certificate alone. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** The verified client certificate's identity, when one was presented; `undefined` otherwise. */
  readonly certificate: CertificateIdentity | undefined;
  /** Whether the token, the client certificate, or both authenticated the caller. */
  readonly authenticatedBy: AuthenticationMethod;
}

/**
 * Read-only, case-insensitive access to HTTP headers or gRPC metadata.
 *
 * @example
 * ```ts
 * import type { HeaderReader } from '@fluxguard/core';
 * function apiKeyOf(headers: HeaderReader): string | undefined { return headers.get('x-api-key'); }
 * ```
 */
export interface HeaderReader {
  /** The single value of a header; `undefined` when absent. Several values: the first. */
  get(name: string): string | undefined;
  /** Every value of a header. */
  getAll(name: string): readonly string[];
  /**
   * Every header or metadata entry as received, repeated ones apart (names lowercase; binary
   * `-bin` metadata as a `Buffer`). Both adapters provide it; limits on headers need it.
   */
  entries?(): Iterable<readonly [name: string, value: string | Buffer]>;
}

/**
 * What a control may look at, the same for both transports. Adapters build it once per call.
 *
 * @example
 * ```ts
 * import type { CallInfo } from '@fluxguard/core';
 * function isHealth(call: CallInfo): boolean { return call.operation === 'GET /healthz'; }
 * ```
 */
export interface CallInfo {
  /** The transport the call arrived on. */
  readonly transport: Transport;
  /**
   * gRPC: the full method `/pkg.Service/Method`. HTTP: `METHOD /concrete/path` as the router
   * matches it (mount path included, `HEAD` as `GET`); controls run before routing, so rules
   * match the concrete path against their patterns.
   */
  readonly operation: string;
  /**
   * The client's `x-request-id` when well formed (at most 200 characters of `[A-Za-z0-9._-]`), else
   * a new random UUID; returned to the client and written to every log line.
   */
  readonly requestId: string;
  /**
   * The remote address, e.g. `127.0.0.1:51234` or `[::1]:51234`; `unix` for a connection to a
   * server listening on a Unix socket; `undefined` (or `unknown` on gRPC) when it cannot be read.
   */
  readonly peerAddress: string | undefined;
  /** The verified client certificate's identity, if the peer presented one that verified. */
  readonly peerCertificate: CertificateIdentity | undefined;
  /**
   * Why the client certificate the peer presented did not verify: Node's verification error code
   * (`CERT_HAS_EXPIRED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_REVOKED`, ...), only in
   * per-operation mode, where such a handshake completes. `undefined` with no certificate, with a
   * verified one, or where the adapter cannot tell. A code for the audit line only: the
   * certificate itself is never read, and a client is never told.
   */
  readonly peerCertificateError?: string | undefined;
  /** The request headers (HTTP) or metadata (gRPC), as the client sent them, read case-insensitively. */
  readonly headers: HeaderReader;
  /** Absolute deadline in epoch milliseconds, when one applies. */
  readonly deadline: number | undefined;
  /** Aborted when the client goes away or the deadline passes. */
  readonly signal: AbortSignal;
}
