import type { KeyObject } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import { expressjwt, UnauthorizedError, type Request as JwtRequest } from 'express-jwt';
import { rateLimit } from 'express-rate-limit';
import helmet from 'helmet';
import { pino } from 'pino';
import { pinoHttp } from 'pino-http';
import { AUDIENCE, ISSUER, RATE_LIMIT_POINTS, READER_ROLE } from './fixtures.js';
import { mountRoute, strictApp } from './handlers.js';

/**
 * The HTTP peer: what a team would assemble from popular packages to get about what fluxguard
 * gives (security headers, a request log, JWT verification, a role check, and with
 * `withRateLimit` a per-client and a per-caller limit as high as fluxguard's in the bench), so
 * that "fluxguard ÷ peer" compares like with like in the same run.
 */
export function peerApp(publicKey: KeyObject, withRateLimit: boolean): Express {
  const app = strictApp();
  app.use(helmet());
  // Every line is formatted and then dropped, as fluxguard's audit log is in the bench.
  app.use(pinoHttp({ logger: pino({ level: 'info' }, { write: () => undefined }) }));
  if (withRateLimit) {
    app.use(
      rateLimit({ windowMs: 60_000, limit: RATE_LIMIT_POINTS, standardHeaders: 'draft-8', legacyHeaders: false }),
    );
  }
  app.use(expressjwt({ secret: publicKey, algorithms: ['ES256'], issuer: ISSUER, audience: AUDIENCE }));
  if (withRateLimit) {
    app.use(
      rateLimit({
        windowMs: 60_000,
        limit: RATE_LIMIT_POINTS,
        standardHeaders: 'draft-8',
        legacyHeaders: false,
        keyGenerator: (req) => String((req as JwtRequest).auth?.sub),
      }),
    );
  }
  app.use(express.json());
  app.use(requireRole(READER_ROLE));
  mountRoute(app);
  app.use(refusals);
  return app;
}

function requireRole(role: string): RequestHandler {
  return (req, res, next) => {
    const roles: unknown = (req as JwtRequest).auth?.roles;
    if (Array.isArray(roles) && roles.includes(role)) next();
    else res.status(403).json({ error: 'forbidden' });
  };
}

const refusals: ErrorRequestHandler = (err, _req, res, next) => {
  if (err instanceof UnauthorizedError) res.status(401).json({ error: 'unauthorized' });
  else next(err);
};
