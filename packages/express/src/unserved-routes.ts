import type { Application } from 'express';
import { checkUnservedLater, warnUnservedPatterns, type Pipeline } from '@fluxguard/core/adapter';
import { parentOf } from './app-routing.js';
import { routeNames, walkRouter, type RouterEntry } from './routes.js';

/** The top apps each pipeline has checked: a guard may serve more than one app. */
const appsOf = new WeakMap<Pipeline, Set<Application>>();

/**
 * Warns once per pattern (`FLUXGUARD_UNSERVED_RULE`) about the pipeline's HTTP patterns that
 * name no route of the apps it serves, a second after its first request (when their routes are
 * all there), each app walked from its top app. A pattern below a middleware mounted at a path
 * (a static file server at `/files`, a sub-app) is taken as served, and so is every `GET`
 * pattern when a static file server is mounted at the top; the other middleware at the top pass
 * requests on.
 *
 * @internal
 */
export function warnUnservedRoutes(app: Application, pipeline: Pipeline): void {
  let top = app;
  for (let parent = parentOf(top); parent !== undefined; parent = parentOf(top)) top = parent;
  let apps = appsOf.get(pipeline);
  if (apps === undefined) appsOf.set(pipeline, (apps = new Set()));
  apps.add(top);
  checkUnservedLater(pipeline, () => {
    const walked = [...(appsOf.get(pipeline) ?? [])].map((one) => walkRouter(one));
    const unserved = pipeline.unserved(
      walked.flatMap((entries) => routeNames(entries)),
      'http',
    );
    const covered = walked.map(middlewareCoverage);
    warnUnservedPatterns(
      unserved.filter((pattern) => !covered.some((covers) => covers(pattern))),
      'route of the apps it guards (nor a path a middleware is mounted at)',
    );
  });
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
