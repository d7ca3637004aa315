import type { RequestHandler } from 'express';
import { REQUEST_ID_HEADER, resolveRequestId } from '@fluxguard/core';
import { attachContext } from './context.js';

/**
 * Gives each request its id and its context (`req.fluxguard`, see `FluxguardRequestContext`): the
 * client's `x-request-id` when it is well formed (at most 200 of `[A-Za-z0-9._-]`, see
 * `resolveRequestId` in @fluxguard/core), else a fresh UUID. The id is set on the response
 * at once, so every answer carries it, errors included. Mount it first.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { requestId } from '@fluxguard/express';
 *
 * const app = express();
 * app.use(requestId());
 * app.get('/ping', (req, res) => { res.json({ requestId: req.fluxguard.requestId }); });
 * ```
 */
export function requestId(): RequestHandler {
  return function fluxguardRequestId(req, res, next) {
    const context = attachContext(req, res, resolveRequestId(req.headers[REQUEST_ID_HEADER]));
    res.setHeader(REQUEST_ID_HEADER, context.requestId);
    next();
  };
}
