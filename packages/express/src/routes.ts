import type { Application } from 'express';

/** What this module reads of a router layer (Express 5's `router` package). */
interface LayerView {
  readonly rawPath?: unknown;
  readonly route?: { readonly path?: unknown; readonly methods?: Readonly<Record<string, unknown>> };
  readonly handle?: { readonly stack?: unknown };
}

/**
 * The routes of an Express app in the order its router tries them, as `METHOD /path` (`*` for
 * `app.all`; routers mounted with `app.use('/prefix', router)` included, their prefix joined to
 * their routes). For a start-up check of the routes against the rules
 * (`rbac.checkRouteOrder(routesOf(app))`, which `fluxguard().wrap(app)` runs for its guard):
 * Express runs the first route that matches, RBAC applies the most specific rule. Routes given
 * as regular expressions, or mounted below one, cannot be written so and are left out. With
 * `prefix`, each path is joined below it (the mount path of a sub-app).
 *
 * @example
 * ```ts
 * import { routesOf } from '@fluxguard/express';
 * app.get('/v1/artifacts/:id', getOne);
 * routesOf(app); // ['GET /v1/artifacts/:id']
 * ```
 */
export function routesOf(app: Application, prefix = ''): readonly string[] {
  const routes: string[] = [];
  collect((app as unknown as { router?: { stack?: unknown } }).router?.stack, prefix, routes);
  return Object.freeze(routes);
}

function collect(stack: unknown, prefix: string, routes: string[]): void {
  if (!Array.isArray(stack)) return;
  for (const layer of stack as readonly LayerView[]) {
    const route = layer.route;
    if (route !== undefined) {
      const paths = Array.isArray(route.path) ? (route.path as unknown[]) : [route.path];
      const methods = Object.keys(route.methods ?? {});
      for (const path of paths) {
        if (typeof path !== 'string') continue;
        for (const method of methods) {
          routes.push(`${method === '_all' ? '*' : method.toUpperCase()} ${joinPath(prefix, path)}`);
        }
      }
      continue;
    }
    // A mounted router: its own stack, below each path it was mounted at.
    const mountedAt = Array.isArray(layer.rawPath) ? (layer.rawPath as unknown[]) : [layer.rawPath];
    if (layer.handle?.stack === undefined) continue;
    for (const at of mountedAt) {
      if (typeof at === 'string') collect(layer.handle.stack, joinPath(prefix, at), routes);
    }
  }
}

/**
 * `path` below `prefix`, as the router matches it: one slash between, none at the end.
 *
 * @internal
 */
export function joinPath(prefix: string, path: string): string {
  const joined = `${prefix.endsWith('/') ? prefix.slice(0, -1) : prefix}${path.startsWith('/') ? path : `/${path}`}`;
  return joined.length > 1 && joined.endsWith('/') ? joined.slice(0, -1) : joined;
}
