import type { CallInfo, CertificateIdentity } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { Control } from '../pipeline/control.js';
import { compileIdentityRules, type IdentityRule } from './identity-rules.js';
import { isIdentityCurrent } from './peer-identity.js';

/**
 * Why a client certificate was refused: `client_certificate_required` (with
 * `permission_denied`) when none was presented or the verified one has expired since the
 * handshake, `certificate_untrusted` (`permission_denied` too, the same answer) when the
 * connection presented one that failed verification (per-operation mode; the audit line's
 * `detail.certificateError` gives Node's code, e.g. `CERT_HAS_EXPIRED`), `certificate_mismatch`
 * (`permission_denied`) when it matches no identity rule, and `certificate_unreadable`
 * (`unauthenticated`) when the peer certificate cannot be parsed.
 *
 * @example
 * ```ts
 * import type { CertificateReason } from '@fluxguard/core';
 * const wrongCaller: CertificateReason = 'certificate_mismatch';
 * ```
 */
export type CertificateReason =
  'client_certificate_required' | 'certificate_untrusted' | 'certificate_mismatch' | 'certificate_unreadable';

/**
 * The refusal of a call that needs a verified client certificate and has none. Its reason tells
 * an operator what the connection presented: `certificate_untrusted`, with Node's verification
 * code as `certificateError` in the audit line's `detail`, when a certificate failed
 * verification; `client_certificate_required` otherwise. Both are `permission_denied` with the
 * same neutral text: the client is never told why its certificate did not count.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): missingCertificate
 * if (call.peerCertificate === undefined) throw missingCertificate(call, principal?.subject);
 * ```
 *
 * @internal
 */
export function missingCertificate(
  call: Pick<CallInfo, 'peerCertificateError'> | undefined,
  subject?: string,
): SecurityError {
  const certificateError = call?.peerCertificateError;
  return certificateError === undefined
    ? new SecurityError('permission_denied', { reason: 'client_certificate_required', subject })
    : new SecurityError('permission_denied', {
        reason: 'certificate_untrusted',
        subject,
        auditFields: { certificateError },
      });
}

/**
 * Options of {@link createCertificateCheck}.
 *
 * @example
 * ```ts
 * import type { CertificateCheckOptions } from '@fluxguard/core';
 * const options: CertificateCheckOptions = { allow: [{ spiffeId: 'spiffe://fluxguard.dev/client' }] };
 * ```
 */
export interface CertificateCheckOptions {
  /** Identity rules the certificate must match (any rule). Omitted: any verified certificate. */
  readonly allow?: readonly IdentityRule[] | undefined;
}

/**
 * Requires a verified, current client certificate, optionally matching identity rules. It is a
 * {@link Control} of the `client-certificate` stage: list it in an adapter's controls (or use
 * the adapters' `mtls()`), or call `check` yourself.
 *
 * @example
 * ```ts
 * import { createCertificateCheck, type CertificateCheck } from '@fluxguard/core';
 * const mtls: CertificateCheck = createCertificateCheck();
 * const identity = mtls.check(call.peerCertificate); // throws permission_denied without a verified certificate
 * ```
 */
export interface CertificateCheck extends Control {
  /** Returns the identity, or throws `permission_denied` (`client_certificate_required` or `certificate_mismatch`). */
  check(identity: CertificateIdentity | undefined): CertificateIdentity;
  /**
   * `check` of a call's peer certificate; without one, the refusal says whether the connection
   * presented a certificate that failed verification (`certificate_untrusted`, see
   * {@link CertificateReason}). What the control runs on every call.
   */
  checkCall(call: CallInfo): CertificateIdentity;
}

const DEFAULTS: Readonly<CertificateCheckOptions> = Object.freeze({ allow: undefined });

/**
 * The mTLS check of a service without RBAC: the caller must present a verified client
 * certificate that is still valid (a connection may outlive it) and, when `allow` is given,
 * matches one of the identity rules. Used by the `mtls` interceptor and middleware of both
 * adapters. A missing certificate is `permission_denied`, not `unauthenticated`: there is no
 * bearer challenge that would help.
 *
 * @example
 * ```ts
 * import { createCertificateCheck } from '@fluxguard/core';
 * const mtls = createCertificateCheck({ allow: [{ spiffeId: 'spiffe://example.org/ns/*\/sa/ops' }] });
 * mtls.checkCall(call); // throws SecurityError when refused
 * ```
 */
export function createCertificateCheck(options?: CertificateCheckOptions): CertificateCheck {
  return certificateCheckFrom('createCertificateCheck', options);
}

/**
 * {@link createCertificateCheck}, whose errors about its options name `owner`: the adapter's
 * `mtls`, whose options they are.
 *
 * @internal
 */
export function certificateCheckFrom(owner: string, options: CertificateCheckOptions | undefined): CertificateCheck {
  const { allow } = resolveOptions(owner, DEFAULTS, options);
  const matches = allow === undefined ? undefined : compileIdentityRules(allow, 'mtls.allow');
  const checkOf = (identity: CertificateIdentity | undefined, call: CallInfo | undefined): CertificateIdentity => {
    // Asked of the call only here, on the way to a refusal: a verified connection never reads it.
    if (identity === undefined) throw missingCertificate(call);
    if (!isIdentityCurrent(identity)) throw missingCertificate(undefined);
    if (matches !== undefined && !matches(identity)) {
      throw new SecurityError('permission_denied', { reason: 'certificate_mismatch', subject: identity.spiffeId });
    }
    return identity;
  };
  const checkCall = (call: CallInfo): CertificateIdentity => checkOf(call.peerCertificate, call);
  return Object.freeze({
    name: 'mtls',
    stage: 'client-certificate',
    onStart: (call: CallInfo): void => {
      checkCall(call);
    },
    check: (identity: CertificateIdentity | undefined) => checkOf(identity, undefined),
    checkCall,
  });
}
