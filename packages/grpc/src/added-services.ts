import { checkUnservedLater, warnUnservedPatterns, type Pipeline } from '@fluxguard/core/adapter';

/**
 * The methods registered through fluxguard's `addService`, so that the safeErrors interceptor
 * can tell, on a server's first call, a service added with grpc-js's own `server.addService`:
 * that one runs without the connection hardening `addService` applies (connection caps, the
 * closing grace, the write-stall limit, GOAWAY on a trust change), and nothing else says so.
 * Kept for each interceptor of the server they were added to: kept for the process, a service
 * one server registered through `addService` silenced the warning for another server that
 * registered it with grpc-js's own.
 */
const addedThrough = new WeakMap<object, Set<string>>();

/** Every method registered, for a server whose interceptors grpc-js did not show. */
const addedAnywhere = new Set<string>();
let interceptorsUnknown = false;

/**
 * Notes the method paths of a service `addService` registers on a server running
 * `interceptors` (`undefined` when grpc-js does not show them).
 *
 * @internal
 */
export function noteAddedService(paths: readonly string[], interceptors: readonly unknown[] | undefined): void {
  for (const path of paths) addedAnywhere.add(path);
  if (interceptors === undefined) {
    interceptorsUnknown = true;
    return;
  }
  for (const interceptor of interceptors) {
    if (typeof interceptor !== 'function') continue;
    let own = addedThrough.get(interceptor);
    if (own === undefined) addedThrough.set(interceptor, (own = new Set()));
    for (const path of paths) own.add(path);
  }
}

/** The servers `addService` registered services on, for the methods added to them by other means. */
const servers: WeakRef<object>[] = [];

/**
 * Notes a server `addService` registers a service on.
 *
 * @internal
 */
export function noteServer(server: object): void {
  let known = false;
  for (let i = servers.length - 1; i >= 0; i--) {
    const seen = servers[i]?.deref();
    if (seen === undefined) servers.splice(i, 1);
    else if (seen === server) known = true;
  }
  if (!known) servers.push(new WeakRef(server));
}

/**
 * Once a pipeline has taken its first call (a second later), warns about its patterns that name
 * no method of the servers in this process: those `addService` registered, and those added
 * with grpc-js's own `server.addService` (a health or reflection service), read from grpc-js's
 * table of handlers when it has one.
 *
 * @internal
 */
export function warnUnservedMethods(pipeline: Pipeline): void {
  checkUnservedLater(pipeline, () => {
    // A server whose services all came through grpc-js's own addService: nothing is known.
    if (servers.every((ref) => ref.deref() === undefined)) return;
    const served = new Set(addedAnywhere);
    for (const ref of servers) {
      const handlers = (ref.deref() as { handlers?: unknown } | undefined)?.handlers;
      if (handlers instanceof Map) for (const path of handlers.keys()) if (typeof path === 'string') served.add(path);
    }
    warnUnservedPatterns(pipeline.unserved([...served], 'grpc'), 'method of this server');
  });
}

let warned = false;

/**
 * Warns once per process (`FLUXGUARD_NATIVE_ADD_SERVICE`) when a call reaches `interceptor`
 * (fluxguard's) for a method `addService` did not register on a server it runs on.
 *
 * @internal
 */
export function warnIfNotAdded(path: string, interceptor: object): void {
  if (warned) return;
  const own = addedThrough.get(interceptor);
  if (own?.has(path) === true || (interceptorsUnknown && addedAnywhere.has(path))) return;
  warned = true;
  process.emitWarning(
    `fluxguard: ${path} was registered with grpc-js's own server.addService, which skips fluxguard's connection limits and TLS reload handling: use addService(server, service, implementation) of @fluxguard/grpc`,
    { code: 'FLUXGUARD_NATIVE_ADD_SERVICE' },
  );
}
