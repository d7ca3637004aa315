import { connect } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, createAuditLogger, type Principal } from '@fluxguard/core';
import { errorHandler, fluxguard, securityHeaders, setPrincipal } from './index.js';
import { serve, type Served } from './testing/tls.js';

/** Sends bytes as they are (fetch refuses malformed headers) and returns the raw answer. */
async function rawRequest(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.end(request);
    });
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('end', () => {
      resolve(answer);
    });
    socket.on('error', reject);
  });
}

const principal: Principal = {
  subject: 'alice',
  roles: ['artifacts.reader'],
  scopes: [],
  claims: { sub: 'alice' },
  certificate: undefined,
  authenticatedBy: 'jwt',
};

describe('requestId, req.fluxguard and securityHeaders', () => {
  let served: Served;
  let lastAbort: Promise<unknown> | undefined;
  const audit = createAuditLogger({ level: 'silent' });

  beforeAll(async () => {
    const app = express();
    app.set('env', 'development');
    const guard = fluxguard({ audit });
    app.use(guard.before);
    app.get('/context', (req, res) => {
      res.json({ requestId: req.fluxguard.requestId, subject: req.fluxguard.principal?.subject ?? null });
    });
    app.get('/overwrite', (req, res) => {
      const attempts = {
        context: attempt(() => {
          Object.assign(req, { fluxguard: { requestId: 'forged', principal } });
        }),
        principal: attempt(() => {
          Object.assign(req.fluxguard, { principal });
        }),
        requestId: attempt(() => {
          Object.assign(req.fluxguard, { requestId: 'forged' });
        }),
        redefine: attempt(() => {
          Object.defineProperty(req, 'fluxguard', { value: {} });
        }),
      };
      res.json({ attempts, requestId: req.fluxguard.requestId, principal: req.fluxguard.principal ?? null });
    });
    app.get('/login', (req, res) => {
      setPrincipal(req, { ...principal, roles: ['artifacts.reader'] });
      const roles = req.fluxguard.principal?.roles as string[] | undefined;
      const grant = attempt(() => roles?.push('artifacts.admin'));
      res.json({ subject: req.fluxguard.principal?.subject, roles: req.fluxguard.principal?.roles, grant });
    });
    app.get('/bad-principal', (req) => {
      setPrincipal(req, { ...principal, subject: '' });
    });
    app.get('/slow', (req) => {
      lastAbort = new Promise((resolve) => {
        req.fluxguard.signal.addEventListener('abort', () => {
          resolve(req.fluxguard.signal.reason);
        });
      });
      // Never answers: the client gives up.
    });
    app.get('/done', (req, res) => {
      res.json({ aborted: req.fluxguard.signal.aborted });
    });
    app.use(guard.after);
    served = await serve(app);
  });

  afterAll(async () => {
    await served.close();
  });

  it('echoes a well-formed client request id on the response and in the context', async () => {
    const res = await fetch(`${served.url}/context`, { headers: { 'x-request-id': 'trace-abc.123_X' } });
    expect(res.headers.get('x-request-id')).toBe('trace-abc.123_X');
    expect(await res.json()).toEqual({ requestId: 'trace-abc.123_X', subject: null });
  });

  it('generates an id when the client sends none', async () => {
    const res = await fetch(`${served.url}/context`);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it.each([
    ['300 characters', 'a'.repeat(300)],
    ['spaces and quotes', 'abc "forged": 1'],
    ['a log-forging attempt', 'abc\t{"level":60}'],
    ['non-ASCII', 'réquest'],
  ])('replaces a request id with %s', async (_label, forged) => {
    const res = await fetch(`${served.url}/context`, { headers: { 'x-request-id': forged } });
    const id = res.headers.get('x-request-id');
    expect(id).not.toBe(forged);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(((await res.json()) as { requestId: string }).requestId).toBe(id);
  });

  it('replaces the id when the header is sent twice', async () => {
    const answer = await rawRequest(
      served.port,
      'GET /context HTTP/1.1\r\nHost: x\r\nX-Request-Id: one\r\nX-Request-Id: two\r\nConnection: close\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer).toMatch(/\r\nx-request-id: [0-9a-f-]{36}\r\n/i);
  });

  it('never echoes a request id carrying a newline', async () => {
    const answer = await rawRequest(
      served.port,
      'GET /context HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\n{"forged":1}\r\nConnection: close\r\n\r\n',
    );
    expect(answer).not.toContain('forged');
    expect(answer).not.toContain('abc');
  });

  it('sets API security headers and no X-Powered-By, on success and on errors', async () => {
    for (const path of ['/context', '/unknown-route']) {
      const res = await fetch(`${served.url}${path}`);
      await res.arrayBuffer();
      expect(res.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
      expect(res.headers.get('strict-transport-security')).toBe('max-age=31536000; includeSubDomains');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('cross-origin-resource-policy')).toBe('same-origin');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('x-powered-by')).toBeNull();
    }
  });

  it('ignores a client header that claims a principal', async () => {
    const res = await fetch(`${served.url}/context`, {
      headers: {
        'x-fluxguard-principal': JSON.stringify(principal),
        'x-fluxguard': '{"principal":{"subject":"root"}}',
        'x-request-id': 'p-1',
      },
    });
    expect(await res.json()).toEqual({ requestId: 'p-1', subject: null });
  });

  it('refuses any assignment to req.fluxguard or its fields', async () => {
    const res = await fetch(`${served.url}/overwrite`, { headers: { 'x-request-id': 'o-1' } });
    expect(await res.json()).toEqual({
      attempts: { context: 'TypeError', principal: 'TypeError', requestId: 'TypeError', redefine: 'TypeError' },
      requestId: 'o-1',
      principal: null,
    });
  });

  it('sets the principal only through setPrincipal, frozen', async () => {
    const res = await fetch(`${served.url}/login`);
    expect(await res.json()).toEqual({ subject: 'alice', roles: ['artifacts.reader'], grant: 'TypeError' });
  });

  it('fails closed on a malformed principal', async () => {
    const res = await fetch(`${served.url}/bad-principal`);
    expect(res.status).toBe(500);
  });

  it('aborts req.fluxguard.signal when the client disconnects before the answer', async () => {
    const controller = new AbortController();
    const request = fetch(`${served.url}/slow`, { signal: controller.signal });
    // poll() would await the promise itself: wait for the handler to have run.
    await expect.poll(() => lastAbort !== undefined).toBe(true);
    controller.abort();
    await expect(request).rejects.toThrow();
    const reason = await lastAbort;
    // The same reason as on gRPC: a DOMException AbortError saying the client went away.
    expect(reason).toBeInstanceOf(DOMException);
    expect(reason).toMatchObject({ name: 'AbortError', message: 'The client cancelled the call.' });
  });

  it('does not abort the signal of a request that completed', async () => {
    const res = await fetch(`${served.url}/done`);
    expect(await res.json()).toEqual({ aborted: false });
  });
});

describe('setPrincipal without the requestId middleware', () => {
  it('fails closed with a 500', async () => {
    const app = express();
    app.get('/x', (req) => {
      setPrincipal(req, principal);
    });
    app.use(errorHandler({ audit: createAuditLogger({ level: 'silent' }) }));
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/x`);
      expect(res.status).toBe(500);
    } finally {
      await served.close();
    }
  });
});

describe('securityHeaders options', () => {
  it('can turn HSTS off and relax CORP', async () => {
    const app = express();
    app.use(securityHeaders({ hstsMaxAgeSeconds: 0, crossOriginResourcePolicy: 'cross-origin' }));
    app.get('/x', (_req, res) => {
      res.json({});
    });
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/x`);
      expect(res.headers.get('strict-transport-security')).toBeNull();
      expect(res.headers.get('cross-origin-resource-policy')).toBe('cross-origin');
    } finally {
      await served.close();
    }
  });

  it('refuses bad options at construction', () => {
    expect(() => securityHeaders({ hstsMaxAgeSeconds: -1 })).toThrow(ConfigurationError);
    expect(() => securityHeaders({ hstsPreload: 'yes' } as never)).toThrow(ConfigurationError);
    expect(() => securityHeaders({ crossOriginResourcePolicy: 'anyone' } as never)).toThrow(ConfigurationError);
    expect(() => securityHeaders({ hstsMaxAge: 1 } as never)).toThrow(/unknown option "hstsMaxAge"/);
  });

  it('can be left out of fluxguard() when a proxy sets the headers', async () => {
    const app = express();
    const guard = fluxguard({ audit: createAuditLogger({ level: 'silent' }), securityHeaders: false });
    app.use(guard.before);
    app.use(guard.after);
    const served = await serve(app);
    try {
      const res = await fetch(`${served.url}/x`);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-security-policy')).toBeNull();
      expect(res.headers.get('x-request-id')).not.toBeNull();
    } finally {
      await served.close();
    }
  });
});

function attempt(fn: () => unknown): string {
  try {
    fn();
    return 'allowed';
  } catch (err) {
    return err instanceof Error ? err.name : 'thrown';
  }
}
