// Where an app can route a request past its rules: a router or an app mounted inside it that
// matches paths case-insensitively (`GET /v1/Admin/users` reached the admin handler under the
// reader rule of `GET /v1/*path`), a setting made after Express built the router, a route
// registered before `fluxguard().before`, and `after` mounted without `before`. Each is refused
// at start-up where the app is known then (`wrap(app)`, `createSecureServer(app)`), else on the
// first request, every request then answered 500: the admin handler is never reached.
import { createRequire } from 'node:module';
import express, { type Express } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigurationError,
  compileRbac,
  createAuthenticator,
  createConcurrencyLimit,
  createGuard,
  type RbacRules,
} from '@fluxguard/core';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { authorize, fluxguard, jwtAuth } from './index.js';
import { createSecureServer } from './secure-server.js';
import { captureAudit, createTestPki, createTokenSigner, serve, type TestPki } from './testing/tls.js';

const audit = captureAudit();
const tokens = createTokenSigner();
const reader = tokens.sign({ roles: ['reader'] });
let pki: TestPki;

beforeAll(async () => {
  pki = await createTestPki();
});

const tls = (): Parameters<typeof createSecureServer>[1]['tls'] => ({
  certFile: pki.certFile,
  keyFile: pki.keyFile,
  caFile: pki.caFile,
  clientCertificates: 'per-operation',
});

const RULES = { 'GET /v1/admin/users': { anyRoles: ['admin'] }, 'GET /v1/*path': { anyRoles: ['reader'] } };
/** The admin rule misspelt: it names no route, and `/v1/admin/users` falls under the reader rule. */
const TYPO_RULES = { 'GET /v1/Admin/users': { anyRoles: ['admin'] }, 'GET /v1/*path': { anyRoles: ['reader'] } };

function guarded(rules: RbacRules = RULES) {
  return fluxguard({
    audit: audit.audit,
    guard: createGuard({ audit: audit.audit, jwt: tokens.verifier, rbac: compileRbac(rules) }),
  });
}

const secret: express.RequestHandler = (_req, res) => {
  res.json({ secret: 'admin-only user list' });
};

/** An app whose admin route sits where `mount` puts it, with `before` and `after` around it. */
function appWith(
  mount: (app: Express) => void,
  options: { setLate?: boolean | undefined; rules?: RbacRules | undefined } = {},
) {
  const middleware = guarded(options.rules);
  const app = express();
  if (options.setLate !== true) app.set('case sensitive routing', true);
  app.use(middleware.before);
  if (options.setLate === true) app.set('case sensitive routing', true);
  mount(app);
  app.use(middleware.after);
  return { app, wrap: middleware.wrap };
}

const CASES = [
  {
    name: 'a router made with express.Router()',
    mount: (app: Express) => {
      const v1 = express.Router();
      v1.get('/admin/users', secret);
      app.use('/v1', v1);
    },
    refusal: /the router mounted at "\/v1" routes case-insensitively.*express\.Router\(\{ caseSensitive: true \}\)/,
  },
  {
    name: 'an Express app mounted in the app',
    mount: (app: Express) => {
      const admin = express();
      admin.get('/users', secret);
      app.use('/v1/admin', admin);
    },
    refusal: /an Express app is mounted at "\/v1\/admin".*cannot be checked/,
  },
  {
    name: 'a route given as a regular expression with the i flag',
    mount: (app: Express) => {
      app.get(/^\/v1\/admin\/users$/i, secret);
    },
    refusal: /the route at "\/\(.*\)" is a regular expression with the i flag.*drop the flag/,
  },
  {
    name: 'a case-sensitive router mounted at a regular expression with the i flag',
    mount: (app: Express) => {
      const admin = express.Router({ caseSensitive: true });
      admin.get('/users', secret);
      app.use(/^\/v1\/admin/i, admin);
    },
    refusal: /the router at "\/\(.*\)" is a regular expression with the i flag \(or below one\)/,
  },
  {
    // Rules read /v1/x/ as /v1/x; a strict router does not, and takes it to another route.
    name: 'the app routing strictly',
    mount: (app: Express) => {
      app.set('strict routing', true);
      app.get('/v1/admin/users', secret);
    },
    refusal: /the app routes strictly \(strict routing\).*Unset strict routing/,
  },
  {
    name: 'a router made with express.Router({ strict: true })',
    mount: (app: Express) => {
      const v1 = express.Router({ caseSensitive: true, strict: true });
      v1.get('/admin/users', secret);
      app.use('/v1', v1);
    },
    refusal: /the router mounted at "\/v1" routes strictly.*create it without strict/,
  },
  {
    name: 'a route given as a regular expression',
    mount: (app: Express) => {
      app.get(/^\/v1\/admin\/(.+)$/, secret);
    },
    refusal: /the route at "\/\(.*\)" is a regular expression or has optional parts/,
  },
  {
    name: 'a route with an optional part',
    mount: (app: Express) => {
      app.get('/v1/admin{/:list}', secret);
    },
    refusal: /the route at "\/v1\/admin\{\/:list\}" is a regular expression or has optional parts/,
  },
  {
    name: 'the setting made after the router was',
    setLate: true,
    mount: (app: Express) => {
      app.get('/v1/admin/users', secret);
    },
    refusal: /router was made before app\.set\('case sensitive routing', true\)/,
  },
];

describe.each(CASES)('an app whose routing does not agree with its rules: $name', ({ mount, setLate, refusal }) => {
  it('is refused by wrap(app) at start-up', () => {
    const { app, wrap } = appWith(mount, { setLate });
    expect(() => wrap(app)).toThrow(ConfigurationError);
    expect(() => wrap(app)).toThrow(refusal);
  });

  it('served as it is, answers 500 to every request: a reader never reaches the admin handler', async () => {
    const { app } = appWith(mount, { setLate });
    const served = await serve(app);
    try {
      for (const path of ['/v1/Admin/users', '/v1/admin/Users', '/v1/admin/users']) {
        const res = await fetch(`${served.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
        expect(res.status).toBe(500);
        expect(await res.text()).not.toContain('admin-only');
      }
      const logged = audit.lines().slice(-3);
      expect(logged.map((line) => String((line.err as { message?: unknown } | undefined)?.message))).toEqual([
        expect.stringMatching(refusal),
        expect.stringMatching(refusal),
        expect.stringMatching(refusal),
      ]);
    } finally {
      await served.close();
    }
  });
});

const TYPO_CASES = [
  {
    // Under `GET /v1/*path` for readers, a rule for `GET /v1/Admin/users` let a reader read the
    // route `/v1/admin/users`: rules match letter for letter, and the route fell under the broader rule.
    name: 'a rule',
    middleware: () => guarded(TYPO_RULES),
  },
  {
    // No control here matches paths for access (no guard): the letter-case check of every
    // control's patterns still runs, behind wrap(app) and on the first request without it.
    name: 'a concurrency pattern',
    middleware: () =>
      fluxguard({
        audit: audit.audit,
        controls: [createConcurrencyLimit({ maxInFlightPerOperation: { 'GET /v1/Admin/users': 1 } })],
      }),
  },
];

describe.each(TYPO_CASES)('$name that names a route only in other letter case', ({ middleware: make }) => {
  function typoApp() {
    const middleware = make();
    const app = express();
    app.set('case sensitive routing', true);
    app.use(middleware.before);
    app.get('/v1/admin/users', secret);
    app.use(middleware.after);
    return { app, wrap: middleware.wrap };
  }
  const refusal =
    'the rule pattern "GET /v1/Admin/users" names no operation this server serves, only "GET /v1/admin/users" in other letter case';

  it('is refused by wrap(app) at start-up', () => {
    const { app, wrap } = typoApp();
    expect(() => wrap(app)).toThrow(refusal);
  });

  it('served as it is, answers 500 with the reason in the line: a reader never reaches the admin handler', async () => {
    const { app } = typoApp();
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/v1/admin/users`, { headers: { authorization: `Bearer ${reader}` } });
      expect(res.status).toBe(500);
      expect(await res.text()).not.toContain('admin-only');
      expect(String((audit.lines().at(-1)?.err as { message?: unknown } | undefined)?.message)).toContain(refusal);
    } finally {
      await served.close();
    }
  });
});

describe('fluxguard middleware out of place in the app', () => {
  it('refuses, at createSecureServer, a route registered before fluxguard().before', () => {
    const middleware = guarded();
    const app = express();
    app.set('case sensitive routing', true);
    app.get('/v1/admin/users', secret);
    app.use(middleware.before);
    app.use(middleware.after);
    expect(() => createSecureServer(app, { audit: audit.audit, tls: tls() })).toThrow(
      /the route "GET \/v1\/admin\/users" is not behind fluxguard\(\)\.before/,
    );
    // Behind wrap(app) the controls run first whatever the app's order.
    expect(() => createSecureServer(middleware.wrap(app), { audit: audit.audit, tls: tls() })).not.toThrow();
  });

  it('refuses, at createSecureServer, fluxguard().after without fluxguard().before', () => {
    const middleware = guarded();
    const app = express();
    app.get('/v1/admin/users', secret);
    app.use(middleware.after);
    expect(() => createSecureServer(app, { audit: audit.audit, tls: tls() })).toThrow(
      /fluxguard\(\)\.after is mounted but fluxguard\(\)\.before is not/,
    );
  });

  it('serves, without wrap, an app with a route before fluxguard().before: every other request answers 500', async () => {
    const middleware = guarded();
    const app = express();
    app.set('case sensitive routing', true);
    const v1 = express.Router({ caseSensitive: true });
    v1.get('/admin/users', secret);
    app.use('/v1', v1);
    app.use(middleware.before);
    app.get('/v1/items/a', (_req, res) => res.json({ item: 'a' }));
    app.use(middleware.after);
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/v1/items/a`, { headers: { authorization: `Bearer ${reader}` } });
      expect(res.status).toBe(500);
      expect(JSON.stringify(audit.lines().at(-1))).toContain(
        'the route \\"GET /v1/admin/users\\" is not behind fluxguard().before',
      );
    } finally {
      await served.close();
    }
  });

  it('answers a neutral 500 for authorize() mounted without fluxguard().before, never the stack page of Express', async () => {
    const captured = captureWarnings('FLUXGUARD_NO_CONTEXT');
    const app = express();
    app.set('case sensitive routing', true);
    app.use(
      authorize({
        guard: createGuard({
          audit: audit.audit,
          jwt: tokens.verifier,
          rbac: compileRbac({ 'GET /v1/*path': { anyRoles: ['reader'] } }),
        }),
      }),
    );
    app.get('/v1/admin/users', secret);
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/v1/admin/users`, { headers: { authorization: `Bearer ${reader}` } });
      expect(res.status).toBe(500);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      const body = await res.text();
      expect(JSON.parse(body)).toMatchObject({ code: 'internal', status: 500 });
      expect(body).not.toMatch(/admin-only|ConfigurationError|fluxguard context|at \//);
      await captured.settled();
      expect(captured.warnings.length).toBeGreaterThan(0);
    } finally {
      captured.stop();
      await served.close();
    }
  });

  it('refuses a route outside the path fluxguard().before is mounted at, or behind a before without controls only', () => {
    const scoped = guarded();
    const app = express();
    app.set('case sensitive routing', true);
    app.use('/v1', scoped.before);
    app.get('/admin/users', secret);
    app.use(scoped.after);
    expect(() => createSecureServer(app, { audit: audit.audit, tls: tls() })).toThrow(
      /the route "GET \/admin\/users" is not behind fluxguard\(\)\.before/,
    );
    const plain = fluxguard({ audit: audit.audit });
    const real = guarded();
    const layered = express();
    layered.set('case sensitive routing', true);
    layered.use(plain.before);
    layered.get('/v1/admin/users', secret);
    layered.use(real.before);
    layered.use(real.after);
    expect(() => createSecureServer(layered, { audit: audit.audit, tls: tls() })).toThrow(
      /the route "GET \/v1\/admin\/users" is not behind fluxguard\(\)\.before/,
    );
  });

  it('accepts, beside a router with a guard, an app mounted elsewhere that guards its own routes', async () => {
    const withSubApp = (own: Express, at: string | RegExp = '/w'): Express => {
      const v1 = express.Router({ caseSensitive: true });
      v1.use(jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) }));
      v1.get('/items', secret);
      const plain = fluxguard({ audit: audit.audit });
      const app = express();
      app.set('case sensitive routing', true);
      app.use(plain.before);
      app.use('/v1', v1);
      app.use(at, own);
      app.use(plain.after);
      return app;
    };
    const subApp = (order: 'guard first' | 'route first' | 'no guard'): Express => {
      const own = express();
      own.set('case sensitive routing', true);
      const { before } = guarded({ 'GET /w/thing': { anyRoles: ['reader'] } });
      if (order === 'route first') own.get('/thing', secret);
      if (order !== 'no guard') own.use(before);
      if (order !== 'route first') own.get('/thing', secret);
      return own;
    };
    const served = await serve(withSubApp(subApp('guard first')));
    try {
      for (const path of ['/v1/items', '/w/thing']) {
        const res = await fetch(`${served.url}${path}`, { headers: { authorization: `Bearer ${reader}` } });
        expect(res.status, path).toBe(200);
        const forged = await fetch(`${served.url}${path}`, { headers: { authorization: `Bearer ${reader}x` } });
        expect(forged.status, path).toBe(401);
      }
    } finally {
      await served.close();
    }
    // Mounted at a regular expression, its own check cannot read where it is: the app's to guard.
    expect(() =>
      createSecureServer(withSubApp(subApp('guard first'), /^\/w/), { audit: audit.audit, tls: tls() }),
    ).toThrow(/is not behind fluxguard\(\)\.before/);
    // An app at /w whose route comes before its guard, or that has none, is the app's to guard.
    for (const order of ['route first', 'no guard'] as const) {
      expect(() => createSecureServer(withSubApp(subApp(order)), { audit: audit.audit, tls: tls() }), order).toThrow(
        /the route "\* \/w\/\*" is not behind fluxguard\(\)\.before/,
      );
    }
  });

  it('refuses an app mounted ahead of the guard, even one with a weaker guard of its own', () => {
    const own = express();
    own.set('case sensitive routing', true);
    own.use(
      fluxguard({ audit: audit.audit }).before,
      jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) }),
    );
    own.get('/admin', secret);
    const plain = fluxguard({ audit: audit.audit });
    const app = express();
    app.set('case sensitive routing', true);
    app.use(plain.before);
    app.use('/s', own);
    // The app's rules say who may reach /s/admin: a sub-app ahead of them would answer any caller.
    app.use(authorize({ guard: createGuard({ audit: audit.audit, jwt: tokens.verifier, rbac: compileRbac(RULES) }) }));
    app.get('/top', secret);
    app.use(plain.after);
    expect(() => createSecureServer(app, { audit: audit.audit, tls: tls() })).toThrow(
      /the route "\* \/s\/\*" is not behind fluxguard\(\)\.before/,
    );
  });

  it('reads a router of another copy of the router package (Express 4’s kind), whose layers keep no path', () => {
    // router@1's layers keep only a pattern: read as mounted at `/`, an authorize() at
    // `/admin` seemed to guard the route behind it, which it does not.
    const routerV1 = createRequire(import.meta.url)('router-v1') as (options: object) => express.Router;
    const plain = fluxguard({ audit: audit.audit });
    const withLegacy = (fill: (legacy: express.Router) => void): Express => {
      const legacy = routerV1({ caseSensitive: true });
      fill(legacy);
      const app = express();
      app.set('case sensitive routing', true);
      app.use(plain.before);
      app.use('/v1', legacy);
      app.use(plain.after);
      return app;
    };
    const adminOnly = createGuard({ audit: audit.audit, jwt: tokens.verifier, rbac: compileRbac(RULES) });
    const scoped = withLegacy((legacy) => {
      legacy.use('/admin', authorize({ guard: adminOnly }));
      legacy.get('/reports', secret);
    });
    expect(() => createSecureServer(scoped, { audit: audit.audit, tls: tls() })).toThrow(
      /the route "GET \/v1\/reports" is not behind fluxguard\(\)\.before/,
    );
    // A use() without a path is read: its pattern marks it.
    const whole = withLegacy((legacy) => {
      legacy.use(authorize({ guard: adminOnly }));
      legacy.get('/reports', secret);
    });
    expect(() => createSecureServer(whole, { audit: audit.audit, tls: tls() })).not.toThrow();
    // Under rules, a route below a path such a router did not keep cannot be named.
    const nested = appWith((site) => {
      const inner = routerV1({ caseSensitive: true });
      inner.get('/users', secret);
      const legacy = routerV1({ caseSensitive: true });
      legacy.use('/admin', inner);
      site.use('/v1', legacy);
    });
    expect(() => nested.wrap(nested.app)).toThrow(
      /a path a router of another copy of the router package kept no record of/,
    );
  });

  it('checks a router mounted at several paths below each of them', () => {
    const mountTwice = (app: Express): void => {
      const v1 = express.Router({ caseSensitive: true });
      v1.get('/admin/users', secret);
      app.use(['/v0', '/v1'], v1);
    };
    // The letter-case check sees the router's routes below both mount paths.
    const typo = appWith(mountTwice, { rules: TYPO_RULES });
    expect(() => typo.wrap(typo.app)).toThrow('"GET /v1/Admin/users" names no operation this server serves');
    const right = appWith(mountTwice);
    expect(() => right.wrap(right.app)).not.toThrow();
  });

  it('checks the app again when a route is added after its first request', async () => {
    const middleware = guarded();
    const app = express();
    app.set('case sensitive routing', true);
    app.use(middleware.before);
    app.get('/v1/items/a', (_req, res) => res.json({ item: 'a' }));
    const served = await serve(app);
    try {
      const first = await fetch(`${served.url}/v1/items/a`, { headers: { authorization: `Bearer ${reader}` } });
      expect(first.status).toBe(200);
      // A router that routes case-insensitively, mounted once the app is serving.
      const late = express.Router();
      late.get('/admin/users', secret);
      app.use('/v1', late);
      const res = await fetch(`${served.url}/v1/Admin/users`, { headers: { authorization: `Bearer ${reader}` } });
      expect(res.status).toBe(500);
      expect(await res.text()).not.toContain('admin-only');
    } finally {
      await served.close();
    }
  });

  it('accepts what is in place: case-sensitive routers, routes after before, an app without fluxguard', () => {
    const { app, wrap } = appWith((site) => {
      const v1 = express.Router({ caseSensitive: true });
      v1.get('/admin/users', secret);
      site.use('/v1', v1);
    });
    expect(() => wrap(app)).not.toThrow();
    expect(() => createSecureServer(app, { audit: audit.audit, tls: tls() })).not.toThrow();
    const bare = express();
    bare.get('/hello', (_req, res) => res.end());
    expect(() => createSecureServer(bare, { audit: audit.audit, tls: tls() })).not.toThrow();
  });
});

afterAll(async () => {
  await pki.remove();
});
