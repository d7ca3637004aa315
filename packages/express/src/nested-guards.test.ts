// A router with a guard of its own, inside an app with another: the app's guard verified a user
// token, and the router's guard, which takes workload certificates only, decided on that user.
import express from 'express';
import { describe, expect, it } from 'vitest';
import { compileRbac, createGuard } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, createTokenSigner, serve } from './testing/tls.js';

const audit = captureAudit();
const users = createTokenSigner();

function nestedApp() {
  const outer = fluxguard({
    audit: audit.audit,
    guard: createGuard({
      audit: audit.audit,
      jwt: users.verifier,
      rbac: compileRbac({ 'GET /public/*path': { authenticated: true }, 'GET /admin/*path': { authenticated: true } }),
    }),
  });
  // The admin API: operators' workload certificates only, never a token.
  const inner = fluxguard({
    audit: audit.audit,
    guard: createGuard({
      audit: audit.audit,
      rbac: compileRbac({ 'GET /admin/*path': { anyRoles: ['ops'] } }),
      certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/ops', roles: ['ops'] }],
    }),
  });
  const app = express();
  app.set('case sensitive routing', true);
  app.use(outer.before);
  app.get('/public/me', (req, res) => res.json({ who: req.fluxguard.principal?.subject ?? null }));
  const admin = express.Router({ caseSensitive: true });
  admin.use(inner.before);
  admin.get('/users', (req, res) => res.json({ admin: true, who: req.fluxguard.principal?.subject ?? null }));
  app.use('/admin', admin);
  app.use(outer.after);
  return app;
}

describe('a guard inside another', () => {
  it('decides on the callers it verifies itself, never on one the guard in front recorded', async () => {
    const served = await serve(nestedApp());
    const as = (role: string) => ({
      headers: { authorization: `Bearer ${users.sign({ sub: 'mallory', roles: [role] })}` },
    });
    try {
      // The outer guard's own routes serve its user.
      expect(await (await fetch(`${served.url}/public/me`, as('reader'))).json()).toEqual({ who: 'mallory' });
      // The inner guard verifies no token: the user is anonymous to it, even with a role of its name.
      for (const role of ['reader', 'ops']) {
        const admin = await fetch(`${served.url}/admin/users`, as(role));
        expect(admin.status, role).toBe(401);
        expect(await admin.text(), role).not.toContain('admin');
      }
      expect((await fetch(`${served.url}/admin/users`)).status).toBe(401);
    } finally {
      await served.close();
    }
  });
});
