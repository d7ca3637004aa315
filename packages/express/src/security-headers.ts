import type { RequestHandler } from 'express';
import helmet from 'helmet';
import { ConfigurationError } from '@fluxguard/core';
import { resolveOptions } from '@fluxguard/core/adapter';

/**
 * Options of {@link securityHeaders}; every one is optional.
 *
 * @example
 * ```ts
 * const options: SecurityHeadersOptions = { hstsMaxAgeSeconds: 0 }; // plain HTTP behind a TLS proxy that sets HSTS
 * app.use(securityHeaders(options));
 * ```
 */
export interface SecurityHeadersOptions {
  /** `Strict-Transport-Security` max-age in seconds. Default one year; `0` omits the header. */
  readonly hstsMaxAgeSeconds?: number;
  /** Adds `includeSubDomains` to HSTS. Default `true`. */
  readonly hstsIncludeSubDomains?: boolean;
  /** Adds `preload` to HSTS (only after submitting the domain to the preload list). Default `false`. */
  readonly hstsPreload?: boolean;
  /** `Cross-Origin-Resource-Policy`. Default `same-origin`. */
  readonly crossOriginResourcePolicy?: 'same-origin' | 'same-site' | 'cross-origin';
}

const DEFAULTS: Readonly<Required<SecurityHeadersOptions>> = Object.freeze({
  hstsMaxAgeSeconds: 31_536_000,
  hstsIncludeSubDomains: true,
  hstsPreload: false,
  crossOriginResourcePolicy: 'same-origin',
});

const CORP_POLICIES: readonly string[] = ['same-origin', 'same-site', 'cross-origin'];

/**
 * helmet configured for a JSON API: a `Content-Security-Policy` of
 * `default-src 'none'; frame-ancestors 'none'` (an API response is never a document that may
 * load or embed anything), HSTS, `X-Content-Type-Options: nosniff`,
 * `Referrer-Policy: no-referrer`, `Cross-Origin-Resource-Policy: same-origin`,
 * `X-Frame-Options: DENY`, and no `X-Powered-By`. Headers that only matter for HTML pages
 * (COOP, Origin-Agent-Cluster, DNS prefetch, IE download options) are left out.
 * Options are checked once, here; an unknown or ill-typed option throws `ConfigurationError`.
 *
 * @example
 * ```ts
 * import { securityHeaders } from '@fluxguard/express';
 * app.use(securityHeaders({ hstsMaxAgeSeconds: 63_072_000 }));
 * ```
 */
export function securityHeaders(options?: SecurityHeadersOptions): RequestHandler {
  const opts = resolveOptions('securityHeaders', DEFAULTS, options);
  if (
    typeof opts.hstsMaxAgeSeconds !== 'number' ||
    !Number.isSafeInteger(opts.hstsMaxAgeSeconds) ||
    opts.hstsMaxAgeSeconds < 0
  ) {
    throw new ConfigurationError('securityHeaders: "hstsMaxAgeSeconds" must be a non-negative integer');
  }
  for (const key of ['hstsIncludeSubDomains', 'hstsPreload'] as const) {
    if (typeof opts[key] !== 'boolean') {
      throw new ConfigurationError(`securityHeaders: "${key}" must be a boolean`);
    }
  }
  if (!CORP_POLICIES.includes(opts.crossOriginResourcePolicy)) {
    throw new ConfigurationError(
      `securityHeaders: "crossOriginResourcePolicy" must be one of ${CORP_POLICIES.join(', ')}`,
    );
  }
  const handler = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: { 'default-src': ["'none'"], 'frame-ancestors': ["'none'"] },
    },
    crossOriginEmbedderPolicy: false,
    crossOriginOpenerPolicy: false,
    crossOriginResourcePolicy: { policy: opts.crossOriginResourcePolicy },
    originAgentCluster: false,
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity:
      opts.hstsMaxAgeSeconds === 0
        ? false
        : { maxAge: opts.hstsMaxAgeSeconds, includeSubDomains: opts.hstsIncludeSubDomains, preload: opts.hstsPreload },
    xContentTypeOptions: true,
    xDnsPrefetchControl: false,
    xDownloadOptions: false,
    xFrameOptions: { action: 'deny' },
    xPermittedCrossDomainPolicies: { permittedPolicies: 'none' },
    xPoweredBy: true,
    xXssProtection: true,
  });
  return function fluxguardSecurityHeaders(req, res, next) {
    handler(req, res, next);
  };
}
