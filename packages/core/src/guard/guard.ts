import type { AuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, Principal } from '../call/call-info.js';
import type { JwtVerifier } from '../jwt/verifier.js';
import type { IdentityRule } from '../mtls/identity-rules.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CompiledRbac } from '../rbac/rbac.js';
import type { SecurityError } from '../errors/security-error.js';
import type { Control } from '../pipeline/control.js';
import { authenticatorFrom, type Authenticator } from './authenticate.js';
import { authorizerFrom, type Authorizer } from './authorize.js';

/**
 * Options of {@link createGuard}.
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard, type GuardOptions } from '@fluxguard/core';
 * const rbac = compileRbac({ 'GET /v1/artifacts/*path': { anyRoles: ['artifacts.reader'] } });
 * const options: GuardOptions = { audit, jwt, rbac };
 * const guard = createGuard(options);
 * ```
 */
export interface GuardOptions {
  /** The compiled RBAC rules (`compileRbac`): default deny for any operation they do not name. */
  readonly rbac: CompiledRbac;
  /**
   * Verifies bearer tokens: a verifier of `createJwtVerifier` (any other object is refused, even
   * one with `authenticate()`). Omitted: no token is ever accepted (a certificate-only service).
   */
  readonly jwt?: JwtVerifier | undefined;
  /**
   * Rules mapping a verified client certificate to roles, so that a caller with a certificate
   * and no token can be authorized. Omitted: a certificate alone never authenticates a caller
   * (it still satisfies an RBAC `certificate` requirement).
   */
  readonly certificateRoles?: readonly IdentityRule[] | undefined;
  /** Where would-be denials of shadow mode are written. */
  readonly audit: AuditLogger;
}

/**
 * Authentication and authorization of one call, the same for both transports: the controls an
 * adapter runs (`controls`), or one `check` for code that calls it directly.
 *
 * @example
 * ```ts
 * import { createGuard, type Guard } from '@fluxguard/core';
 * const guard: Guard = createGuard({ audit, jwt, rbac });
 * const principal = await guard.check(call); // undefined for a public operation such as GET /healthz
 * ```
 */
export interface Guard {
  /**
   * Authenticates the caller and applies the RBAC rule of the call's operation. Returns the
   * verified {@link Principal} (undefined for a public operation), or throws a `SecurityError`:
   * `unauthenticated` (no or bad credentials), `permission_denied` (no rule, or an unmet rule),
   * `unavailable` (a key or revocation store that cannot answer).
   */
  check(call: CallInfo): Promise<Principal | undefined>;
  /** The compiled RBAC rules the guard decides with (the `rbac` option). */
  readonly rbac: CompiledRbac;
  /** The same decision as pipeline controls: the authenticator, then the authorizer. */
  readonly controls: readonly Control[];
}

/**
 * What {@link createGuard} returns: the {@link Guard}, and the two steps it composes, for an
 * adapter that runs them separately (`jwtAuth` then `rbac`) with the same behaviour. The
 * authenticator skips the operations the rules mark public, as the guard does.
 *
 * @example
 * ```ts
 * import { createGuard, type ComposedGuard } from '@fluxguard/core';
 * const guard: ComposedGuard = createGuard({ audit, jwt, rbac });
 * const principal = await guard.authenticator.authenticate(call);
 * guard.authorizer.authorize(call, principal); // the same decision as guard.check(call)
 * ```
 */
export interface ComposedGuard extends Guard {
  /** The authentication step alone, a control of stage `authentication`. */
  readonly authenticator: Authenticator;
  /** The authorization step alone (RBAC), a control of stage `authorization`. */
  readonly authorizer: Authorizer;
}

const DEFAULTS: Readonly<GuardOptions> = Object.freeze({
  rbac: undefined as unknown as CompiledRbac,
  jwt: undefined,
  certificateRoles: undefined,
  audit: undefined as unknown as AuditLogger,
});

/**
 * Creates the guard the adapters run on every call: public
 * operations pass untouched; a bearer token is verified when one is sent (and merged with a
 * verified client certificate: `authenticatedBy: 'both'`); without a token, a verified
 * certificate that `certificateRoles` maps authenticates alone (`mtls`); then the RBAC rule
 * decides. A token that is sent and fails is refused even where a certificate would have done:
 * a bad credential is never silently ignored.
 *
 * In RBAC shadow mode, would-be denials are logged (`rbac.shadow_denied`) and the call goes on;
 * a token that is sent and invalid is refused in every mode.
 *
 * It is the composition of {@link createAuthenticator} (with the rules' public operations
 * skipped) and {@link createAuthorizer}; both are returned too.
 *
 * @throws ConfigurationError for bad options, and for rules that ask for roles, scopes or an
 *   authenticated caller when neither `jwt` nor `certificateRoles` can give a call a principal
 *   (every call they decide would be refused, a token sent read as none).
 *
 * @example
 * ```ts
 * import { compileRbac, createGuard, createJwtVerifier } from '@fluxguard/core';
 * const guard = createGuard({
 *   audit,
 *   jwt: createJwtVerifier({ issuer: 'https://id.example.com', audience: 'artifacts', jwksUrl: 'https://id.example.com/jwks' }),
 *   rbac: compileRbac({ 'GET /healthz': { public: true }, 'GET /v1/artifacts/*path': { anyRoles: ['artifacts.reader'] } }),
 * });
 * const principal = await guard.check(call); // throws SecurityError when refused
 * ```
 */
export function createGuard(options: GuardOptions): ComposedGuard {
  const opts = resolveOptions('createGuard', DEFAULTS, options);
  // The authorizer checks `rbac` and `audit` first, so a bad `rbac` is named before anything else.
  const authorizer = authorizerFrom(opts, 'createGuard');
  const authenticator = authenticatorFrom(
    { jwt: opts.jwt, certificateRoles: opts.certificateRoles, rbac: opts.rbac },
    'createGuard',
  );
  // Rules that ask for roles with nothing to give a call a principal refuse every call they
  // decide, and a token sent to them would be read as none: a section left out of a policy.
  const needsPrincipal = (opts.rbac as Partial<CompiledRbac>).principalRules?.[0];
  if (needsPrincipal !== undefined && opts.jwt === undefined && opts.certificateRoles === undefined) {
    throw new ConfigurationError(
      `createGuard: the rule "${needsPrincipal}" needs a principal (roles, scopes or authenticated), but nothing can give a call one: ` +
        'pass "jwt" (a policy\'s "jwt" section) or "certificateRoles" (a policy\'s "mtls.certificateRoles")',
    );
  }

  async function check(call: CallInfo): Promise<Principal | undefined> {
    if (opts.rbac.isPublic(call.operation)) return undefined;
    const principal = await authenticator.authenticate(call);
    authorizer.authorize(call, principal);
    return principal;
  }

  return Object.freeze({
    check,
    rbac: opts.rbac,
    authenticator,
    authorizer,
    controls: Object.freeze([authenticator, authorizer]),
  });
}

/**
 * The operation name of an HTTP request, as RBAC rules name it: `METHOD /path`. `HEAD` is
 * authorized as `GET`, because Express serves `HEAD` through `GET` routes: a rule for `GET`
 * must not be bypassed, nor a `HEAD` refused, by the method's spelling.
 *
 * @example
 * ```ts
 * import { httpOperation } from '@fluxguard/core/adapter';
 * httpOperation('HEAD', '/v1/artifacts/a.txt'); // 'GET /v1/artifacts/a.txt'
 * ```
 */
export function httpOperation(method: string, path: string): string {
  const upper = method.toUpperCase();
  return `${upper === 'HEAD' ? 'GET' : upper} ${path}`;
}

// A dot segment (`.`, `..`, also percent-encoded), an encoded `/` or `\`, or an encoded
// character that needs no encoding (RFC 3986's unreserved: letters, digits, `-`, `.`, `_`, `~`).
const NOT_PLAIN_PATH = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)|%(?:2f|5c|2d|2e|3\d|[46][1-9a-f]|[57][0-9a]|5f|7e)/i;

/**
 * Whether an HTTP request path reads the same to rules as to whatever serves it: no dot segment
 * (`.` or `..`, also percent-encoded), no encoded `/` or `\`, and no percent-encoded letter,
 * digit, `-`, `.`, `_` or `~` (characters no client needs to encode). Rules match the path as
 * sent; Express decodes a route's parameters and a file server (`express.static`) the whole
 * path, so `/v1/settings/smtp%5Fpassword` reached the `:key` route as `smtp_password` under the
 * rule of `:key`, not the stricter rule of `/v1/settings/smtp_password`, and
 * `/static/public/..%2Fprivate%2Fpayroll.txt` was decided by the rule of `/static/public/*path`
 * and served a file under `/static/private`. Clients send no such paths (browsers and curl
 * resolve dot segments before sending).
 *
 * @example
 * ```ts
 * import { isPlainPath } from '@fluxguard/core/adapter';
 * isPlainPath('/v1/items/a.txt'); // true
 * isPlainPath('/v1/users/alice%40example.com'); // true: `@` may be encoded
 * isPlainPath('/static/public/%2e%2e/private'); // false
 * isPlainPath('/files/%70rivate/payroll.txt'); // false
 * ```
 */
export function isPlainPath(path: string): boolean {
  return (!path.includes('.') && !path.includes('%')) || !NOT_PLAIN_PATH.test(path);
}

/**
 * The `WWW-Authenticate` value for an `unauthenticated` refusal (RFC 6750 §3): a bare
 * `Bearer` challenge when no credential was sent, `error="invalid_token"` otherwise.
 *
 * @example
 * ```ts
 * import { SecurityError } from '@fluxguard/core';
 * import { bearerChallenge } from '@fluxguard/core/adapter';
 * bearerChallenge(new SecurityError('unauthenticated', { reason: 'token_expired' }), 'artifacts');
 * // 'Bearer realm="artifacts", error="invalid_token"'
 * ```
 */
export function bearerChallenge(err: SecurityError, realm?: string): string {
  const parts = realm === undefined ? [] : [`realm="${realm.replace(/["\\]/g, '')}"`];
  if (err.reason !== 'missing_token') parts.push('error="invalid_token"');
  return parts.length === 0 ? 'Bearer' : `Bearer ${parts.join(', ')}`;
}
