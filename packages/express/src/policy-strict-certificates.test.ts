// A policy that says `mtls.clientCertificates: strict` is held on every request by the guard
// `createGuardFromPolicy` builds, also on a server whose TLS settings only ask for a
// certificate: a request without one is refused before any handler, even on a public route.
import express from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGuardFromPolicy, parseSecurityPolicy } from '@fluxguard/core';
import { fluxguard } from './index.js';
import {
  agentFor,
  captureAudit,
  createTestPki,
  listen,
  perOperationServer,
  type Served,
  type TestPki,
} from './testing/tls.js';

const { audit, lines } = captureAudit();
let pki: TestPki;
let served: Served;
let handled = 0;
const agents: Agent[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  const policy = parseSecurityPolicy({
    rbac: { rules: [{ operation: 'GET /healthz', public: true }] },
    mtls: { clientCertificates: 'strict' },
  });
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({ audit, guard: createGuardFromPolicy(policy, { audit, transport: 'http' }) });
  app.use(before);
  app.get('/healthz', (_req, res) => {
    handled++;
    res.json({ status: 'ok' });
  });
  app.use(after);
  served = await listen(perOperationServer(app, pki, audit));
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close()));
  await served.close();
  await pki.remove();
});

function agent(client?: { readonly certPem: string; readonly keyPem: string }): Agent {
  const made = agentFor(pki.ca.certPem, client);
  agents.push(made);
  return made;
}

describe("a policy's strict client certificates, behind per-operation TLS settings", () => {
  it('refuses a request without a certificate on a public route, before its handler', async () => {
    const res = await fetch(`${served.url}/healthz`, { dispatcher: agent() });
    expect(res.status).toBe(403);
    const body = await res.text();
    expect(body).not.toMatch(/certificate|strict|policy/i);
    expect(handled).toBe(0);
    expect(lines().at(-1)).toMatchObject({
      reason: 'client_certificate_required',
      requestId: res.headers.get('x-request-id'),
    });
  });

  it('serves a caller with a verified certificate', async () => {
    const res = await fetch(`${served.url}/healthz`, { dispatcher: agent(pki.client) });
    expect(res.status).toBe(200);
    expect(handled).toBe(1);
  });

  it('answers a certificate that failed verification as none, naming Node’s code in the audit line', async () => {
    const res = await fetch(`${served.url}/healthz`, { dispatcher: agent(pki.stranger) });
    expect(res.status).toBe(403);
    expect(await res.text()).not.toMatch(/certificate|strict|policy|UNABLE/i);
    expect(handled).toBe(1);
    expect(lines().at(-1)).toMatchObject({
      reason: 'certificate_untrusted',
      code: 'permission_denied',
      detail: { certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      requestId: res.headers.get('x-request-id'),
    });
  });
});
