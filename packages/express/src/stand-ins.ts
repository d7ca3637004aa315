import type { IncomingMessage } from 'node:http';
import express, { type NextFunction, type Request } from 'express';
import { ConfigurationError, SecurityError } from '@fluxguard/core';
import type { CallState } from '@fluxguard/core/adapter';
import { SHARED_STAND_IN, keepStandInState, stateOf } from './context.js';
import { passRefusalOn } from './hand-over.js';

const KEEPS_STATE = Symbol('fluxguard.keepsStandInState');

type Handle = (this: unknown, req: unknown, ...rest: unknown[]) => unknown;

/**
 * Makes every app of Express's `application` (`app`), or every router of its `Router`, keep the
 * call state of a stand-in for a request (`Object.create(req)`, a copy, an object of the app's
 * making answered with the call's response) when it takes it in: `app.handle` replaces the
 * stand-in's prototype first, after which nothing led from it to the request, and a refusal of
 * the app's controls was kept on the stand-in alone. Resumed past the app (its error dropped),
 * the request then reached the routes behind it unanswered. A router replaces nothing, but one
 * object filled anew for every request and run through a router by a second call read the
 * first call's state there: its guards decided by the first caller. Each app copies `handle`
 * when it is created, so this runs when fluxguard is imported, before the app's module makes
 * its apps.
 */
function keepStandInStateIn(holder: object, app: boolean): void {
  const handle: unknown = (holder as { handle?: unknown }).handle;
  if (typeof handle !== 'function' || KEEPS_STATE in handle) return;
  const original = handle as Handle;
  const keeping: Handle = function handle(this: unknown, req, ...rest) {
    if (typeof req === 'object' && req !== null && refusedTakingIn(req as Request, rest[0], rest[1], app))
      return undefined;
    return Reflect.apply(original, this, [req, ...rest]);
  };
  Object.defineProperty(keeping, KEEPS_STATE, { value: true });
  (holder as { handle: Handle }).handle = keeping;
}

/**
 * Takes a stand-in in with the response it is handed ({@link keepStandInState}), and refuses
 * its call ({@link whyRefused}) before anything runs on it: `true` when refused.
 */
function refusedTakingIn(standIn: Request, res: unknown, done: unknown, app: boolean): boolean {
  const takenIn = keepStandInState(standIn, res);
  const why = takenIn === undefined ? undefined : whyRefused(standIn, takenIn.alone, app);
  if (takenIn === undefined || why === undefined) return false;
  refuse(standIn, why, done, takenIn.call);
  return true;
}

/**
 * Why an app refuses the call of a stand-in it takes in, if it does: taken in while it stands
 * for another call too (one object the app fills anew for every request), this call is refused
 * before the app runs anything on it, and the other goes on, its guards' refusals its own. A
 * router routes by the stand-in's `url` whatever its prototype: only an app needs its own.
 */
function whyRefused(standIn: object, alone: boolean, app: boolean): string | undefined {
  if (!alone) return SHARED_STAND_IN;
  return !app || routable(standIn) ? undefined : UNROUTABLE;
}

/**
 * Whether a stand-in keeps the URL Express routes by as its own: what it inherits is gone once
 * the app replaces its prototype. Without one the app's router runs nothing, none of its guards
 * either, and hands the request back as if no route of its had matched. (Without a method of its
 * own, its middleware and guards still run; only its routes match nothing.)
 */
function routable(standIn: object): boolean {
  return Object.hasOwn(standIn, 'url') && typeof (standIn as { url?: unknown }).url === 'string';
}

/** Why an app is refused a stand-in it cannot route (logged, never sent). */
const UNROUTABLE =
  'an app was given a stand-in for the request (Object.create(req)) without a url of its own: the app replaces its prototype, then routes nothing, and its guards never run; give it its own url and method (Object.assign(Object.create(req), { url: req.url, method: req.method }))';

/**
 * Refuses the call of a stand-in before the app runs anything on it, as a refusal of
 * fluxguard's is: wherever the app resumes it. Given no `done` (the app called as
 * `app(req, res)`), the call is answered at once. A call fluxguard cannot tell (`undefined`)
 * gets the error passed on, and no other call's refusal is keyed by it.
 */
function refuse(standIn: Request, why: string, done: unknown, call: CallState | undefined): void {
  const error = new ConfigurationError(why);
  const next: NextFunction =
    typeof done === 'function'
      ? (done as NextFunction)
      : () => {
          call?.end(new SecurityError('internal', { cause: error }));
        };
  if (call === undefined) next(error);
  else passRefusalOn(error, standIn, next, call);
}

/**
 * Takes a stand-in in at a middleware of fluxguard's that the app ran on it itself (no app or
 * router handed it over), as an app would, with the response the middleware was handed: when
 * it stands for another call too, or for a request fluxguard cannot tell, this call is refused
 * (`next(error)`) and `true` returned. One object filled with a few fields of each request and
 * handed to `jwtAuth()` by a second call read the first call's state there: a forged token
 * passed with the first caller's principal, and a refusal of `validate()` answered the first
 * call. A request of Node's (with its own context) is never a stand-in.
 *
 * @internal
 */
export function refusedStandIn(req: Request, res: unknown, next: NextFunction): boolean {
  return !Object.hasOwn(req, 'fluxguard') && refusedTakingIn(req, res, next, false);
}

/**
 * Gives a stand-in an app took in `req.fluxguard`, read from the call it stands for: the call's
 * own request has it as its own property, which this never shadows. A handler of a sub-app run
 * on a copy of the request (`{ ...req }`, which leaves out the property) read `undefined` there.
 * Read again on every access: an object an app fills anew for each request stands for the call
 * of the moment, and for none while two overlap.
 */
function readContextThroughStandIns(requestPrototype: object): void {
  if (Object.hasOwn(requestPrototype, 'fluxguard')) return;
  Object.defineProperty(requestPrototype, 'fluxguard', {
    configurable: true,
    enumerable: false,
    get(this: IncomingMessage) {
      return stateOf(this);
    },
  });
}

keepStandInStateIn(express.application, true);
keepStandInStateIn((express.Router as unknown as { prototype: object }).prototype, false);
readContextThroughStandIns(express.request);
