// A router with a guard of its own, inside an app with another: each guard decides on the caller
// it verifies itself. The app's own ways to record a caller before a guard (a middleware, a
// control of the guard's list, a pipeline of its own) keep working.
import express, { type RequestHandler } from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileRbac, createGuard, type Control, type Principal } from '@fluxguard/core';
import { authorize, controls, fluxguard, setPrincipal } from './index.js';
import {
  CLIENT_SPIFFE_ID,
  agentFor,
  captureAudit,
  createTestPki,
  createTokenSigner,
  listen,
  perOperationServer,
  type Served,
  type TestPki,
} from './testing/tls.js';

const audit = captureAudit();
const users = createTokenSigner();

const KEY_HOLDER: Principal = Object.freeze({
  subject: 'key-holder',
  roles: Object.freeze(['ops']),
  scopes: Object.freeze([]),
  claims: Object.freeze({}),
  certificate: undefined,
  authenticatedBy: 'jwt',
});

/** The app's own credential: an API key in `x-api-key`, checked by a control or a middleware. */
const apiKeyControl: Control = {
  name: 'api-key',
  stage: 'authentication',
  onStart(call, context) {
    if (call.headers.get('x-api-key') === 'ops-key') context.setPrincipal(KEY_HOLDER);
  },
};
const apiKeyMiddleware: RequestHandler = (req, _res, next) => {
  if (req.get('x-api-key') === 'ops-key') setPrincipal(req, KEY_HOLDER);
  next();
};

const who: RequestHandler = (req, res) => {
  res.json({ who: req.fluxguard.principal?.subject ?? null });
};

/** The admin API's guard: operators' workload certificates only, never a token. */
function adminGuard() {
  return createGuard({
    audit: audit.audit,
    rbac: compileRbac({
      'GET /admin/users': { anyRoles: ['ops'] },
      'GET /admin/status': { public: true },
    }),
    certificateRoles: [{ spiffeId: CLIENT_SPIFFE_ID, roles: ['ops'] }],
  });
}

/**
 * The app's guard verifies user tokens; its admin router has a guard of its own. With `enrich`,
 * a middleware between them records the app's user again (as one that loads a user's roles does).
 */
function nestedApp(enrich = false) {
  const outer = fluxguard({
    audit: audit.audit,
    guard: createGuard({
      audit: audit.audit,
      jwt: users.verifier,
      rbac: compileRbac({
        'GET /me': { authenticated: true },
        'GET /admin/*path': { authenticated: true },
      }),
    }),
  });
  const inner = fluxguard({ audit: audit.audit, guard: adminGuard() });
  const app = express();
  app.set('case sensitive routing', true);
  app.use(outer.before);
  app.get('/me', who);
  if (enrich) {
    app.use((req, _res, next) => {
      const user = req.fluxguard.principal;
      if (user !== undefined) setPrincipal(req, { ...user, roles: [...user.roles] });
      next();
    });
  }
  const admin = express.Router({ caseSensitive: true });
  admin.use(inner.before);
  admin.get('/users', who);
  admin.get('/status', who);
  app.use('/admin', admin);
  app.use(outer.after);
  return app;
}

/** A guard that takes tokens, with the app's API key recorded before it in `how`. */
function ownAuthenticationApp(how: 'middleware' | 'same-list' | 'own-pipeline' | 'same-guard-again') {
  const guard = createGuard({
    audit: audit.audit,
    jwt: users.verifier,
    rbac: compileRbac({ 'GET /admin/users': { anyRoles: ['ops'] } }),
  });
  const app = express();
  app.set('case sensitive routing', true);
  if (how === 'same-list' || how === 'same-guard-again') {
    const { before, after } = fluxguard({ audit: audit.audit, guard, controls: [apiKeyControl] });
    app.use(before);
    // The same guard once more on the route: the same decisions, and the caller stays.
    if (how === 'same-guard-again') app.get('/admin/users', authorize({ guard }), who);
    else app.get('/admin/users', who);
    app.use(after);
    return app;
  }
  const { before, after } = fluxguard({ audit: audit.audit });
  app.use(before);
  app.use(how === 'middleware' ? apiKeyMiddleware : controls('api-key', [apiKeyControl]));
  app.use(authorize({ guard }));
  app.get('/admin/users', who);
  app.use(after);
  return app;
}

describe('a guard inside another', () => {
  let pki: TestPki;
  let served: Served;
  let enriched: Served;
  let anonymous: Agent;
  let operator: Agent;

  beforeAll(async () => {
    pki = await createTestPki();
    served = await listen(perOperationServer(nestedApp(), pki, audit.audit));
    enriched = await listen(perOperationServer(nestedApp(true), pki, audit.audit));
    anonymous = agentFor(pki.ca.certPem);
    operator = agentFor(pki.ca.certPem, pki.client);
  });

  afterAll(async () => {
    await Promise.all([anonymous.close(), operator.close()]);
    await Promise.all([served.close(), enriched.close()]);
    await pki.remove();
  });

  const get = async (path: string, agent: Agent, token?: string, app = served) => {
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    const res = await fetch(`${app.url}${path}`, { dispatcher: agent, headers });
    return { status: res.status, text: await res.text() };
  };

  it("decides on the callers it verifies itself, never on the outer guard's user", async () => {
    // The outer guard's own routes serve its user.
    expect(await get('/me', anonymous, users.sign({ sub: 'mallory' }))).toEqual({
      status: 200,
      text: '{"who":"mallory"}',
    });
    // The inner guard verifies no token: the user is anonymous to it, even with a role of its name.
    for (const role of ['reader', 'ops']) {
      const answer = await get('/admin/users', anonymous, users.sign({ sub: 'mallory', roles: [role] }));
      expect(answer.status, role).toBe(401);
      expect(answer.text, role).not.toContain('mallory');
    }
    expect((await get('/admin/users', anonymous)).status).toBe(401);
  });

  it("never decides on the outer guard's user recorded again by a middleware between them", async () => {
    const token = users.sign({ sub: 'mallory', roles: ['ops'] });
    expect(await get('/me', anonymous, token, enriched)).toEqual({ status: 200, text: '{"who":"mallory"}' });
    const answer = await get('/admin/users', anonymous, token, enriched);
    expect(answer.status).toBe(401);
    expect(answer.text).not.toContain('mallory');
    expect(await get('/admin/users', operator, token, enriched)).toEqual({
      status: 200,
      text: `{"who":"${CLIENT_SPIFFE_ID}"}`,
    });
  });

  it('serves the caller it verifies, and its public rules see no caller of the outer guard', async () => {
    // The operator's certificate, past the outer guard with a user token: the inner guard's caller.
    const token = users.sign({ sub: 'mallory' });
    expect(await get('/admin/users', operator, token)).toEqual({
      status: 200,
      text: `{"who":"${CLIENT_SPIFFE_ID}"}`,
    });
    expect(await get('/admin/status', anonymous, token)).toEqual({ status: 200, text: '{"who":null}' });
  });
});

describe('the app records its own caller before a guard', () => {
  for (const how of ['middleware', 'same-list', 'own-pipeline', 'same-guard-again'] as const) {
    it(`keeps the caller an API key ${how === 'middleware' ? 'middleware' : `control (${how})`} recorded`, async () => {
      const pki = await createTestPki();
      const served = await listen(perOperationServer(ownAuthenticationApp(how), pki, audit.audit));
      const agent = agentFor(pki.ca.certPem);
      try {
        const call = async (headers: Record<string, string>) => {
          const res = await fetch(`${served.url}/admin/users`, { dispatcher: agent, headers });
          return { status: res.status, text: await res.text() };
        };
        expect(await call({ 'x-api-key': 'ops-key' })).toEqual({ status: 200, text: '{"who":"key-holder"}' });
        expect((await call({ 'x-api-key': 'wrong' })).status).toBe(401);
        if (how === 'middleware' || how === 'own-pipeline') {
          // Before the guard: a token the guard verifies then wins, and decides (no role of its own).
          const token = users.sign({ sub: 'alice' });
          expect((await call({ 'x-api-key': 'ops-key', authorization: `Bearer ${token}` })).status).toBe(403);
        }
      } finally {
        await agent.close();
        await served.close();
        await pki.remove();
      }
    });
  }
});

describe('two guards in one pipeline', () => {
  it('are refused at start-up: a pipeline decides on one caller', () => {
    const userGuard = createGuard({
      audit: audit.audit,
      jwt: users.verifier,
      rbac: compileRbac({ 'GET /me': { authenticated: true } }),
    });
    expect(() => fluxguard({ audit: audit.audit, guard: userGuard, controls: [...adminGuard().controls] })).toThrow(
      /authentication steps of two guards/,
    );
  });
});
