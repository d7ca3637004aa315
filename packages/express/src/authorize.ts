import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Request, RequestHandler } from 'express';
import {
  ConfigurationError,
  createCertificateCheck,
  httpOperation,
  identityFromTlsSocket,
  isIdentityCurrent,
  resolveOptions,
  type CallInfo,
  type CertificateIdentity,
  type Guard,
  type HeaderReader,
  type CertificateCheckOptions,
} from '@fluxguard/core';
import { contextOf, setOperationLabel, setPrincipal } from './context.js';
import { peerOf } from './error-handler.js';

/**
 * Options of {@link authorize}.
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard } from '@fluxguard/core';
 * const options: AuthorizeOptions = { guard: createGuard({ rbac: compileRbac(rules), jwt, audit }) };
 * app.use(authorize(options));
 * ```
 */
export interface AuthorizeOptions {
  /** The guard of `@fluxguard/core` (`createGuard`): JWT, client certificate, RBAC, shadow mode. */
  readonly guard: Guard;
}

const AUTHORIZE_DEFAULTS: Readonly<{ guard: Guard | undefined }> = Object.freeze({ guard: undefined });

// Identity is a property of the connection, not of the request: read and parse the peer
// certificate once per TLS socket. `null` records "no verified certificate on this socket".
const socketIdentities = new WeakMap<TLSSocket, CertificateIdentity | null>();

/**
 * The verified client certificate of the request's connection, or `undefined` when there is
 * none: a plain-HTTP socket, no certificate, a certificate the TLS stack did not verify
 * (per-operation mode lets such a handshake complete, and Node still reports the subject an
 * untrusted self-signed certificate claims: it is never read), or one that has expired since
 * the connection was made. Cached per connection.
 *
 * The cache assumes the peer certificate of a connection never changes: {@link createSecureServer}
 * disables TLS renegotiation; disable it on a server of your own too
 * (`server.on('secureConnection', (s) => s.disableRenegotiation())`).
 *
 * @throws SecurityError `unauthenticated` when a verified certificate cannot be parsed.
 *
 * @example
 * ```ts
 * import { getClientCertificate } from '@fluxguard/express';
 * app.get('/v1/whoami', (req, res) => {
 *   res.json({ spiffeId: getClientCertificate(req)?.spiffeId ?? null });
 * });
 * ```
 */
export function getClientCertificate(req: IncomingMessage): CertificateIdentity | undefined {
  const socket: unknown = req.socket;
  if (!(socket instanceof TLSSocket)) return undefined;
  let identity = socketIdentities.get(socket);
  if (identity === undefined) {
    identity = identityFromTlsSocket(socket) ?? null;
    socketIdentities.set(socket, identity);
  }
  // A keep-alive connection may outlive its client certificate.
  return identity !== null && isIdentityCurrent(identity) ? identity : undefined;
}

/** Case-insensitive, read-only view of the request headers; repeated headers stay separate. */
function headerReader(req: IncomingMessage): HeaderReader {
  // `headersDistinct`, not `headers`: Node keeps only the first of two Authorization headers
  // in `headers`, and the verifier must see both to refuse the request.
  const distinct = req.headersDistinct;
  return {
    get: (name) => distinct[name.toLowerCase()]?.[0],
    getAll: (name) => distinct[name.toLowerCase()] ?? [],
  };
}

/**
 * Authentication and authorization of every request, by the guard of `@fluxguard/core`: a
 * bearer token from the `Authorization` header (never from the query string, a cookie or any
 * other header), the verified client certificate of the connection, and the RBAC rule of the
 * operation `METHOD /concrete/path` (`HEAD` is checked as `GET`). The verified principal is
 * stored with `setPrincipal` (read it as `req.fluxguard.principal`); refusals go to
 * `next(err)`, so the fluxguard error handler answers `401` with `WWW-Authenticate: Bearer`
 * (RFC 6750), `403`, or `503`, and writes one audit line.
 *
 * Mount it after `fluxguard().before` (it needs `req.fluxguard`) and before the routes. The
 * app must route case-sensitively (`app.set('case sensitive routing', true)`), as RBAC
 * matches paths: otherwise `GET /V1/admin` would reach the handler of `/v1/admin` under the
 * rule of another path. A request to an app that does not is refused with a 500 and a log
 * line saying so. `strict routing` is advised as well.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
 * import { authorize, fluxguard } from '@fluxguard/express';
 *
 * const audit = createAuditLogger();
 * const guard = createGuard({
 *   audit,
 *   jwt: createJwtVerifier({ jwksUrl: 'https://id.example.com/jwks', issuer: 'https://id.example.com', audience: 'api' }),
 *   rbac: compileRbac({ 'GET /healthz': { public: true }, 'GET /v1/items/:id': { anyRoles: ['reader'] } }),
 * });
 * const app = express();
 * app.set('case sensitive routing', true);
 * app.set('strict routing', true);
 * const { before, after } = fluxguard({ audit });
 * app.use(before, authorize({ guard }));
 * app.get('/v1/items/:id', (req, res) => { res.json({ by: req.fluxguard.principal?.subject }); });
 * app.use(after);
 * ```
 */
export function authorize(options: AuthorizeOptions): RequestHandler {
  const { guard } = resolveOptions('authorize', AUTHORIZE_DEFAULTS, options);
  if (typeof guard?.check !== 'function') {
    throw new ConfigurationError('authorize: "guard" must be the result of createGuard() of @fluxguard/core');
  }
  return function fluxguardAuthorize(req, _res, next) {
    const call = requestCallInfo(req, 'authorize', true);
    const rule = guard.rbac.ruleFor(call.operation);
    if (rule !== undefined) setOperationLabel(req, rule);
    guard.check(call).then(
      (principal) => {
        if (principal !== undefined) setPrincipal(req, principal);
        next();
      },
      (err: unknown) => {
        next(err);
      },
    );
  };
}

/**
 * The transport-neutral `CallInfo` of a request, shared by {@link authorize}, `jwtAuth` and
 * `rbac`. Throws when `requestId()` has not run (no context), and, with
 * `matchesPaths`, when the app routes case-insensitively (RBAC matches paths).
 *
 * @internal
 */
export function requestCallInfo(req: Request, name: string, matchesPaths: boolean): CallInfo {
  const context = contextOf(req);
  if (context === undefined) {
    throw new Error(`${name}: the fluxguard requestId() middleware (fluxguard().before) must run first`);
  }
  if (matchesPaths && !req.app.enabled('case sensitive routing')) {
    throw new ConfigurationError(
      `${name}: the app must route case-sensitively, as RBAC matches paths: app.set('case sensitive routing', true)`,
    );
  }
  return {
    transport: 'http',
    // The concrete path as the router matches it (mount path included), not a route pattern:
    // the guard runs before routing, and rules are matched against it.
    operation: httpOperation(req.method, `${req.baseUrl}${req.path}`),
    requestId: context.requestId,
    peerAddress: peerOf(req),
    peerCertificate: getClientCertificate(req),
    headers: headerReader(req),
    deadline: undefined,
    signal: context.signal,
  };
}

/**
 * Options of {@link mtls}.
 *
 * @example
 * ```ts
 * const options: MtlsOptions = { allow: [{ spiffeId: 'spiffe://example.org/backup' }] };
 * ```
 */
export type MtlsOptions = CertificateCheckOptions;

/**
 * Requires a verified client certificate on every request it guards, for an app or a router
 * without RBAC (with RBAC, use the `certificate` requirement of a rule through
 * {@link authorize} instead). Refuses with `403 permission_denied`: reason
 * `client_certificate_required` without a verified, current certificate (including an untrusted
 * one in per-operation mode), `certificate_mismatch` when it matches none of `allow`
 * (`createCertificateCheck` of `@fluxguard/core`). It sets no principal; handlers read the
 * identity with {@link getClientCertificate}.
 *
 * @example
 * ```ts
 * import { mtls } from '@fluxguard/express';
 * app.use('/internal', mtls({ allow: [{ spiffeId: 'spiffe://example.org/ns/ops/**' }] }), internalRouter);
 * ```
 */
export function mtls(options?: MtlsOptions): RequestHandler {
  const certificates = createCertificateCheck(options);
  return function fluxguardMtls(req, _res, next) {
    certificates.check(getClientCertificate(req));
    next();
  };
}
