// `fluxguard().wrap(app)`: the work of `before`, done in front of Express. It must decide every
// request exactly as `before` mounted in the app does (same rules on the same path, same
// answers), run the controls once even with `before` still in the app, and leave the app
// guarded on its own when it is served without the wrapper.
import { connect } from 'node:net';
import express, { type Express } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, compileRbac, createGuard, type Control, type RbacRules } from '@fluxguard/core';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard, type ProblemDetails } from './index.js';
import { captureAudit, createTokenSigner, serve, type Served } from './testing/tls.js';

const RULES: RbacRules = {
  'GET /healthz': { public: true },
  'GET /v1/items/*path': { anyRoles: ['reader'] },
  'GET /v1/admin': { anyRoles: ['admin'] },
};

const audit = captureAudit();
const tokens = createTokenSigner();
const reader = tokens.sign({ roles: ['reader'] });

/** Counts, per request id, how often the pipeline started a request. */
function countingControl(): { control: Control; starts: Map<string, number> } {
  const starts = new Map<string, number>();
  return {
    starts,
    control: {
      name: 'counting',
      stage: 'caller-limit',
      onStart(call) {
        starts.set(call.requestId, (starts.get(call.requestId) ?? 0) + 1);
        return undefined;
      },
    },
  };
}

interface Site {
  readonly served: Served;
  readonly starts: Map<string, number>;
  readonly handled: string[];
}

/** One app, guarded by RBAC and a counting control, its routes answering who asked. */
function guardedApp(options: { caseSensitive?: boolean } = {}) {
  const counting = countingControl();
  const handled: string[] = [];
  const guard = fluxguard({
    audit: audit.audit,
    guard: createGuard({ audit: audit.audit, jwt: tokens.verifier, rbac: compileRbac(RULES) }),
    controls: [counting.control],
  });
  const app: Express = express();
  app.set('case sensitive routing', options.caseSensitive ?? true);
  app.use(guard.before);
  const answer: express.RequestHandler = (req, res) => {
    handled.push(req.fluxguard.requestId);
    res.json({ path: req.path, subject: req.fluxguard.principal?.subject ?? null });
  };
  app.get('/healthz', answer);
  app.get('/v1/items/*path', answer);
  app.get('/v1/admin', answer);
  app.use(guard.after);
  return { app, guard, starts: counting.starts, handled };
}

async function site(serveWith: 'before' | 'wrap', options: { caseSensitive?: boolean } = {}): Promise<Site> {
  const { app, guard, starts, handled } = guardedApp(options);
  const served = await serve(serveWith === 'wrap' ? guard.wrap(app) : app);
  return { served, starts, handled };
}

/** One request written byte for byte (any request target), and the answer's status and body. */
async function raw(
  port: number,
  target: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const lines = [`GET ${target} HTTP/1.1`, 'Host: fluxguard.test', 'Connection: close'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), body });
    });
    socket.end(`${lines.join('\r\n')}\r\n\r\n`);
  });
}

describe('fluxguard().wrap(app)', () => {
  let wrapped: Site;
  let mounted: Site;

  beforeAll(async () => {
    wrapped = await site('wrap');
    mounted = await site('before');
  });

  afterAll(async () => {
    await Promise.all([wrapped.served.close(), mounted.served.close()]);
  });

  it('serves a request as before does: request id, security headers, the principal, no X-Powered-By', async () => {
    const res = await fetch(`${wrapped.served.url}/v1/items/a.txt`, {
      headers: { authorization: `Bearer ${reader}`, 'x-request-id': 'wrap-ok-1' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ path: '/v1/items/a.txt', subject: 'alice' });
    expect(res.headers.get('x-request-id')).toBe('wrap-ok-1');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(res.headers.get('x-powered-by')).toBeNull();
  });

  it("runs the controls once per request, although the app's own before is mounted too", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `wrap-once-${String(i)}`);
    await Promise.all(
      ids.map(async (id) => {
        const res = await fetch(`${wrapped.served.url}/healthz`, { headers: { 'x-request-id': id } });
        await res.arrayBuffer();
      }),
    );
    for (const id of ids) expect(wrapped.starts.get(id)).toBe(1);
  });

  it('leaves the app guarded when it is served without the wrapper', async () => {
    const refused = await fetch(`${mounted.served.url}/v1/items/a.txt`, { headers: { 'x-request-id': 'bare-app-1' } });
    expect(refused.status).toBe(401);
    expect(mounted.handled).not.toContain('bare-app-1');
    const res = await fetch(`${mounted.served.url}/v1/items/a.txt`, {
      headers: { authorization: `Bearer ${reader}`, 'x-request-id': 'bare-app-2' },
    });
    expect(res.status).toBe(200);
    expect(mounted.starts.get('bare-app-2')).toBe(1);
  });

  it('decides every request target exactly as before in the app does', async () => {
    // The path rules match is the one the router matches: any difference is a rule skipped
    // or a route reached that its rule did not allow.
    const targets = [
      '/v1/items/a.txt',
      '/v1/items/a.txt?x=1&y=2',
      '/V1/items/a.txt',
      '/v1/Items/a.txt',
      '/v1/items/',
      '/v1/items//a',
      '/v1/items/a/',
      '/v1/items/%2e%2e/admin',
      '/v1/items/../admin',
      '/v1/%69tems/a',
      '/v1/./items/a',
      '//v1/items/a',
      '/v1/admin',
      '/v1/admin/',
      '/v1/admin;x',
      '/v1/admin?x=/v1/items/a',
      '/v1/admin#/v1/items/a',
      'http://fluxguard.test/v1/items/a.txt',
      'http://fluxguard.test/v1/admin',
      'http://evil.test//v1/items/a',
      '/healthz',
      '/healthz/',
      '/healthz?/v1/admin',
      '*',
      '/nowhere',
    ];
    for (const target of targets) {
      const headers = { authorization: `Bearer ${reader}` };
      const [viaWrap, viaBefore] = await Promise.all([
        raw(wrapped.served.port, target, headers),
        raw(mounted.served.port, target, headers),
      ]);
      expect({ target, status: viaWrap.status }).toEqual({ target, status: viaBefore.status });
      const code = (body: string): unknown => (body.startsWith('{') ? (JSON.parse(body) as ProblemDetails).code : body);
      expect({ target, code: code(viaWrap.body) }).toEqual({ target, code: code(viaBefore.body) });
    }
    // The cases that matter most: a reader never reaches the admin route, however it is written.
    expect(
      (await raw(wrapped.served.port, 'http://fluxguard.test/v1/admin', { authorization: `Bearer ${reader}` })).status,
    ).toBe(403);
    expect(
      (await raw(wrapped.served.port, '/v1/admin?x=/v1/items/a', { authorization: `Bearer ${reader}` })).status,
    ).toBe(403);
  });

  it('refuses 300 requests without a token sent at once, none reaching a route, and still serves', async () => {
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        fetch(`${wrapped.served.url}/v1/items/a.txt`, { headers: { 'x-request-id': `wrap-flood-${String(i)}` } }).then(
          async (res) => [res.status, ((await res.json()) as ProblemDetails).requestId] as const,
        ),
      ),
    );
    expect(answers.filter(([status]) => status !== 401)).toEqual([]);
    expect(new Set(answers.map(([, id]) => id)).size).toBe(300);
    expect(wrapped.handled.filter((id) => id.startsWith('wrap-flood-'))).toEqual([]);
    const res = await fetch(`${wrapped.served.url}/v1/items/b.txt`, { headers: { authorization: `Bearer ${reader}` } });
    expect(res.status).toBe(200);
  });
});

describe('fluxguard().wrap(app) misconfigured', () => {
  it('refuses what is not an Express app, at once', () => {
    const guard = fluxguard({ audit: audit.audit });
    expect(() => guard.wrap((() => undefined) as unknown as Express)).toThrow(ConfigurationError);
    expect(() => guard.wrap(undefined as unknown as Express)).toThrow(/wrap\(app\) takes an Express app/);
  });

  it('refuses, at wrap(app), an app that routes case-insensitively under RBAC', () => {
    const { app, guard } = guardedApp({ caseSensitive: false });
    expect(() => guard.wrap(app)).toThrow(
      "fluxguard: the app must route case-sensitively, as its rules match paths: app.set('case sensitive routing', true)",
    );
  });

  it('answers 500 for an app set to route case-insensitively after wrap(app), and keeps serving', async () => {
    const { app, guard, starts, handled } = guardedApp();
    const listener = guard.wrap(app);
    app.set('case sensitive routing', false);
    const loose: Site = { served: await serve(listener), starts, handled };
    try {
      for (const id of ['loose-1', 'loose-2']) {
        const res = await fetch(`${loose.served.url}/v1/items/a.txt`, {
          headers: { authorization: `Bearer ${reader}`, 'x-request-id': id },
        });
        expect(res.status).toBe(500);
        const body = (await res.json()) as ProblemDetails;
        expect(body).toMatchObject({ code: 'internal', requestId: id });
        expect(JSON.stringify(body)).not.toMatch(/case sensitive|routing|at \//);
      }
      expect(loose.handled).toEqual([]);
      const logged = audit.lines().find((line) => line.requestId === 'loose-1');
      expect(JSON.stringify(logged)).toContain('case sensitive routing');
    } finally {
      await loose.served.close();
    }
  });
});

describe('wrap(app) with middleware mounted ahead of before', () => {
  // Under wrap(app) the controls run in front of the app: a method override mounted first in it
  // (as for `before`) ran after them, and nothing said so.
  it('warns once, at wrap(app), naming them; says nothing when before comes first', async () => {
    const captured = captureWarnings('FLUXGUARD_WRAP_ORDER');
    try {
      const guard = fluxguard({ audit: audit.audit });
      const app = express();
      app.set('case sensitive routing', true);
      app.use(function methodOverride(_req, _res, next) {
        next();
      });
      app.use(guard.before);
      app.get('/x', (_req, res) => res.json({ x: true }));
      guard.wrap(app);
      const inOrder = express();
      inOrder.set('case sensitive routing', true);
      inOrder.use(guard.before);
      inOrder.use(function later(_req, _res, next) {
        next();
      });
      guard.wrap(inOrder);
      await captured.settled();
      expect(captured.messages()).toHaveLength(1);
      expect(captured.messages()[0]).toContain('(methodOverride) run after them');
    } finally {
      captured.stop();
    }
  });
});
