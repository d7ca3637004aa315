import type { AuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import type { JwtVerifier } from '../jwt/verifier.js';
import { compileCertificateRoles, mergePrincipals, principalFromCertificate, type IdentityRule } from '../mtls/identity-rules.js';
import { isIdentityCurrent } from '../mtls/peer-identity.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CompiledRbac } from '../rbac/rbac.js';

/** Options of {@link createGuard}. */
export interface GuardOptions {
  /** The compiled RBAC rules (`compileRbac`): default deny for any operation they do not name. */
  readonly rbac: CompiledRbac;
  /** Verifies bearer tokens. Omitted: no token is ever accepted (a certificate-only service). */
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

/** Authentication and authorization of one call, the same for both transports. */
export interface Guard {
  /**
   * Authenticates the caller and applies the RBAC rule of the call's operation. Returns the
   * verified {@link Principal} (undefined for a public operation), or throws a `SecurityError`:
   * `unauthenticated` (no or bad credentials), `permission_denied` (no rule, or an unmet rule),
   * `unavailable` (a key or revocation store that cannot answer).
   */
  check(call: CallInfo): Promise<Principal | undefined>;
  readonly rbac: CompiledRbac;
}

const DEFAULTS: Readonly<GuardOptions> = Object.freeze({
  rbac: undefined as unknown as CompiledRbac,
  jwt: undefined,
  certificateRoles: undefined,
  audit: undefined as unknown as AuditLogger,
});

/**
 * Creates the guard the adapters run on every call, in the order of DESIGN.md: public
 * operations pass untouched; a bearer token is verified when one is sent (and merged with a
 * verified client certificate: `authenticatedBy: 'both'`); without a token, a verified
 * certificate that `certificateRoles` maps authenticates alone (`mtls`); then the RBAC rule
 * decides. A token that is sent and fails is refused even where a certificate would have done:
 * a bad credential is never silently ignored.
 *
 * In RBAC shadow mode, would-be denials are logged (`rbac.shadow_denied`) and the call goes on;
 * a token that is sent and invalid is refused in every mode.
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
export function createGuard(options: GuardOptions): Guard {
  const opts = resolveOptions('createGuard', DEFAULTS, options);
  const { rbac, jwt, audit } = opts;
  if (typeof rbac.authorize !== 'function') {
    throw new ConfigurationError('createGuard: "rbac" must be the result of compileRbac()');
  }
  if (typeof audit.record !== 'function') {
    throw new ConfigurationError('createGuard: "audit" must be an AuditLogger (createAuditLogger())');
  }
  const certificateRoles =
    opts.certificateRoles === undefined ? undefined : compileCertificateRoles(opts.certificateRoles, 'createGuard.certificateRoles');

  async function authenticate(call: CallInfo): Promise<Principal | undefined> {
    if (jwt !== undefined && call.headers.getAll('authorization').length > 0) {
      return mergePrincipals(await jwt.authenticate(call), call.peerCertificate);
    }
    // Only a certificate that a rule maps to roles authenticates alone; any other verified
    // certificate still meets an RBAC `certificate` requirement, checked by the rule itself.
    if (certificateRoles !== undefined && certificateRoles(call.peerCertificate).length > 0) {
      return principalFromCertificate(call.peerCertificate, certificateRoles);
    }
    return undefined;
  }

  async function check(received: CallInfo): Promise<Principal | undefined> {
    if (rbac.isPublic(received.operation)) return undefined;
    // A connection outlives the check of its handshake: a certificate that has expired since
    // (or is not yet valid) identifies nobody, on every call of a long-lived connection.
    const call =
      received.peerCertificate === undefined || isIdentityCurrent(received.peerCertificate)
        ? received
        : { ...received, peerCertificate: undefined };
    const principal = await authenticate(call);
    const decision = rbac.authorize(call.operation, principal, call.peerCertificate);
    if (decision.shadowDenied) {
      audit.record({
        event: 'rbac.shadow_denied',
        outcome: 'allowed',
        reason: decision.reason,
        operation: call.operation,
        peer: call.peerAddress,
        subject: principal?.subject,
        requestId: call.requestId,
        transport: call.transport,
        code: decision.denial?.code,
      });
    }
    if (decision.allowed) return principal;
    if (principal === undefined && decision.denial?.code === 'unauthenticated') {
      // No credential at all: say so, so that HTTP answers a plain `Bearer` challenge (RFC 6750 §3.1).
      throw new SecurityError('unauthenticated', { reason: 'missing_token', cause: decision.denial });
    }
    const denial = decision.denial ?? new SecurityError('permission_denied', { reason: decision.reason });
    if (principal === undefined) throw denial;
    // Name who was refused in the audit line: the adapter has no principal for a refused call.
    throw new SecurityError(denial.code, {
      reason: denial.reason,
      details: denial.details,
      subject: principal.subject,
      cause: denial,
    });
  }

  return Object.freeze({ check, rbac });
}

/**
 * The operation name of an HTTP request, as RBAC rules name it: `METHOD /path`. `HEAD` is
 * authorized as `GET`, because Express serves `HEAD` through `GET` routes: a rule for `GET`
 * must not be bypassed, nor a `HEAD` refused, by the method's spelling.
 *
 * @example
 * ```ts
 * import { httpOperation } from '@fluxguard/core';
 * httpOperation('HEAD', '/v1/artifacts/a.txt'); // 'GET /v1/artifacts/a.txt'
 * ```
 */
export function httpOperation(method: string, path: string): string {
  const upper = method.toUpperCase();
  return `${upper === 'HEAD' ? 'GET' : upper} ${path}`;
}

/**
 * The `WWW-Authenticate` value for an `unauthenticated` refusal (RFC 6750 §3): a bare
 * `Bearer` challenge when no credential was sent, `error="invalid_token"` otherwise.
 *
 * @example
 * ```ts
 * import { SecurityError, bearerChallenge } from '@fluxguard/core';
 * bearerChallenge(new SecurityError('unauthenticated', { reason: 'token_expired' }), 'artifacts');
 * // 'Bearer realm="artifacts", error="invalid_token"'
 * ```
 */
export function bearerChallenge(err: SecurityError, realm?: string): string {
  const parts = realm === undefined ? [] : [`realm="${realm.replace(/["\\]/g, '')}"`];
  if (err.reason !== 'missing_token') parts.push('error="invalid_token"');
  return parts.length === 0 ? 'Bearer' : `Bearer ${parts.join(', ')}`;
}
