import type { RequestHandler } from 'express';
import type { JwtAuthOptions } from '@fluxguard/core';
import { jwtAuthControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

export type { JwtAuthOptions } from '@fluxguard/core';

/**
 * Authentication alone, the Express pipeline with one control: runs the core authenticator on the request (the bearer token of the
 * `Authorization` header only — never the query string, a cookie or another header — and the
 * verified client certificate of the connection) and stores the verified principal
 * (`req.fluxguard.principal`). A request without a credential goes on anonymous; a token that
 * is sent and invalid is refused `401` with `WWW-Authenticate: Bearer error="invalid_token"`
 * through the fluxguard error handler. It applies no RBAC: follow it with {@link rbac}, or use
 * {@link authorize}, which runs both in one step.
 *
 * Mount it after `fluxguard().before` (it needs `req.fluxguard`).
 *
 * @throws ConfigurationError when `authenticator` is missing.
 *
 * @example
 * ```ts
 * import { createAuditLogger, createAuthenticator, createJwtVerifier } from '@fluxguard/core';
 * import { fluxguard, jwtAuth } from '@fluxguard/express';
 * const audit = createAuditLogger();
 * const { before, after } = fluxguard({ audit });
 * app.use(before, jwtAuth({ authenticator: createAuthenticator({ jwt: createJwtVerifier({ issuer, audience, jwksUrl }) }) }));
 * app.get('/v1/me', (req, res) => { res.json({ subject: req.fluxguard.principal?.subject ?? null }); });
 * app.use(after);
 * ```
 */
export function jwtAuth(options: JwtAuthOptions): RequestHandler {
  return controls('jwtAuth', jwtAuthControls('jwtAuth', options));
}
