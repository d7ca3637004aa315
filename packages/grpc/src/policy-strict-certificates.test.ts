// A policy that says `mtls.clientCertificates: strict` is held on every call by the guard
// `createGuardFromPolicy` builds, also on a server whose TLS settings only ask for a
// certificate: a call without one is refused before any handler, even on a public method.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { createGuardFromPolicy, parseSecurityPolicy } from '@fluxguard/core';
import { captureAudit } from './testing/harness.js';
import { fluxguardInterceptors } from './index.js';
import {
  createClientPool,
  createTestPki,
  handlerStarts,
  op,
  perOperationCredentials,
  startTlsServer,
  unary,
  type TestPki,
  type TestServer,
} from './testing/tls.js';

let pki: TestPki;
let server: TestServer;
const audit = captureAudit();
const clients = createClientPool();

beforeAll(async () => {
  pki = await createTestPki();
  const policy = parseSecurityPolicy({
    rbac: { rules: [{ operation: op('Public'), public: true }] },
    mtls: { clientCertificates: 'strict' },
  });
  const guard = createGuardFromPolicy(policy, { audit: audit.audit, transport: 'grpc' });
  server = await startTlsServer(
    perOperationCredentials(pki, audit.audit),
    fluxguardInterceptors({ audit: audit.audit, guard }),
  );
});

afterAll(async () => {
  clients.closeAll();
  await server.close();
  await pki.cleanup();
});

describe("a policy's strict client certificates, behind per-operation TLS settings", () => {
  it('refuses a call without a certificate, public or not, before its handler', async () => {
    const before = handlerStarts.count;
    const anonymous = clients.open(server.address, pki.ca.certPem);
    for (const name of ['Public', 'Read'] as const) {
      const { status } = await unary(anonymous, name);
      expect(status.code).toBe(Status.PERMISSION_DENIED);
      expect(status.details).not.toMatch(/certificate|strict|policy/i);
    }
    expect(handlerStarts.count).toBe(before);
    expect(audit.lines().filter((line) => line.reason === 'client_certificate_required')).toHaveLength(2);
  });

  it('serves a caller with a verified certificate', async () => {
    const withCertificate = clients.open(server.address, pki.ca.certPem, pki.reader);
    const { status } = await unary(withCertificate, 'Public');
    expect(status.code).toBe(Status.OK);
  });

  it('answers a certificate that failed verification as none, naming Node’s code in the audit line', async () => {
    const forged = clients.open(server.address, pki.ca.certPem, pki.forged);
    const { status } = await unary(forged, 'Public');
    expect([status.code, status.details]).toEqual([Status.PERMISSION_DENIED, 'Permission denied.']);
    const requestId = status.metadata.get('x-request-id')[0];
    expect(audit.lines().filter((line) => line.requestId === requestId)).toEqual([
      expect.objectContaining({
        reason: 'certificate_untrusted',
        code: 'permission_denied',
        detail: { certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      }),
    ]);
  });
});
