import type { ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import helmet from 'helmet';
import { ConfigurationError } from '@fluxguard/core';
import { resolveOptions, wholeNumber } from '@fluxguard/core/adapter';

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
  /** Adds `preload` to HSTS (only after submitting the domain to the preload list); needs `hstsIncludeSubDomains` and a year or more. Default `false`. */
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
 * helmet is run once, here, to record what it writes; each response then gets the same headers,
 * in the same order, from one loop (helmet itself would run a chain of nine middlewares per request).
 *
 * @example
 * ```ts
 * import { securityHeaders } from '@fluxguard/express';
 * app.use(securityHeaders({ hstsMaxAgeSeconds: 63_072_000 }));
 * ```
 */
export function securityHeaders(options?: SecurityHeadersOptions): RequestHandler {
  const write = securityHeaderWriter(options);
  return function fluxguardSecurityHeaders(_req, res, next) {
    write(res);
    next();
  };
}

/**
 * Writes the security headers of {@link securityHeaders} on a response.
 *
 * @internal
 */
export type SecurityHeaderWriter = (res: ServerResponse) => void;

/**
 * The writer behind {@link securityHeaders}, for `fluxguard().before` to call without a
 * middleware of its own. Checks the options the same way.
 *
 * @internal
 */
export function securityHeaderWriter(options?: SecurityHeadersOptions): SecurityHeaderWriter {
  const writes = recordHeaderWrites(helmetFor(options));
  return function writeSecurityHeaders(res) {
    for (const [name, value] of writes) {
      if (value === undefined) res.removeHeader(name);
      else res.setHeader(name, value);
    }
  };
}

/**
 * The helmet middleware that {@link securityHeaders} stands for: the source of truth of its
 * headers. Exported for the test that compares the two.
 *
 * @internal
 */
export function helmetFor(options?: SecurityHeadersOptions): RequestHandler {
  const opts = resolveOptions('securityHeaders', DEFAULTS, options);
  wholeNumber(opts.hstsMaxAgeSeconds, 'securityHeaders: "hstsMaxAgeSeconds"', { min: 0 });
  for (const key of ['hstsIncludeSubDomains', 'hstsPreload'] as const) {
    if (typeof opts[key] !== 'boolean') {
      throw new ConfigurationError(`securityHeaders: "${key}" must be a boolean`);
    }
  }
  // What the preload list refuses (helmet's own checks say the same of a one-year age).
  if (opts.hstsPreload && (!opts.hstsIncludeSubDomains || opts.hstsMaxAgeSeconds < 31_536_000)) {
    throw new ConfigurationError(
      'securityHeaders: "hstsPreload" needs "hstsIncludeSubDomains" and "hstsMaxAgeSeconds" of at least 31536000 (one year): the preload list refuses anything less',
    );
  }
  if (!CORP_POLICIES.includes(opts.crossOriginResourcePolicy)) {
    throw new ConfigurationError(
      `securityHeaders: "crossOriginResourcePolicy" must be one of ${CORP_POLICIES.join(', ')}`,
    );
  }
  return helmet({
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
}

/**
 * One header helmet writes on every response: set to the value, or removed (`undefined`).
 *
 * @internal
 */
export type HeaderWrite = readonly [name: string, value: string | undefined];

/**
 * Runs `handler` once against a response that only records `setHeader` and `removeHeader`, in
 * order (`undefined`: removed). Every option `helmetFor` passes is a constant (no directive is a
 * function of the request), so what helmet writes is the same on every response; anything else
 * it might do (read the request, touch the response otherwise, pass an error, not call `next`)
 * throws here, at construction.
 *
 * @internal
 */
export function recordHeaderWrites(handler: RequestHandler): readonly HeaderWrite[] {
  const writes: HeaderWrite[] = [];
  const cannotRecord = (what: string): never => {
    throw new ConfigurationError(`securityHeaders: helmet ${what}, so its headers cannot be recorded once`);
  };
  const methods = {
    setHeader: (name: unknown, value: unknown): unknown => {
      if (typeof name !== 'string' || typeof value !== 'string') cannotRecord('set a header that is not a string');
      writes.push(Object.freeze([name as string, value as string] as const));
      return response;
    },
    removeHeader: (name: unknown): void => {
      if (typeof name !== 'string') cannotRecord('removed a header that is not a string');
      writes.push(Object.freeze([name as string, undefined] as const));
    },
  };
  const request: unknown = new Proxy(
    {},
    {
      get: (_target, key) => cannotRecord(`read the request (${String(key)})`),
    },
  );
  const response: unknown = new Proxy(
    {},
    {
      get: (_target, key) =>
        key === 'setHeader' || key === 'removeHeader' ? methods[key] : cannotRecord(`used res.${String(key)}`),
    },
  );
  // An object, not two variables: the compiler cannot see the callback change them.
  const outcome: { passed: boolean; failure: unknown } = { passed: false, failure: undefined };
  handler(request as Parameters<RequestHandler>[0], response as Parameters<RequestHandler>[1], (error?: unknown) => {
    outcome.passed = true;
    outcome.failure = error;
  });
  if (!outcome.passed || outcome.failure !== undefined) {
    throw new ConfigurationError('securityHeaders: helmet did not write its headers in one synchronous pass', {
      cause: outcome.failure,
    });
  }
  return Object.freeze(writes);
}
