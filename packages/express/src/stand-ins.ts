import type { IncomingMessage } from 'node:http';
import express from 'express';
import { keepStandInState } from './context.js';

const KEEPS_STATE = Symbol('fluxguard.keepsInheritedState');

type Handle = (this: unknown, req: unknown, ...rest: unknown[]) => unknown;

/**
 * Makes every app of Express's `application` keep the call state of a stand-in for a request
 * (`Object.create(req)`) when it takes it in: `app.handle` replaces the stand-in's prototype
 * first, after which nothing led from it to the request, and a refusal of the app's controls
 * was kept on the stand-in alone. Resumed past the app (its error dropped), the request then
 * reached the routes behind it unanswered. Each app copies `handle` when it is created, so this
 * runs when fluxguard is imported, before the app's module makes its apps.
 */
function keepStandInStateIn(application: object): void {
  const handle: unknown = (application as { handle?: unknown }).handle;
  if (typeof handle !== 'function' || KEEPS_STATE in handle) return;
  const original = handle as Handle;
  const keeping: Handle = function handle(this: unknown, req, ...rest) {
    if (typeof req === 'object' && req !== null) keepStandInState(req as IncomingMessage);
    return Reflect.apply(original, this, [req, ...rest]);
  };
  Object.defineProperty(keeping, KEEPS_STATE, { value: true });
  (application as { handle: Handle }).handle = keeping;
}

keepStandInStateIn(express.application);
