import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler } from 'express';
import { REQUEST_ID_HEADER, resolveRequestId, type SecurityError } from '@fluxguard/core';
import { refuseOptions, type CallState } from '@fluxguard/core/adapter';
import { attachContext, standInCall, type EndRequest, type WriteCancelled } from './context.js';
import { passRefusalOn } from './hand-over.js';
import { refusedStandIn } from './stand-ins.js';
import { answerable } from './request-body.js';

/**
 * Gives each request its id and its context (`req.fluxguard`, see `FluxguardRequestContext`): the
 * client's `x-request-id` when it is well formed (at most 200 of `[A-Za-z0-9._-]`, see
 * `resolveRequestId` in @fluxguard/core), else a fresh UUID. The id is set on the response
 * at once, so every answer carries it, errors included. Mount it first.
 *
 * Alone, a request that a control ends early (a deadline, say) is cut off without an answer
 * or a log line; `fluxguard().before` installs it together with the error handler, which
 * answers and logs such a request like any other failure.
 *
 * @throws ConfigurationError when given an argument: it takes no options.
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
export function requestId(...none: readonly never[]): RequestHandler {
  refuseOptions('requestId', none);
  return requestIdWith(cutOff, () => undefined);
}

/**
 * {@link requestId} with the way a request is ended early and release failures are reported.
 *
 * @internal
 */
export function requestIdWith(
  endRequest: EndRequest,
  onReleaseError: (error: unknown, requestId: string) => void,
): RequestHandler {
  return function fluxguardRequestId(req, res, next) {
    if (refusedStandIn(req, res, next)) return;
    if (startOrRefuse(req, res, next, endRequest, onReleaseError) !== undefined) next();
  };
}

/**
 * What {@link requestId} does to a request, for `fluxguard().before` to do in its one
 * middleware: the call state attached (or the existing one), its id on the response, and
 * `writeHeaders` (the security headers) after it, and `writeCancelled` for the line of a request
 * cut while its handler works (see `attachContext`). A request that cannot be started is passed on
 * as a refusal, so that code dropping the error serves nothing behind it, and `undefined` is
 * returned.
 *
 * @internal
 */
export function startOrRefuse(
  req: Request,
  res: ServerResponse,
  next: NextFunction,
  endRequest: EndRequest,
  onReleaseError: (error: unknown, requestId: string) => void,
  origin?: object,
  writeHeaders?: (res: ServerResponse) => void,
  writeCancelled?: WriteCancelled,
): CallState | undefined {
  // Pipelined behind a body read only to be dropped, on a connection that has ended its side:
  // whatever the application did for it, no answer could reach the client.
  if (!answerable(req)) {
    req.socket.destroy();
    return undefined;
  }
  try {
    const state = attachContext(
      req,
      res,
      resolveRequestId(req.headers[REQUEST_ID_HEADER]),
      endRequest,
      onReleaseError,
      origin,
      writeCancelled,
    );
    // A stand-in for the call's request (a sub-app run on a copy) is answered on the call's own
    // response, which has the id and the headers already: a stand-in response may take none.
    if (standInCall(req, state) === undefined) {
      res.setHeader(REQUEST_ID_HEADER, state.requestId);
      writeHeaders?.(res);
    }
    return state;
  } catch (error) {
    passRefusalOn(error, req, next);
    return undefined;
  }
}

function cutOff(_error: SecurityError, _req: IncomingMessage, res: ServerResponse): void {
  res.destroy();
}

/**
 * After a request was answered early (its deadline passed), the handler may still be running
 * and answer too: its writes are dropped instead of failing (`res.json` after the answer would
 * throw "headers already sent", and in a timer callback that would end the process).
 *
 * @internal
 */
export function dropLaterWrites(res: ServerResponse): void {
  if (!res.headersSent) return;
  const response = res as unknown as Record<
    'setHeader' | 'appendHeader' | 'removeHeader' | 'writeHead' | 'write' | 'end',
    unknown
  >;
  response.setHeader = ignored;
  response.appendHeader = ignored;
  response.removeHeader = ignored;
  response.writeHead = ignored;
  response.write = () => true;
  response.end = ignored;
}

function ignored(this: ServerResponse): ServerResponse {
  return this;
}
