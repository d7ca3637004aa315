import { readFileSync } from 'node:fs';
import express from 'express';
import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
import { createSecureServer, fluxguard } from '@fluxguard/express';

const audit = createAuditLogger();
const guard = createGuard({
  audit,
  jwt: createJwtVerifier({
    issuer: 'https://id.example.com',
    audience: 'inventory',
    publicKey: readFileSync('certs/jwt-public.pem', 'utf8'), // or jwksUrl: 'https://id.example.com/jwks'
  }),
  rbac: compileRbac({
    'GET /healthz': { public: true },
    'GET /v1/items/:id': { anyRoles: ['items.reader'] },
  }),
});

const app = express();
app.set('case sensitive routing', true); // RBAC matches paths letter for letter: routing must agree
const { before, after, wrap } = fluxguard({ audit, guard });
app.use(before); // request id, security headers, authentication and RBAC
app.get('/healthz', (_req, res) => res.json({ status: 'ok' }));
app.get('/v1/items/:id', (req, res) => res.json({ id: req.params.id, reader: req.fluxguard.principal?.subject }));
app.use(after); // problem+json for every refusal and error, one audit line each

// wrap(app): before's work done ahead of Express's router, for less per request; before
// stays in the app and passes those requests on, so the app is never served unguarded.
export const server = createSecureServer(wrap(app), {
  audit,
  // 'strict': no verified client certificate, no connection ('per-operation' would let each rule decide)
  tls: { certFile: 'certs/server.crt', keyFile: 'certs/server.key', caFile: 'certs/ca.crt', clientCertificates: 'strict' },
}).listen(Number(process.env.PORT ?? 8443));
