// Apps that run a sub-app on objects of their own making for the request: a copy (`{ ...req }`),
// `Object.create(req)`, an object with a few of its fields, and for the response a `Proxy` or
// `Object.create(res)`. Such a stand-in belongs to the call whose response it is answered with;
// the sub-app's guards decide that call, whatever the app does with their error, and never
// another client's.
import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import { afterAll, describe, expect, it, vi } from 'vitest';
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  SecurityError,
  compileRbac,
  createAuthenticator,
  createAuthorizer,
  createContextKey,
  type Control,
} from '@fluxguard/core';
import { z } from 'zod';
import { controls, fluxguard, jwtAuth, rbac, requestId, setPrincipal, validate } from './index.js';
import { guardedApps, oneStandIn, throughOneStandIn } from './testing/guarded-app.js';
import { stateOf } from './context.js';
import { captureAudit, createTokenSigner, type Served } from './testing/tls.js';

const audit = captureAudit();
const tokens = createTokenSigner();
const alice = `Bearer ${tokens.sign({ sub: 'alice' })}`;
const bob = `Bearer ${tokens.sign({ sub: 'bob' })}`;
const forged = `Bearer ${tokens.sign({ sub: 'mallory' })}x`;
const authenticated = () => jwtAuth({ authenticator: createAuthenticator({ jwt: tokens.verifier }) });
const ran: string[] = [];
const apps = guardedApps(audit.audit);
afterAll(apps.closeAll);
const guardedApp = apps.serve;

async function answer(
  served: Served,
  path: string,
  authorization?: string,
  init: RequestInit = {},
): Promise<{ status: number; body: string }> {
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  const res = await fetch(`${served.url}${path}`, { headers, signal: AbortSignal.timeout(5_000), ...init });
  return { status: res.status, body: await res.text() };
}

const sleep = (ms: number) =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

/** The callers the sub-apps' `/me` read from `req.fluxguard` on the stand-in they were run on. */
const subjects: unknown[] = [];

/**
 * A sub-app with the given guards in front of a `/me` that reads the caller from `req.fluxguard`
 * and hands the request back (Express answers nothing through a `Proxy` of the response).
 */
function subApp(...guards: (express.RequestHandler | express.RequestHandler[])[]): express.Express {
  const inner = express();
  inner.set('case sensitive routing', true);
  if (guards.length > 0) inner.use(...guards);
  inner.get('/me', (req, _res, next) => {
    subjects.push(req.fluxguard.principal?.subject ?? null);
    next();
  });
  return inner;
}

/** A body limit of 64 KiB, as an app's own control. */
function smallBodies(): Control {
  const seen = createContextKey<number>('small-bodies.bytes');
  return {
    name: 'small-bodies',
    stage: 'caller-limit',
    onMessage(chunk, _call, context) {
      const total = (context.get(seen) ?? 0) + (chunk as Buffer).length;
      context.set(seen, total);
      if (total > 64 * 1024) throw new SecurityError('payload_too_large', { reason: 'app.small_bodies' });
    },
  };
}

type Make = (req: Request) => Request;

/** An object of the app's making taken for a request. */
function asRequest(fields: object): Request {
  return fields as Request;
}
type MakeResponse = (res: Response) => Response;

const requests: [string, Make][] = [
  ['a copy ({ ...req })', (req) => asRequest({ ...req })],
  ['a copy with its own rawHeaders', (req) => asRequest({ ...req, rawHeaders: [...req.rawHeaders] })],
  [
    'Object.create(req) with its own url and method',
    (req) => Object.assign(Object.create(req) as Request, { url: req.url, method: req.method }),
  ],
  ['an object of its few fields', (req) => asRequest({ url: req.url, method: req.method, headers: req.headers })],
];
const responses: [string, MakeResponse][] = [
  ['the response', (res) => res],
  ['a Proxy of it', (res) => new Proxy(res, {})],
  ['Object.create(res)', (res) => Object.create(res) as Response],
];

describe('a sub-app run on stand-ins, its error dropped', () => {
  for (const [requestName, makeRequest] of requests) {
    for (const [responseName, makeResponse] of responses) {
      for (const ownBefore of [true, false]) {
        const name = `${requestName}, ${responseName}, ${ownBefore ? 'with' : 'without'} a before of its own`;
        it(`never serves the routes behind to a forged token, and serves a valid one once: ${name}`, async () => {
          const inner = ownBefore
            ? subApp(fluxguard({ audit: audit.audit }).before, authenticated())
            : subApp(authenticated());
          const served = await guardedApp((app) => {
            app.use((req: Request, res: Response, next: NextFunction) => {
              inner(makeRequest(req), makeResponse(res), () => {
                next();
              });
            });
            app.get('/secret', (_req, res) => {
              ran.push(name);
              res.json({ secret: 42 });
            });
            app.get('/me', (_req, res) => {
              res.json({ subjects });
            });
          });
          ran.length = 0;
          subjects.length = 0;
          const refused = await answer(served, '/secret', forged);
          expect(refused.status).toBe(401);
          expect(ran).toEqual([]);
          const allowed = await answer(served, '/secret', alice);
          expect(allowed.status).toBe(200);
          expect(ran).toEqual([name]);
          // The sub-app's own route reads the caller through `req.fluxguard` on the stand-in.
          const me = await answer(served, '/me', alice);
          expect({ status: me.status, body: JSON.parse(me.body) as unknown }).toEqual({
            status: 200,
            body: { subjects: ['alice'] },
          });
        });
      }
    }
  }
});

describe('stand-ins made of stand-ins', () => {
  const firsts: [string, Make][] = [
    ['a copy', (req) => asRequest({ ...req })],
    ['Object.create(req)', (req) => Object.assign(Object.create(req) as Request, { url: req.url, method: req.method })],
  ];
  for (const [firstName, makeFirst] of firsts) {
    for (const ownBefore of [true, false]) {
      it(`a copy through a guarded sub-app after ${firstName} went through a plain one (which points the response at it), ${ownBefore ? 'with' : 'without'} a before of its own`, async () => {
        const plain = express();
        plain.use((_req, _res, next) => {
          next();
        });
        const inner = ownBefore
          ? subApp(fluxguard({ audit: audit.audit }).before, authenticated())
          : subApp(authenticated());
        const served = await guardedApp((app) => {
          app.use((req: Request, res: Response, next: NextFunction) => {
            plain(makeFirst(req), res, () => {
              next();
            });
          });
          app.use((req: Request, res: Response, next: NextFunction) => {
            inner(asRequest({ ...req }), new Proxy(res, {}), () => {
              next();
            });
          });
          app.get('/secret', (_req, res) => {
            res.json({ secret: 42 });
          });
        });
        expect((await answer(served, '/secret', forged)).status).toBe(401);
        expect((await answer(served, '/secret', alice)).status).toBe(200);
      });
    }
  }

  it('refuses, never routes past, an Object.create(req) stand-in that keeps no url or method of its own', async () => {
    // Once the sub-app has replaced its prototype, such a stand-in has no url: Express's router
    // runs none of the sub-app's layers, its guard included, and hands it back as unmatched.
    const inner = subApp(authenticated());
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        inner(Object.create(req) as Request, res, () => {
          next();
        });
      });
      app.get('/secret', (_req, res) => {
        ran.push('unroutable');
        res.json({ secret: 42 });
      });
    });
    ran.length = 0;
    const refused = await answer(served, '/secret', forged);
    expect(refused.status).toBe(500);
    expect(refused.body).not.toContain('stand-in');
    expect((await answer(served, '/secret', alice)).status).toBe(500);
    expect(ran).toEqual([]);
  });
});

describe('one call never gets another call’s principal or refusal', () => {
  it('a response made up for a sub-app and shared: a forged request held open does not refuse another client’s valid one', async () => {
    const inner = express();
    inner.disable('x-powered-by');
    inner.use(authenticated());
    const madeUp = new EventEmitter();
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        inner(req, madeUp as unknown as Response, () => {
          req.res = res;
          next();
        });
      });
      app.get('/slow', async (_req, res) => {
        await sleep(600);
        res.json({ slow: true });
      });
      app.get('/secret', (req, res) => {
        res.json({ subject: req.fluxguard.principal?.subject ?? null });
      });
    });
    // The forged request is pipelined behind a slow one, so its call stays open meanwhile.
    const attacker = new Promise<string>((resolve, reject) => {
      const socket = connect(served.port, '127.0.0.1');
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (data += chunk));
      socket.on('error', reject);
      socket.on('close', () => {
        resolve(data);
      });
      socket.write(
        `GET /slow HTTP/1.1\r\nHost: x\r\nAuthorization: ${bob}\r\n\r\n` +
          `GET /secret HTTP/1.1\r\nHost: x\r\nAuthorization: ${forged}\r\nConnection: close\r\n\r\n`,
      );
    });
    await sleep(100);
    const victim = await answer(served, '/secret', alice);
    expect({ status: victim.status, body: JSON.parse(victim.body) as unknown }).toEqual({
      status: 200,
      body: { subject: 'alice' },
    });
    const statuses = [...(await attacker).matchAll(/HTTP\/1\.1 (\d+)/g)].map((match) => match[1]);
    expect(statuses).toEqual(['200', '401']);
  });

  it('one stand-in an app fills anew for every request, two requests overlapping: neither reads the other’s caller', async () => {
    const inner = express();
    inner.use(authenticated());
    const seen: { token: string; before: unknown; after: unknown }[] = [];
    inner.get('/who', async (req, res) => {
      const token = req.get('authorization') === alice ? 'alice' : 'bob';
      const before = stateOf(req)?.principal?.subject ?? null;
      await sleep(Number(req.query.wait ?? 0));
      const after = stateOf(req)?.principal?.subject ?? null;
      seen.push({ token, before, after });
      res.json({ before, after });
    });
    const served = await guardedApp((app) => {
      app.use(throughOneStandIn(inner));
    });
    const first = answer(served, '/who?wait=300', alice);
    await sleep(100);
    const second = answer(served, '/who?wait=0', bob);
    const [a, b] = await Promise.all([first, second]);
    // Alice's handler, resumed after the second request came in, reads no caller rather than Bob;
    // Bob's request finds its stand-in standing for two calls and is refused.
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toEqual({ before: 'alice', after: null });
    expect(b.status).toBe(500);
    for (const entry of seen) {
      for (const subject of [entry.before, entry.after]) expect([entry.token, null]).toContain(subject);
    }
    // Used again once both have ended, it stands for the new call.
    expect(JSON.parse((await answer(served, '/who', bob)).body)).toEqual({ before: 'bob', after: 'bob' });
  });
});

describe('one stand-in object used by every request through a router (no app takes it in)', () => {
  it('while one call lasts, a forged or missing token is never served, and no call reads another’s caller', async () => {
    const fill = oneStandIn();
    const legacy = express();
    legacy.use(authenticated());
    legacy.get('/slow', async (req, res) => {
      await sleep(400);
      // Read after the object was filled for other requests: this call's caller, or none.
      res.json({ subject: (req.fluxguard as typeof req.fluxguard | undefined)?.principal?.subject ?? null });
    });
    const api = express.Router();
    api.use(authenticated());
    api.get('/api/secret', (req, res) => {
      res.json({ subject: req.fluxguard.principal?.subject ?? null });
    });
    const served = await guardedApp((app) => {
      app.use('/legacy', (req: Request, res: Response, next: NextFunction) => {
        legacy(fill(req), res, () => {
          next();
        });
      });
      app.use((req: Request, res: Response, next: NextFunction) => {
        api(fill(req), res, () => {
          next();
        });
      });
      app.get('/api/secret', (_req, res) => {
        ran.push('outer secret');
        res.json({ outer: true });
      });
    });
    ran.length = 0;
    const slow = answer(served, '/legacy/slow', alice);
    await sleep(100);
    const refusedOrFailed = [await answer(served, '/api/secret', forged), await answer(served, '/api/secret')];
    for (const { status } of refusedOrFailed) expect([401, 500]).toContain(status);
    const asBob = await answer(served, '/api/secret', bob);
    expect([200, 500]).toContain(asBob.status);
    if (asBob.status === 200) expect(JSON.parse(asBob.body)).toEqual({ subject: 'bob' });
    const first = await slow;
    expect([200, 500]).toContain(first.status);
    if (first.status === 200)
      expect(['alice', null]).toContain((JSON.parse(first.body) as { subject: unknown }).subject);
    expect(ran).toEqual([]);
  });

  it('while one call lasts, an upload through the router’s body limit never reaches the handler whole', async () => {
    const limit = smallBodies();
    const fill = oneStandIn();
    const legacy = express();
    legacy.get('/slow', async (_req, res) => {
      await sleep(400);
      res.json({ slow: true });
    });
    const uploads = express.Router();
    uploads.use(controls('small-bodies', [limit]));
    const received: number[] = [];
    const served = await guardedApp((app) => {
      app.use('/legacy', (req: Request, res: Response, next: NextFunction) => {
        legacy(fill(req), res, () => {
          next();
        });
      });
      app.use((req: Request, res: Response, next: NextFunction) => {
        uploads(fill(req), res, next);
      });
      app.put('/upload', async (req, res) => {
        let bytes = 0;
        for await (const chunk of req) bytes += (chunk as Buffer).length;
        received.push(bytes);
        res.json({ bytes });
      });
    });
    const slow = answer(served, '/legacy/slow', alice);
    await sleep(100);
    const large = await answer(served, '/upload', undefined, { method: 'PUT', body: Buffer.alloc(512 * 1024, 1) });
    expect([413, 500]).toContain(large.status);
    await slow;
    expect(received).toEqual([]);
  });

  it('an asynchronous refusal found after another call took the object in stays with its own call', async () => {
    // An API-key look-up that takes a moment, as a database would; only Alice's key is known.
    const apiKey: Control = {
      name: 'api-key',
      stage: 'authentication',
      async onStart(call) {
        await sleep(5);
        if (call.headers.get('authorization') === alice) return undefined;
        throw new SecurityError('unauthenticated', { reason: 'app.unknown_key' });
      },
    };
    const inner = express();
    inner.use(controls('api-key', [apiKey]));
    const served = await guardedApp((app) => {
      app.use(throughOneStandIn(inner));
      app.get('/slow', async (_req, res) => {
        await sleep(30);
        res.json({ slow: true });
      });
      app.get('/secret', (_req, res) => {
        res.json({ secret: 42 });
      });
    });
    const outcomes = new Set<string>();
    const sharedRefusals: string[] = [];
    for (let trial = 0; trial < 40; trial += 1) {
      const refused = answer(served, '/secret', forged);
      await sleep(1 + (trial % 8));
      const [mallory, alices] = await Promise.all([refused, answer(served, '/slow', alice)]);
      outcomes.add(`${String(mallory.status)}/${String(alices.status)}`);
      for (const { status, body } of [mallory, alices]) {
        if (status === 500) sharedRefusals.push((JSON.parse(body) as { requestId: string }).requestId);
      }
    }
    // Mallory is refused; Alice is served, or refused for the shared object, never with Mallory's
    // refusal. Alice's request can reach the app first (a connection already open), and then
    // Mallory's is the one refused for the shared object.
    for (const outcome of outcomes) expect(['401/200', '401/500', '500/200']).toContain(outcome);
    await vi.waitFor(() => {
      for (const id of sharedRefusals) {
        expect(JSON.stringify(audit.lines().find((line) => line.requestId === id))).toContain(
          'stood in for the requests of two calls at once',
        );
      }
    });
  }, 20_000);
});

describe('a router run on an object of the app’s making', () => {
  it('with a before of its own and no app to find: refused, and the log line says why', async () => {
    const routes = express.Router();
    routes.use(fluxguard({ audit: audit.audit }).before);
    routes.get('/x', (_req, res) => {
      res.json({ inner: true });
    });
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        routes(asRequest({ url: req.url, method: req.method, headers: req.headers, res }), res, () => {
          next();
        });
      });
      app.get('/x', (_req, res) => {
        res.json({ outer: true });
      });
    });
    const refused = await answer(served, '/x');
    expect(refused.status).toBe(500);
    expect(refused.body).not.toContain('app');
    expect(JSON.stringify(audit.lines().at(-1))).toContain('ran on a request no Express app took in');
  });
});

describe('one stand-in object an app fills anew, taken in while another call holds it', () => {
  /**
   * {@link oneStandIn}, with the object it fills. The headers and the app are copied too: Node
   * and Express keep them behind its prototypes, and a router, unlike an app, gives the object
   * none to read them by.
   */
  function oneObject(): { fill: (req: Request) => Request; object: () => object | undefined } {
    const fill = oneStandIn();
    let last: Request | undefined;
    return {
      fill: (req) => (last = Object.assign(fill(req), { headers: req.headers, app: req.app })),
      object: () => last,
    };
  }

  const before = () => fluxguard({ audit: audit.audit }).before;

  /** A slow route behind a `before` of its own (or `requestId()`) and `jwtAuth`. */
  function slowGuarded(start: express.RequestHandler | express.RequestHandler[]): express.Router {
    const routes = express.Router();
    routes.use(start, authenticated());
    routes.get('/slow', async (req, res) => {
      await sleep(400);
      // Through the call state: a router leaves the object no prototype with `req.fluxguard`.
      res.json({ subject: stateOf(req)?.principal?.subject ?? null });
    });
    return routes;
  }

  it.each([
    [
      'a sub-app with a before of its own',
      (): express.Router | express.Express => express().use(slowGuarded(before())),
    ],
    ['a router with a before of its own', () => slowGuarded(before())],
    ['a router with requestId()', () => slowGuarded(requestId())],
  ])(
    '%s: a forged token is never served, no caller is read across calls, and the object takes no state of its own',
    async (_name, makeInner) => {
      const inner = makeInner();
      const { fill, object } = oneObject();
      const outer: string[] = [];
      const served = await guardedApp((app) => {
        app.use((req: Request, res: Response, next: NextFunction) => {
          inner(fill(req), res, () => {
            next();
          });
        });
        app.get('/secret', (req, res) => {
          outer.push(req.fluxguard.principal?.subject ?? 'anonymous');
          res.json({ subject: req.fluxguard.principal?.subject ?? null });
        });
      });
      const slow = answer(served, '/slow', alice);
      await sleep(100);
      // While Alice's call holds the object, every other request through it is refused.
      for (const token of [forged, undefined, bob]) expect((await answer(served, '/secret', token)).status).toBe(500);
      const first = await slow;
      expect(first.status).toBe(200);
      expect(['alice', null]).toContain((JSON.parse(first.body) as { subject: unknown }).subject);
      expect(outer).toEqual([]);
      // A state of its own would have been every later request's, ended: they would hang.
      expect(Object.hasOwn(object() ?? {}, 'fluxguard')).toBe(false);
      await sleep(50);
      expect((await answer(served, '/secret', forged)).status).toBe(401);
      expect(await answer(served, '/secret', bob)).toEqual({ status: 200, body: '{"subject":"bob"}' });
      expect(await answer(served, '/slow', alice)).toEqual({ status: 200, body: '{"subject":"alice"}' });
      expect(outer).toEqual(['bob']);
    },
  );

  it('validate() of a sub-app with no before: a refusal while the object is held is no other request’s later', async () => {
    const inner = express();
    inner.use(validate({ query: z.strictObject({ n: z.string().regex(/^\d+$/).optional() }) }));
    inner.get('/slow', async (_req, res) => {
      await sleep(400);
      res.json({ slow: true });
    });
    inner.get('/inner', (_req, res) => {
      res.json({ inner: true });
    });
    const { fill } = oneObject();
    const outer: string[] = [];
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        inner(fill(req), res, () => {
          next();
        });
      });
      app.get('/ok', (req, res) => {
        outer.push(req.url);
        res.json({ ok: true });
      });
    });
    const slow = answer(served, '/slow');
    await sleep(100);
    expect((await answer(served, '/ok?n=x')).status).toBe(500);
    expect((await slow).status).toBe(200);
    await sleep(50);
    expect(await answer(served, '/inner?n=1')).toEqual({ status: 200, body: '{"inner":true}' });
    expect(await answer(served, '/ok')).toEqual({ status: 200, body: '{"ok":true}' });
    expect((await answer(served, '/ok?n=x')).status).toBe(400);
    expect(outer).toEqual(['/ok']);
  });
});

describe('one object filled with a few fields of each request, no response with it', () => {
  /** One object an app fills with `url`, `method` and `headers` alone, for every request. */
  function fewFields(): (req: Request) => Request {
    const shared: Record<string, unknown> = {};
    return (req) => asRequest(Object.assign(shared, { url: req.url, method: req.method, headers: req.headers }));
  }

  /** A sub-app whose slow route is held open by the first call, run on `fill`. */
  function slowLegacy(fill: (req: Request) => Request, ...guards: express.RequestHandler[]): express.RequestHandler {
    const legacy = express();
    if (guards.length > 0) legacy.use(...guards);
    legacy.get('/slow', async (req, res) => {
      await sleep(300);
      res.json({ subject: stateOf(req)?.principal?.subject ?? null });
    });
    return (req, res, next) => {
      legacy(fill(req), res, () => {
        next();
      });
    };
  }

  it('run through a guarded router by a second call: its guard never decides by the first caller', async () => {
    const fill = fewFields();
    const api = express.Router();
    api.use(authenticated());
    const inside: unknown[] = [];
    api.get('/api/me', (req, res) => {
      inside.push(stateOf(req)?.principal?.subject ?? null);
      res.json({ subject: stateOf(req)?.principal?.subject ?? null });
    });
    const served = await guardedApp((app) => {
      app.use('/legacy', slowLegacy(fill, authenticated()));
      app.use((req: Request, res: Response, next: NextFunction) => {
        api(fill(req), res, () => {
          next();
        });
      });
    });
    const slow = answer(served, '/legacy/slow', alice);
    await sleep(100);
    for (const token of [forged, undefined, bob]) expect((await answer(served, '/api/me', token)).status).toBe(500);
    // Read after the object stood for other calls too: Alice, or no one.
    const first = await slow;
    expect(first.status).toBe(200);
    expect(['{"subject":"alice"}', '{"subject":null}']).toContain(first.body);
    expect(inside).toEqual([]);
    await sleep(50);
    expect((await answer(served, '/api/me', forged)).status).toBe(401);
    expect(await answer(served, '/api/me', bob)).toEqual({ status: 200, body: '{"subject":"bob"}' });
  });

  it('a principal set in the router by a second call never lands in the first call', async () => {
    const fill = fewFields();
    const api = express.Router();
    api.use((req, _res, next) => {
      // An authenticator of the app's own, as setPrincipal's example has it.
      if (req.headers.authorization === alice)
        setPrincipal(req, {
          subject: 'alice',
          roles: ['admin'],
          scopes: [],
          claims: {},
          certificate: undefined,
          authenticatedBy: 'jwt',
        });
      next();
    });
    api.get('/api/me', (req, res) => {
      res.json({ subject: stateOf(req)?.principal?.subject ?? null });
    });
    const served = await guardedApp((app) => {
      app.use('/legacy', slowLegacy(fill));
      app.use((req: Request, res: Response, next: NextFunction) => {
        api(fill(req), res, () => {
          next();
        });
      });
    });
    const anonymous = answer(served, '/legacy/slow');
    await sleep(100);
    expect((await answer(served, '/api/me', alice)).status).toBe(500);
    expect(await anonymous).toEqual({ status: 200, body: '{"subject":null}' });
    expect(await answer(served, '/api/me', alice)).toEqual({ status: 200, body: '{"subject":"alice"}' });
  });

  it('a refusal of validate() in the router for a second call is never the first call’s', async () => {
    const shared: Record<string, unknown> = {};
    const fill = (req: Request): Request => {
      for (const key of Object.keys(shared)) Reflect.deleteProperty(shared, key);
      // What a router cannot read through the object's prototype (it gives it none) copied too.
      return Object.assign(shared, req, { headers: req.headers, app: req.app, query: req.query }) as Request;
    };
    const api = express.Router();
    api.use(validate({ query: z.strictObject({ n: z.string().regex(/^\d+$/).optional() }) }));
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        api(fill(req), res, () => {
          next();
        });
      });
      app.get('/slow', async (_req, res) => {
        await sleep(300);
        res.json({ slow: true });
      });
      app.get('/x', (_req, res) => {
        res.json({ x: true });
      });
    });
    const slow = answer(served, '/slow');
    await sleep(100);
    expect((await answer(served, '/x?n=evil')).status).toBe(500);
    expect(await slow).toEqual({ status: 200, body: '{"slow":true}' });
    expect((await answer(served, '/x?n=evil')).status).toBe(400);
  });

  it('a sub-app within the sub-app, handed a stand-in of the response, runs for the same call', async () => {
    const fill = fewFields();
    const deeper = express();
    deeper.use(authenticated());
    const inside: unknown[] = [];
    // Handed back: Express answers nothing through a stand-in of the response.
    deeper.get('/deep/me', (req, _res, next) => {
      inside.push(stateOf(req)?.principal?.subject ?? null);
      next();
    });
    const inner = express();
    inner.use((req, res, next) => {
      deeper(req, Object.create(res) as Response, next);
    });
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        inner(fill(req), res, () => {
          next();
        });
      });
      app.get('/deep/me', (_req, res) => {
        // Not `res.json`: Express left `res.req` on the stand-in, and its `res` on the stand-in
        // of the response, whose prototype the deeper app replaced (Express alone fails so).
        res.end('{"outer":true}');
      });
    });
    expect(await answer(served, '/deep/me', alice)).toEqual({ status: 200, body: '{"outer":true}' });
    expect((await answer(served, '/deep/me', forged)).status).toBe(401);
    expect(inside).toEqual(['alice']);
  });

  it('handed by a second call to jwtAuth() or validate() directly: refused, and the first call keeps its caller and its answer', async () => {
    const fill = (() => {
      const shared: Record<string, unknown> = {};
      return (req: Request) =>
        asRequest(Object.assign(shared, { url: req.url, method: req.method, headers: req.headers, query: req.query }));
    })();
    const auth = authenticated();
    const check = validate({ query: z.strictObject({ n: z.string().regex(/^\d+$/).optional() }) });
    const served = await guardedApp((app) => {
      app.use('/legacy', slowLegacy(fill, authenticated()));
      // The app runs fluxguard's middleware itself on the object, with this request's response.
      for (const [path, middleware] of [
        ['/auth', auth],
        ['/check', check],
      ] as const) {
        app.get(path, (req: Request, res: Response, next: NextFunction) => {
          const standIn = fill(req);
          middleware(standIn, res, (error?: unknown) => {
            if (error === undefined) res.json({ subject: stateOf(standIn)?.principal?.subject ?? null });
            else next(error);
          });
        });
      }
    });
    const slow = answer(served, '/legacy/slow', alice);
    await sleep(100);
    for (const token of [forged, bob]) expect((await answer(served, '/auth', token)).status).toBe(500);
    expect((await answer(served, '/check?n=evil')).status).toBe(500);
    const first = await slow;
    expect(first.status).toBe(200);
    expect(['{"subject":"alice"}', '{"subject":null}']).toContain(first.body);
    await sleep(50);
    expect((await answer(served, '/auth', forged)).status).toBe(401);
    expect(await answer(served, '/auth', bob)).toEqual({ status: 200, body: '{"subject":"bob"}' });
    expect((await answer(served, '/check?n=evil')).status).toBe(400);
  });

  it.each(['direct', 'router'] as const)(
    'carrying the first call’s response, run by a second call (%s) with its own: never decided by the first caller',
    async (via) => {
      const admin = `Bearer ${tokens.sign({ sub: 'alice', roles: ['admin'] })}`;
      const authorizer = createAuthorizer({
        audit: audit.audit,
        rbac: compileRbac({ 'GET /*path': { anyRoles: ['admin'] } }),
      });
      const shared: Record<string, unknown> = {};
      let first = true;
      // The object keeps the response of the first request it was filled for.
      const fill = (req: Request): Request => {
        if (first) Object.assign(shared, { res: req.res });
        first = false;
        return asRequest(
          Object.assign(shared, { url: req.url, method: req.method, headers: req.headers, app: req.app }),
        );
      };
      const auth = authenticated();
      const guard = rbac({ authorizer });
      const router = express.Router();
      router.use(auth, guard);
      const run = (standIn: Request, res: Response, done: NextFunction): void => {
        if (via === 'router') router(standIn, res, done);
        else
          auth(standIn, res, (error?: unknown) => {
            if (error === undefined) guard(standIn, res, done);
            else done(error);
          });
      };
      const served = await guardedApp((app) => {
        for (const [path, answerIt] of [
          ['/a', async (res: Response) => sleep(300).then(() => res.json({ a: true }))],
          ['/admin', (res: Response) => res.json({ secret: true })],
        ] as const) {
          app.get(path, (req: Request, res: Response, next: NextFunction) => {
            run(fill(req), res, (error?: unknown) => {
              if (error === undefined) void answerIt(res);
              else next(error);
            });
          });
        }
      });
      const held = answer(served, '/a', admin);
      await sleep(100);
      for (const token of [forged, undefined]) expect((await answer(served, '/admin', token)).status).toBe(500);
      expect((await held).status).toBe(200);
      expect((await answer(served, '/admin', forged)).status).toBe(401);
    },
  );

  it.each(['directly', 'through a sub-app', 'through a router'] as const)(
    'the first call hands the object on again (%s) after a second call was refused and ended: served',
    async (via) => {
      const shared: Record<string, unknown> = {};
      // All of each request, its response included, as oneStandIn fills it.
      const fill = (req: Request) => {
        for (const key of Object.keys(shared)) Reflect.deleteProperty(shared, key);
        return asRequest(Object.assign(shared, req, { headers: req.headers, app: req.app }));
      };
      const auth = authenticated();
      const run: (standIn: Request, res: Response, done: NextFunction) => void =
        via === 'directly'
          ? auth
          : via === 'through a sub-app'
            ? express().use(authenticated())
            : express.Router().use(authenticated());
      const served = await guardedApp((app) => {
        app.get('/a', (req: Request, res: Response, next: NextFunction) => {
          run(fill(req), res, (error?: unknown) => {
            if (error !== undefined) {
              next(error);
              return;
            }
            setTimeout(() => {
              const again = fill(req);
              run(again, res, (later?: unknown) => {
                if (later === undefined) res.json({ a: stateOf(req)?.principal?.subject ?? null });
                else next(later);
              });
            }, 300);
          });
        });
        app.get('/b', (req: Request, res: Response, next: NextFunction) => {
          run(fill(req), res, (error?: unknown) => {
            if (error === undefined) res.json({ b: true });
            else next(error);
          });
        });
      });
      const first = answer(served, '/a', alice);
      await sleep(100);
      expect((await answer(served, '/b', bob)).status).toBe(500);
      expect(await first).toEqual({ status: 200, body: '{"a":"alice"}' });
    },
  );

  it('filled by a second call that never hands it on, while the first hands it to its sub-app: the second is served', async () => {
    const fill = oneStandIn();
    const inner = express();
    inner.get(
      '/a',
      (_req, _res, next) => {
        setTimeout(next, 200);
      },
      authenticated(),
      (req, res) => {
        res.json({ a: stateOf(req)?.principal?.subject ?? null });
      },
    );
    const served = await guardedApp((app) => {
      app.get('/a', (req: Request, res: Response, next: NextFunction) => {
        inner(fill(req), res, next);
      });
      app.get(
        '/b',
        (req: Request, _res: Response, next: NextFunction) => {
          // Filled, then never used: the first call's object now holds this request's fields.
          fill(req);
          setTimeout(next, 300);
        },
        (req: Request, res: Response) => {
          res.json({ b: req.fluxguard.principal?.subject ?? null });
        },
      );
    });
    const first = answer(served, '/a', alice);
    await sleep(80);
    expect(await answer(served, '/b', bob)).toEqual({ status: 200, body: '{"b":null}' });
    // Its guard would have read the second request's fields: refused.
    expect((await first).status).toBe(500);
  });

  it('handed to a sub-app with a response made up for it, by a second call: the sub-app never reads the first caller', async () => {
    const fill = fewFields();
    const api = express();
    api.use(authenticated());
    const inside: unknown[] = [];
    api.get('/api/me', (req, _res, next) => {
      inside.push(stateOf(req)?.principal?.subject ?? null);
      next();
    });
    const madeUp = Object.assign(new EventEmitter(), { setHeader: () => undefined }) as unknown as Response;
    const served = await guardedApp((app) => {
      app.use('/legacy', slowLegacy(fill, authenticated()));
      app.use((req: Request, _res: Response, next: NextFunction) => {
        api(fill(req), madeUp, () => {
          next();
        });
      });
      app.get('/api/me', (req, res) => {
        res.json({ outer: req.fluxguard.principal?.subject ?? null });
      });
    });
    const slow = answer(served, '/legacy/slow', alice);
    await sleep(100);
    // An object that carries nothing of this request is a request fluxguard cannot tell (the
    // app dropped the sub-app's error): never the first caller's.
    const second = await answer(served, '/api/me', forged);
    expect(second.body).not.toContain('alice');
    expect(await slow).toEqual({ status: 200, body: '{"subject":null}' });
    expect(inside).not.toContain('alice');
  });
});

describe('the body of a call run on a stand-in', () => {
  it('is inspected by the sub-app’s controls on the call’s own request stream', async () => {
    const limit = smallBodies();
    const inner = express();
    inner.use(controls('small-bodies', [limit]));
    const received: number[] = [];
    const served = await guardedApp((app) => {
      app.use((req: Request, res: Response, next: NextFunction) => {
        inner(asRequest({ ...req }), new Proxy(res, {}), () => {
          next();
        });
      });
      app.put('/upload', async (req, res) => {
        let bytes = 0;
        for await (const chunk of req) bytes += (chunk as Buffer).length;
        received.push(bytes);
        res.json({ bytes });
      });
    });
    const small = await answer(served, '/upload', undefined, { method: 'PUT', body: Buffer.alloc(1024, 1) });
    expect(small.status).toBe(200);
    const large = await answer(served, '/upload', undefined, { method: 'PUT', body: Buffer.alloc(512 * 1024, 1) });
    expect(large.status).toBe(413);
    expect(received).toEqual([1024]);
  });
});
