import type { Application } from 'express';

/** What is read of a router layer and of a router (Express 5's `router` package). */
interface LayerView {
  readonly rawPath?: unknown;
  readonly route?: {
    readonly path?: unknown;
    readonly methods?: Readonly<Record<string, unknown>>;
    readonly stack?: unknown;
  };
  readonly handle?: {
    readonly name?: unknown;
    readonly stack?: unknown;
    readonly caseSensitive?: unknown;
    readonly strict?: unknown;
  };
}

/**
 * One thing an app's router tries, in order, as {@link walkRouter} finds it: a route (one entry
 * for each method and path), a router mounted in it (its own entries follow), or a middleware
 * function. `path` is joined below every mount path on the way; `opaque` marks a path given as a
 * regular expression, or below one, which `path` cannot spell; `ignoresCase` one given as a
 * regular expression with the `i` flag, or below one, which matches paths in any letter case.
 *
 * @internal
 */
export type RouterEntry =
  | {
      readonly kind: 'route';
      /** The router's `Route` object, one for all the methods and paths of one `app.route()`. */
      readonly handle: object;
      /** Some of the route's handlers are routers or apps, and some are not. */
      readonly mixesRouters: boolean;
      readonly route: string;
      readonly path: string;
      readonly opaque: boolean;
      readonly ignoresCase: boolean;
    }
  | {
      readonly kind: 'router';
      /** The router (the `router` package's), whose `params` callbacks run for its layers. */
      readonly handle: object;
      readonly path: string;
      readonly caseSensitive: boolean;
      readonly strict: boolean;
      readonly ignoresCase: boolean;
    }
  | {
      readonly kind: 'middleware';
      readonly handle: object;
      /** The router's `Layer` that runs `handle`, one for all the paths it was mounted at. */
      readonly layer: object;
      readonly path: string;
      readonly opaque: boolean;
    };

/**
 * The app's routers, routes and middleware in the order its router tries them, below `prefix`.
 *
 * @internal
 */
export function walkRouter(app: Application, prefix = ''): readonly RouterEntry[] {
  const entries: RouterEntry[] = [];
  walk(routerOf(app)?.stack, prefix, { opaque: false, ignoresCase: false }, entries);
  return entries;
}

/**
 * The app's router, as Express builds it on first use.
 *
 * @internal
 */
export function routerOf(app: Application): LayerView['handle'] {
  return (app as unknown as { router?: LayerView['handle'] }).router;
}

/** What the mount paths above a layer make of its paths. */
interface Above {
  readonly opaque: boolean;
  readonly ignoresCase: boolean;
}

function walk(stack: unknown, prefix: string, above: Above, entries: RouterEntry[]): void {
  if (!Array.isArray(stack)) return;
  for (const layer of stack as readonly LayerView[]) {
    const route = layer.route;
    // A router (or an app) given as a route's handlers tries its own routes on the whole path
    // below `prefix`, as a route's handlers see it (`app.all('/api/*rest', router)`): it is
    // walked as a router mounted at `prefix`, and the route, which only mounts it, is not one.
    const routers = route === undefined ? [] : routersAmong(route.stack);
    for (const handle of routers) walk([{ rawPath: '/', handle }], prefix, above, entries);
    const mixesRouters = routers.length > 0 && routers.length < (route?.stack as unknown[]).length;
    if (routers.length > 0 && !mixesRouters) continue;
    if (route !== undefined) {
      const paths = Array.isArray(route.path) ? (route.path as unknown[]) : [route.path];
      const methods = Object.keys(route.methods ?? {});
      for (const path of paths) {
        const [joined, regex] = below(prefix, path);
        const ignoresCase = above.ignoresCase || ignoresLetterCase(path);
        for (const method of methods) {
          entries.push({
            kind: 'route',
            handle: route,
            mixesRouters,
            route: `${method === '_all' ? '*' : method.toUpperCase()} ${joined}`,
            path: joined,
            opaque: above.opaque || regex,
            ignoresCase,
          });
        }
      }
      continue;
    }
    const handle = layer.handle;
    if (handle === undefined) continue;
    const mounts = mountPathsOf(layer);
    for (const at of mounts) {
      const [path, regex] = below(prefix, at);
      if (Array.isArray(handle.stack)) {
        // A mounted router: its own stack, below each path it was mounted at.
        const mounted = { opaque: above.opaque || regex, ignoresCase: above.ignoresCase || ignoresLetterCase(at) };
        entries.push({
          kind: 'router',
          handle,
          path,
          caseSensitive: handle.caseSensitive === true,
          strict: handle.strict === true,
          ...mounted,
        });
        walk(handle.stack, path, mounted, entries);
      } else entries.push({ kind: 'middleware', handle, layer, path, opaque: above.opaque || regex });
    }
  }
}

/** Spelt for a mount path no layer kept: below it, routes are read as below a regular expression. */
const UNREADABLE_PATH = { toString: () => 'a path its router kept no record of' };

/**
 * The paths a layer is mounted at. A layer of another copy of the router package (Express 4's
 * router, `router@1`) keeps no path, only its pattern: the `/` of a `use` without a path is
 * read off it, another path cannot be, and routes and middleware below it are held unreadable
 * (a middleware at `/x` read as at `/` would seem to guard every route behind it).
 */
function mountPathsOf(layer: LayerView): unknown[] {
  if ('rawPath' in layer) return Array.isArray(layer.rawPath) ? (layer.rawPath as unknown[]) : [layer.rawPath ?? '/'];
  return [(layer as { regexp?: { fast_slash?: unknown } }).regexp?.fast_slash === true ? '/' : UNREADABLE_PATH];
}

/** The routers and apps among a route's handlers. */
function routersAmong(stack: unknown): NonNullable<LayerView['handle']>[] {
  if (!Array.isArray(stack)) return [];
  return (stack as readonly LayerView[]).flatMap(({ handle }) =>
    handle !== undefined && (Array.isArray(handle.stack) || isExpressApp(handle)) ? [handle] : [],
  );
}

/**
 * An Express app (`express()`), which has its own router and settings: mounted with `app.use`
 * Express wraps it (`mounted_app`), given as a route's handler it is itself.
 *
 * @internal
 */
export function isExpressApp(handle: object): boolean {
  const app = handle as { handle?: unknown; set?: unknown; enabled?: unknown };
  return typeof app.handle === 'function' && typeof app.set === 'function' && typeof app.enabled === 'function';
}

/** A path given as a regular expression with the `i` flag: the router matches it in any letter case. */
function ignoresLetterCase(path: unknown): boolean {
  return path instanceof RegExp && path.flags.includes('i');
}

/** `path` below `prefix`, and whether it is a regular expression (then spelt as one segment of its own). */
function below(prefix: string, path: unknown): [string, boolean] {
  return typeof path === 'string' ? [joinPath(prefix, path), false] : [`${prefix}/(${String(path)})`, true];
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
  return routeNames(walkRouter(app, prefix));
}

/**
 * The routes among `entries` ({@link walkRouter}'s) as {@link routesOf} gives them.
 *
 * @internal
 */
export function routeNames(entries: readonly RouterEntry[]): readonly string[] {
  return Object.freeze(entries.flatMap((entry) => (entry.kind === 'route' && !entry.opaque ? [entry.route] : [])));
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
