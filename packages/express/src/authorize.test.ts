import { request as httpsRequest } from 'node:https';
import express, { type Express } from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, compileRbac, createGuard, type RbacRules } from '@fluxguard/core';
import { authorize, createSecureServer, fluxguard, getClientCertificate, mtls, type ProblemDetails } from './index.js';
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
  'GET /v1/whoami': { public: true },
  'GET /v1/items/*path': { anyRoles: ['reader', 'admin'] },
  'DELETE /v1/items/*path': { anyRoles: ['admin'] },
  'GET /v1/admin': { anyRoles: ['admin'] },
  'GET /v1/internal': { certificate: [{ spiffeId: CLIENT_SPIFFE_ID }] },
  // Looser catch-all: what a differently-cased path would fall under.
  'GET /*rest': { authenticated: true },
};

/** TLS options with the PEM inline (no files, hence no reload), asking for a client certificate. */
function inlinePerOperationTls(pki: TestPki) {
  return {
    cert: pki.server.certPem,
    key: pki.server.keyPem,
    ca: pki.ca.certPem,
    clientCertificates: 'per-operation',
  } as const;
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
}

describe('authorize() over real TLS (per-operation client certificates)', () => {
  let pki: TestPki;
  let served: Awaited<ReturnType<typeof listen>>;
  const { audit, lines } = captureAudit();
  const tokens = createTokenSigner();
  const agents: Agent[] = [];
  let anonymous: Agent;
  let withClientCert: Agent;
  let withStrangerCert: Agent;
  let withSelfSigned: Agent;
  let withBackupCert: Agent;
  let withOtherSpiffe: Agent;

  function buildApp(caseSensitive: boolean): Express {
    const guard = createGuard({
      audit,
      jwt: tokens.verifier,
      rbac: compileRbac(RULES),
      certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['reader'] }],
    });
    const app = express();
    app.set('case sensitive routing', caseSensitive);
    const { before, after } = fluxguard({ audit, guard });
    app.use(before);
    app.get('/healthz', (_req, res) => {
      res.json({ status: 'ok' });
    });
    app.get('/v1/whoami', (req, res) => {
      res.json({
        certificate: getClientCertificate(req)?.spiffeId ?? null,
        principal: req.fluxguard.principal ?? null,
      });
    });
    app.get('/v1/items/*path', (req, res) => {
      res.json({ subject: req.fluxguard.principal?.subject, by: req.fluxguard.principal?.authenticatedBy });
    });
    app.delete('/v1/items/*path', (_req, res) => {
      res.status(204).end();
    });
    app.get('/v1/admin', (_req, res) => {
      res.json({ admin: true });
    });
    app.get('/v1/internal', (req, res) => {
      res.json({ internal: true, spiffeId: getClientCertificate(req)?.spiffeId });
    });
    app.use(after);
    return app;
  }

  beforeAll(async () => {
    pki = await createTestPki();
    served = await listen(perOperationServer(buildApp(true), pki, audit));
    const backup = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/backup' });
    const otherSpiffe = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/intruder' });
    anonymous = agentFor(pki.ca.certPem);
    withClientCert = agentFor(pki.ca.certPem, pki.client);
    withStrangerCert = agentFor(pki.ca.certPem, pki.stranger);
    withSelfSigned = agentFor(pki.ca.certPem, { certPem: pki.other.certPem, keyPem: pki.other.keyPem });
    withBackupCert = agentFor(pki.ca.certPem, backup);
    withOtherSpiffe = agentFor(pki.ca.certPem, otherSpiffe);
    agents.push(anonymous, withClientCert, withStrangerCert, withSelfSigned, withBackupCert, withOtherSpiffe);
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await served.close();
    await pki.remove();
  });

  async function call(
    path: string,
    init: { agent?: Agent; token?: string; method?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...init.headers };
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
    const res = await fetch(`${served.url}${path}`, {
      dispatcher: init.agent ?? anonymous,
      method: init.method ?? 'GET',
      headers,
    });
    return { status: res.status, headers: res.headers as unknown as Headers, text: await res.text() };
  }

  const problem = (answer: Answer): ProblemDetails => JSON.parse(answer.text) as ProblemDetails;

  it('lets a client without a certificate reach a public route on the mTLS port', async () => {
    const res = await call('/healthz');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ status: 'ok' });
  });

  it('refuses a missing token with 401 and a bare Bearer challenge', async () => {
    const res = await call('/v1/items/a.txt');
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(problem(res).code).toBe('unauthenticated');
  });

  it('refuses a bad token with 401 and error="invalid_token", and logs the reason only', async () => {
    const token = tokens.sign({ roles: ['reader'] });
    const tampered = `${token.slice(0, -4)}AAAA`;
    const res = await call('/v1/items/a.txt', { token: tampered, headers: { 'x-request-id': 'bad-token-1' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    expect(res.text).not.toMatch(/signature/i);
    expect(lines().find((l) => l.requestId === 'bad-token-1')).toMatchObject({
      event: 'request.denied',
      reason: 'bad_signature',
      transport: 'http',
    });
  });

  it('accepts a valid token and exposes the principal', async () => {
    const res = await call('/v1/items/a/b.txt', { token: tokens.sign({ roles: ['reader'] }) });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ subject: 'alice', by: 'jwt' });
  });

  it('never reads a token from the query string', async () => {
    const token = tokens.sign({ roles: ['reader'] });
    for (const name of ['access_token', 'token', 'authorization']) {
      const res = await call(`/v1/items/a.txt?${name}=${token}`);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
    }
  });

  it('refuses a token without the role with a 403 problem', async () => {
    const res = await call('/v1/items/a.txt', { token: tokens.sign({ roles: ['reader'] }), method: 'DELETE' });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toBeNull();
    expect(problem(res)).toMatchObject({ code: 'permission_denied', status: 403, type: 'about:blank' });
  });

  it('ignores headers that look like a principal', async () => {
    const forged = {
      'x-fluxguard-principal': JSON.stringify({ subject: 'root', roles: ['admin'] }),
      'x-principal': 'root',
      'x-user': 'root',
      'x-roles': 'admin',
      'x-forwarded-client-cert': `URI=${CLIENT_SPIFFE_ID}`,
    };
    expect((await call('/v1/admin', { headers: forged })).status).toBe(401);
    const reader = await call('/v1/admin', { headers: forged, token: tokens.sign({ roles: ['reader'] }) });
    expect(reader.status).toBe(403);
    const who = await call('/v1/whoami', { headers: forged });
    expect(JSON.parse(who.text)).toEqual({ certificate: null, principal: null });
    expect((await call('/v1/internal', { headers: forged })).status).toBe(401);
  });

  it('refuses two Authorization headers, even when one is valid', async () => {
    const good = tokens.sign({ roles: ['admin'] });
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpsRequest(
        { host: '127.0.0.1', port: served.port, path: '/v1/admin', ca: pki.ca.certPem, servername: 'localhost' },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.setHeader('authorization', [`Bearer ${good}`, 'Bearer other']);
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(401);
  });

  it('checks HEAD with the rule of GET', async () => {
    expect((await call('/v1/admin', { method: 'HEAD' })).status).toBe(401);
    expect((await call('/v1/admin', { method: 'HEAD', token: tokens.sign({ roles: ['reader'] }) })).status).toBe(403);
    expect((await call('/v1/admin', { method: 'HEAD', token: tokens.sign({ roles: ['admin'] }) })).status).toBe(200);
  });

  it('is not bypassed by a differently-cased path', async () => {
    const reader = tokens.sign({ roles: ['reader'] });
    // The catch-all rule lets the reader through the guard, but the case-sensitive router
    // then finds no route: the admin handler never runs.
    const res = await call('/V1/admin', { token: reader });
    expect(res.status).toBe(404);
    expect(res.text).not.toContain('admin');
    expect((await call('/v1/ADMIN', { token: reader })).status).toBe(404);
    expect((await call('/v1/admin', { token: reader })).status).toBe(403);
  });

  it('refuses every request of an app that routes case-insensitively (fail closed)', async () => {
    const server = createSecureServer(buildApp(false), { audit, tls: inlinePerOperationTls(pki) });
    const loose = await listen(server);
    try {
      const res = await fetch(`${loose.url}/V1/admin`, {
        dispatcher: anonymous,
        headers: { authorization: `Bearer ${tokens.sign({ roles: ['admin'] })}`, 'x-request-id': 'case-insensitive-1' },
      });
      expect(res.status).toBe(500);
      expect(await res.text()).not.toContain('case sensitive');
      const line = lines().find((l) => l.requestId === 'case-insensitive-1');
      expect(JSON.stringify(line)).toContain('case sensitive routing');
    } finally {
      await loose.close();
    }
  });

  it('passes a route with a certificate rule for a verified certificate', async () => {
    const res = await call('/v1/internal', { agent: withClientCert });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ internal: true, spiffeId: CLIENT_SPIFFE_ID });
  });

  it('refuses the certificate route without a certificate', async () => {
    expect((await call('/v1/internal')).status).toBe(401);
  });

  it('refuses a SPIFFE ID outside the rules with 403', async () => {
    const res = await call('/v1/internal', { agent: withOtherSpiffe });
    expect(res.status).toBe(403);
    expect(problem(res).code).toBe('permission_denied');
  });

  it('never takes an identity from a certificate of another CA or a self-signed one', async () => {
    for (const agent of [withStrangerCert, withSelfSigned]) {
      // The handshake completes (per-operation), but the certificate is not verified.
      const who = await call('/v1/whoami', { agent });
      expect(who.status).toBe(200);
      expect(JSON.parse(who.text)).toEqual({ certificate: null, principal: null });
      expect((await call('/v1/internal', { agent })).status).toBe(401);
    }
  });

  it('authenticates a certificate that certificateRoles maps, with no token', async () => {
    const res = await call('/v1/items/a.txt', { agent: withBackupCert });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ subject: 'spiffe://fluxguard.dev/backup', by: 'mtls' });
    expect((await call('/v1/items/a.txt', { agent: withBackupCert, method: 'DELETE' })).status).toBe(403);
  });

  it('merges a token with the verified certificate', async () => {
    const res = await call('/v1/items/a.txt', { agent: withClientCert, token: tokens.sign({ roles: ['reader'] }) });
    expect(JSON.parse(res.text)).toEqual({ subject: 'alice', by: 'both' });
  });

  it('refuses an unknown route by default (no rule)', async () => {
    const res = await call('/v1/nothing', { method: 'POST', token: tokens.sign({ roles: ['admin'] }) });
    expect(res.status).toBe(403);
  });
});

describe('authorize() and mtls() options', () => {
  it('refuses bad options at construction', () => {
    expect(() => authorize({} as never)).toThrow(ConfigurationError);
    expect(() => authorize({ guard: {} } as never)).toThrow(/createGuard/);
    expect(() => authorize({ guard: { check: () => undefined }, extra: 1 } as never)).toThrow(/unknown option "extra"/);
    // A guard whose authentication step is a copy: the copy would not forget another guard's caller.
    const guard = createGuard({ audit: captureAudit().audit, rbac: compileRbac({ 'GET /x': { public: true } }) });
    const copied = { ...guard, controls: guard.controls.map((control) => ({ ...control })) };
    expect(() => authorize({ guard: copied })).toThrow(/createGuard/);
    expect(() => mtls({ allow: [{ spiffeId: 'spiffe://a/(.*)' }] })).toThrow(ConfigurationError);
    expect(() => mtls({ alow: [] } as never)).toThrow(/^mtls: unknown option "alow" \(did you mean "allow"\?\)/);
  });
});

describe('mtls() over real TLS', () => {
  let pki: TestPki;
  let served: Awaited<ReturnType<typeof listen>>;
  const { audit, lines } = captureAudit();
  const agents: Agent[] = [];

  beforeAll(async () => {
    pki = await createTestPki();
    const app = express();
    const { before, after } = fluxguard({ audit });
    app.use(before);
    app.get('/open', (_req, res) => {
      res.json({ open: true });
    });
    app.get('/any', mtls(), (req, res) => {
      res.json({ spiffeId: getClientCertificate(req)?.spiffeId });
    });
    app.get('/ops', mtls({ allow: [{ spiffeId: 'spiffe://fluxguard.dev/ops/**' }] }), (_req, res) => {
      res.json({ ops: true });
    });
    app.use(after);
    served = await listen(createSecureServer(app, { audit, tls: inlinePerOperationTls(pki) }));
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await served.close();
    await pki.remove();
  });

  async function status(path: string, client?: { certPem: string; keyPem: string }): Promise<number> {
    const agent = agentFor(pki.ca.certPem, client);
    agents.push(agent);
    const res = await fetch(`${served.url}${path}`, { dispatcher: agent });
    await res.arrayBuffer();
    return res.status;
  }

  it('requires a verified certificate where mounted, and matches the allow rules', async () => {
    expect(await status('/open')).toBe(200);
    expect(await status('/any')).toBe(403);
    expect(await status('/any', pki.stranger)).toBe(403);
    expect(await status('/any', pki.client)).toBe(200);
    expect(await status('/ops', pki.client)).toBe(403);
    const ops = await pki.ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/ops/deployer' });
    expect(await status('/ops', ops)).toBe(200);
  });

  it('answers a certificate that failed verification exactly as it answers none, and logs why', async () => {
    const expired = await pki.ca.issueClientCertificate({ spiffeId: CLIENT_SPIFFE_ID, validity: 'expired' });
    const cases = [
      { client: undefined, reason: 'client_certificate_required', detail: undefined },
      { client: expired, reason: 'certificate_untrusted', detail: { certificateError: 'CERT_HAS_EXPIRED' } },
      {
        client: pki.stranger,
        reason: 'certificate_untrusted',
        detail: { certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      },
    ] as const;
    const answers: unknown[] = [];
    for (const { client, reason, detail } of cases) {
      const agent = agentFor(pki.ca.certPem, client);
      agents.push(agent);
      const res = await fetch(`${served.url}/any`, { dispatcher: agent });
      const requestId = res.headers.get('x-request-id') ?? '';
      const body = (await res.json()) as Record<string, unknown>;
      expect(body.requestId).toBe(requestId);
      // All the client gets but the request id and the date, which differ on every answer.
      const headers = Object.fromEntries(
        [...res.headers].filter(([name]) => name !== 'x-request-id' && name !== 'date'),
      );
      answers.push({ status: res.status, headers, body: { ...body, requestId: undefined } });
      const line = lines().filter((l) => l.requestId === requestId);
      expect(line).toEqual([expect.objectContaining({ event: 'request.denied', reason, code: 'permission_denied' })]);
      // Node's code alone: nothing of the certificate, whose subject is never read.
      expect(line[0]?.detail).toEqual(detail);
      expect(line[0]?.subject).toBeUndefined();
    }
    expect(answers[0]).toMatchObject({ status: 403, body: { code: 'permission_denied' } });
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
  });
});
