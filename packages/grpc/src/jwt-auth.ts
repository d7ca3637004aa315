import type { ServerInterceptor } from '@grpc/grpc-js';
import type { JwtAuthOptions } from '@fluxguard/core';
import { jwtAuthControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

export type { JwtAuthOptions } from '@fluxguard/core';

/**
 * The authentication interceptor alone, the gRPC pipeline with one control: for every call it runs the core authenticator on the
 * call's `CallInfo` (the bearer token of the `authorization` metadata entry, the VERIFIED
 * client certificate) and records the verified `Principal` (`getPrincipal(call)` in the
 * handler). A caller without a credential goes on anonymous; a token that is sent and invalid
 * is refused `UNAUTHENTICATED`. It applies no RBAC: follow it with {@link rbac}, or use
 * {@link guard}, which runs both in one step.
 *
 * Like {@link guard}, no message reaches the handler before the step has allowed the call,
 * and it must run after {@link safeErrors}.
 *
 * @throws ConfigurationError when `authenticator` is missing or grpc-js is older than 1.14.5.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { createAuditLogger, createAuthenticator, createJwtVerifier } from '@fluxguard/core';
 * import { jwtAuth, safeErrors } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const authenticator = createAuthenticator({ jwt: createJwtVerifier({ issuer, audience, jwksUrl }) });
 * const server = new Server({ interceptors: [safeErrors({ audit }), jwtAuth({ authenticator })] });
 * ```
 */
export function jwtAuth(options: JwtAuthOptions): ServerInterceptor {
  return controls('jwtAuth', jwtAuthControls('jwtAuth', options));
}
