import { Writable } from 'node:stream';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
import { captureWarnings, type CapturedWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard, type ProblemDetails } from './index.js';
import { createTokenSigner, serve, type Served } from './testing/tls.js';

// An audit destination that cannot write (a full disk, a broken pipe) must not change what a
// client is answered: a refusal stays the refusal it was.
describe('an audit destination that throws, over real HTTP', () => {
  const tokens = createTokenSigner();
  let served: Served;
  let warnings: CapturedWarnings;
  let writes = 0;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const audit = createAuditLogger({
      destination: {
        write() {
          writes += 1;
          throw new Error('EPIPE: the log collector went away');
        },
      },
    });
    const guard = createGuard({
      audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /v1/items': { anyRoles: ['reader'] }, 'GET /v1/boom': { public: true } }),
    });
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit, guard });
    app.use(before);
    app.get('/v1/items', (_req, res) => {
      res.json({ items: [] });
    });
    app.get('/v1/boom', () => {
      throw new Error('the handler failed');
    });
    app.use(after);
    served = await serve(app);
  });

  afterAll(async () => {
    warnings.stop();
    await served.close();
  });

  it('keeps a missing token a 401 with its public code and request id, and warns once', async () => {
    const res = await fetch(`${served.url}/v1/items`, { headers: { 'x-request-id': 'req-lost-line' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(res.headers.get('x-request-id')).toBe('req-lost-line');
    const body = (await res.json()) as ProblemDetails;
    expect(body).toMatchObject({ status: 401, code: 'unauthenticated', requestId: 'req-lost-line' });
    expect(writes).toBeGreaterThan(0);

    const allowed = await fetch(`${served.url}/v1/items`, {
      headers: { authorization: `Bearer ${tokens.sign({ roles: ['reader'] })}` },
    });
    expect(allowed.status).toBe(200);

    await warnings.settled();
    expect(warnings.warnings).toHaveLength(1);
    expect(warnings.messages()[0]).not.toMatch(/collector|req-lost-line/);
  });

  it('still answers a handler’s own failure 500', async () => {
    const res = await fetch(`${served.url}/v1/boom`);
    expect(res.status).toBe(500);
    expect(((await res.json()) as ProblemDetails).code).toBe('internal');
  });
});

// A stream fails after `write` returned: its 'error' comes later, and without a listener it
// would end the server's process.
describe('an audit destination stream that fails later, over real HTTP', () => {
  const tokens = createTokenSigner();
  let served: Served;
  let warnings: CapturedWarnings;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const destination = new Writable({
      write(_chunk, _enc, done) {
        setImmediate(() => {
          done(Object.assign(new Error('the log collector went away'), { code: 'ECONNRESET' }));
        });
      },
    });
    const audit = createAuditLogger({ destination });
    const guard = createGuard({
      audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /v1/items': { anyRoles: ['reader'] } }),
    });
    const app = express();
    app.set('case sensitive routing', true);
    const { before, after } = fluxguard({ audit, guard });
    app.use(before);
    app.get('/v1/items', (_req, res) => {
      res.json({ items: [] });
    });
    app.use(after);
    served = await serve(app);
  });

  afterAll(async () => {
    warnings.stop();
    await served.close();
  });

  it('keeps refusing with 401 and serving, and warns once', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${served.url}/v1/items`, { headers: { 'x-request-id': `req-later-${String(i)}` } });
      expect(res.status).toBe(401);
      expect(((await res.json()) as ProblemDetails).requestId).toBe(`req-later-${String(i)}`);
    }
    const allowed = await fetch(`${served.url}/v1/items`, {
      headers: { authorization: `Bearer ${tokens.sign({ roles: ['reader'] })}` },
    });
    expect(allowed.status).toBe(200);
    await warnings.settled();
    expect(warnings.messages()).toHaveLength(1);
    expect(warnings.messages()[0]).toMatch(/\(Error ECONNRESET\)/);
    expect(warnings.messages()[0]).not.toMatch(/collector|req-later/);
  });
});
