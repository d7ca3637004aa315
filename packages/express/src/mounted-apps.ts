import express, { type Application } from 'express';
import { isExpressApp, routerOf } from './routes.js';

/** The app each `mounted_app` function Express made for `app.use(path, app)` runs. */
const appsOf = new WeakMap<object, Application>();

const RECORDS_APPS = Symbol('fluxguard.recordsMountedApps');

type Use = (this: Application, ...args: unknown[]) => unknown;

/**
 * The app a layer's handle runs when it is the function Express wraps a mounted app in
 * (`app.use('/w', subApp)` pushes `mounted_app`, which keeps the app in a closure), or the app
 * itself when it was given as a handler; `undefined` for anything else.
 *
 * @internal
 */
export function mountedAppOf(handle: object): Application | undefined {
  return appsOf.get(handle) ?? (isExpressApp(handle) ? (handle as Application) : undefined);
}

/**
 * Makes every app's `use` record the app behind each `mounted_app` it pushes: the routing check
 * of the app it is mounted in then sees whether that app guards its routes itself (its own
 * `fluxguard().before` with controls), where it saw only an unknown function. An app with a
 * router guarded at `/v1` and a sub-app with its own guard at `/w` was refused every request.
 * Each app copies `use` when it is made, so this runs when fluxguard is imported.
 */
function recordMountedApps(application: object): void {
  const use: unknown = (application as { use?: unknown }).use;
  if (typeof use !== 'function' || RECORDS_APPS in use) return;
  const original = use as Use;
  const recording: Use = function use(this: Application, ...args) {
    const from = stackOf(this)?.length ?? 0;
    const result = Reflect.apply(original, this, args);
    const apps = args
      .flat(Infinity)
      .filter((arg): arg is Application => typeof arg === 'function' && isExpressApp(arg));
    const added = stackOf(this);
    if (apps.length > 0 && added !== undefined) {
      const mounted = (added.slice(from) as { handle?: { name?: unknown } }[]).filter(
        (layer) => layer.handle?.name === 'mounted_app',
      );
      mounted.forEach((layer, index) => {
        const app = apps[index];
        if (layer.handle !== undefined && app !== undefined) appsOf.set(layer.handle, app);
      });
    }
    return result;
  };
  Object.defineProperty(recording, RECORDS_APPS, { value: true });
  (application as { use: Use }).use = recording;
}

function stackOf(app: Application): unknown[] | undefined {
  const stack = (routerOf(app) as { stack?: unknown } | undefined)?.stack;
  return Array.isArray(stack) ? stack : undefined;
}

recordMountedApps(express.application);
