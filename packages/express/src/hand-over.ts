import type { NextFunction, Request, Response } from 'express';
import { ConfigurationError, SecurityError } from '@fluxguard/core';
import { httpOperation } from '@fluxguard/core/adapter';
import { stateOf } from './context.js';
import type { RouterEntry } from './routes.js';

/** A route's own `dispatch` (the `router` package's `Route.prototype.dispatch`). */
type Dispatch = (this: object, req: Request, res: Response, done: NextFunction) => unknown;

/** What one pipeline asks of a route it checked: its names (`METHOD /path`) and the controls' test. */
interface HandOverCheck {
  readonly names: readonly string[];
  readonly mayServe: (operation: string, route: string, current?: string) => boolean;
}

/**
 * The checks on each route object: for each pipeline that checked the app it is in, one for
 * each path the app is mounted at (a request reaches it below one of them).
 */
const checks = new WeakMap<object, Map<object, Map<string, HandOverCheck>>>();

/**
 * Makes every route among `entries` (an app's, walked below `prefix`) ask, as it is reached, whether it may serve the
 * request: the controls decided the request for the first route that matched it, and a handler
 * that calls `next()` hands it to the next one, which may be another rule's, as does a
 * middleware that rewrites `req.method` or `req.url` after the controls. `mayServe` is the
 * pipeline's `handOver` test for the app's routes; `owner` keys it, so that another pipeline in
 * the same app keeps its own. A route that may not serve the request ends it with fluxguard's
 * own `500` (never through an error handler of the app), and the line says why.
 *
 * @internal
 */
export function guardHandOvers(
  entries: readonly RouterEntry[],
  prefix: string,
  owner: object,
  mayServe: ((operation: string, route: string, current?: string) => boolean) | undefined,
): void {
  if (mayServe === undefined) return;
  const names = new Map<object, string[]>();
  for (const entry of entries) {
    if (entry.kind !== 'route' || entry.opaque) continue;
    // The controls name a HEAD request as GET: a `.head()` route serves GET's operations.
    const name = entry.route.startsWith('HEAD ') ? `GET ${entry.route.slice(5)}` : entry.route;
    const list = names.get(entry.handle);
    if (list === undefined) names.set(entry.handle, [name]);
    else list.push(name);
  }
  for (const [route, routeNames] of names) {
    let byOwner = checks.get(route);
    if (byOwner === undefined) {
      if (!guardDispatch(route)) continue;
      byOwner = new Map();
      checks.set(route, byOwner);
    }
    let byPrefix = byOwner.get(owner);
    if (byPrefix === undefined) byOwner.set(owner, (byPrefix = new Map<string, HandOverCheck>()));
    byPrefix.set(prefix, { names: routeNames, mayServe });
  }
}

/** Puts the hand-over check in front of the route's own `dispatch`; `false` when it has none. */
function guardDispatch(route: object): boolean {
  const dispatch = (route as { dispatch?: unknown }).dispatch;
  if (typeof dispatch !== 'function') return false;
  const own = dispatch as Dispatch;
  Object.defineProperty(route, 'dispatch', {
    configurable: true,
    writable: true,
    value: function dispatchChecked(this: object, req: Request, res: Response, done: NextFunction): unknown {
      const refusal = handOverRefusal(this, req);
      if (refusal !== undefined) {
        // Answered by fluxguard, as a refusal is: passed to `done`, it reached an error handler
        // of the app, which showed its text, and no line was written.
        const state = stateOf(req);
        if (state === undefined) done(refusal);
        else state.end(new SecurityError('internal', { cause: refusal }));
        return undefined;
      }
      return own.call(this, req, res, done);
    },
  });
  return true;
}

function handOverRefusal(route: object, req: Request): ConfigurationError | undefined {
  const operation = stateOf(req)?.callInfo?.operation;
  const byOwner = checks.get(route);
  if (operation === undefined || byOwner === undefined) return undefined;
  const current = currentOperation(req);
  for (const byPrefix of byOwner.values()) {
    let allowed = false;
    for (const { names, mayServe } of byPrefix.values()) {
      // One route object holds every method of an `app.route()` chain: only the names of the
      // method the request has now are its own (a POST rewritten to DELETE reaches `.delete()`).
      const own =
        names.length === 1
          ? names
          : names.filter((name) => name.startsWith('* ') || name.startsWith(`${methodOf(current)} `));
      if ((own.length > 0 ? own : names).some((name) => mayServe(operation, name, current))) allowed = true;
    }
    if (!allowed) {
      const [first] = byPrefix.values();
      return new ConfigurationError(
        `the route "${first?.names[0] ?? ''}" was reached by a request another rule decided: a route passed it on (next()), or a middleware after the controls rewrote its method or URL; answer in the route that matched, and rewrite before the controls`,
      );
    }
  }
  return undefined;
}

/** The operation the request names as its route sees it: its method and URL, as a middleware may have rewritten them. */
function currentOperation(req: Request): string {
  const url = req.url;
  const query = url.indexOf('?');
  return httpOperation(req.method, `${req.baseUrl}${query === -1 ? url : url.slice(0, query)}`);
}

function methodOf(operation: string): string {
  return operation.slice(0, operation.indexOf(' '));
}
