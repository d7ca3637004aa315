// A refusal resumed where no walk of the app can see: in a router of another copy of the router
// package (router@1, Express 4's kind) that holds the guarded sub-app, or that only a function of
// the app holds; on stand-ins for both the request and the response; and in the automatic answer
// a router gives an OPTIONS request. Its own file, so that no earlier test has wrapped router@1's
// prototypes through a walk: each case here is the first refusal of its kind in the process.
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import express, { type ErrorRequestHandler, type NextFunction, type Request, type Response } from 'express';
import { compileRbac, createAuthenticator, createGuard } from '@fluxguard/core';
import { authorize, fluxguard, jwtAuth } from './index.js';
import { guardedApps, throughOneStandIn } from './testing/guarded-app.js';
import { captureAudit, createTokenSigner, type Served } from './testing/tls.js';

const load = createRequire(import.meta.url);
const routerV1 = load('router-v1') as (options: object) => express.Router;

/** A copy of Express of its own, as an app made before fluxguard was imported has: its `handle` unwrapped. */
function freshExpress(): typeof express {
  const dir = load.resolve('express').replace(/index\.js$/, '');
  const cached = Object.keys(load.cache).filter((key) => key.startsWith(dir));
  const kept = new Map(cached.map((key) => [key, load.cache[key]]));
  for (const key of cached) Reflect.deleteProperty(load.cache, key);
  try {
    return load('express') as typeof express;
  } finally {
    for (const [key, module] of kept) load.cache[key] = module;
  }
}
const audit = captureAudit();
const tokens = createTokenSigner();
const forged = { headers: { authorization: `Bearer ${tokens.sign()}x` } };
const valid = { headers: { authorization: `Bearer ${tokens.sign()}` } };
const carryOn: ErrorRequestHandler = (_err, _req, _res, next) => {
  next();
};
const authenticated = () => jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) });
const ran: string[] = [];
const apps = guardedApps(audit.audit);
afterAll(apps.closeAll);
const guardedApp = apps.serve;

async function answer(served: Served, path: string, init: RequestInit = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(`${served.url}${path}`, init);
  return { status: res.status, body: await res.text() };
}

type Runs = (req: Request, res: Response, next: NextFunction) => void;

/**
 * A guarded app whose function runs `inner` on what `standIns` makes of the request and the
 * response, drops its error and goes on, to a `/secret` that records `name` when it runs.
 */
function runsOnStandIns(inner: Runs, standIns: (req: Request, res: Response) => [Request, Response], name: string) {
  return guardedApp((app) => {
    app.use((req: Request, res: Response, next: NextFunction) => {
      const [request, response] = standIns(req, res);
      inner(request, response, () => {
        next();
      });
    });
    app.get('/secret', (_req, res) => {
      ran.push(name);
      res.json({ secret: 42 });
    });
  });
}

/** A request of your making that inherits from the real one, with what an app reads as its own (the app replaces its prototype). */
function madeFrom(req: Request): Request {
  const { url, method, headers } = req;
  return Object.assign(Object.create(req) as Request, { url, method, headers });
}

describe('a refusal out of sight of the app’s routing', () => {
  // First: while no other refusal is open, the layers ask nothing, so a count lowered too early shows.
  it('on a response the app made up, which says it closed, through a sub-app: the layers behind still answer', async () => {
    const inner = express();
    // It would write `X-Powered-By` on the made-up response, which has no `setHeader`.
    inner.disable('x-powered-by');
    inner.use(authenticated());
    const looked: string[] = [];
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        // Only what the sub-app's refusal needs of a response: it says when it closed.
        const made = new EventEmitter();
        inner(req, made as unknown as Response, () => {
          made.emit('close');
          req.res = res;
          next();
        });
      });
      app.param('id', (_req, _res, next, id: string) => {
        looked.push(id);
        next();
      });
      app.get('/records/:id', (_req, res) => {
        ran.push('made-up response:record');
        res.json({ secret: 1 });
      });
    });
    ran.length = 0;
    expect((await answer(served, '/records/r1', forged)).status).toBe(401);
    expect({ ran, looked }).toEqual({ ran: [], looked: [] });
    expect((await answer(served, '/records/r1', valid)).status).toBe(200);
    expect(ran).toEqual(['made-up response:record']);
  });

  it('in a router of router@1 that only a function holds: its param callbacks and routes never run', async () => {
    const records = new Map([['r1', { owner: 'ann' }]]);
    const looked: string[] = [];
    const hidden = routerV1({ caseSensitive: true });
    hidden.param('id', (_req: Request, res: Response, next: NextFunction, id: string) => {
      looked.push(id);
      if (records.has(id)) next();
      else res.status(404).json({ missing: id });
    });
    hidden.get('/records/:id', (req: Request, res: Response) => {
      ran.push(`hidden:${String(req.params.id)}`);
      res.json(records.get(String(req.params.id)));
    });
    const auth = authenticated();
    const served = await guardedApp((app) => {
      // Careless: the middleware's error is dropped, and the router runs anyway.
      app.use((req: Request, res: Response, next: NextFunction) => {
        auth(req, res, () => {
          hidden(req, res, next);
        });
      });
    });
    ran.length = 0;
    for (const id of ['missing', 'r1']) expect((await answer(served, `/records/${id}`, forged)).status).toBe(401);
    expect(looked).toEqual([]);
    expect(ran).toEqual([]);
    expect((await answer(served, '/records/r1', valid)).status).toBe(200);
    expect(ran).toEqual(['hidden:r1']);
  });

  it('in a router of router@1 holding the guarded sub-app, which has no parent link to it', async () => {
    const admin = express();
    admin.set('case sensitive routing', true);
    admin.use(
      fluxguard({ audit: audit.audit }).before,
      authorize({
        guard: createGuard({
          audit: audit.audit,
          jwt: tokens.verifier,
          rbac: compileRbac({ 'GET /admin/*path': { anyRoles: ['admin'] } }),
        }),
      }),
    );
    const legacy = routerV1({ caseSensitive: true });
    legacy.use('/admin', admin);
    legacy.use(carryOn);
    legacy.get('/admin/export', (_req: Request, res: Response) => {
      ran.push('legacy:export');
      res.json({ export: 'all users' });
    });
    const app = express();
    app.set('case sensitive routing', true);
    app.use(legacy);
    app.use(fluxguard({ audit: audit.audit }).after);
    const served = await apps.serveAsIs(app);
    ran.length = 0;
    expect((await answer(served, '/admin/export')).status).toBe(401);
    expect((await answer(served, '/admin/export', forged)).status).toBe(401);
    expect(ran).toEqual([]);
  });

  it('on stand-ins for both the request and the response', async () => {
    const inner = express();
    inner.use(authenticated());
    const served = await runsOnStandIns(
      inner,
      (req, res) => [new Proxy(req, {}), new Proxy(res, {})],
      'proxied:secret',
    );
    ran.length = 0;
    expect((await answer(served, '/secret', forged)).status).toBe(401);
    expect(ran).toEqual([]);
    expect((await answer(served, '/secret', valid)).status).toBe(200);
    expect(ran).toEqual(['proxied:secret']);
  });

  it.each([
    ['a sub-app', (): express.Router | express.Express => express()],
    ['a router', (): express.Router | express.Express => express.Router()],
  ])(
    'on stand-ins that inherit from the request and the response (Object.create), run through %s',
    async (kind, make) => {
      const inner = make();
      inner.use(authenticated());
      const served = await runsOnStandIns(
        inner,
        (req, res) => [madeFrom(req), Object.create(res) as Response],
        `inherited:${kind}`,
      );
      ran.length = 0;
      expect((await answer(served, '/secret', forged)).status).toBe(401);
      expect(ran).toEqual([]);
      expect((await answer(served, '/secret', valid)).status).toBe(200);
      expect(ran).toEqual([`inherited:${kind}`]);
    },
  );

  it.each([
    [
      'a copy of its properties',
      (req: Request): Request => {
        const copy: object = { ...req };
        return copy as Request;
      },
    ],
    [
      'a copy on its prototype',
      (req: Request): Request => Object.assign(Object.create(Object.getPrototypeOf(req) as object) as Request, req),
    ],
  ])(
    'on %s with a Proxy of the response, through a sub-app with its own before: no param callback or route runs',
    async (_kind, copy) => {
      const records = new Map([['r1', { owner: 'ann' }]]);
      const looked: string[] = [];
      const inner = express();
      inner.set('case sensitive routing', true);
      inner.use(fluxguard({ audit: audit.audit }).before, authenticated());
      const served = await guardedApp((app) => {
        app.use((req: Request, res: Response, next: NextFunction) => {
          inner(copy(req), new Proxy(res, {}), () => {
            next();
          });
        });
        app.param('id', (_req, res, next, id: string) => {
          looked.push(id);
          if (records.has(id)) next();
          else res.status(404).json({ missing: id });
        });
        app.get('/records/:id', (req, res) => {
          ran.push(`copied:${req.params.id}`);
          res.json(records.get(req.params.id));
        });
      });
      ran.length = 0;
      expect((await answer(served, '/records/missing', forged)).status).toBe(401);
      const existing = await answer(served, '/records/r1', forged);
      expect(existing.status).toBe(401);
      expect(existing.body).not.toContain('ann');
      expect({ looked, ran }).toEqual({ looked: [], ran: [] });
      expect((await answer(served, '/records/r1', valid)).status).toBe(200);
      expect(ran).toEqual(['copied:r1']);
    },
  );

  it('on a stand-in response that takes no headers, through a sub-app with its own before: refused, not served', async () => {
    const inner = express();
    inner.use(fluxguard({ audit: audit.audit }).before, authenticated());
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        // The sub-app replaces the stand-in's prototype: `setHeader` then finds no header store.
        inner(req, Object.create(res) as Response, () => {
          next();
        });
      });
      app.post('/transfer', (_req, res) => {
        ran.push('stand-in response:transfer');
        res.json({ ok: true });
      });
    });
    ran.length = 0;
    const answered = await answer(served, '/transfer', { method: 'POST', ...forged });
    expect(answered.status).toBe(500);
    expect(answered.body).not.toMatch(/TypeError|setHeader|at /);
    expect(ran).toEqual([]);
  });

  it.each([
    [
      'a copy',
      (req: Request): Request => Object.assign(Object.create(Object.getPrototypeOf(req) as object) as Request, req),
    ],
    ['a stand-in of a few properties', madeFrom],
  ])(
    'on %s through an app whose handle fluxguard never wrapped (another copy of Express): refused, never served',
    async (_kind, standIn) => {
      // The app replaces the stand-in's prototype and points the response at it: nothing leads
      // to the request, and fluxguard refuses a request it never saw.
      const inner = freshExpress()();
      inner.use(authenticated());
      const served = await runsOnStandIns(inner, (req, res) => [standIn(req), res], 'unwrapped:secret');
      ran.length = 0;
      expect((await answer(served, '/secret', forged)).status).toBe(500);
      expect((await answer(served, '/secret', valid)).status).toBe(500);
      expect(ran).toEqual([]);
    },
  );

  it('on one stand-in the app uses again for every request: each request is its own call', async () => {
    const inner = express();
    inner.use(authenticated());
    inner.get('/who', (_req, res) => {
      ran.push('singleton:who');
      res.json({ ok: true });
    });
    const served = await guardedApp((app) => {
      app.use(throughOneStandIn(inner));
    });
    const bounded = { signal: AbortSignal.timeout(5_000) };
    ran.length = 0;
    const first = await answer(served, '/who', { ...valid, ...bounded });
    const second = await answer(served, '/who', { ...forged, ...bounded });
    const third = await answer(served, '/who', { ...valid, ...bounded });
    expect([first.status, second.status, third.status]).toEqual([200, 401, 200]);
    expect(ran).toEqual(['singleton:who', 'singleton:who']);
  });

  it('in the Allow answer a router gives OPTIONS: a route that exists answers as one that does not', async () => {
    const inner = express();
    inner.use(authenticated());
    const api = express.Router({ caseSensitive: true });
    api.use((req: Request, res: Response, next: NextFunction) => {
      inner(req, res, () => {
        next();
      });
    });
    api.get('/secret', (_req, res) => res.json({ secret: 1 }));
    api.delete('/secret', (_req, res) => res.json({ deleted: 1 }));
    const served = await guardedApp((app) => app.use('/api', api));
    const options = { ...forged, method: 'OPTIONS' };
    const existing = await answer(served, '/api/secret', options);
    const missing = await answer(served, '/api/nothing', options);
    expect(existing.status).toBe(401);
    expect(missing.status).toBe(401);
    expect(existing.body).not.toContain('GET');
    // Allowed, the router's own answer is as before.
    const allowed = await answer(served, '/api/secret', { ...valid, method: 'OPTIONS' });
    expect(allowed.status).toBe(200);
    expect(allowed.body).toBe('DELETE, GET, HEAD');
  });
});
