import type { Application } from 'express';
import { ConfigurationError } from '@fluxguard/core';
import { joinPath } from './routes.js';

/** What this module reads of a router layer and of a router (Express 5's `router` package). */
interface LayerView {
  readonly rawPath?: unknown;
  readonly route?: { readonly path?: unknown; readonly methods?: Readonly<Record<string, unknown>> };
  readonly handle?: { readonly name?: unknown; readonly stack?: unknown; readonly caseSensitive?: unknown };
}

/**
 * What a fluxguard middleware is, found in an app's stack: one that guards the routes after it
 * (`before` with a guard or controls of the application's, `authorize()`, `controls()`), a
 * `before` that does not (request id, headers, default timeouts), or `after`.
 */
type Mark = 'before' | 'plain-before' | 'after';

const marks = new WeakMap<object, Mark>();

/**
 * Marks `handler` as fluxguard middleware of a kind (see {@link Mark}), for
 * {@link misplacedMiddleware} to find it in an app's stack.
 *
 * @internal
 */
export function markMiddleware(handler: object, mark: Mark): void {
  marks.set(handler, mark);
}

function routerOf(app: Application): LayerView['handle'] {
  return (app as unknown as { router?: LayerView['handle'] }).router;
}

/**
 * The number of layers of the app's router: a check of the app is made again when it changes.
 *
 * @internal
 */
export function stackLength(app: Application): number {
  const stack = routerOf(app)?.stack;
  return Array.isArray(stack) ? stack.length : 0;
}

/**
 * The refusal of an app that routes case-insensitively under controls that match paths: rules
 * match `/v1/x` exactly, the router would run its handler for `/V1/X` too, under another rule.
 *
 * @internal
 */
export function caseInsensitiveRouting(owner: string): ConfigurationError {
  return new ConfigurationError(
    `${owner}: the app must route case-sensitively, as its rules match paths: app.set('case sensitive routing', true)`,
  );
}

/**
 * Why the routing of `app` may not agree with rules that match paths letter for letter, or
 * undefined. Express 5 builds an app's router once, with the setting of that moment, so the
 * router's own `caseSensitive` is read, not only the setting; a router mounted with
 * `express.Router()` routes case-insensitively unless told otherwise; and an app mounted in
 * the app (`app.use('/admin', admin)`) is out of reach: its routing can be neither read nor
 * checked.
 *
 * @internal
 */
export function routingMismatch(app: Application, owner: string): ConfigurationError | undefined {
  if (!app.enabled('case sensitive routing')) return caseInsensitiveRouting(owner);
  const router = routerOf(app);
  if (router?.caseSensitive !== true) {
    return new ConfigurationError(
      `${owner}: the app's router was made before app.set('case sensitive routing', true), and routes case-insensitively: set it before any route or app.use`,
    );
  }
  return mountedMismatch(router.stack, '', owner);
}

function mountedMismatch(stack: unknown, prefix: string, owner: string): ConfigurationError | undefined {
  if (!Array.isArray(stack)) return undefined;
  for (const layer of stack as readonly LayerView[]) {
    const handle = layer.handle;
    if (layer.route !== undefined || handle === undefined) continue;
    for (const at of mountPaths(prefix, layer.rawPath)) {
      if (handle.name === 'mounted_app') {
        return new ConfigurationError(
          `${owner}: an Express app is mounted at "${at}" below rules that match paths, and how it routes (letter case, route order) cannot be checked: mount express.Router({ caseSensitive: true }) there instead`,
        );
      }
      if (!Array.isArray(handle.stack)) continue;
      if (handle.caseSensitive !== true) {
        return new ConfigurationError(
          `${owner}: the router mounted at "${at}" routes case-insensitively, and rules match paths: create it with express.Router({ caseSensitive: true })`,
        );
      }
      const inner = mountedMismatch(handle.stack, at, owner);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}

/**
 * Why fluxguard's middleware is out of place in `app`, or undefined: a route registered before
 * `fluxguard().before` (with controls) is served without them, and `fluxguard().after` mounted
 * without `before` answers unknown routes like a guarded app while no route is guarded. An
 * app with neither is not looked at.
 *
 * @internal
 */
export function misplacedMiddleware(app: Application, owner: string): ConfigurationError | undefined {
  const entries: Entry[] = [];
  flatten(routerOf(app)?.stack, '', entries);
  if (!entries.some((entry) => entry.mark === 'before')) {
    const plain = entries.some((entry) => entry.mark === 'plain-before');
    return !plain && entries.some((entry) => entry.mark === 'after')
      ? new ConfigurationError(
          `${owner}: fluxguard().after is mounted but fluxguard().before is not: app.use(before) ahead of the routes, or serve wrap(app)`,
        )
      : undefined;
  }
  // Each route must come after a `before` with controls whose mount path covers it.
  const guarding: string[] = [];
  for (const entry of entries) {
    if (entry.mark === 'before') guarding.push(entry.path);
    else if (entry.route !== undefined && !guarding.some((prefix) => covers(prefix, entry.path))) {
      return new ConfigurationError(
        `${owner}: the route "${entry.route}" is not behind fluxguard().before and would be served without its controls: register it after app.use(before) (mounted at "/"; or after authorize()), or serve wrap(app)`,
      );
    }
  }
  return undefined;
}

/** Whether middleware mounted at `prefix` runs for requests to `path`. */
function covers(prefix: string, path: string): boolean {
  return prefix === '/' || path === prefix || path.startsWith(`${prefix}/`);
}

/** A route of the app (`METHOD /path`, and its path), or one of fluxguard's middleware and its mount path. */
interface Entry {
  readonly mark?: Mark;
  readonly route?: string;
  readonly path: string;
}

/** The app's routes and fluxguard's middleware, in the order the router tries them. */
function flatten(stack: unknown, prefix: string, entries: Entry[]): void {
  if (!Array.isArray(stack)) return;
  for (const layer of stack as readonly LayerView[]) {
    const handle = layer.handle;
    const mark = handle === undefined ? undefined : marks.get(handle);
    const mounts = mountPaths(prefix, layer.rawPath);
    if (mark !== undefined) {
      for (const path of mounts) entries.push({ mark, path });
    } else if (layer.route !== undefined) {
      const paths = Array.isArray(layer.route.path) ? (layer.route.path as unknown[]) : [layer.route.path];
      const method = Object.keys(layer.route.methods ?? {})[0] ?? '_all';
      for (const routePath of paths) {
        // A route given as a regular expression: a path no prefix covers, so that one before the
        // controls is refused too.
        const path = typeof routePath === 'string' ? joinPath(prefix, routePath) : `${prefix}/(${String(routePath)})`;
        entries.push({ route: `${method === '_all' ? '*' : method.toUpperCase()} ${path}`, path });
      }
    } else if (Array.isArray(handle?.stack)) {
      for (const path of mounts) flatten(handle.stack, path, entries);
    } else if (handle?.name === 'mounted_app') {
      for (const path of mounts) entries.push({ route: `* ${path}/*`, path });
    }
  }
}

/** Where a layer is mounted below `prefix`: each path of an array, `/` for one given otherwise. */
function mountPaths(prefix: string, rawPath: unknown): readonly string[] {
  const paths = Array.isArray(rawPath) ? (rawPath as unknown[]) : [rawPath === undefined ? '/' : rawPath];
  // A regular expression: a path of its own, which covers no route but those below it.
  return paths.map((path) => (typeof path === 'string' ? joinPath(prefix, path) : `${prefix}/(${String(path)})`));
}
