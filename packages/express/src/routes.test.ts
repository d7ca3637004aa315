// Overlapping routes against RBAC: Express runs the first route that matches a request, RBAC
// applies the most specific rule. With the general route registered first, a request both
// match ran the general route's handler under the specific route's rule: here, a tenant's
// reports served to anyone under the public rule of another route.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type Express } from 'express';
import { describe, expect, it } from 'vitest';
import { ConfigurationError, compileRbac, createGuard, type RbacRules } from '@fluxguard/core';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard, routesOf } from './index.js';
import { captureAudit, createTokenSigner, serve } from './testing/tls.js';

const RULES: RbacRules = [
  { operation: 'GET /v1/:tenant/reports', anyRoles: ['reports.reader'] },
  { operation: 'GET /v1/public/*path', public: true },
];

const audit = captureAudit();
const tokens = createTokenSigner();

/** An app with fluxguard's `before` in it, guarding with `rules`, and no routes yet. */
function guardedSite(rules: RbacRules = RULES) {
  const guard = fluxguard({
    audit: audit.audit,
    guard: createGuard({ audit: audit.audit, jwt: tokens.verifier, rbac: compileRbac(rules) }),
  });
  const site = express();
  site.set('case sensitive routing', true);
  site.use(guard.before);
  return { site, guard };
}

/** A GET of `path` exactly as written: fetch would resolve dot segments and decode letters itself. */
function rawGet(url: string, path: string, authorization?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = authorization === undefined ? {} : { authorization };
    get({ host: '127.0.0.1', port: new URL(url).port, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    }).on('error', reject);
  });
}

/**
 * A middleware that rewrites the request after the controls, as `method-override` and URL
 * rewrites do: the method from `X-HTTP-Method-Override`, the URL from `X-Rewrite`.
 */
const rewriteAfterControls: express.RequestHandler = (req, _res, next) => {
  const override = req.get('x-http-method-override');
  if (override !== undefined) req.method = override;
  const rewrite = req.get('x-rewrite');
  if (rewrite !== undefined) req.url = rewrite;
  next();
};

/** The tenant reports and the public files, in `order`, then fluxguard's `after`. */
function addRoutes(
  site: Express,
  guard: ReturnType<typeof fluxguard>,
  order: 'general first' | 'specific first',
): void {
  const reports: express.RequestHandler = (req, res) => {
    res.json({ reports: `of ${String(req.params.tenant)}`, revenue: 1_234_567 });
  };
  const publicFiles: express.RequestHandler = (_req, res) => {
    res.json({ public: true });
  };
  if (order === 'general first') {
    site.get('/v1/:tenant/reports', reports);
    site.get('/v1/public/*path', publicFiles);
  } else {
    site.get('/v1/public/*path', publicFiles);
    site.get('/v1/:tenant/reports', reports);
  }
  site.use(guard.after);
}

function app(order: 'general first' | 'specific first'): { app: Express; wrap: (app: Express) => unknown } {
  const { site, guard } = guardedSite();
  addRoutes(site, guard, order);
  return { app: site, wrap: guard.wrap };
}

describe('routesOf and the route order check of wrap(app)', () => {
  it('refuses to serve routes whose overlap a rule of the other route would decide', () => {
    const { app: site, wrap } = app('general first');
    expect(() => wrap(site)).toThrow(ConfigurationError);
    expect(() => wrap(site)).toThrow(
      /"GET \/v1\/public\/reports" reaches the route "GET \/v1\/:tenant\/reports", which the router tries first, but the rule "GET \/v1\/public\/\*path" decides it/,
    );
  });

  it('refuses every request of such an app served without wrap: the tenant reports never reach anyone', async () => {
    const { app: site } = app('general first');
    const served = await serve(site as Parameters<typeof serve>[0]);
    try {
      const before = audit.lines().length;
      const open = await fetch(`${served.url}/v1/public/reports`);
      expect(open.status).toBe(500);
      expect(await open.text()).not.toContain('revenue');
      // The verdict is kept: later requests are refused too, public or not.
      expect((await fetch(`${served.url}/v1/public/readme`)).status).toBe(500);
      const reader = tokens.sign({ roles: ['reports.reader'] });
      const read = await fetch(`${served.url}/v1/acme/reports`, { headers: { authorization: `Bearer ${reader}` } });
      expect(read.status).toBe(500);
      const lines = JSON.stringify(audit.lines().slice(before));
      expect(lines).toContain('which the router tries first');
    } finally {
      await served.close();
    }
  });

  it('checks again on the first request behind wrap: routes added after wrap(app) are refused too', async () => {
    const { site, guard } = guardedSite();
    const listener = guard.wrap(site);
    // Registered after wrap(app) had checked the routes: the general route first.
    addRoutes(site, guard, 'general first');
    const served = await serve(listener);
    try {
      const open = await fetch(`${served.url}/v1/public/reports`);
      expect(open.status).toBe(500);
      expect(await open.text()).not.toContain('revenue');
      expect(JSON.stringify(audit.lines().at(-1))).toContain('which the router tries first');
    } finally {
      await served.close();
    }
  });

  it('checks again when a route is added inside a router mounted already, or to a route', async () => {
    // Only the app's own stack was watched: the general route added to the mounted router after
    // the first request served the tenant's reports under the public rule. Moved to the front
    // by `unshift`, `splice` or a new stack array, it did too, once only `push` was watched.
    const ways = ['in the app', 'behind wrap', 'unshift', 'splice', 'a new stack'] as const;
    for (const way of ways) {
      const { site, guard } = guardedSite();
      const v1 = express.Router({ caseSensitive: true });
      const tenantReports: express.RequestHandler = (req, res) =>
        res.json({ reports: `of ${String(req.params.tenant)}`, revenue: 1 });
      const publicFiles: express.RequestHandler = (_req, res) => res.json({ public: true });
      const pushed = way === 'in the app' || way === 'behind wrap';
      if (pushed) v1.get('/:tenant/reports', tenantReports);
      else v1.get('/public/*path', publicFiles);
      site.use('/v1', v1);
      site.use(guard.after);
      const served = await serve(way === 'behind wrap' ? guard.wrap(site) : site);
      try {
        const first = await fetch(`${served.url}${pushed ? '/v1/acme/reports' : '/v1/public/readme'}`);
        expect(first.status, way).toBe(pushed ? 401 : 200);
        if (pushed) {
          v1.route('/public/*path').get(publicFiles);
        } else {
          // The general route, made elsewhere, moved in ahead of the public one.
          const made = express.Router({ caseSensitive: true });
          made.get('/:tenant/reports', tenantReports);
          const layer = made.stack[0];
          if (layer === undefined) throw new Error('no layer made');
          if (way === 'unshift') v1.stack.unshift(layer);
          else if (way === 'splice') v1.stack.splice(0, 0, layer);
          else v1.stack = [layer, ...v1.stack];
        }
        const open = await fetch(`${served.url}/v1/public/reports`);
        expect(open.status, way).toBe(500);
        expect(await open.text(), way).not.toContain('revenue');
        expect(JSON.stringify(audit.lines().at(-1)), way).toContain('which the router tries first');
      } finally {
        await served.close();
      }
    }
  });

  it('serves such an app without wrap once its routes are in the right order', async () => {
    const { app: site } = app('specific first');
    const served = await serve(site as Parameters<typeof serve>[0]);
    try {
      expect(await (await fetch(`${served.url}/v1/public/reports`)).json()).toEqual({ public: true });
      expect((await fetch(`${served.url}/v1/acme/reports`)).status).toBe(401);
    } finally {
      await served.close();
    }
  });

  it('checks a sub-app by its routes below its mount path', async () => {
    const { app: sub } = app('general first');
    const site = express();
    site.set('case sensitive routing', true);
    site.use('/api', sub);
    const served = await serve(site as Parameters<typeof serve>[0]);
    try {
      // Its routes are /api/v1/..., which its rules (/v1/...) do not name: no overlap a rule
      // decides, and the default deny answers. Read without the mount path, the routes would
      // fail the check, and every request would get a 500.
      expect((await fetch(`${served.url}/api/v1/public/reports`)).status).toBe(403);
    } finally {
      await served.close();
    }
  });

  it('checks a sub-app below each of its mount paths, and below the mount paths of the apps above it', async () => {
    // Mounted at two paths, the sub-app's routes were read below none: the general route,
    // first, served the public path of either mount under the public rule.
    const mounts = ['/a', '/b'];
    const rules = (prefix: string): RbacRules =>
      mounts.flatMap((mount) =>
        RULES.map((rule) => ({ ...rule, operation: rule.operation.replace(' /', ` ${prefix}${mount}/`) })),
      );
    const cases = [
      { mountedAt: mounts, above: undefined, prefix: '' },
      { mountedAt: mounts, above: '/t/:tenant', prefix: '/t/:tenant' },
    ];
    for (const { mountedAt, above, prefix } of cases) {
      const { site: sub, guard } = guardedSite(rules(prefix));
      addRoutes(sub, guard, 'general first');
      const site = express();
      site.set('case sensitive routing', true);
      if (above === undefined) site.use(mountedAt, sub);
      else site.use(above, express().set('case sensitive routing', true).use(mountedAt, sub));
      const served = await serve(site as Parameters<typeof serve>[0]);
      const base = above === undefined ? '' : '/t/acme';
      try {
        for (const mount of mounts) {
          const answer = await fetch(`${served.url}${base}${mount}/v1/public/reports`);
          expect(answer.status, `${base}${mount}`).toBe(500);
          expect(await answer.text()).not.toContain('revenue');
        }
      } finally {
        await served.close();
      }
    }
  });

  it('refuses a sub-app mounted in an app that routes case-insensitively', async () => {
    // The parent, with Express's defaults, sent /ADMIN/users into the app at /admin, whose
    // rules read /ADMIN/users: not the admin rule, but the public one of /:page/*path.
    const rules: RbacRules = [
      { operation: 'GET /admin/*path', anyRoles: ['admin'] },
      { operation: 'GET /:page/*path', public: true },
    ];
    for (const parentRoutes of ['by default', 'case-sensitively'] as const) {
      const { site: admin, guard } = guardedSite(rules);
      admin.get('/*path', (_req, res) => res.json({ admin: 'console' }));
      admin.use(guard.after);
      const site = express();
      if (parentRoutes === 'case-sensitively') site.set('case sensitive routing', true);
      site.use('/admin', admin);
      const served = await serve(site as Parameters<typeof serve>[0]);
      try {
        const upper = await fetch(`${served.url}/ADMIN/users`);
        expect(await upper.text()).not.toContain('console');
        if (parentRoutes === 'by default') {
          expect(upper.status).toBe(500);
          expect((await fetch(`${served.url}/admin/users`)).status).toBe(500);
        } else {
          expect(upper.status).toBe(404);
          expect((await fetch(`${served.url}/admin/users`)).status).toBe(401);
        }
      } finally {
        await served.close();
      }
    }
  });

  it("checks a router or an app given as a route's handler as if it were mounted there", async () => {
    // `app.all('/api/*rest', express.Router())` routed /api/ADMIN/users to the admin route of a
    // case-insensitive router, under the rule of /api/*path, unseen by the routing checks.
    const rules: RbacRules = [
      { operation: 'GET /api/admin/*path', anyRoles: ['admin'] },
      { operation: 'GET /api/*path', anyRoles: ['reader'] },
    ];
    const reader = `Bearer ${tokens.sign({ roles: ['reader'] })}`;
    const inner = (kind: 'router' | 'case-sensitive router' | 'app') => {
      const handler =
        kind === 'app'
          ? express().set('case sensitive routing', true)
          : express.Router({ caseSensitive: kind === 'case-sensitive router' });
      handler.get('/api/admin/users', (_req, res) => res.json({ users: ['root'] }));
      return handler;
    };
    const passOn: express.RequestHandler = (_req, _res, next) => {
      next();
    };
    for (const kind of ['router', 'case-sensitive router', 'app', 'router after a function'] as const) {
      const { site, guard } = guardedSite(rules);
      if (kind === 'router after a function') site.all('/api/*rest', passOn, inner('case-sensitive router'));
      else site.all('/api/*rest', inner(kind));
      site.use(guard.after);
      const served = await serve(site as Parameters<typeof serve>[0]);
      try {
        const upper = await fetch(`${served.url}/api/ADMIN/users`, { headers: { authorization: reader } });
        expect(await upper.text(), kind).not.toContain('root');
        const lower = await fetch(`${served.url}/api/admin/users`, { headers: { authorization: reader } });
        if (kind === 'case-sensitive router') {
          expect(upper.status).toBe(404);
          expect(lower.status).toBe(403);
          expect(routesOf(site)).toContain('GET /api/admin/users');
        } else {
          expect([upper.status, lower.status], kind).toEqual([500, 500]);
        }
      } finally {
        await served.close();
      }
    }
  });

  it('refuses a request a route passes on with next() to a route another rule decides', async () => {
    // The docs handler passed an unknown page on; the next route that matched, for admins
    // only, served /v1/docs/payroll to anyone under the public rule of the docs route.
    const rules: RbacRules = [
      { operation: 'GET /v1/docs/:page', public: true },
      { operation: 'GET /v1/:collection/:id', anyRoles: ['admin'] },
      { operation: 'GET /v1/settings/smtp_password', anyRoles: ['admin'] },
      { operation: 'GET /v1/settings/:key', anyRoles: ['admin'] },
    ];
    const admin = `Bearer ${tokens.sign({ roles: ['admin'] })}`;
    for (const mounting of ['wrap', 'before only'] as const) {
      for (const passOn of ['next()', "next('route')"] as const) {
        const { site, guard } = guardedSite(rules);
        site.get('/v1/docs/:page', (req, res, next) => {
          if (req.params.page === 'intro') res.json({ doc: 'intro' });
          else if (passOn === 'next()') next();
          else next('route');
        });
        // Two routes of one path, the first passing on to the second: one rule, no refusal.
        site.get('/v1/settings/:key', (_req, _res, next) => {
          next();
        });
        site.get('/v1/settings/:key', (req, res) => res.json({ setting: req.params.key }));
        site.get('/v1/:collection/:id', (req, res) =>
          res.json({ record: `${req.params.collection}/${req.params.id}` }),
        );
        site.use(guard.after);
        const served = await serve(mounting === 'wrap' ? guard.wrap(site) : site);
        const at = `${mounting}, ${passOn}`;
        try {
          expect(await (await fetch(`${served.url}/v1/docs/intro`)).json(), at).toEqual({ doc: 'intro' });
          const passed = await fetch(`${served.url}/v1/docs/payroll`);
          expect(passed.status, at).toBe(500);
          expect(await passed.text(), at).not.toContain('record');
          expect(JSON.stringify(audit.lines().at(-1)), at).toContain('a route passed it on (next())');
          // Decided by their own routes' rules, or by a rule no route owns: served as before.
          const asAdmin = { headers: { authorization: admin } };
          expect(await (await fetch(`${served.url}/v1/users/1`, asAdmin)).json(), at).toEqual({ record: 'users/1' });
          for (const key of ['smtp_password', 'theme']) {
            const answer = await fetch(`${served.url}/v1/settings/${key}`, asAdmin);
            expect(await answer.json(), at).toEqual({ setting: key });
          }
        } finally {
          await served.close();
        }
      }
    }
  });

  it('refuses a request a middleware after before rewrote to a route of another rule', async () => {
    // A method override mounted after `before` ran the admins' DELETE route for a reader's POST,
    // decided by a POST rule no route owns; a URL rewrite served an admin route under a public rule.
    const rules: RbacRules = [
      { operation: 'POST /v1/items/*path', anyRoles: ['reader'] },
      { operation: 'GET /public/*path', public: true },
      { operation: 'DELETE /v1/items/*path', anyRoles: ['admin'] },
      { operation: 'GET /v1/items/*path', anyRoles: ['admin'] },
    ];
    const { site, guard } = guardedSite(rules);
    site.use(rewriteAfterControls);
    site.delete('/v1/items/*path', (_req, res) => res.json({ deleted: true }));
    site.get('/v1/items/*path', (_req, res) => res.json({ item: 'secret' }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    const as = (roles: string[]) => `Bearer ${tokens.sign({ roles })}`;
    try {
      const overridden = await fetch(`${served.url}/v1/items/a`, {
        method: 'POST',
        headers: { authorization: as(['reader']), 'x-http-method-override': 'DELETE' },
      });
      expect(overridden.status).toBe(500);
      expect(await overridden.text()).not.toContain('deleted');
      expect(JSON.stringify(audit.lines().at(-1))).toContain('rewrote its method or URL');
      const rewritten = await fetch(`${served.url}/public/a`, { headers: { 'x-rewrite': '/v1/items/a' } });
      expect(rewritten.status).toBe(500);
      expect(await rewritten.text()).not.toContain('secret');
      // Not rewritten: each route serves the requests of its own rule.
      const admin = { authorization: as(['admin']) };
      expect(await (await fetch(`${served.url}/v1/items/a`, { headers: admin })).json()).toEqual({ item: 'secret' });
      const deleted = await fetch(`${served.url}/v1/items/a`, { method: 'DELETE', headers: admin });
      expect(await deleted.json()).toEqual({ deleted: true });
    } finally {
      await served.close();
    }
  });

  it('refuses a rewritten request in an app.route() chain, an app.all route, or within one :param route', async () => {
    // One route object holds every method of a chain: the POST's name let the DELETE layer run.
    // An app.all route matched the rewritten method, and a rewrite within `/v1/docs/:page`
    // matched the route: the request must still name an operation of the rule that decided it.
    const { site, guard } = guardedSite([
      { operation: 'POST /v1/items/:id', anyRoles: ['reader'] },
      { operation: 'DELETE /v1/items/:id', anyRoles: ['admin'] },
      { operation: 'POST /v1/any/:id', anyRoles: ['reader'] },
      { operation: 'DELETE /v1/any/:id', anyRoles: ['admin'] },
      { operation: 'GET /v1/docs/readme', public: true },
      { operation: 'GET /v1/docs/:page', anyRoles: ['admin'] },
      { operation: 'GET /v1/ping', public: true },
    ]);
    site.use(rewriteAfterControls);
    site
      .route('/v1/items/:id')
      .post((_req, res) => res.json({ posted: true }))
      .delete((_req, res) => res.json({ deleted: true }));
    site.all('/v1/any/:id', (req, res) => res.json({ did: req.method }));
    site.get('/v1/docs/:page', (req, res) => res.json({ page: req.params.page }));
    // A HEAD route serves the operations of GET, as the controls name a HEAD request.
    site.head('/v1/ping', (_req, res) => res.set('x-head', 'yes').end());
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    const reader = `Bearer ${tokens.sign({ roles: ['reader'] })}`;
    const post = (path: string, headers: Record<string, string>) =>
      fetch(`${served.url}${path}`, { method: 'POST', headers: { authorization: reader, ...headers } });
    try {
      expect(await (await post('/v1/items/1', {})).json()).toEqual({ posted: true });
      expect(await (await post('/v1/any/1', {})).json()).toEqual({ did: 'POST' });
      for (const path of ['/v1/items/1', '/v1/any/1']) {
        const overridden = await post(path, { 'x-http-method-override': 'DELETE' });
        expect(overridden.status, path).toBe(500);
        expect(await overridden.text(), path).not.toMatch(/deleted|DELETE/);
      }
      expect(await (await fetch(`${served.url}/v1/docs/readme`)).json()).toEqual({ page: 'readme' });
      const rewritten = await fetch(`${served.url}/v1/docs/readme`, { headers: { 'x-rewrite': '/v1/docs/payroll' } });
      expect(rewritten.status).toBe(500);
      expect(await rewritten.text()).not.toContain('payroll');
      const head = await fetch(`${served.url}/v1/ping`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('x-head')).toBe('yes');
    } finally {
      await served.close();
    }
  });

  it('refuses a request a middleware after before rewrote into a file server or an answering middleware', async () => {
    // Checked at routes only, a rewrite of a public path to `/static/private/...` was served by
    // express.static, and one to `/v1/admin/...` by a router's own middleware, unchecked.
    const root = mkdtempSync(join(tmpdir(), 'fluxguard-static-'));
    mkdirSync(join(root, 'private'));
    mkdirSync(join(root, 'public'));
    writeFileSync(join(root, 'private', 'payroll.txt'), 'salaries');
    writeFileSync(join(root, 'public', 'readme.txt'), 'hello');
    const { site, guard } = guardedSite([
      { operation: 'GET /public/*path', public: true },
      { operation: 'GET /static/public/*path', public: true },
      { operation: 'GET /static/private/*path', anyRoles: ['admin'] },
      { operation: 'GET /v1/admin/*path', anyRoles: ['admin'] },
      { operation: 'GET /v1/admin', anyRoles: ['admin'] },
    ]);
    site.use(rewriteAfterControls);
    site.use('/static', express.static(root));
    const admin = express.Router({ caseSensitive: true });
    admin.use((_req, res) => res.json({ admin: 'secrets' }));
    site.use('/v1/admin', admin);
    site.use('/public', (_req, res) => res.json({ public: true }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      for (const target of ['/static/private/payroll.txt', '/v1/admin/keys']) {
        const rewritten = await fetch(`${served.url}/public/a`, { headers: { 'x-rewrite': target } });
        expect(rewritten.status, target).toBe(500);
        expect(await rewritten.text(), target).not.toMatch(/salaries|secrets/);
        expect(JSON.stringify(audit.lines().at(-1)), target).toContain('rewrote (its method or URL)');
      }
      // Within the public rule as written, but resolved by express.static into the private tree.
      for (const target of [
        '/static/public/../private/payroll.txt',
        '/static/public/..%2Fprivate%2Fpayroll.txt',
        '/static/public/%2e%2e/private/payroll.txt',
      ]) {
        const rewritten = await fetch(`${served.url}/static/public/x`, { headers: { 'x-rewrite': target } });
        expect(rewritten.status, target).toBe(500);
        expect(await rewritten.text(), target).not.toContain('salaries');
        expect(JSON.stringify(audit.lines().at(-1)), target).toContain('a dot segment or an encoded character');
      }
      // An absolute-form target names the same path: not a rewrite.
      const absolute = await rawGet(served.url, `http://example.com/static/public/readme.txt`);
      expect(absolute).toEqual({ status: 200, body: 'hello' });
      // Rewritten within its own rule, or not at all: served.
      const within = await fetch(`${served.url}/static/public/x`, {
        headers: { 'x-rewrite': '/static/public/readme.txt' },
      });
      expect(await within.text()).toBe('hello');
      expect(await (await fetch(`${served.url}/public/a`)).json()).toEqual({ public: true });
      const asAdmin = { headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}` } };
      expect(await (await fetch(`${served.url}/static/private/payroll.txt`, asAdmin)).text()).toBe('salaries');
      expect(await (await fetch(`${served.url}/v1/admin/keys`, asAdmin)).json()).toEqual({ admin: 'secrets' });
      // At the mount path itself the router adds a slash (`/v1/admin` is `/` below it): the same rule.
      const atMount = await fetch(`${served.url}/v1/admin?x=1`, asAdmin);
      expect(atMount.status).toBe(200);
    } finally {
      await served.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('refuses a rewritten request before a param callback runs for it, one added later too', async () => {
    // The router runs `app.param` callbacks as a layer matches, before the layer: one answered
    // a request rewritten from a public path to an admin one, and one loaded for it.
    const { site, guard } = guardedSite([
      { operation: 'GET /public/*path', public: true },
      { operation: 'GET /v1/admin/*path', anyRoles: ['admin'] },
      { operation: 'GET /v2/admin/*path', anyRoles: ['admin'] },
    ]);
    const loaded: string[] = [];
    site.use(rewriteAfterControls);
    site.param('thing', (_req, res, next, id: string) => {
      if (id === 'keys') res.json({ leaked: 'answered by the param callback' });
      else next();
    });
    site.get('/v1/admin/:thing', (_req, res) => res.json({ admin: 'secrets' }));
    const v2 = express.Router({ caseSensitive: true });
    v2.get('/admin/:item', (_req, res) => res.json({ admin: 'records' }));
    site.use('/v2', v2);
    site.get('/public/*path', (_req, res) => res.json({ public: true }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      expect(await (await fetch(`${served.url}/public/a`)).json()).toEqual({ public: true });
      // Added after the first request, in a mounted router.
      v2.param('item', (_req, _res, next, id: string) => {
        loaded.push(id);
        next();
      });
      for (const target of ['/v1/admin/keys', '/v2/admin/payroll']) {
        const rewritten = await fetch(`${served.url}/public/a`, { headers: { 'x-rewrite': target } });
        expect(rewritten.status, target).toBe(500);
        expect(await rewritten.text(), target).not.toMatch(/leaked|secrets|records/);
        expect(JSON.stringify(audit.lines().at(-1)), target).toContain('a param callback (app.param)');
      }
      expect(loaded).toEqual([]);
      const asAdmin = { headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}` } };
      expect(await (await fetch(`${served.url}/v2/admin/payroll`, asAdmin)).json()).toEqual({ admin: 'records' });
      expect(loaded).toEqual(['payroll']);
    } finally {
      await served.close();
    }
  });

  it("refuses a next() hand-over before the next route's param callbacks run", async () => {
    // The router runs a route's param callbacks before the route: checked as a middleware (only
    // for a rewrite), one answered, and one loaded, for a request a public route passed on.
    const { site, guard } = guardedSite([
      { operation: 'GET /v1/docs/readme', public: true },
      { operation: 'GET /v1/docs/:page', anyRoles: ['admin'] },
    ]);
    const loaded: string[] = [];
    site.param('page', (_req, res, next, page: string) => {
      loaded.push(page);
      if (page === 'readme') res.json({ leaked: 'answered by the param callback' });
      else next();
    });
    site.get('/v1/docs/readme', (req, res, next) => {
      if (req.query.pass === undefined) res.json({ page: 'public readme' });
      else next();
    });
    site.get('/v1/docs/:page', (req, res) => res.json({ page: req.params.page }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      expect(await (await fetch(`${served.url}/v1/docs/readme`)).json()).toEqual({ page: 'public readme' });
      const passedOn = await fetch(`${served.url}/v1/docs/readme?pass=1`);
      expect(passedOn.status).toBe(500);
      expect(await passedOn.text()).not.toContain('leaked');
      expect(loaded).toEqual([]);
      expect(JSON.stringify(audit.lines().at(-1))).toContain(
        'a param callback (app.param) of the route \\"GET /v1/docs/:page\\" was reached',
      );
      // The route's own requests still run its callbacks.
      const asAdmin = { headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}` } };
      expect(await (await fetch(`${served.url}/v1/docs/guide`, asAdmin)).json()).toEqual({ page: 'guide' });
      expect(loaded).toEqual(['guide']);
    } finally {
      await served.close();
    }
  });

  it('serves a HEAD request past a route of another method, which the router hands it to as well', async () => {
    // The router gives a HEAD request to every route of its path whatever their methods; a
    // `.post()` route passes it on untouched, and was taken for a hand-over: a monitor got a 500.
    const { site, guard } = guardedSite([
      { operation: 'POST /v1/items/:id', anyRoles: ['admin'] },
      { operation: 'GET /v1/items/:id', public: true },
    ]);
    site.post('/v1/items/:id', (_req, res) => res.json({ posted: true }));
    site.get('/v1/items/:id', (req, res) => res.set('x-item', req.params.id).json({ item: req.params.id }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      const head = await fetch(`${served.url}/v1/items/1`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('x-item')).toBe('1');
      expect((await fetch(`${served.url}/v1/items/2`, { method: 'POST' })).status).toBe(401);
    } finally {
      await served.close();
    }
  });

  it("still refuses a HEAD request at another rule's param callbacks, or at a layer that runs for any method", async () => {
    // Passed through unchecked, an admin route's param callback answered an anonymous HEAD (a
    // header of the record, or a 404 for a missing one), and a layer pushed into a route's
    // stack by hand, which runs for every method, ran.
    const { site, guard } = guardedSite([
      { operation: 'GET /v1/*rest', public: true },
      { operation: 'POST /v1/admin/:id', anyRoles: ['admin'] },
      { operation: 'POST /v1/ops/:id', anyRoles: ['admin'] },
    ]);
    site.param('id', (_req, res, next, id: string) => {
      res.set('x-owner', `owner-of-${id}`);
      next();
    });
    site.post('/v1/admin/:id', (_req, res) => res.json({ posted: true }));
    const ops = site.route('/v1/ops/:name').post((_req, res) => res.json({ posted: true }));
    const ran: string[] = [];
    type LayerClass = new (path: string, options: object, fn: express.RequestHandler) => unknown;
    const Layer = (ops.stack[0] as unknown as { constructor: LayerClass }).constructor;
    ops.stack.push(
      new Layer('/', {}, (_req, _res, next) => {
        ran.push('any');
        next();
      }) as (typeof ops.stack)[number],
    );
    site.get('/v1/*rest', (_req, res) => res.json({ public: true }));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      const head = await fetch(`${served.url}/v1/admin/7`, { method: 'HEAD' });
      expect(head.status).toBe(500);
      expect(head.headers.get('x-owner')).toBeNull();
      expect((await fetch(`${served.url}/v1/ops/7`, { method: 'HEAD' })).status).toBe(500);
      expect(ran).toEqual([]);
    } finally {
      await served.close();
    }
  });

  it('answers its own 500s itself: an error handler of the app never sees them', async () => {
    // Passed to next(err), they reached the app's handler, which showed their text; no line.
    const { site, guard } = guardedSite([
      { operation: 'POST /v1/items/:id', anyRoles: ['reader'] },
      { operation: 'DELETE /v1/items/:id', anyRoles: ['admin'] },
    ]);
    site.use(rewriteAfterControls);
    site.post('/v1/items/:id', (_req, res) => res.json({ posted: true }));
    site.delete('/v1/items/:id', (_req, res) => res.json({ deleted: true }));
    const shown: string[] = [];
    const ownHandler: express.ErrorRequestHandler = (err: Error, _req, res, _next) => {
      shown.push(err.message);
      res.status(500).json({ msg: err.message });
    };
    site.use(ownHandler);
    site.use(guard.after);
    // A router that routes case-insensitively: every request is refused by the app check.
    const { site: loose, guard: looseGuard } = guardedSite([{ operation: 'GET /v1/x', public: true }]);
    const router = express.Router();
    router.get('/x', (_req, res) => res.json({ x: true }));
    loose.use('/v1', router);
    loose.use(ownHandler);
    loose.use(looseGuard.after);
    const served = await serve(site);
    const looseServed = await serve(loose);
    try {
      const reader = `Bearer ${tokens.sign({ roles: ['reader'] })}`;
      const overridden = await fetch(`${served.url}/v1/items/1`, {
        method: 'POST',
        headers: { authorization: reader, 'x-http-method-override': 'DELETE' },
      });
      const refusedLoose = await fetch(`${looseServed.url}/v1/x`);
      for (const answer of [overridden, refusedLoose]) {
        expect(answer.status).toBe(500);
        const body = (await answer.json()) as { detail?: string; msg?: string };
        expect(body.detail).toBe('An internal error occurred.');
        expect(body.msg).toBeUndefined();
        const requestId = answer.headers.get('x-request-id') ?? '';
        expect(JSON.stringify(audit.lines().filter((line) => line.requestId === requestId))).toContain(
          'ConfigurationError',
        );
      }
      expect(shown).toEqual([]);
    } finally {
      await served.close();
      await looseServed.close();
    }
  });

  it('decides a path that spells a splat pattern by the rule of the route that serves it', async () => {
    // `/static/*file` as a path reaches the route `/static/:tenant` (tenant `*file`); RBAC once
    // found the public splat rule by the path's text and served the tenant's data to anyone.
    const { site, guard } = guardedSite([
      { operation: 'GET /static/*file', public: true },
      { operation: 'GET /static/:tenant', anyRoles: ['tenant.reader'] },
    ]);
    site.get('/static/:tenant', (req, res) => {
      res.json({ tenant: req.params.tenant, revenue: 1_234_567 });
    });
    site.get('/static/*file', (_req, res) => {
      res.json({ public: true });
    });
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    try {
      for (const path of ['/static/*file', '/static/:tenant', '/static/acme']) {
        const answer = await fetch(`${served.url}${path}`);
        expect(answer.status).toBe(401);
        expect(await answer.text()).not.toContain('revenue');
      }
      expect(await (await fetch(`${served.url}/static/css/site.css`)).json()).toEqual({ public: true });
      const reader = tokens.sign({ roles: ['tenant.reader'] });
      const read = await fetch(`${served.url}/static/*file`, { headers: { authorization: `Bearer ${reader}` } });
      expect(await read.json()).toEqual({ tenant: '*file', revenue: 1_234_567 });
    } finally {
      await served.close();
    }
  });

  it('refuses a path with a dot segment or an encoded slash, which a file server behind the guard resolves', async () => {
    // Rules read `/static/public/../private/payroll.txt` as a path under the public rule;
    // express.static resolved it and served a file of the admin-only tree to anyone.
    const root = mkdtempSync(join(tmpdir(), 'fluxguard-static-'));
    mkdirSync(join(root, 'public'));
    mkdirSync(join(root, 'private'));
    writeFileSync(join(root, 'public', 'readme.txt'), 'hello');
    writeFileSync(join(root, 'private', 'payroll.txt'), 'TOP SECRET');
    const { site, guard } = guardedSite([
      { operation: 'GET /static/public/*path', public: true },
      { operation: 'GET /static/*path', anyRoles: ['admin'] },
    ]);
    site.use('/static', express.static(root));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    const status = (path: string) => rawGet(served.url, path);
    try {
      expect(await status('/static/public/readme.txt')).toEqual({ status: 200, body: 'hello' });
      expect((await status('/static/private/payroll.txt')).status).toBe(401);
      for (const path of [
        '/static/public/../private/payroll.txt',
        '/static/public/%2e%2e/private/payroll.txt',
        '/static/public/.%2E/private/payroll.txt',
        '/static/public/..%2Fprivate%2Fpayroll.txt',
        '/static/public/..%5cprivate%5cpayroll.txt',
        '/static/public/x/../../private/payroll.txt',
        '/static/public/./../private/payroll.txt',
      ]) {
        const answer = await status(path);
        expect(answer.status, path).toBe(400);
        expect(answer.body).not.toContain('SECRET');
      }
      expect(JSON.stringify(audit.lines().at(-1))).toContain('path_not_plain');
      // Dots inside a name are no dot segment.
      expect((await status('/static/public/readme.txt.')).status).toBe(404);
    } finally {
      await served.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('refuses a percent-encoded letter, digit or -._~, which Express decodes into a parameter or a file name', async () => {
    // Rules read `smtp%5Fpassword` as a name of its own, under the rule of `:key`; Express gave
    // the `:key` route `smtp_password`, whose stricter rule never applied. `express.static`
    // served `/files/%70rivate/payroll.txt` from the `private` tree under the rule of `*path`.
    const root = mkdtempSync(join(tmpdir(), 'fluxguard-static-'));
    mkdirSync(join(root, 'private'));
    writeFileSync(join(root, 'private', 'payroll.txt'), 'TOP SECRET');
    const { site, guard } = guardedSite([
      { operation: 'GET /v1/settings/:key', anyRoles: ['staff'] },
      { operation: 'GET /v1/settings/smtp_password', anyRoles: ['admin'] },
      { operation: 'GET /v1/users/:id', anyRoles: ['staff'] },
      { operation: 'GET /files/*path', anyRoles: ['staff'] },
      { operation: 'GET /files/private/*path', anyRoles: ['hr'] },
    ]);
    site.get('/v1/settings/:key', (req, res) => res.json({ key: req.params.key, value: 'hunter2' }));
    site.get('/v1/users/:id', (req, res) => res.json({ id: req.params.id }));
    site.use('/files', express.static(root));
    site.use(guard.after);
    const served = await serve(guard.wrap(site));
    const staff = `Bearer ${tokens.sign({ roles: ['staff'] })}`;
    try {
      expect((await rawGet(served.url, '/v1/settings/smtp_password', staff)).status).toBe(403);
      expect((await rawGet(served.url, '/files/private/payroll.txt', staff)).status).toBe(403);
      for (const path of [
        '/v1/settings/smtp%5Fpassword',
        '/v1/settings/%73mtp_password',
        '/v1/settings/SMTP%5fpassword',
        '/v1/settings/smtp%2Dpassword',
        '/v1/settings/smtp_passwor%64',
        '/v1/settings/smtp_password%7E',
        '/files/%70rivate/payroll.txt',
        '/files/priv%61te/payroll.txt',
        '/files/private/payroll%2Etxt',
        '/files/private/payroll.tx%74',
        '/files/%50rivate/payroll.txt',
        '/files/private/payroll%31.txt',
      ]) {
        const answer = await rawGet(served.url, path, staff);
        expect(answer.status, path).toBe(400);
        expect(answer.body, path).not.toMatch(/hunter2|SECRET/);
      }
      expect(JSON.stringify(audit.lines().at(-1))).toContain('path_not_plain');
      // What clients do encode is still served: `@`, a space, a letter past ASCII, `%` itself.
      for (const [path, id] of [
        ['/v1/users/alice%40example.com', 'alice@example.com'],
        ['/v1/users/a%20b', 'a b'],
        ['/v1/users/%C3%A9', '\u00e9'],
        ['/v1/users/100%25', '100%'],
      ] as const) {
        const answer = await rawGet(served.url, path, staff);
        expect(answer.status, path).toBe(200);
        expect(JSON.parse(answer.body), path).toEqual({ id });
      }
    } finally {
      await served.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('serves the specific route first: what both match reaches it, and the tenant route keeps its rule', async () => {
    const { app: site, wrap } = app('specific first');
    const served = await serve(wrap(site) as Parameters<typeof serve>[0]);
    try {
      const open = await fetch(`${served.url}/v1/public/reports`);
      expect(open.status).toBe(200);
      expect(await open.json()).toEqual({ public: true });
      const tenant = await fetch(`${served.url}/v1/acme/reports`);
      expect(tenant.status).toBe(401);
      const reader = tokens.sign({ roles: ['reports.reader'] });
      const read = await fetch(`${served.url}/v1/acme/reports`, { headers: { authorization: `Bearer ${reader}` } });
      expect(await read.json()).toEqual({ reports: 'of acme', revenue: 1_234_567 });
    } finally {
      await served.close();
    }
  });

  it('lists the routes in the order the router tries them, mounted routers included', () => {
    const site = express();
    site.use((_req, _res, next) => {
      next();
    });
    site.get('/healthz', (_req, res) => res.end());
    const api = express.Router();
    api.put('/items/*path', (_req, res) => res.end());
    api
      .route('/items')
      .get((_req, res) => res.end())
      .post((_req, res) => res.end());
    site.use('/v1/', api);
    site.route('/any/:thing').all((_req, res) => res.end());
    site.get(['/a', '/b/'], (_req, res) => res.end());
    site.get(/^\/regex$/, (_req, res) => res.end());
    expect(routesOf(site)).toEqual([
      'GET /healthz',
      'PUT /v1/items/*path',
      'GET /v1/items',
      'POST /v1/items',
      '* /any/:thing',
      'GET /a',
      'GET /b',
    ]);
  });
});

describe('a rule pattern that names no route of the app', () => {
  // A misspelt pattern never applies (a route left to a broader rule, a rate limit that never
  // counts); without servedOperations nothing said so. The first request warns, once per pattern.
  it('warns on the first request, naming it, but not of what a route or a mounted middleware serves', async () => {
    const captured = captureWarnings('FLUXGUARD_UNSERVED_RULE');
    // Other tests' apps in this file are checked too, a second after their first request.
    const warnings = () =>
      captured
        .messages()
        .filter((message) => /itemz|v2\/other|robots|uplaod|\/files\/|\/admin\/|special|OPTIONS/.test(message));
    const { site, guard } = guardedSite([
      { operation: 'GET /v1/items/:id', public: true },
      { operation: 'DELETE /v1/itemz/:id', anyRoles: ['admin'] },
      { operation: 'GET /files/*path', public: true },
      { operation: 'GET /admin/*path', anyRoles: ['admin'] },
      { operation: '/fluxguard.test.v1.Test/Unary', public: true },
      { operation: 'GET /v2/other', public: true },
      // A literal rule below a :param route, and a preflight's rule, apply to requests routes serve.
      { operation: 'GET /v1/items/special', anyRoles: ['admin'] },
      { operation: 'OPTIONS /v1/items/:id', public: true },
    ]);
    site.get('/v1/items/:id', (req, res) => res.json({ id: req.params.id }));
    site.use('/files', express.static(tmpdir()));
    site.use('/admin', (_req, res) => res.json({ proxied: true }));
    site.use(guard.after);
    // A guard that serves a second app: a rule for that app's route is served.
    const other = express();
    other.set('case sensitive routing', true);
    other.use(guard.before);
    other.get('/v2/other', (_req, res) => res.json({ other: true }));
    other.use(guard.after);
    const served = await serve(site);
    const otherServed = await serve(other);
    const checked = () => new Promise((resolve) => setTimeout(resolve, 1_300));
    try {
      expect(warnings()).toEqual([]);
      expect((await fetch(`${otherServed.url}/v2/other`)).status).toBe(200);
      const first = await fetch(`${served.url}/v1/items/a`);
      expect(first.status, JSON.stringify(audit.lines().at(-1))).toBe(200);
      expect((await fetch(`${served.url}/v1/items/b`)).status).toBe(200);
      await checked();
      expect(warnings()).toHaveLength(1);
      expect(warnings()[0]).toContain('"DELETE /v1/itemz/:id" names no route of the apps it guards');
    } finally {
      await served.close();
      await otherServed.close();
    }
    // A static file server at the top may answer any GET; not a POST.
    const top = guardedSite([
      { operation: 'GET /robots.txt', public: true },
      { operation: 'POST /v1/uplaod', public: true },
    ]);
    top.site.use(express.static(tmpdir()));
    top.site.post('/v1/upload', (_req, res) => res.json({ stored: true }));
    top.site.use(top.guard.after);
    const withStatic = await serve(top.site);
    try {
      await fetch(`${withStatic.url}/robots.txt`);
      await checked();
      expect(warnings()).toHaveLength(2);
      expect(warnings()[1]).toContain('"POST /v1/uplaod"');
    } finally {
      captured.stop();
      await withStatic.close();
    }
  });
});
