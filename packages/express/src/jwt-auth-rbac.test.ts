import express, { type Express, type RequestHandler } from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigurationError,
  compileRbac,
  createAuthenticator,
  createAuthorizer,
  createGuard,
  type RbacRules,
} from '@fluxguard/core';
import { fluxguard, getClientCertificate, jwtAuth, rbac, type ProblemDetails } from './index.js';
import {
  CLIENT_SPIFFE_ID,
  agentFor,
  captureAudit,
  createTestPki,
  createTokenSigner,
  listen,
  perOperationServer,
  type TestPki,
} from './testing/tls.js';

const RULES: RbacRules = {
  'GET /healthz': { public: true },
  'GET /v1/items/*path': { anyRoles: ['reader', 'admin'] },
  'DELETE /v1/items/*path': { anyRoles: ['admin'] },
  'GET /v1/internal': { certificate: [{ spiffeId: CLIENT_SPIFFE_ID }] },
};
const CERTIFICATE_ROLES = [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['reader'] }];

interface Answer {
  readonly status: number;
  readonly challenge: string | null;
  readonly body: Record<string, unknown>;
}

describe('jwtAuth() and rbac() over real TLS', () => {
  let pki: TestPki;
  const { audit, lines } = captureAudit();
  const tokens = createTokenSigner();
  const closers: (() => Promise<void>)[] = [];
  const agents: Agent[] = [];
  let anonymous: Agent;
  let withClientCert: Agent;
  let withBackupCert: Agent;
  let withStrangerCert: Agent;
  const urls: Record<'authOnly' | 'rbacOnly' | 'separate' | 'combined', string> = {
    authOnly: '',
    rbacOnly: '',
    separate: '',
    combined: '',
  };

  function app(security: RequestHandler[], guard?: ReturnType<typeof createGuard>): Express {
    const a = express();
    a.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit, ...(guard === undefined ? {} : { guard }) });
    a.use(before, ...security);
    const report: RequestHandler = (req, res) => {
      const p = req.fluxguard.principal;
      res.json({ principal: p === undefined ? null : { subject: p.subject, roles: p.roles, by: p.authenticatedBy } });
    };
    a.get('/healthz', report);
    a.get('/v1/items/*path', report);
    a.delete('/v1/items/*path', report);
    a.get('/v1/internal', (req, res) => {
      res.json({ principal: null, spiffeId: getClientCertificate(req)?.spiffeId });
    });
    a.use(after);
    return a;
  }

  async function serve(a: Express): Promise<string> {
    const served = await listen(perOperationServer(a, pki, audit));
    closers.push(() => served.close());
    return served.url;
  }

  beforeAll(async () => {
    pki = await createTestPki();
    const compiled = compileRbac(RULES);
    const guard = createGuard({ audit, jwt: tokens.verifier, rbac: compiled, certificateRoles: CERTIFICATE_ROLES });
    const authenticator = createAuthenticator({ jwt: tokens.verifier, certificateRoles: CERTIFICATE_ROLES });
    const authorizer = createAuthorizer({ audit, rbac: compiled });
    urls.authOnly = await serve(app([jwtAuth({ authenticator })]));
    urls.rbacOnly = await serve(app([rbac({ authorizer })]));
    urls.separate = await serve(
      app([jwtAuth({ authenticator: guard.authenticator }), rbac({ authorizer: guard.authorizer })]),
    );
    urls.combined = await serve(app([], guard));
    const backup = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/backup' });
    anonymous = agentFor(pki.ca.certPem);
    withClientCert = agentFor(pki.ca.certPem, pki.client);
    withBackupCert = agentFor(pki.ca.certPem, backup);
    withStrangerCert = agentFor(pki.ca.certPem, pki.stranger);
    agents.push(anonymous, withClientCert, withBackupCert, withStrangerCert);
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await Promise.all(closers.map((close) => close()));
    await pki.remove();
  });

  async function call(
    server: keyof typeof urls,
    path: string,
    init: { agent?: Agent; token?: string; method?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...init.headers };
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
    const res = await fetch(`${urls[server]}${path}`, {
      dispatcher: init.agent ?? anonymous,
      method: init.method ?? 'GET',
      headers,
    });
    const text = await res.text();
    return {
      status: res.status,
      challenge: res.headers.get('www-authenticate'),
      body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
    };
  }

  describe('jwtAuth alone', () => {
    it('hands the verified principal to the handler, and applies no RBAC', async () => {
      // A reader may not DELETE under the rules; jwtAuth alone does not apply them.
      const res = await call('authOnly', '/v1/items/a.txt', {
        method: 'DELETE',
        token: tokens.sign({ roles: ['reader'] }),
      });
      expect(res).toMatchObject({
        status: 200,
        body: { principal: { subject: 'alice', roles: ['reader'], by: 'jwt' } },
      });
      expect((await call('authOnly', '/v1/items/a.txt')).body).toEqual({ principal: null });
    });

    it('refuses a bad token with 401 and error="invalid_token", logging the reason only', async () => {
      const tampered = `${tokens.sign({ roles: ['reader'] }).slice(0, -4)}AAAA`;
      const res = await call('authOnly', '/healthz', {
        token: tampered,
        headers: { 'x-request-id': 'jwt-alone-bad-1' },
      });
      expect(res.status).toBe(401);
      expect(res.challenge).toBe('Bearer error="invalid_token"');
      expect((res.body as unknown as ProblemDetails).code).toBe('unauthenticated');
      expect(lines().find((l) => l.requestId === 'jwt-alone-bad-1')).toMatchObject({
        reason: 'bad_signature',
        transport: 'http',
      });
    });

    it('never reads a token from the query string, nor a header that looks like a principal', async () => {
      const token = tokens.sign({ roles: ['admin'] });
      const res = await call('authOnly', `/v1/items/a.txt?access_token=${token}`, {
        headers: { 'x-fluxguard-principal': JSON.stringify({ subject: 'root', roles: ['admin'] }), 'x-user': 'root' },
      });
      expect(res.body).toEqual({ principal: null });
    });

    it('authenticates a certificate that certificateRoles maps, never one of another CA', async () => {
      expect((await call('authOnly', '/v1/items/a', { agent: withBackupCert })).body).toEqual({
        principal: { subject: 'spiffe://fluxguard.dev/backup', roles: ['reader'], by: 'mtls' },
      });
      expect((await call('authOnly', '/v1/items/a', { agent: withStrangerCert })).body).toEqual({ principal: null });
    });
  });

  describe('rbac alone', () => {
    it('treats every caller as anonymous: 401 with a bare Bearer challenge on a protected route', async () => {
      const res = await call('rbacOnly', '/v1/items/a.txt');
      expect(res.status).toBe(401);
      expect(res.challenge).toBe('Bearer');
      // No authentication step ran: a valid token is not read.
      expect((await call('rbacOnly', '/v1/items/a.txt', { token: tokens.sign({ roles: ['reader'] }) })).status).toBe(
        401,
      );
    });

    it('lets a public route through, and meets a certificate rule with the verified certificate', async () => {
      expect(await call('rbacOnly', '/healthz')).toMatchObject({ status: 200, body: { principal: null } });
      expect((await call('rbacOnly', '/v1/internal', { agent: withClientCert })).status).toBe(200);
      expect((await call('rbacOnly', '/v1/internal', { agent: withStrangerCert })).status).toBe(401);
    });

    it('refuses a route no rule names with a 403 problem', async () => {
      const res = await call('rbacOnly', '/v1/nothing', { method: 'POST' });
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'permission_denied' });
    });
  });

  describe('jwtAuth then rbac', () => {
    it('answers every case as authorize() (the one-step guard) does', async () => {
      const reader = tokens.sign({ roles: ['reader'] });
      const admin = tokens.sign({ roles: ['admin'] });
      const cases: [string, { agent?: Agent; token?: string; method?: string }][] = [
        ['/healthz', {}],
        ['/healthz', { token: 'not.a.token' }],
        ['/v1/items/a.txt', {}],
        ['/v1/items/a.txt', { token: 'not.a.token' }],
        ['/v1/items/a.txt', { token: reader }],
        ['/v1/items/a.txt', { token: reader, method: 'DELETE' }],
        ['/v1/items/a.txt', { token: admin, method: 'DELETE' }],
        ['/v1/items/a.txt', { token: reader, method: 'HEAD' }],
        ['/v1/items/a.txt', { agent: withClientCert, token: reader }],
        ['/v1/items/a.txt', { agent: withBackupCert }],
        ['/v1/items/a.txt', { agent: withBackupCert, method: 'DELETE' }],
        ['/v1/internal', { agent: withClientCert }],
        ['/v1/internal', { agent: withStrangerCert }],
        ['/V1/items/a.txt', { token: admin }],
        ['/v1/nothing', { token: admin, method: 'POST' }],
      ];
      for (const [path, init] of cases) {
        const [a, b] = await Promise.all([call('separate', path, init), call('combined', path, init)]);
        const { requestId: _a, ...separate } = a.body;
        const { requestId: _b, ...combined } = b.body;
        expect({ path, init: init.method, status: a.status, challenge: a.challenge, body: separate }).toEqual({
          path,
          init: init.method,
          status: b.status,
          challenge: b.challenge,
          body: combined,
        });
      }
    });
  });

  it('refuses bad options at construction', () => {
    expect(() => jwtAuth({} as never)).toThrow(ConfigurationError);
    expect(() => jwtAuth({ authenticator: {} as never })).toThrow(/createAuthenticator/);
    // A copy would lose what makes a second guard forget the caller this one recorded.
    const copy = { ...createAuthenticator({}) };
    expect(() => jwtAuth({ authenticator: copy })).toThrow(/not a copy/);
    expect(() => rbac({} as never)).toThrow(ConfigurationError);
    expect(() => rbac({ authorizer: {} as never })).toThrow(/createAuthorizer/);
    // Any other control in the authorizer's place would authorize nothing: every call, anonymous
    // ones too, would reach the handler. The guard's authenticator is the easiest mix-up.
    const authorizer = createAuthorizer({ audit: audit, rbac: compileRbac(RULES) });
    for (const stand of [createAuthenticator({}), { ...authorizer }, { onStart: () => undefined }]) {
      expect(() => rbac({ authorizer: stand as never })).toThrow(/not an authenticator, another control or a copy/);
    }
    expect(rbac({ authorizer })).toBeDefined();
    expect(() => rbac({ authoriser: {} } as never)).toThrow(/did you mean "authorizer"/);
  });
});
