import type { RequestHandler } from 'express';
import type { CertificateCheckOptions, GuardStepOptions } from '@fluxguard/core';
import { guardControls, mtlsControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link authorize}: the guard of `@fluxguard/core` (`createGuard`).
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard } from '@fluxguard/core';
 * const options: AuthorizeOptions = { guard: createGuard({ rbac: compileRbac(rules), jwt, audit }) };
 * app.use(authorize(options));
 * ```
 */
export type AuthorizeOptions = GuardStepOptions;

/**
 * Authentication and authorization of every request: the Express pipeline with the guard's
 * controls of `@fluxguard/core`. A
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
 * line saying so. So is an app that routes strictly (`strict routing`): rules read `/x/` as `/x`.
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
 * const { before, after } = fluxguard({ audit });
 * app.use(before, authorize({ guard }));
 * app.get('/v1/items/:id', (req, res) => { res.json({ by: req.fluxguard.principal?.subject }); });
 * app.use(after);
 * ```
 */
export function authorize(options: AuthorizeOptions): RequestHandler {
  return controls('authorize', guardControls('authorize', options));
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
 * `client_certificate_required` without a verified, current certificate,
 * `certificate_untrusted` when the connection presented one that failed verification
 * (per-operation mode: the same answer, with Node's code, e.g. `CERT_HAS_EXPIRED`, as
 * `detail.certificateError` in the audit line only), `certificate_mismatch` when it matches none
 * of `allow` (`createCertificateCheck` of `@fluxguard/core`). It sets no principal; handlers read
 * the identity with `getClientCertificate`.
 *
 * @example
 * ```ts
 * import { mtls } from '@fluxguard/express';
 * app.use('/internal', mtls({ allow: [{ spiffeId: 'spiffe://example.org/ns/ops/**' }] }), internalRouter);
 * ```
 */
export function mtls(options?: MtlsOptions): RequestHandler {
  return controls('mtls', mtlsControls('mtls', options));
}
