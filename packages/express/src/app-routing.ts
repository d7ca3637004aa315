import type { Application } from 'express';
import { ConfigurationError } from '@fluxguard/core';
import { isExpressApp, routerOf, walkRouter, type RouterEntry } from './routes.js';
import { mountedAppOf } from './mounted-apps.js';

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

/**
 * Whether `handler` is fluxguard middleware (marked with {@link markMiddleware}).
 *
 * @internal
 */
export function isFluxguardMiddleware(handler: object): boolean {
  return marks.has(handler);
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

/** A count of the changes made to the stacks of one app's routing since it was first watched. */
interface RoutingChanges {
  count: number;
}

/** Each app's count (see {@link watchRouting}). */
const changesOf = new WeakMap<Application, RoutingChanges>();

/** The counts each watched stack, or router or route holding one, adds to: one per app it is in. */
const watchersOf = new WeakMap<object, Set<RoutingChanges>>();

/** The array methods Express's router adds layers with, and the others that add or move them. */
const STACK_CHANGES = ['push', 'unshift', 'splice'] as const;

/**
 * Counts, for `app`, the changes made from now on to every stack of its routing: its router's,
 * those of the routers mounted in it and those of its routes (Express's router adds routes,
 * routers, middleware and a route's methods with `stack.push`; `unshift`, `splice` and a new
 * `stack` array count too). The stack of a router mounted already is not the app's, and a route
 * added to it after the first request escaped the checks. Each app has its own count, so that a
 * change to one app makes no other check again; writing a layer at an index is not seen.
 *
 * @internal
 */
export function watchRouting(app: Application): void {
  let changes = changesOf.get(app);
  if (changes === undefined) changesOf.set(app, (changes = { count: 0 }));
  watchHolder(routerOf(app), changes);
}

/**
 * How many changes were made to the stacks of `app`'s routing since {@link watchRouting} first
 * watched it: a check made at another count may be out of date.
 *
 * @internal
 */
export function routingChangeCount(app: Application): number {
  return changesOf.get(app)?.count ?? 0;
}

/**
 * Adds `changes` to the counts `target` bumps: `first` when nothing watched it yet (its methods
 * are to be wrapped), `added` when another app's count did, `known` when this one did already.
 */
function addWatcher(target: object, changes: RoutingChanges): 'first' | 'added' | 'known' {
  let watchers = watchersOf.get(target);
  if (watchers === undefined) watchersOf.set(target, (watchers = new Set()));
  if (watchers.has(changes)) return 'known';
  watchers.add(changes);
  return watchers.size === 1 ? 'first' : 'added';
}

/** Counts a change to `target` for every app it is in, and watches what it now holds. */
function changed(target: object, added: Iterable<unknown>): void {
  const watchers = watchersOf.get(target);
  if (watchers === undefined) return;
  for (const changes of watchers) {
    changes.count += 1;
    for (const layer of added) watchLayer(layer, changes);
  }
}

/** Watches a router's or route's `stack`: the array, and an assignment of another one. */
function watchHolder(holder: unknown, changes: RoutingChanges): void {
  if ((typeof holder !== 'object' && typeof holder !== 'function') || holder === null) return;
  const { stack } = holder as { stack?: unknown };
  if (!Array.isArray(stack)) return;
  const watched = addWatcher(holder, changes);
  if (watched === 'known') return;
  if (watched === 'first') {
    let current: unknown[] = stack;
    Object.defineProperty(holder, 'stack', {
      configurable: true,
      enumerable: true,
      get: () => current,
      set: (next: unknown[]) => {
        current = next;
        for (const watcher of watchersOf.get(holder) ?? []) {
          watcher.count += 1;
          if (Array.isArray(next)) watchStack(next, watcher);
        }
      },
    });
  }
  watchStack(stack, changes);
}

function watchStack(stack: unknown[], changes: RoutingChanges): void {
  const watched = addWatcher(stack, changes);
  if (watched === 'known') return;
  if (watched === 'first') {
    for (const method of STACK_CHANGES) {
      const own: unknown = Reflect.get(Array.prototype, method);
      Object.defineProperty(stack, method, {
        configurable: true,
        writable: true,
        value: function stackChanged(this: unknown[], ...args: unknown[]): unknown {
          const result: unknown = Reflect.apply(own as (...args: unknown[]) => unknown, this, args);
          // The layers it adds: all of `push`'s and `unshift`'s, `splice`'s after its first two.
          changed(stack, method === 'splice' ? args.slice(2) : args);
          return result;
        },
      });
    }
  }
  for (const layer of stack) watchLayer(layer, changes);
}

function watchLayer(layer: unknown, changes: RoutingChanges): void {
  if (typeof layer !== 'object' || layer === null) return;
  const { route, handle } = layer as { route?: unknown; handle?: unknown };
  watchHolder(route, changes);
  watchHolder(handle, changes);
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
 * `express.Router()` routes case-insensitively unless told otherwise, as does a route or router
 * at a regular expression with the `i` flag; and an app mounted in
 * the app (`app.use('/admin', admin)`) is out of reach: its routing can be neither read nor
 * checked.
 *
 * @internal
 */
export function routingMismatch(app: Application, owner: string): ConfigurationError | undefined {
  if (!app.enabled('case sensitive routing')) return caseInsensitiveRouting(owner);
  return routerFlagsMismatch(app, owner) ?? mountedMismatch(walkRouter(app), owner);
}

/**
 * Why the apps that `app` is mounted in (`parent.use('/admin', app)`, and so on up) may route
 * into it paths its rules do not read, or undefined: each must route case-sensitively and not
 * strictly, as `app` itself must. A parent with Express's defaults sent `/ADMIN/users` into an
 * app mounted at `/admin`, where the rules read `/ADMIN/users` and found only a public rule.
 *
 * @internal
 */
export function parentRoutingMismatch(app: Application, owner: string): ConfigurationError | undefined {
  for (let parent = parentOf(app); parent !== undefined; parent = parentOf(parent)) {
    if (!parent.enabled('case sensitive routing') || routerFlagsMismatch(parent, owner) !== undefined) {
      return new ConfigurationError(
        `${owner}: the app is mounted in an app that routes case-insensitively or strictly, which would send it paths its rules do not read (/ADMIN/x into an app at /admin): set case sensitive routing, and no strict routing, in every app above it, before any route or app.use`,
      );
    }
  }
  return undefined;
}

/**
 * The app `app` is mounted in (Express sets `parent` when it is mounted), or undefined.
 *
 * @internal
 */
export function parentOf(app: Application): Application | undefined {
  const { parent } = app as { parent?: Application | undefined };
  return typeof parent === 'function' ? parent : undefined;
}

function routerFlagsMismatch(app: Application, owner: string): ConfigurationError | undefined {
  const router = routerOf(app);
  if (router?.caseSensitive !== true) {
    return new ConfigurationError(
      `${owner}: the app's router was made before app.set('case sensitive routing', true), and routes case-insensitively: set it before any route or app.use`,
    );
  }
  if (app.enabled('strict routing') || router.strict === true) {
    return new ConfigurationError(
      `${owner}: the app routes strictly (strict routing), and rules read a path with one trailing slash as the path without it, as Express's default routing does: /v1/x/ could reach another route than /v1/x under the rule of /v1/x. Unset strict routing`,
    );
  }
  return undefined;
}

function mountedMismatch(entries: readonly RouterEntry[], owner: string): ConfigurationError | undefined {
  for (const entry of entries) {
    if (entry.kind === 'middleware' && isMountedApp(entry.handle)) {
      return new ConfigurationError(
        `${owner}: an Express app is mounted at "${entry.path}" below rules that match paths, and how it routes (letter case, route order) cannot be checked: mount express.Router({ caseSensitive: true }) there instead`,
      );
    }
    if ((entry.kind === 'route' || entry.kind === 'router') && entry.ignoresCase) {
      return new ConfigurationError(
        `${owner}: the ${entry.kind} at "${entry.path}" is a regular expression with the i flag (or below one), which matches paths in any letter case, and rules match paths letter for letter: drop the flag`,
      );
    }
    if (entry.kind === 'route' && entry.mixesRouters) {
      return new ConfigurationError(
        `${owner}: the route at "${entry.path}" has a router or an app among other handlers, which the route order check cannot place: mount the router with app.use, or give it as the route's only handler`,
      );
    }
    if (entry.kind === 'route' && (entry.opaque || /[{}()]/.test(entry.path))) {
      return new ConfigurationError(
        `${owner}: the route at "${entry.path}" is a regular expression or has optional parts (or is below a path a router of another copy of the router package kept no record of), which rules cannot name and the route order check cannot read: write one route per path, with :param and *splat only, in express.Router()s`,
      );
    }
    if (entry.kind === 'router' && entry.strict) {
      return new ConfigurationError(
        `${owner}: the router mounted at "${entry.path}" routes strictly, and rules read a path with one trailing slash as the path without it: create it without strict`,
      );
    }
    if (entry.kind === 'router' && !entry.caseSensitive) {
      return new ConfigurationError(
        `${owner}: the router mounted at "${entry.path}" routes case-insensitively, and rules match paths: create it with express.Router({ caseSensitive: true })`,
      );
    }
  }
  return undefined;
}

/** An Express app mounted with `app.use(path, app)`: Express wraps it in a function of this name. */
function isMountedApp(handle: object): boolean {
  return (handle as { name?: unknown }).name === 'mounted_app' || isExpressApp(handle);
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
  const entries = walkRouter(app);
  if (!entries.some((entry) => markOf(entry) === 'before')) {
    const plain = entries.some((entry) => markOf(entry) === 'plain-before');
    return !plain && entries.some((entry) => markOf(entry) === 'after')
      ? new ConfigurationError(
          `${owner}: fluxguard().after is mounted but fluxguard().before is not: app.use(before) ahead of the routes, or serve wrap(app)`,
        )
      : undefined;
  }
  // Each route, and each mounted app, must come after a `before` with controls whose mount path covers it.
  const guarding: string[] = [];
  for (const entry of entries) {
    if (markOf(entry) === 'before') guarding.push(entry.path);
    const served =
      entry.kind === 'route'
        ? entry.route
        : entry.kind === 'middleware' && isMountedApp(entry.handle)
          ? `* ${entry.path}/*`
          : undefined;
    if (
      served !== undefined &&
      !guarding.some((prefix) => covers(prefix, entry.path)) &&
      !(guardsItself(entry) && !guardedLater(entries, entry))
    ) {
      return new ConfigurationError(
        `${owner}: the route "${served}" is not behind fluxguard().before and would be served without its controls: register it after app.use(before) (mounted at "/"; or after authorize()), or serve wrap(app)`,
      );
    }
  }
  return undefined;
}

/**
 * Whether `entry` is a mounted app that guards every route of its own: its own
 * `fluxguard().before` with controls (or another guard) ahead of them all, as its own check asks,
 * mounted at a plain path. Its routes are served with its controls, not without any.
 */
function guardsItself(entry: RouterEntry): boolean {
  if (entry.kind !== 'middleware' || entry.opaque) return false;
  const app = mountedAppOf(entry.handle);
  if (app === undefined) return false;
  return walkRouter(app).some((inner) => markOf(inner) === 'before') && misplacedMiddleware(app, '') === undefined;
}

/**
 * Whether a guard of the app that comes after `mounted` covers its path: the app meant its
 * controls (its rules, its limits) for those paths too, and a sub-app mounted ahead of them,
 * with a weaker guard of its own, answered a reader on an admin-only path.
 */
function guardedLater(entries: readonly RouterEntry[], mounted: RouterEntry): boolean {
  const at = entries.indexOf(mounted);
  return entries.slice(at + 1).some((entry) => markOf(entry) === 'before' && covers(entry.path, mounted.path));
}

/**
 * Under `wrap(app)` the controls run in front of the app, and the app's own `before` passes
 * requests on: a middleware mounted ahead of `before` in the app, meant to run before the
 * controls (a method override, `cors`, an access log), runs after them instead. Their names, to
 * warn of once at `wrap(app)`.
 *
 * @internal
 */
export function aheadOfBefore(app: Application): string[] {
  const entries = walkRouter(app);
  const first = entries.findIndex((entry) => {
    const mark = markOf(entry);
    return mark === 'before' || mark === 'plain-before';
  });
  if (first <= 0) return [];
  return entries.slice(0, first).flatMap((entry) => {
    if (entry.kind !== 'middleware' || marks.has(entry.handle)) return [];
    const name = (entry.handle as { name?: unknown }).name;
    return [typeof name === 'string' && name !== '' ? name : '(anonymous)'];
  });
}

/** The mark fluxguard put on a middleware entry (`before`, `after`), if any. */
function markOf(entry: RouterEntry): Mark | undefined {
  return entry.kind === 'middleware' ? marks.get(entry.handle) : undefined;
}

/** Whether middleware mounted at `prefix` runs for requests to `path`. */
function covers(prefix: string, path: string): boolean {
  return prefix === '/' || path === prefix || path.startsWith(`${prefix}/`);
}
