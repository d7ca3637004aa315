import type { Application } from 'express';
import { ConfigurationError } from '@fluxguard/core';
import { joinPath } from './routes.js';

/** What this module reads of a router layer and of a router (Express 5's `router` package). */
interface LayerView {
  readonly rawPath?: unknown;
  readonly route?: { readonly path?: unknown; readonly methods?: Readonly<Record<string, unknown>> };
  readonly handle?: { readonly name?: unknown; readonly stack?: unknown; readonly caseSensitive?: unknown };
}

/** What a fluxguard middleware is, found in an app's stack: `before` with controls or without, or `after`. */
type Mark = 'before' | 'plain-before' | 'after';

const marks = new WeakMap<object, Mark>();

/**
 * Marks `handler` as fluxguard's `before` (`controls`: whether it runs any) or `after`, for
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
    const at = mountPath(prefix, layer.rawPath);
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
  const first = entries.findIndex((entry) => entry.mark === 'before' || entry.mark === 'plain-before');
  if (first === -1) {
    return entries.some((entry) => entry.mark === 'after')
      ? new ConfigurationError(
          `${owner}: fluxguard().after is mounted but fluxguard().before is not: app.use(before) ahead of the routes, or serve wrap(app)`,
        )
      : undefined;
  }
  if (entries[first]?.mark !== 'before') return undefined;
  const early = entries.slice(0, first).find((entry) => entry.route !== undefined)?.route;
  return early === undefined
    ? undefined
    : new ConfigurationError(
        `${owner}: the route "${early}" is registered before fluxguard().before and would be served without its controls: register it after app.use(before), or serve wrap(app)`,
      );
}

/** A route of the app (`METHOD /path`), or one of fluxguard's middleware. */
interface Entry {
  readonly mark?: Mark;
  readonly route?: string;
}

/** The app's routes and fluxguard's middleware, in the order the router tries them. */
function flatten(stack: unknown, prefix: string, entries: Entry[]): void {
  if (!Array.isArray(stack)) return;
  for (const layer of stack as readonly LayerView[]) {
    const handle = layer.handle;
    const mark = handle === undefined ? undefined : marks.get(handle);
    if (mark !== undefined) entries.push({ mark });
    else if (layer.route !== undefined) {
      const path = Array.isArray(layer.route.path) ? String(layer.route.path[0]) : String(layer.route.path);
      const method = Object.keys(layer.route.methods ?? {})[0] ?? '_all';
      entries.push({ route: `${method === '_all' ? '*' : method.toUpperCase()} ${mountPath(prefix, path)}` });
    } else if (Array.isArray(handle?.stack)) flatten(handle.stack, mountPath(prefix, layer.rawPath), entries);
    else if (handle?.name === 'mounted_app') entries.push({ route: `* ${mountPath(prefix, layer.rawPath)}/*` });
  }
}

function mountPath(prefix: string, path: unknown): string {
  return joinPath(prefix, typeof path === 'string' ? path : '/');
}
