import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { frozenCopy, isPolicyObject } from '../policy/fields.js';
import { compileCertificateRoles, type IdentityRule } from './identity-rules.js';
import type { ClientCertificateMode } from './tls-settings.js';

/**
 * The `mtls` section: whether the TLS handshake requires a client certificate, and which
 * verified certificates authenticate a caller alone (with the roles of their rule).
 *
 * @example
 * ```ts
 * import type { MtlsPolicy } from '@fluxguard/core';
 * const mtls: MtlsPolicy = {
 *   clientCertificates: 'per-operation',
 *   certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }],
 * };
 * ```
 */
export interface MtlsPolicy {
  /**
   * `strict`: every call needs a verified client certificate; the TLS settings should require
   * one in the handshake (`createTlsSettings({ clientCertificates: 'strict' })`), and the guard
   * of `createGuardFromPolicy` refuses a call without one (`client_certificate_required`) in
   * any case. `per-operation` or absent: the RBAC rules decide.
   */
  readonly clientCertificates?: ClientCertificateMode;
  /** Verified certificates these rules match authenticate without a token (see `IdentityRule`). */
  readonly certificateRoles?: readonly IdentityRule[];
}

const MTLS_KEYS = ['clientCertificates', 'certificateRoles'] as const;

/**
 * Checks the `mtls` section of a policy and returns it typed (the same object). The
 * certificate rules are compiled to check them completely (patterns, roles).
 *
 * @throws ConfigurationError naming the bad field, e.g. `policy.mtls.certificateRoles[1].spiffeId: ...`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseMtlsPolicy
 * const mtls = parseMtlsPolicy({ clientCertificates: 'strict' }, 'policy.mtls');
 * ```
 */
export function parseMtlsPolicy(value: unknown, where: string): MtlsPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(value, MTLS_KEYS, where, 'field');
  const mode = value.clientCertificates;
  if (mode !== undefined && mode !== 'strict' && mode !== 'per-operation') {
    throw new ConfigurationError(`${where}.clientCertificates must be "strict" or "per-operation"`);
  }
  const rules = value.certificateRoles;
  if (rules !== undefined) {
    if (!Array.isArray(rules)) throw new ConfigurationError(`${where}.certificateRoles must be an array`);
    // An empty list maps no certificate, the same as no list; compiling is the validation of the rest.
    if (rules.length > 0) compileCertificateRoles(rules as readonly IdentityRule[], `${where}.certificateRoles`);
  }
  return frozenCopy(value);
}
