import { warnUnservedPatterns, type Pipeline } from '@fluxguard/core/adapter';

/**
 * The methods registered through fluxguard's `addService`, so that the safeErrors interceptor
 * can tell, on a server's first call, a service added with grpc-js's own `server.addService`:
 * that one runs without the connection hardening `addService` applies (connection caps, the
 * closing grace, the write-stall limit, GOAWAY on a trust change), and nothing else says so.
 */
const added = new Set<string>();

/**
 * Notes the method paths of a service `addService` registers.
 *
 * @internal
 */
export function noteAddedService(paths: readonly string[]): void {
  for (const path of paths) added.add(path);
}

/**
 * On a pipeline's first call, warns about its patterns that name no method `addService`
 * registered in this process: by then the server's services are all added. Not when the call's
 * own method came through grpc-js's `server.addService`, which registers what fluxguard cannot see.
 *
 * @internal
 */
export function warnUnservedMethods(pipeline: Pipeline, path: string): void {
  if (!added.has(path)) return;
  warnUnservedPatterns(pipeline.unserved([...added], 'grpc'), 'method registered with addService');
}

let warned = false;

/**
 * Warns once per process (`FLUXGUARD_NATIVE_ADD_SERVICE`) when a call reaches fluxguard's
 * interceptors for a method `addService` did not register.
 *
 * @internal
 */
export function warnIfNotAdded(path: string): void {
  if (warned || added.has(path)) return;
  warned = true;
  process.emitWarning(
    `fluxguard: ${path} was registered with grpc-js's own server.addService, which skips fluxguard's connection limits and TLS reload handling: use addService(server, service, implementation) of @fluxguard/grpc`,
    { code: 'FLUXGUARD_NATIVE_ADD_SERVICE' },
  );
}
