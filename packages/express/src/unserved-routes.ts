import type { Application } from 'express';
import { warnUnservedPatterns, type Pipeline } from '@fluxguard/core/adapter';
import { parentOf } from './app-routing.js';
import { routeNames, walkRouter, type RouterEntry } from './routes.js';

/**
 * Warns once per pattern (`FLUXGUARD_UNSERVED_RULE`) about the pipeline's HTTP patterns that
 * name no route of the app `app` is in, walked from its top app, on its first request (when
 * its routes are all there). A pattern below a middleware mounted at a path (a static file
 * server at `/files`, a sub-app) is taken as served, and so is every `GET` pattern when a static
 * file server is mounted at the top; the other middleware at the top pass requests on.
 *
 * @internal
 */
export function warnUnservedRoutes(app: Application, pipeline: Pipeline): void {
  let top = app;
  for (let parent = parentOf(top); parent !== undefined; parent = parentOf(top)) top = parent;
  const entries = walkRouter(top);
  const unserved = pipeline.unserved(routeNames(entries), 'http');
  if (unserved.length === 0) return;
  const covered = middlewareCoverage(entries);
  warnUnservedPatterns(
    unserved.filter((pattern) => !covered(pattern)),
    'route of this app (nor a path a middleware is mounted at)',
  );
}

/** Whether a middleware may serve what a pattern names, by where the middleware is mounted. */
function middlewareCoverage(entries: readonly RouterEntry[]): (pattern: string) => boolean {
  const mounts: string[] = [];
  let staticAtTop = false;
  for (const entry of entries) {
    if (entry.kind !== 'middleware') continue;
    if (entry.opaque) return () => true;
    if (entry.path !== '' && entry.path !== '/') mounts.push(entry.path);
    else if ((entry.handle as { name?: unknown }).name === 'serveStatic') staticAtTop = true;
  }
  return (pattern) => {
    const space = pattern.indexOf(' ');
    const method = pattern.slice(0, space);
    const path = pattern.slice(space + 1);
    if (staticAtTop && (method === 'GET' || method === '*')) return true;
    return mounts.some((mount) => path === mount || path.startsWith(`${mount}/`));
  };
}
