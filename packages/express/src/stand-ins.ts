import type { IncomingMessage } from 'node:http';
import express, { type NextFunction, type Request } from 'express';
import { ConfigurationError, SecurityError } from '@fluxguard/core';
import type { CallState } from '@fluxguard/core/adapter';
import { keepStandInState, stateOf } from './context.js';
import { passRefusalOn } from './hand-over.js';

const KEEPS_STATE = Symbol('fluxguard.keepsStandInState');

type Handle = (this: unknown, req: unknown, ...rest: unknown[]) => unknown;

/**
 * Makes every app of Express's `application` keep the call state of a stand-in for a request
 * (`Object.create(req)`, a copy, an object of the app's making answered with the call's
 * response) when it takes it in: `app.handle` replaces the stand-in's prototype first, after
 * which nothing led from it to the request, and a refusal of the app's controls was kept on the
 * stand-in alone. Resumed past the app (its error dropped), the request then reached the routes
 * behind it unanswered. Each app copies `handle` when it is created, so this runs when fluxguard
 * is imported, before the app's module makes its apps.
 */
function keepStandInStateIn(application: object): void {
  const handle: unknown = (application as { handle?: unknown }).handle;
  if (typeof handle !== 'function' || KEEPS_STATE in handle) return;
  const original = handle as Handle;
  const keeping: Handle = function handle(this: unknown, req, ...rest) {
    if (typeof req === 'object' && req !== null) {
      const state = keepStandInState(req as IncomingMessage, rest[0]);
      if (state !== undefined && !routable(req)) {
        const done = rest[1];
        refuseUnroutable(
          req as Request,
          typeof done === 'function'
            ? (done as NextFunction)
            : (error) => {
                state.end(new SecurityError('internal', { cause: error }));
              },
          state,
        );
        return undefined;
      }
    }
    return Reflect.apply(original, this, [req, ...rest]);
  };
  Object.defineProperty(keeping, KEEPS_STATE, { value: true });
  (application as { handle: Handle }).handle = keeping;
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

/** Refuses the call of a stand-in no app can route, as a refusal of fluxguard's is: wherever the app resumes it. */
function refuseUnroutable(standIn: Request, done: NextFunction, state: CallState): void {
  passRefusalOn(
    new ConfigurationError(
      'an app was given a stand-in for the request (Object.create(req)) without a url of its own: the app replaces its prototype, then routes nothing, and its guards never run; give it its own url and method (Object.assign(Object.create(req), { url: req.url, method: req.method }))',
    ),
    standIn,
    done,
    state,
  );
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

keepStandInStateIn(express.application);
readContextThroughStandIns(express.request);
