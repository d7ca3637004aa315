import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileRbac, createAuditLogger, createGuard } from '@fluxguard/core';
import { brokenDestination, type BrokenDestination } from '@fluxguard/test-support/log-lines';
import { captureWarnings, type CapturedWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard, type ProblemDetails } from './index.js';
import { createTokenSigner, serve, type Served } from './testing/tls.js';

// An audit destination that cannot write (a full disk, a broken pipe) must not change what a
// client is answered: a refusal stays the refusal it was. A stream that fails after `write`
// returned emits 'error' later, which without a listener would end the server's process.
describe.each(['throw', 'later'] as const)('an audit destination that fails (%s), over real HTTP', (fails) => {
  const tokens = createTokenSigner();
  let served: Served;
  let warnings: CapturedWarnings;
  let broken: BrokenDestination;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    broken = brokenDestination(fails);
    const audit = createAuditLogger({ destination: broken.destination });
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

  it('keeps a missing token a 401 with its public code and request id, serves, and warns once', async () => {
    for (let i = 0; i < 3; i++) {
      const requestId = `req-lost-line-${String(i)}`;
      const res = await fetch(`${served.url}/v1/items`, { headers: { 'x-request-id': requestId } });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(res.headers.get('x-request-id')).toBe(requestId);
      const body = (await res.json()) as ProblemDetails;
      expect(body).toMatchObject({ status: 401, code: 'unauthenticated', requestId });
    }
    expect(broken.writes()).toBeGreaterThan(0);

    const allowed = await fetch(`${served.url}/v1/items`, {
      headers: { authorization: `Bearer ${tokens.sign({ roles: ['reader'] })}` },
    });
    expect(allowed.status).toBe(200);

    await warnings.settled();
    expect(warnings.messages()).toHaveLength(1);
    expect(warnings.messages()[0]).toMatch(/\(Error ECONNRESET\)/);
    expect(warnings.messages()[0]).not.toMatch(/collector|req-lost-line/);
  });

  it('still answers a handler’s own failure 500', async () => {
    const res = await fetch(`${served.url}/v1/boom`);
    expect(res.status).toBe(500);
    expect(((await res.json()) as ProblemDetails).code).toBe('internal');
  });
});
