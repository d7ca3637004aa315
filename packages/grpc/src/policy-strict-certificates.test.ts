// A policy that says `mtls.clientCertificates: strict` is held on every call by the guard
// `createGuardFromPolicy` builds, also on a server whose TLS settings only ask for a
// certificate: a call without one is refused before any handler, even on a public method.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { createGuardFromPolicy, parseSecurityPolicy } from '@fluxguard/core';
import { fluxguardInterceptors } from './index.js';
import { handlerStarts, op, startSecureServer, unary, type SecureServer } from './testing/tls.js';

let secure: SecureServer;

beforeAll(async () => {
  const policy = parseSecurityPolicy({
    rbac: { rules: [{ operation: op('Public'), public: true }] },
    mtls: { clientCertificates: 'strict' },
  });
  secure = await startSecureServer((audit) =>
    fluxguardInterceptors({ audit, guard: createGuardFromPolicy(policy, { audit, transport: 'grpc' }) }),
  );
});

afterAll(() => secure.close());

describe("a policy's strict client certificates, behind per-operation TLS settings", () => {
  it('refuses a call without a certificate, public or not, before its handler', async () => {
    const before = handlerStarts.count;
    const anonymous = secure.client();
    for (const name of ['Public', 'Read'] as const) {
      const { status } = await unary(anonymous, name);
      expect(status.code).toBe(Status.PERMISSION_DENIED);
      expect(status.details).not.toMatch(/certificate|strict|policy/i);
    }
    expect(handlerStarts.count).toBe(before);
    expect(secure.lines().filter((line) => line.reason === 'client_certificate_required')).toHaveLength(2);
  });

  it('serves a caller with a verified certificate', async () => {
    const withCertificate = secure.client(secure.pki.reader);
    const { status } = await unary(withCertificate, 'Public');
    expect(status.code).toBe(Status.OK);
  });

  it('answers a certificate that failed verification as none, naming Node’s code in the audit line', async () => {
    const forged = secure.client(secure.pki.forged);
    const { status } = await unary(forged, 'Public');
    expect([status.code, status.details]).toEqual([Status.PERMISSION_DENIED, 'Permission denied.']);
    const requestId = status.metadata.get('x-request-id')[0];
    expect(secure.lines().filter((line) => line.requestId === requestId)).toEqual([
      expect.objectContaining({
        reason: 'certificate_untrusted',
        code: 'permission_denied',
        detail: { certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      }),
    ]);
  });
});
