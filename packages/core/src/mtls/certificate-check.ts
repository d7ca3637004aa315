import type { CallInfo, CertificateIdentity } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { Control } from '../pipeline/control.js';
import { compileIdentityRules, type IdentityRule } from './identity-rules.js';
import { isIdentityCurrent } from './peer-identity.js';

/**
 * Why a client certificate was refused: `client_certificate_required` (with
 * `permission_denied`) when none was verified or it has expired since the handshake,
 * `certificate_mismatch` (`permission_denied`) when it matches no identity rule, and
 * `certificate_unreadable` (`unauthenticated`) when the peer certificate cannot be parsed.
 *
 * @example
 * ```ts
 * import type { CertificateReason } from '@fluxguard/core';
 * const wrongCaller: CertificateReason = 'certificate_mismatch';
 * ```
 */
export type CertificateReason = 'client_certificate_required' | 'certificate_mismatch' | 'certificate_unreadable';

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
 * mtls.check(call.peerCertificate); // throws SecurityError when refused
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
  const check = (identity: CertificateIdentity | undefined): CertificateIdentity => {
    if (identity === undefined || !isIdentityCurrent(identity)) {
      throw new SecurityError('permission_denied', { reason: 'client_certificate_required' });
    }
    if (matches !== undefined && !matches(identity)) {
      throw new SecurityError('permission_denied', { reason: 'certificate_mismatch', subject: identity.spiffeId });
    }
    return identity;
  };
  return Object.freeze({
    name: 'mtls',
    stage: 'client-certificate',
    onStart: (call: CallInfo): void => {
      check(call.peerCertificate);
    },
    check,
  });
}
