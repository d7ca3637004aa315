import type { ServerInterceptor } from '@grpc/grpc-js';
import type { CertificateCheckOptions } from '@fluxguard/core';
import { mtlsControls } from '@fluxguard/core/adapter';
import { controls } from './pipeline.js';

/**
 * Options of {@link mtls}: identity rules the client certificate must match (any rule), or none
 * for any verified certificate.
 *
 * @example
 * ```ts
 * const options: MtlsInterceptorOptions = { allow: [{ spiffeId: 'spiffe://example.org/ns/*\/sa/ops' }] };
 * ```
 */
export type MtlsInterceptorOptions = CertificateCheckOptions;

/**
 * Requires a verified client certificate on every call, for a server without RBAC (with RBAC,
 * use the `certificate` requirement of a rule through `guard` or `rbac` instead). Refuses with
 * `PERMISSION_DENIED`: reason `client_certificate_required` without a verified, current
 * certificate, `certificate_untrusted` when the connection presented one that failed
 * verification (per-operation mode: the same answer, with Node's code, e.g. `CERT_HAS_EXPIRED`,
 * as `detail.certificateError` in the audit line only), `certificate_mismatch` when it matches
 * none of `allow` (`createCertificateCheck` of `@fluxguard/core`). The identity is read only
 * from a connection whose certificate verified; it sets no principal.
 *
 * @example
 * ```ts
 * import { Server } from '@grpc/grpc-js';
 * import { createAuditLogger } from '@fluxguard/core';
 * import { fluxguardInterceptors, mtls } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * const server = new Server({
 *   interceptors: [...fluxguardInterceptors({ audit }), mtls({ allow: [{ spiffeId: 'spiffe://example.org/ns/ops/**' }] })],
 * });
 * ```
 */
export function mtls(options?: MtlsInterceptorOptions): ServerInterceptor {
  return controls('mtls', mtlsControls('mtls', options));
}
