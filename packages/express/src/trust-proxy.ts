import type { Application } from 'express';
import type { Pipeline } from '@fluxguard/core/adapter';

/** The pipelines already warned about: once per pipeline is enough. */
const warned = new WeakSet<Pipeline>();

/**
 * Warns once (`FLUXGUARD_TRUST_PROXY`) when `app` says it is behind a proxy
 * (`app.set('trust proxy', ...)`) while some of the pipeline's limits count clients by the
 * connection's address and trust no proxy (`Control.countsSocketAddress`): every client then
 * shares the proxy's address and one allowance, and one client can use it up for all. Express's
 * setting is not read for the limits: `trustedProxies` names the proxies for both transports.
 *
 * @internal
 */
export function warnTrustProxy(app: Application, pipeline: Pipeline): void {
  if (warned.has(pipeline)) return;
  const trust: unknown = app.get('trust proxy');
  if (trust === undefined || trust === false || trust === 0) return;
  const limits = pipeline.controls.flatMap((control) => control.countsSocketAddress ?? []);
  if (limits.length === 0) return;
  warned.add(pipeline);
  process.emitWarning(
    `the app trusts a proxy (app.set('trust proxy')), but the limits ${limits.map((name) => `"${name}"`).join(', ')} count clients by the connection's address: behind a proxy every client shares its address, and so one allowance. List the proxies in the limits' trustedProxies (createRateLimit, createBruteForceProtection)`,
    { code: 'FLUXGUARD_TRUST_PROXY' },
  );
}
