import type { RequestHandler } from 'express';
import { ConfigurationError, type Authenticator } from '@fluxguard/core';
import { resolveOptions } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link jwtAuth}.
 *
 * @example
 * ```ts
 * import { createAuthenticator } from '@fluxguard/core';
 * const options: JwtAuthOptions = { authenticator: createAuthenticator({ jwt }) };
 * ```
 */
export interface JwtAuthOptions {
  /** The authentication step of `@fluxguard/core` (`createAuthenticator`, or `createGuard(...).authenticator`). */
  readonly authenticator: Authenticator;
}

const DEFAULTS: Readonly<{ authenticator: Authenticator | undefined }> = Object.freeze({ authenticator: undefined });

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
  const { authenticator } = resolveOptions('jwtAuth', DEFAULTS, options);
  if (typeof authenticator?.onStart !== 'function') {
    throw new ConfigurationError(
      'jwtAuth: "authenticator" must be the result of createAuthenticator() of @fluxguard/core',
    );
  }
  return controls('jwtAuth', [authenticator]);
}
