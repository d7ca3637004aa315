import { mkdtemp, open, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigurationError,
  SecurityError,
  createAuditLogger,
  createTimeouts,
  type AuditLogger,
  type Guard,
} from '@fluxguard/core';
import { errorHandler, fluxguard, notFound, requestId, type ProblemDetails } from './index.js';
import { serve, type Served } from './testing/tls.js';

function captureAudit(): { audit: AuditLogger; lines: () => Record<string, unknown>[] } {
  const raw: string[] = [];
  const audit = createAuditLogger({
    destination: {
      write(line: string) {
        raw.push(line);
      },
    },
  });
  return { audit, lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** Everything a client can observe of a response, as one string. */
async function observable(res: Response): Promise<{ text: string; body: string }> {
  const body = await res.text();
  const headers = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
  return { text: `${String(res.status)} ${res.statusText}\n${headers}\n\n${body}`, body };
}

const STACK_FRAME = /\bat [^\s]+ \(|\bat file:|\bat node:|\.ts:\d+:\d+/;

describe('errorHandler and notFound', () => {
  let dataDir: string;
  let served: Served;
  const { audit, lines } = captureAudit();

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'fluxguard-express-'));
    const app = express();
    // Express renders err.stack in its HTML error page outside production: prove it never runs.
    app.set('env', 'development');
    const guard = fluxguard({ audit, realm: 'tests' });
    app.use(guard.before);
    app.use(express.json({ limit: '1kb' }));
    app.get('/sync', () => {
      throw new Error('sync failure in /srv/secret/handler.ts');
    });
    app.get('/async', async () => {
      await Promise.resolve();
      throw new TypeError('Cannot read properties of undefined (reading "secretField")');
    });
    app.get('/eisdir', async () => {
      // Opening a directory for writing fails with EISDIR and names the path.
      await open(dataDir, 'r+');
    });
    app.get('/enoent', async () => {
      await open(join(dataDir, 'missing', 'file.bin'));
    });
    app.get('/items/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    app.post('/echo', (req, res) => {
      res.json({ received: req.body as unknown });
    });
    app.get('/invalid', () => {
      throw new SecurityError('invalid_argument', { details: { field: 'path' }, reason: 'path_traversal' });
    });
    app.get('/no-token', () => {
      throw new SecurityError('unauthenticated', { reason: 'missing_token' });
    });
    app.get('/bad-token', () => {
      throw new SecurityError('unauthenticated', { reason: 'token_expired' });
    });
    app.get('/limited', () => {
      throw new SecurityError('rate_limited', { details: { retryAfterSeconds: 7 } });
    });
    app.get('/half-sent', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write('partial');
      throw new Error('failed midway at /srv/data/x');
    });
    app.get('/headers-then-fail', (_req, res) => {
      res.setHeader('content-disposition', 'attachment; filename="secret-name.bin"');
      res.setHeader('repr-digest', 'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:');
      res.statusMessage = 'Failed reading /srv/data';
      throw new Error('boom');
    });
    app.put('/refuse-before-body', () => {
      throw new SecurityError('invalid_argument', { details: { field: 'repr-digest' }, reason: 'app.digest_missing' });
    });
    app.get('/next-string', (_req, _res, next) => {
      next('a string with /srv/data/x in it');
    });
    app.use(guard.after);
    served = await serve(app);
  });

  afterAll(async () => {
    await served.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function problem(res: Response): Promise<ProblemDetails> {
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as ProblemDetails;
    expect(body.requestId).toBe(res.headers.get('x-request-id'));
    return body;
  }

  it('answers a thrown synchronous error with a generic 500 problem', async () => {
    const res = await fetch(`${served.url}/sync`);
    expect(res.status).toBe(500);
    expect(await problem(res)).toEqual({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      detail: 'An internal error occurred.',
      code: 'internal',
      requestId: expect.any(String) as unknown,
    });
  });

  it('answers a rejected async handler (Express 5) with a generic 500 problem', async () => {
    const res = await fetch(`${served.url}/async`);
    expect(res.status).toBe(500);
    const body = await problem(res);
    expect(body.code).toBe('internal');
    expect(JSON.stringify(body)).not.toContain('secretField');
  });

  it('treats a non-Error passed to next() as internal', async () => {
    const res = await fetch(`${served.url}/next-string`);
    expect(res.status).toBe(500);
    expect(JSON.stringify(await problem(res))).not.toContain('/srv');
  });

  it.each([
    ['/eisdir', 'EISDIR'],
    ['/enoent', 'ENOENT'],
  ])('never lets a file-system error of %s reach the client, and logs it whole', async (route, errno) => {
    const id = `leak-test${route.slice(1)}`;
    const res = await fetch(`${served.url}${route}`, { headers: { 'x-request-id': id } });
    expect(res.status).toBe(500);
    expect(res.headers.get('x-request-id')).toBe(id);
    const { text } = await observable(res);
    expect(text).not.toContain(dataDir);
    expect(text).not.toContain(tmpdir());
    expect(text).not.toMatch(/ENOENT|EISDIR|errno|syscall/);
    expect(text).not.toMatch(STACK_FRAME);

    const line = lines().find((l) => l.requestId === id);
    expect(line).toMatchObject({
      event: 'request.failed',
      outcome: 'error',
      code: 'internal',
      reason: 'unhandled_error',
      transport: 'http',
      operation: `GET ${route}`,
      peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as unknown,
    });
    const logged = JSON.stringify(line);
    expect(logged).toContain(dataDir);
    expect(logged).toContain(errno);
    expect(logged).toMatch(STACK_FRAME);
  });

  it('answers an unknown route with a 404 problem, not Express\'s "Cannot GET" page', async () => {
    const res = await fetch(`${served.url}/nothing/here/%3Cscript%3E?q=1`);
    expect(res.status).toBe(404);
    const { text } = await observable(res);
    expect(text).not.toMatch(/Cannot GET|<!DOCTYPE|<html|<pre>/i);
    expect(text).not.toContain('nothing/here');
    expect(text).not.toContain('script');
    const body = JSON.parse(text.slice(text.indexOf('\n\n') + 2)) as ProblemDetails;
    expect(body).toMatchObject({ status: 404, code: 'not_found', title: 'Not Found', detail: 'Not found.' });
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line).toMatchObject({ operation: 'GET <unmatched>', reason: 'route_not_found', outcome: 'denied' });
  });

  it('answers an unsupported method on a known path with 404, not an Allow list or HTML', async () => {
    const res = await fetch(`${served.url}/items/1`, { method: 'DELETE' });
    expect(res.status).toBe(404);
    expect((await problem(res)).code).toBe('not_found');
  });

  it('maps malformed JSON to 400 invalid_argument without the parser message', async () => {
    const res = await fetch(`${served.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"a": }',
    });
    expect(res.status).toBe(400);
    const { text } = await observable(res);
    expect(text).not.toMatch(/Unexpected token|JSON at position|SyntaxError|body-parser/);
    expect(JSON.parse(text.slice(text.indexOf('\n\n') + 2))).toMatchObject({
      code: 'invalid_argument',
      field: 'body',
      detail: 'The request is invalid.',
    });
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    // The body parser runs before routing, so no route pattern is known yet.
    expect(line).toMatchObject({
      operation: 'POST <unmatched>',
      reason: 'body_parse_failed',
      code: 'invalid_argument',
    });
  });

  it('closes the connection after refusing a request whose body it has not read', async () => {
    const { port } = new URL(served.url);
    const socket = netConnect(Number(port), '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    const closed = new Promise<'closed' | 'held'>((resolve) => {
      socket.on('close', () => {
        resolve('closed');
      });
      // A bound for liveness: the trickling client below would hold it far longer.
      setTimeout(() => {
        resolve('held');
      }, 3_000);
    });
    socket.write('PUT /refuse-before-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n' + 'a'.repeat(100));
    // The client trickles the rest of its body, a byte every 100 ms.
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write('a');
    }, 100);
    try {
      expect(await closed).toBe('closed');
    } finally {
      clearInterval(trickle);
      socket.destroy();
    }
    expect(answer.startsWith('HTTP/1.1 400 ')).toBe(true);
    expect(answer).toMatch(/^connection: close$/im);
  });

  it('logs where a body failed to parse, never the text around it (a password after its key)', async () => {
    const res = await fetch(`${served.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"user": "a", "password": SECRETMARK-unquoted}',
    });
    expect(res.status).toBe(400);
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line).toMatchObject({
      reason: 'body_parse_failed',
      cause: expect.stringMatching(/not valid JSON/) as string,
    });
    expect(JSON.stringify(lines())).not.toContain('SECRETMARK');
  });

  it.each(['gzip', 'deflate', 'br'])(
    'maps a %s body that does not decompress to 400 invalid_argument, not a 500',
    async (encoding) => {
      const res = await fetch(`${served.url}/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': encoding },
        body: 'this is not compressed at all',
      });
      expect(res.status).toBe(400);
      const { text } = await observable(res);
      expect(text).not.toMatch(/header check|Decompression|Z_DATA|ERR__|zlib/i);
      expect(JSON.parse(text.slice(text.indexOf('\n\n') + 2))).toMatchObject({
        code: 'invalid_argument',
        field: 'body',
      });
      const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
      expect(line).toMatchObject({ reason: 'body_decompression_failed', code: 'invalid_argument' });
    },
  );

  it('maps a body over the parser limit to 413 payload_too_large', async () => {
    const res = await fetch(`${served.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ data: 'x'.repeat(4096) }),
    });
    expect(res.status).toBe(413);
    const { text } = await observable(res);
    expect(text).not.toMatch(/request entity too large|limit/i);
    expect(JSON.parse(text.slice(text.indexOf('\n\n') + 2))).toMatchObject({
      code: 'payload_too_large',
      status: 413,
      title: 'Content Too Large',
    });
  });

  it('maps a malformed percent-encoding in a route parameter to 400 invalid_argument', async () => {
    const res = await fetch(`${served.url}/items/%E0%A4%A`);
    expect(res.status).toBe(400);
    const { text } = await observable(res);
    expect(text).not.toMatch(/Failed to decode|URIError|%E0/);
    expect(JSON.parse(text.slice(text.indexOf('\n\n') + 2))).toMatchObject({ code: 'invalid_argument', field: 'path' });
  });

  it('keeps a SecurityError code and field, and logs its reason with the route pattern', async () => {
    const res = await fetch(`${served.url}/invalid`);
    expect(res.status).toBe(400);
    expect(await problem(res)).toMatchObject({ code: 'invalid_argument', field: 'path', status: 400 });
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line).toMatchObject({ event: 'request.denied', reason: 'path_traversal', operation: 'GET /invalid' });
  });

  it('logs the route pattern, not the concrete path', async () => {
    const res = await fetch(`${served.url}/items/%E0%A4%A`);
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    // The decode failure happens while matching, before any route is chosen.
    expect(line?.operation).toBe('GET <unmatched>');
  });

  it('challenges a request without a token with a plain Bearer (RFC 6750 3.1)', async () => {
    const res = await fetch(`${served.url}/no-token`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="tests"');
    expect((await problem(res)).code).toBe('unauthenticated');
  });

  it('answers an invalid token with error="invalid_token"', async () => {
    const res = await fetch(`${served.url}/bad-token`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="tests", error="invalid_token"');
    const body = await problem(res);
    expect(JSON.stringify(body)).not.toContain('expired');
  });

  it('sets Retry-After on 429', async () => {
    const res = await fetch(`${served.url}/limited`);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('7');
    expect((await problem(res)).code).toBe('rate_limited');
  });

  it('drops representation headers and the status message a failing handler had set', async () => {
    const res = await fetch(`${served.url}/headers-then-fail`);
    expect(res.status).toBe(500);
    expect(res.statusText).toBe('Internal Server Error');
    expect(res.headers.get('content-disposition')).toBeNull();
    expect(res.headers.get('repr-digest')).toBeNull();
    await problem(res);
  });

  it('destroys the connection when the response had already started, and logs the cause', async () => {
    // Whether the head arrives before the reset is a race; the body must never complete.
    const attempt = async (): Promise<string> => {
      const res = await fetch(`${served.url}/half-sent`, { headers: { 'x-request-id': 'half-sent-1' } });
      return res.text();
    };
    await expect(attempt()).rejects.toThrow();
    const line = lines().find((l) => l.requestId === 'half-sent-1');
    expect(line).toMatchObject({ event: 'request.failed', operation: 'GET /half-sent' });
    expect(JSON.stringify(line)).toContain('/srv/data/x');
  });
});

describe('operation labels of mounted routers', () => {
  let served: Served;
  const { audit, lines } = captureAudit();

  beforeAll(async () => {
    const app = express();
    const router = express.Router();
    router.get('/things/:id', () => {
      throw new Error('boom');
    });
    router.use(errorHandler({ audit }));
    app.use(requestId());
    app.use('/v1', router);
    app.use(notFound());
    app.use(errorHandler({ audit }));
    served = await serve(app);
  });

  afterAll(async () => {
    await served.close();
  });

  it('includes the mount path when the router handles its own errors', async () => {
    const res = await fetch(`${served.url}/v1/things/42`);
    expect(res.status).toBe(500);
    const line = lines().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line?.operation).toBe('GET /v1/things/:id');
  });
});

describe('errorHandler without the requestId middleware', () => {
  let served: Served | undefined;

  afterEach(async () => {
    await served?.close();
    served = undefined;
  });

  it('still answers with a request id, taken from a well-formed header or generated', async () => {
    const { audit } = captureAudit();
    const app = express();
    app.get('/x', () => {
      throw new Error('boom');
    });
    app.use(errorHandler({ audit }));
    served = await serve(app);
    const res = await fetch(`${served.url}/x`, { headers: { 'x-request-id': 'given-1' } });
    expect(res.status).toBe(500);
    expect(res.headers.get('x-request-id')).toBe('given-1');
    const other = await fetch(`${served.url}/x`, { headers: { 'x-request-id': 'bad id' } });
    expect(other.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers with a constant 500 when the audit logger itself fails', async () => {
    const { audit } = captureAudit();
    const broken: AuditLogger = {
      logger: audit.logger,
      record: (event, err) => {
        audit.record(event, err);
      },
      recordFailure: () => {
        throw new Error('logger down at /var/log/x');
      },
      recordCancelled: (context, error) => {
        audit.recordCancelled(context, error);
      },
    };
    const app = express();
    app.set('env', 'development');
    app.get('/x', () => {
      throw new Error('boom');
    });
    app.use(errorHandler({ audit: broken }));
    served = await serve(app);
    const res = await fetch(`${served.url}/x`);
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    const body = await res.text();
    expect(body).not.toMatch(/logger down|\/var\/log|<html/);
    expect(JSON.parse(body)).toMatchObject({ code: 'internal', status: 500 });
  });
});

describe('the trap errorHandler closes', () => {
  it('bare Express in development sends the stack and echoes the path as HTML', async () => {
    const app = express();
    app.set('env', 'development');
    app.get('/x', () => {
      throw new Error('secret detail');
    });
    const served = await serve(app);
    try {
      const crashed = await fetch(`${served.url}/x`);
      expect(crashed.headers.get('content-type')).toMatch(/text\/html/);
      expect(await crashed.text()).toMatch(/secret detail[\s\S]*at /);
      const missing = await fetch(`${served.url}/some/path`);
      expect(await missing.text()).toContain('Cannot GET /some/path');
    } finally {
      await served.close();
    }
  });
});

describe('option validation', () => {
  it('refuses options given to requestId() and notFound(), which take none', () => {
    const given = (factory: (...args: never[]) => unknown) => () =>
      (factory as (...args: unknown[]) => unknown)({ trustClientIds: false });
    expect(given(requestId)).toThrow('requestId: takes no options');
    expect(given(notFound)).toThrow('notFound: takes no options');
    expect(() => requestId()).not.toThrow();
    expect(() => notFound()).not.toThrow();
  });

  it('refuses a missing audit logger and unknown options at construction', () => {
    expect(() => errorHandler({} as never)).toThrow(ConfigurationError);
    expect(() => errorHandler({ audit: createAuditLogger({ level: 'silent' }), realn: 'x' } as never)).toThrow(
      /unknown option "realn" \(did you mean "realm"\?\)/,
    );
    expect(() => errorHandler({ audit: createAuditLogger({ level: 'silent' }), realm: 'a"b' })).toThrow(
      ConfigurationError,
    );
    expect(() => errorHandler({ audit: createAuditLogger({ level: 'silent' }), realm: '   ' })).toThrow(
      /^errorHandler: "realm" must be 1 to 100 printable ASCII characters, not all spaces/,
    );
    expect(() => fluxguard({} as never)).toThrow(/"audit" is required/);
    // A guard read from a configuration that holds none would leave every route unauthenticated.
    const config: { guard?: Guard } = {};
    expect(() => fluxguard({ audit: createAuditLogger({ level: 'silent' }), guard: config.guard })).toThrow(
      /^fluxguard: "guard" is undefined: pass the guard of createGuard\(\)/,
    );
    expect(() => fluxguard({ audit: createAuditLogger({ level: 'silent' }) })).not.toThrow();
    // Named by the factory it was given to.
    expect(() => fluxguard({ audit: createAuditLogger({ level: 'silent' }), realm: 'a"b' })).toThrow(
      /^fluxguard: "realm" must be 1 to 100 printable ASCII characters/,
    );
    // Ignored next to a deadline control (a policy guard always has one): refused instead.
    const audit = createAuditLogger({ level: 'silent' });
    expect(() => fluxguard({ audit, controls: [createTimeouts()], timeouts: { defaultMs: 300, maxMs: 300 } })).toThrow(
      /^fluxguard: "timeouts" is given, but a control of the deadline stage is listed already/,
    );
  });
});
