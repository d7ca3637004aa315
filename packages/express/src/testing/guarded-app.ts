import express from 'express';
import type { AuditLogger } from '@fluxguard/core';
import { fluxguard } from '../index.js';
import { serve, type Served } from './tls.js';

/**
 * Serves apps with fluxguard's `before` and `after` around what each test mounts (routing
 * case-sensitively, as rules need), and closes them all at the end.
 *
 * @example
 * ```ts
 * const apps = guardedApps(audit.audit);
 * afterAll(apps.closeAll);
 * const served = await apps.serve((app) => app.get('/x', handler));
 * ```
 */
export function guardedApps(audit: AuditLogger): {
  readonly serve: (fill: (app: express.Express) => void) => Promise<Served>;
  /** Serves an app made by the test as it is, closed with the others. */
  readonly serveAsIs: (app: express.Express) => Promise<Served>;
  readonly closeAll: () => Promise<void>;
} {
  const servers: Served[] = [];
  const serveAsIs = async (app: express.Express): Promise<Served> => {
    const served = await serve(app);
    servers.push(served);
    return served;
  };
  return {
    serveAsIs,
    serve: (fill) => {
      const app = express();
      app.set('case sensitive routing', true);
      const { before, after } = fluxguard({ audit });
      app.use(before);
      fill(app);
      app.use(after);
      return serveAsIs(app);
    },
    closeAll: async () => {
      for (const served of servers.splice(0)) await served.close();
    },
  };
}

/**
 * One object filled anew from each request it is given, as an app that keeps a single stand-in
 * for the request does.
 *
 * @example
 * ```ts
 * const fill = oneStandIn();
 * app.use((req, res, next) => router(fill(req), res, next));
 * ```
 */
export function oneStandIn(): (req: express.Request) => express.Request {
  const standIn: Record<string, unknown> = {};
  return (req) => {
    for (const key of Object.keys(standIn)) Reflect.deleteProperty(standIn, key);
    Object.assign(standIn, req);
    return standIn as unknown as express.Request;
  };
}

/**
 * A middleware that runs `inner` on {@link oneStandIn}, and goes on whatever `inner` says.
 *
 * @example
 * ```ts
 * app.use(throughOneStandIn(legacyApp));
 * ```
 */
export function throughOneStandIn(inner: express.Express): express.RequestHandler {
  const fill = oneStandIn();
  return (req, res, next) => {
    inner(fill(req), res, () => {
      next();
    });
  };
}
