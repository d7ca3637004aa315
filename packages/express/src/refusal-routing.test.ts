// Where a refusal goes. `fluxguard().before` answers its controls' refusals at once: they never
// reach the app's routes or its error middleware. `controls()`, `authorize()` and the other
// middleware mounted on their own pass a refusal to `next(err)`, as Express middleware do, for the
// app's error middleware to see; an error middleware that calls `next()` (to log and carry on,
// say) then resumed the request into the routes behind it, and a request refused for want of a
// token was served. Every route and middleware behind now answers such a request with its refusal.
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express, { type ErrorRequestHandler, type Express, type Request, type Response } from 'express';
import { SecurityError, compileRbac, createAuthenticator, createGuard, type Control } from '@fluxguard/core';
import { authorize, controls, fluxguard, jsonBody, jwtAuth, validate, type ProblemDetails } from './index.js';
import { captureAudit, createTokenSigner, serve, type Served } from './testing/tls.js';

/** Refuses a request that asks to be refused, by the header it names. */
function refusing(name: string, header: string): Control {
  return {
    name,
    stage: 'caller-limit',
    onStart(call) {
      if (call.headers.get(header) === 'yes') throw new SecurityError('permission_denied', { reason: `app.${name}` });
      return undefined;
    },
  };
}

const audit = captureAudit();
const handled: string[] = [];
const errorsSeen: string[] = [];
let served: Served;

beforeAll(async () => {
  const app = express();
  const { before, after } = fluxguard({ audit: audit.audit, controls: [refusing('first', 'x-refuse-first')] });
  app.use(before);
  // An error middleware of the app that logs and carries on: a careless pattern, but a common one.
  const carryOn: ErrorRequestHandler = (err, req, _res, next) => {
    errorsSeen.push(`${req.fluxguard.requestId}:${(err as SecurityError).code}`);
    next();
  };
  app.use(carryOn);
  app.use(controls('second', [refusing('second', 'x-refuse-second')]));
  app.use(carryOn);
  app.get('/secret', (req, res) => {
    handled.push(req.fluxguard.requestId);
    res.json({ secret: 'the handler ran' });
  });
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

describe('a refusal of fluxguard().before', () => {
  it('is answered at once: the routes and the app error middleware behind never see it', async () => {
    const res = await fetch(`${served.url}/secret`, {
      headers: { 'x-request-id': 'before-1', 'x-refuse-first': 'yes' },
    });
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    const body = (await res.json()) as ProblemDetails;
    expect(body).toMatchObject({ code: 'permission_denied', requestId: 'before-1' });
    expect(handled).not.toContain('before-1');
    expect(errorsSeen.filter((e) => e.startsWith('before-1'))).toEqual([]);
    expect(
      audit
        .lines()
        .filter((l) => l.requestId === 'before-1')
        .map((l) => l.reason),
    ).toEqual(['app.first']);
  });

  it('answers 200 refusals sent at once, each once, none reaching the handler', async () => {
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        fetch(`${served.url}/secret`, {
          headers: { 'x-request-id': `flood-${String(i)}`, 'x-refuse-first': 'yes' },
        }).then(async (res) => [res.status, ((await res.json()) as ProblemDetails).requestId] as const),
      ),
    );
    expect(answers.filter(([status]) => status !== 403)).toEqual([]);
    expect(new Set(answers.map(([, id]) => id)).size).toBe(200);
    expect(handled.filter((id) => id.startsWith('flood-'))).toEqual([]);
    expect(errorsSeen.filter((e) => e.startsWith('flood-'))).toEqual([]);
  });
});

describe('a refusal of controls() mounted on its own', () => {
  it('goes to next(err), like any Express middleware, and is answered wherever the request is resumed', async () => {
    const res = await fetch(`${served.url}/secret`, {
      headers: { 'x-request-id': 'alone-1', 'x-refuse-second': 'yes' },
    });
    expect(errorsSeen).toContain('alone-1:permission_denied');
    // This app's error middleware then resumed the request: the route answered with the refusal.
    expect(res.status).toBe(403);
    expect((await res.json()) as ProblemDetails).toMatchObject({ code: 'permission_denied', requestId: 'alone-1' });
    expect(handled).not.toContain('alone-1');
    expect(
      audit
        .lines()
        .filter((l) => l.requestId === 'alone-1')
        .map((l) => l.reason),
    ).toEqual(['app.second']);
  });

  it('serves a request no control refuses', async () => {
    const res = await fetch(`${served.url}/secret`, { headers: { 'x-request-id': 'ok-1' } });
    expect(res.status).toBe(200);
    expect(handled).toContain('ok-1');
  });
});

describe('a refusal of authorize() or jwtAuth() resumed by an error middleware of the app', () => {
  const tokens = createTokenSigner();
  const ran: string[] = [];
  const forged = `${tokens.sign({ roles: ['admin'] })}x`;
  let withRules: Served;
  let withoutRules: Served;

  /** The app's error middleware: logs, then carries on. */
  const carryOn: ErrorRequestHandler = (_err, _req, _res, next) => {
    next();
  };

  /** An app serving `router` at `/api`, behind a plain `before`. */
  function appWith(router: express.Router): Express {
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before);
    app.use('/api', router);
    app.use(after);
    return app;
  }

  function secretRoute(router: express.Router, name: string): void {
    router.get('/v1/secret', (_req, res) => {
      ran.push(`${name}:secret`);
      res.json({ secret: 42 });
    });
  }

  beforeAll(async () => {
    const guard = createGuard({
      audit: audit.audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /api/v1/secret': { anyRoles: ['admin'] } }),
    });
    const admin = express.Router({ caseSensitive: true });
    admin.use(authorize({ guard }), carryOn);
    secretRoute(admin, 'authorize');
    withRules = await serve(appWith(admin));

    const tokensOnly = express.Router({ caseSensitive: true });
    tokensOnly.use(jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) }), carryOn);
    secretRoute(tokensOnly, 'jwtAuth');
    // A route whose path rules cannot read (refused under rules that match paths), a sub-app and
    // a last middleware, behind the refusal too.
    tokensOnly.get(/^\/v1\/re-(\w+)$/, (_req, res) => {
      ran.push('jwtAuth:regex');
      res.json({ secret: 43 });
    });
    const sub = express();
    sub.get('/v1/secret', (_req, res) => {
      ran.push('jwtAuth:sub-app');
      res.json({ secret: 44 });
    });
    tokensOnly.use('/sub', sub);
    tokensOnly.use((_req, res) => {
      ran.push('jwtAuth:last');
      res.status(404).json({ none: true });
    });
    withoutRules = await serve(appWith(tokensOnly));
  });

  afterAll(async () => {
    await withRules.close();
    await withoutRules.close();
  });

  async function get(served: Served, path: string, token?: string): Promise<{ status: number; code: unknown }> {
    const res = await fetch(`${served.url}/api${path}`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    });
    const body = (await res.json()) as { code?: unknown };
    return { status: res.status, code: body.code };
  }

  it('answers a request without a token with 401, a token without the role with 403', async () => {
    ran.length = 0;
    expect(await get(withRules, '/v1/secret')).toEqual({ status: 401, code: 'unauthenticated' });
    expect(await get(withRules, '/v1/secret', tokens.sign({ roles: ['reader'] }))).toEqual({
      status: 403,
      code: 'permission_denied',
    });
    expect(ran).toEqual([]);
    expect(await get(withRules, '/v1/secret', tokens.sign({ roles: ['admin'] }))).toEqual({
      status: 200,
      code: undefined,
    });
    expect(ran).toEqual(['authorize:secret']);
  });

  it('answers a forged token refused by controls without rules, at any route, sub-app or middleware behind', async () => {
    ran.length = 0;
    for (const path of ['/v1/secret', '/v1/re-x', '/sub/v1/secret', '/none']) {
      expect(await get(withoutRules, path, forged)).toEqual({ status: 401, code: 'unauthenticated' });
    }
    expect(ran).toEqual([]);
    expect(await get(withoutRules, '/v1/secret', tokens.sign())).toEqual({ status: 200, code: undefined });
    expect(ran).toEqual(['jwtAuth:secret']);
  });

  it('answers 200 such requests sent at once, none reaching a handler', async () => {
    ran.length = 0;
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        i % 2 === 0 ? get(withRules, '/v1/secret') : get(withoutRules, '/v1/re-x', forged),
      ),
    );
    expect(answers.filter(({ status }) => status !== 401)).toEqual([]);
    expect(ran).toEqual([]);
  });
});

describe('an app whose routing is refused, resumed by an error middleware', () => {
  it('answers the refusal at the routes: the check that failed never runs the controls', async () => {
    const ran: string[] = [];
    const tokens = createTokenSigner();
    const guard = createGuard({
      audit: audit.audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /v1/secret': { anyRoles: ['admin'] } }),
    });
    // Case-insensitive routing: rules that match paths cannot guard it, so every request is refused.
    const app = express();
    const { before, after } = fluxguard({ audit: audit.audit });
    const carryOn: ErrorRequestHandler = (_err, _req, _res, next) => {
      next();
    };
    app.use(before, authorize({ guard }), carryOn);
    app.get('/v1/secret', (_req, res) => {
      ran.push('secret');
      res.json({ secret: 42 });
    });
    app.use(after);
    const server = await serve(app);
    try {
      const res = await fetch(`${server.url}/v1/secret`, {
        headers: { authorization: `Bearer ${tokens.sign({ roles: ['reader'] })}` },
      });
      expect(res.status).toBe(500);
      expect(((await res.json()) as ProblemDetails).code).toBe('internal');
      expect(ran).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe('a refusal resumed elsewhere than behind the middleware that refused', () => {
  const tokens = createTokenSigner();
  const ran: string[] = [];
  const carryOn: ErrorRequestHandler = (_err, _req, _res, next) => {
    next();
  };
  const servers: Served[] = [];
  afterAll(async () => {
    for (const served of servers) await served.close();
  });
  const adminGuard = (pattern: string) =>
    createGuard({
      audit: audit.audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ [pattern]: { anyRoles: ['admin'] } }),
    });

  async function statusOf(served: Served, path: string, init: RequestInit = {}): Promise<number> {
    const res = await fetch(`${served.url}${path}`, init);
    await res.arrayBuffer();
    return res.status;
  }

  it('inside a route: its own error middleware does not reach its handler', async () => {
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before);
    const guard = adminGuard('GET /v1/*rest');
    app.get('/v1/secret', authorize({ guard }), carryOn, (_req: Request, res: Response) => {
      ran.push('route:secret');
      res.json({ secret: 42 });
    });
    app.route('/v1/chain').get(authorize({ guard }), carryOn, (_req: Request, res: Response) => {
      ran.push('route:chain');
      res.json({ secret: 43 });
    });
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    ran.length = 0;
    expect(await statusOf(served, '/v1/secret')).toBe(401);
    expect(await statusOf(served, '/v1/chain')).toBe(401);
    expect(ran).toEqual([]);
    const admin = { headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}` } };
    expect(await statusOf(served, '/v1/secret', admin)).toBe(200);
    expect(ran).toEqual(['route:secret']);
  });

  it('in the app a guarded sub-app is mounted in: the parent’s routes behind the mount do not serve it', async () => {
    const admin = express();
    admin.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    admin.use(before, authorize({ guard: adminGuard('GET /admin/*path') }));
    admin.get('/users', (_req, res) => {
      ran.push('admin:users');
      res.json({ users: [] });
    });
    const app = express();
    app.set('case sensitive routing', true);
    app.use('/admin', admin);
    app.use(carryOn);
    app.get('/admin/export', (_req, res) => {
      ran.push('parent:export');
      res.json({ export: 'all users' });
    });
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    ran.length = 0;
    expect(await statusOf(served, '/admin/users')).toBe(401);
    expect(await statusOf(served, '/admin/export')).toBe(401);
    expect(ran).toEqual([]);
  });

  it('in any app the guarded app is reached from: as a route handler, through a router, in two parents', async () => {
    /** A guarded app whose routes are all beneath `/admin`, as a route handler sees the path. */
    function guardedAdmin(name: string): Express {
      const admin = express();
      admin.set('case sensitive routing', true);
      const { before } = fluxguard({ audit: audit.audit });
      admin.use(before, authorize({ guard: adminGuard('GET /admin/*path') }));
      admin.get(['/users', '/admin/users'], (_req, res) => {
        ran.push(`${name}:users`);
        res.json({ users: [] });
      });
      return admin;
    }
    /** An outer app: `mount` places the guarded app, a careless error middleware resumes after it. */
    function outer(name: string, mount: (app: Express) => void): Express {
      const app = express();
      app.set('case sensitive routing', true);
      mount(app);
      app.use(carryOn);
      app.get('/admin/export', (_req, res) => {
        ran.push(`${name}:export`);
        res.json({ export: 'all users' });
      });
      app.use(fluxguard({ audit: audit.audit }).after);
      return app;
    }
    const asHandler = outer('handler', (app) => app.all('/admin/*rest', guardedAdmin('handler')));
    const viaRouter = outer('router', (app) => {
      const router = express.Router({ caseSensitive: true });
      router.use('/admin', guardedAdmin('router'));
      app.use(router);
    });
    const shared = guardedAdmin('shared');
    const first = outer('first', (app) => app.use('/admin', shared));
    // Mounted in a second app too: Express keeps only the last as its parent.
    outer('second', (app) => app.use('/admin', shared));
    const servedApps = await Promise.all([asHandler, viaRouter, first].map((app) => serve(app)));
    servers.push(...servedApps);
    const [handlerServed, , firstServed] = servedApps as [Served, Served, Served];
    ran.length = 0;
    for (const served of servedApps) {
      expect(await statusOf(served, '/admin/export')).toBe(401);
      expect(await statusOf(served, '/admin/users')).toBe(401);
    }
    expect(ran).toEqual([]);
    // A route added to the outer app after its first request is behind the refusal too.
    first.get('/admin/late', (_req, res) => {
      ran.push('first:late');
      res.json({ late: true });
    });
    expect(await statusOf(firstServed, '/admin/late')).toBe(401);
    expect(ran).toEqual([]);
    const token = { headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}` } };
    expect(await statusOf(handlerServed, '/admin/users', token)).toBe(200);
    expect(ran).toEqual(['handler:users']);
  });

  it('into a plain app given as a route’s only handler', async () => {
    const inner = express();
    inner.get('/inner', (_req, res) => {
      ran.push('inner');
      res.json({ inner: true });
    });
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before, jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) }), carryOn);
    app.get('/inner', inner);
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    ran.length = 0;
    expect(await statusOf(served, '/inner', { headers: { authorization: `Bearer ${tokens.sign()}x` } })).toBe(401);
    expect(ran).toEqual([]);
    expect(await statusOf(served, '/inner', { headers: { authorization: `Bearer ${tokens.sign()}` } })).toBe(200);
    expect(ran).toEqual(['inner']);
  });

  it('inside a router of another copy of the router package (express 4’s kind), whose layers are its own', async () => {
    // router@1 is what Express 4 routes with: its layers run `handle_request` and `handle_error`.
    const routerV1 = createRequire(import.meta.url)('router-v1') as (options: object) => express.Router;
    const authenticated = jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) });
    /** An app with a router of router@1 at `/legacy`, filled by `fill`. */
    async function legacyApp(fill: (legacy: express.Router) => void): Promise<Served> {
      const legacy = routerV1({ caseSensitive: true });
      fill(legacy);
      const app = express();
      app.set('case sensitive routing', true);
      const { before, after } = fluxguard({ audit: audit.audit });
      app.use(before);
      app.use('/legacy', legacy);
      app.use(after);
      const served = await serve(app);
      servers.push(served);
      return served;
    }
    // Refused by a route's own middleware, resumed by the route's next handler...
    const routeLevel = await legacyApp((legacy) => {
      legacy.get('/report', authenticated, carryOn, (_req: Request, res: Response) => {
        ran.push('legacy:report');
        res.json({ report: 'all users' });
      });
    });
    // ...the same, in a router of router@1 that only a function of the app runs...
    const hidden = routerV1({ caseSensitive: true });
    hidden.get('/report', authenticated, carryOn, (_req: Request, res: Response) => {
      ran.push('hidden:report');
      res.json({ report: 'all users' });
    });
    const behindFunction = express();
    behindFunction.set('case sensitive routing', true);
    const plain = fluxguard({ audit: audit.audit });
    behindFunction.use(plain.before);
    behindFunction.use('/legacy', (req: Request, res: Response, next: express.NextFunction) => {
      hidden(req, res, next);
    });
    behindFunction.use(plain.after);
    const behindFunctionServed = await serve(behindFunction);
    servers.push(behindFunctionServed);
    // ...or by the router's middleware, resumed into the routes behind.
    const routerLevel = await legacyApp((legacy) => {
      legacy.use(authenticated, carryOn);
      legacy.get('/export', (_req: Request, res: Response) => {
        ran.push('legacy:export');
        res.json({ export: 'all users' });
      });
    });
    ran.length = 0;
    const forged = { headers: { authorization: `Bearer ${tokens.sign()}x` } };
    // First: no refusal has yet made fluxguard walk an app holding a router of router@1.
    expect(await statusOf(behindFunctionServed, '/legacy/report', forged)).toBe(401);
    expect(await statusOf(routeLevel, '/legacy/report', forged)).toBe(401);
    expect(await statusOf(routerLevel, '/legacy/export', forged)).toBe(401);
    expect(ran).toEqual([]);
    const token = { headers: { authorization: `Bearer ${tokens.sign()}` } };
    expect(await statusOf(routeLevel, '/legacy/report', token)).toBe(200);
    expect(await statusOf(routerLevel, '/legacy/export', token)).toBe(200);
    expect(ran).toEqual(['legacy:report', 'legacy:export']);
  });

  it('into a router a function builds per request after swallowing the refusal: its param callbacks never run', async () => {
    const authenticated = jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) });
    const records = new Map([['r1', { owner: 'ann' }]]);
    const looked: string[] = [];
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before);
    // Careless: the middleware's error is dropped, and a router made for the request runs.
    app.use((req: Request, res: Response, next: express.NextFunction) => {
      authenticated(req, res, () => {
        const perRequest = express.Router({ caseSensitive: true });
        perRequest.param('id', (_req, res, next, id: string) => {
          looked.push(id);
          if (records.has(id)) next();
          else res.status(404).json({ missing: id });
        });
        perRequest.get('/records/:id', (req, res) => {
          ran.push(`records:${req.params.id}`);
          res.json(records.get(req.params.id));
        });
        perRequest(req, res, next);
      });
    });
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    ran.length = 0;
    const forged = { headers: { authorization: `Bearer ${tokens.sign()}x` } };
    // The first refusal is passed on before fluxguard knows of the router: the second too.
    for (const id of ['missing', 'r1', 'missing']) expect(await statusOf(served, `/records/${id}`, forged)).toBe(401);
    expect(looked).toEqual([]);
    expect(ran).toEqual([]);
    const token = { headers: { authorization: `Bearer ${tokens.sign()}` } };
    expect(await statusOf(served, '/records/missing', token)).toBe(404);
    expect(await statusOf(served, '/records/r1', token)).toBe(200);
    expect(ran).toEqual(['records:r1']);
  });

  it('whatever stands in for the request in the app that refused it: a Proxy of it, or of its response', async () => {
    const authenticated = jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) });
    /** An app whose function runs `inner` on stand-ins made by `standIn`, drops its error and goes on. */
    async function proxying(standIn: (req: Request, res: Response) => [Request, Response]): Promise<Served> {
      const inner = express();
      inner.use(authenticated);
      const app = express();
      app.set('case sensitive routing', true);
      const { before, after } = fluxguard({ audit: audit.audit });
      app.use(before);
      app.use((req: Request, res: Response, next: express.NextFunction) => {
        const [innerReq, innerRes] = standIn(req, res);
        inner(innerReq, innerRes, () => {
          next();
        });
      });
      app.get('/secret', (_req, res) => {
        ran.push('proxied:secret');
        res.json({ secret: 42 });
      });
      app.use(after);
      const served = await serve(app);
      servers.push(served);
      return served;
    }
    const proxiedRequest = await proxying((req, res) => [new Proxy(req, {}), res]);
    const proxiedResponse = await proxying((req, res) => [req, new Proxy(res, {})]);
    ran.length = 0;
    const forged = { headers: { authorization: `Bearer ${tokens.sign()}x` } };
    expect(await statusOf(proxiedRequest, '/secret', forged)).toBe(401);
    expect(await statusOf(proxiedResponse, '/secret', forged)).toBe(401);
    expect(ran).toEqual([]);
    const token = { headers: { authorization: `Bearer ${tokens.sign()}` } };
    expect(await statusOf(proxiedRequest, '/secret', token)).toBe(200);
    expect(ran).toEqual(['proxied:secret']);
  });

  it('after jsonBody() or validate(): the handler never gets a body they refused', async () => {
    // A Standard Schema: `{ name: string }` and nothing else.
    const schema = {
      '~standard': {
        version: 1 as const,
        vendor: 'test',
        validate: (value: unknown) =>
          typeof value === 'object' &&
          value !== null &&
          typeof (value as { name?: unknown }).name === 'string' &&
          Object.keys(value).length === 1
            ? { value }
            : { issues: [{ message: 'bad', path: ['name'] }] },
      },
    };
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before, jsonBody({ maxDepth: 2 }), validate({ body: schema }), carryOn);
    const stored: unknown[] = [];
    app.post('/items', (req, res) => {
      stored.push(req.body);
      res.json({ stored: true });
    });
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    const post = (body: string) =>
      statusOf(served, '/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(await post('{"name":1,"isAdmin":true}')).toBe(400);
    expect(await post('{"a":{"b":{"c":{"d":1}}}}')).toBe(400);
    expect(await post('{"name":')).toBe(400);
    expect(await post('{"name":"x"}')).toBe(200);
    expect(stored).toEqual([{ name: 'x' }]);
  });

  it('towards no route: answered with the refusal, not a 404 that tells routes apart', async () => {
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before, jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) }), carryOn);
    app.use(after);
    const served = await serve(app);
    servers.push(served);
    const forged = { headers: { authorization: `Bearer ${tokens.sign()}x` } };
    expect(await statusOf(served, '/nothing-here', forged)).toBe(401);
    expect(await statusOf(served, '/nothing-here')).toBe(404);
  });
});

describe('an app with no rules', () => {
  it('serves what a middleware after before rewrote to an encoded character, as before', async () => {
    // The resume check guards every layer; the rewrite check stays with controls that have rules.
    const app = express();
    const { before, after } = fluxguard({ audit: audit.audit });
    app.use(before);
    app.use((req, _res, next) => {
      if (req.url.startsWith('/api/')) req.url = req.url.slice(4);
      next();
    });
    app.get('/projects/:id', (req, res) => res.json({ id: req.params.id }));
    const item = express.Router({ mergeParams: true });
    item.get('/', (req, res) => res.json({ item: (req.params as { id: string }).id }));
    app.use('/items/:id', item);
    app.use(after);
    const served = await serve(app);
    try {
      for (const path of ['/api/projects/group%2Fproj', '/items/group%2Fproj', '/projects/group%2Fproj']) {
        expect((await fetch(`${served.url}${path}`)).status, path).toBe(200);
      }
    } finally {
      await served.close();
    }
  });
});
