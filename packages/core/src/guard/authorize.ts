import type { AuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { assertAuditLogger } from '../audit/check.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CallContext } from '../pipeline/call-context.js';
import type { Control } from '../pipeline/control.js';
import { missingCertificate, type CertificateReason } from '../mtls/certificate-check.js';
import type { CompiledRbac, RbacDecision } from '../rbac/rbac.js';
import { withCurrentCertificate } from './authenticate.js';

/**
 * The guard's own reason: `missing_token` (with `unauthenticated`) for an anonymous caller on
 * a protected operation. RBAC would say `unauthenticated`; the guard says what was missing so
 * that HTTP answers a bare `Bearer` challenge (RFC 6750 §3.1). Other refusals of the guard
 * keep the `RbacReason` of the rule, or the `JwtReason` of the verifier.
 *
 * @example
 * ```ts
 * import type { GuardReason } from '@fluxguard/core';
 * const anonymous: GuardReason = 'missing_token';
 * ```
 */
export type GuardReason = 'missing_token';

/**
 * Options of {@link createAuthorizer}.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuditLogger, type AuthorizerOptions } from '@fluxguard/core';
 * const options: AuthorizerOptions = {
 *   audit: createAuditLogger(),
 *   rbac: compileRbac({ 'GET /healthz': { public: true }, 'GET /v1/items/:id': { anyRoles: ['reader'] } }),
 * };
 * ```
 */
export interface AuthorizerOptions {
  /** The compiled RBAC rules (`compileRbac`): default deny for any operation they do not name. */
  readonly rbac: CompiledRbac;
  /** Where would-be denials of shadow mode are written. */
  readonly audit: AuditLogger;
}

/**
 * The authorization step of one call: may this (already authenticated, or anonymous) caller
 * run this operation? It is the {@link Control} of the `authorization` stage: its `onStart`
 * applies the rule to the principal an earlier control recorded on the call's context.
 *
 * @example
 * ```ts
 * import type { Authorizer } from '@fluxguard/core';
 * function mayDelete(authorizer: Authorizer, call: CallInfo, principal: Principal | undefined): boolean {
 *   try { authorizer.authorize(call, principal); return true; } catch { return false; }
 * }
 * ```
 */
export interface Authorizer extends Control {
  /**
   * Applies the RBAC rule of `call.operation` to `principal` (`undefined`: anonymous) and the
   * call's verified, still-valid peer certificate. Returns when allowed (a public operation
   * always is; in shadow mode a would-be denial is logged as `rbac.shadow_denied` and allowed);
   * otherwise throws `SecurityError`: `unauthenticated` with reason `missing_token` for an
   * anonymous caller on a protected operation, `permission_denied` (naming the subject in the
   * audit line) for an unmet rule or an operation no rule names. A `certificate` requirement
   * unmet because the connection's certificate failed verification is `permission_denied` with
   * reason `certificate_untrusted`; that refusal, and `missing_token`, then carry Node's
   * verification code as `certificateError` in the audit line's `detail`.
   */
  authorize(call: CallInfo, principal: Principal | undefined): void;
  /** The rules applied, e.g. for `ruleFor` (audit labels) or `isPublic`. */
  readonly rbac: CompiledRbac;
}

interface ResolvedAuthorizerOptions {
  readonly rbac: CompiledRbac | undefined;
  readonly audit: AuditLogger | undefined;
}

const DEFAULTS: Readonly<ResolvedAuthorizerOptions> = Object.freeze({ rbac: undefined, audit: undefined });

const UNTRUSTED = 'certificate_untrusted' satisfies CertificateReason;

/**
 * Node's code for a client certificate that failed verification, when the rule was refused for
 * want of a verified certificate (no caller, or a `certificate` requirement unmet with none);
 * otherwise `undefined`.
 */
function untrustedCertificateOf(
  decision: RbacDecision,
  call: CallInfo,
  principal: Principal | undefined,
): string | undefined {
  if (decision.reason !== 'certificate_mismatch' && decision.reason !== 'unauthenticated') return undefined;
  if ((principal?.certificate ?? call.peerCertificate) !== undefined) return undefined;
  return call.peerCertificateError;
}

/** The authorizers made here: `rbac()` takes only one of them (see {@link isAuthorizer}). */
const AUTHORIZERS = new WeakSet<object>();

/**
 * Whether `control` is an authorizer of {@link createAuthorizer} or a guard's. Any other control
 * in its place (the authenticator of the same guard, most easily) would let every call through.
 *
 * @internal
 */
export function isAuthorizer(control: unknown): control is Authorizer {
  return typeof control === 'object' && control !== null && AUTHORIZERS.has(control);
}

/** @internal Validates already-resolved options; `factory` names the caller in errors. */
export function authorizerFrom(options: ResolvedAuthorizerOptions, factory: string): Authorizer {
  const { rbac, audit } = options;
  if (rbac === undefined || typeof (rbac as Partial<CompiledRbac> | null)?.authorize !== 'function') {
    throw new ConfigurationError(`${factory}: "rbac" must be the result of compileRbac()`);
  }
  assertAuditLogger(audit, factory);
  if (rbac.mode === 'shadow') {
    // Said once at start-up: in shadow mode nothing is refused, and the per-call lines alone
    // read like a working policy.
    audit.logger.warn(
      { event: 'rbac.shadow_mode', rules: rbac.patterns.length },
      'rbac.shadow_mode: RBAC refuses nothing; it logs each call it would refuse (rbac.shadow_denied)',
    );
  }

  // An HTTP path is the client's choice: the line names the rule that decided (or no rule), as
  // failure lines do, so that a client cannot write a distinct value into every line.
  const shadowLabel = (call: CallInfo): string =>
    call.transport === 'grpc'
      ? call.operation
      : (rbac.ruleFor(call.operation) ?? `${call.operation.slice(0, call.operation.indexOf(' '))} <unmatched>`);

  const authorize = (received: CallInfo, principal: Principal | undefined): void => {
    const call = withCurrentCertificate(received);
    const decision = rbac.authorize(call.operation, principal, call.peerCertificate);
    if (decision.shadowDenied) {
      const certificateError = untrustedCertificateOf(decision, call, principal);
      audit.record({
        event: 'rbac.shadow_denied',
        outcome: 'allowed',
        reason:
          certificateError !== undefined && decision.reason === 'certificate_mismatch' ? UNTRUSTED : decision.reason,
        operation: shadowLabel(call),
        peer: call.peerAddress,
        subject: principal?.subject,
        requestId: call.requestId,
        transport: call.transport,
        code: decision.denial?.code,
        ...(certificateError === undefined ? {} : { detail: { certificateError } }),
      });
    }
    if (decision.allowed) return;
    const certificateError = untrustedCertificateOf(decision, call, principal);
    if (principal === undefined && decision.reason === 'unauthenticated') {
      // No credential at all: say so, so that HTTP answers a plain `Bearer` challenge (RFC 6750 §3.1).
      // A certificate that failed verification is named in the line only: the answer stays this one.
      throw new SecurityError('unauthenticated', {
        reason: 'missing_token',
        ...(certificateError === undefined ? {} : { auditFields: { certificateError } }),
      });
    }
    if (certificateError !== undefined && decision.reason === 'certificate_mismatch') {
      // The rule's certificate was missing because the one presented did not verify.
      throw missingCertificate(received, principal?.subject);
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
  };

  const authorizer: Authorizer = Object.freeze({
    name: 'rbac',
    stage: 'authorization',
    matchesOperation: true,
    operationPatterns: rbac.patterns,
    operationLabel: (operation: string) => rbac.ruleFor(operation),
    checkRoutes: (routes: readonly string[]) => {
      rbac.checkRouteOrder(routes);
    },
    handOver: (routes: readonly string[]) => rbac.handOver(routes),
    authorize,
    rbac,
    onStart: (call: CallInfo, context: CallContext): void => {
      authorize(call, context.principal);
    },
  });
  AUTHORIZERS.add(authorizer);
  return authorizer;
}

/**
 * Creates the authorization step of {@link createGuard}, usable alone: the RBAC rule of the
 * call's operation decides, default deny. Public operations pass; an anonymous caller on a
 * protected one is refused `unauthenticated` (reason `missing_token`); a `certificate`
 * requirement is met by the call's verified peer certificate (one that has expired since the
 * handshake identifies nobody; one that failed verification is refused as
 * `certificate_untrusted`, see `CertificateReason`); shadow mode logs would-be denials and lets
 * the call go on.
 * Pair it with {@link createAuthenticator}, which supplies the principal.
 *
 * @throws ConfigurationError for unknown options, or an `rbac` / `audit` of the wrong kind.
 *
 * @example
 * ```ts
 * import { compileRbac, createAuditLogger, createAuthorizer } from '@fluxguard/core';
 * const authorizer = createAuthorizer({
 *   audit: createAuditLogger(),
 *   rbac: compileRbac({ '/grpc.health.v1.Health/*': { public: true }, '/pkg.Store/Get': { anyRoles: ['reader'] } }),
 * });
 * authorizer.authorize(call, principal); // throws SecurityError when refused
 * ```
 */
export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  return authorizerFrom(resolveOptions('createAuthorizer', DEFAULTS, options), 'createAuthorizer');
}
