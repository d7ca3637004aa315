import { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status, type Client, type StatusObject } from '@grpc/grpc-js';
import { ConfigurationError } from '@fluxguard/core';
import { captureAudit } from './testing/harness.js';
import { createServerCredentials, fluxguardInterceptors, mtls } from './index.js';
import {
  READER_SPIFFE,
  clientFor,
  createTestPki,
  handlerStarts,
  startTlsServer,
  unary,
  type TestPki,
  type TestServer,
} from './testing/tls.js';

// mtls() over real handshakes, in per-operation mode so that the interceptor (not the
// handshake) is what refuses a missing or untrusted certificate.
let pki: TestPki;
let anyCertificate: TestServer;
let readersOnly: TestServer;
const audit = captureAudit();
const clients: Client[] = [];

function client(server: TestServer, cert?: { certPem: string; keyPem: string }): Client {
  const c = clientFor(server.address, { ca: pki.ca.certPem, ...(cert === undefined ? {} : { cert }) });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  pki = await createTestPki();
  const start = (interceptor: ReturnType<typeof mtls>) =>
    startTlsServer(
      createServerCredentials(
        { ...pki.files, clientCertificates: 'per-operation' },
        { audit: audit.audit, reload: false },
      ),
      [...fluxguardInterceptors({ audit: audit.audit }), interceptor],
    );
  anyCertificate = await start(mtls());
  readersOnly = await start(mtls({ allow: [{ spiffeId: READER_SPIFFE }] }));
});

afterAll(async () => {
  for (const c of clients) c.close();
  await anyCertificate.close();
  await readersOnly.close();
  await pki.cleanup();
});

describe('mtls() interceptor', () => {
  it('admits a verified client certificate', async () => {
    expect((await unary(client(anyCertificate, pki.reader), 'Public')).status.code).toBe(Status.OK);
    expect((await unary(client(readersOnly, pki.reader), 'Public')).status.code).toBe(Status.OK);
  });

  // What the client gets, and what the audit line says (Node's verification code, if any).
  const refused = [
    ['no certificate', undefined, 'client_certificate_required', undefined],
    [
      'a certificate from another CA claiming the allowed SPIFFE ID',
      'forged',
      'certificate_untrusted',
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    ],
    ['an expired certificate', 'expired', 'certificate_untrusted', 'CERT_HAS_EXPIRED'],
    ['a certificate not yet valid', 'notYetValid', 'certificate_untrusted', 'CERT_NOT_YET_VALID'],
    ['a revoked certificate', 'revoked', 'certificate_untrusted', 'CERT_REVOKED'],
  ] as const;

  /** Everything the client received but the request id, which differs on every call. */
  /** All the client gets but the request id and the date, which differ on every answer. */
  function publicAnswer(status: StatusObject): unknown {
    const metadata = status.metadata.toJSON();
    expect(metadata['x-request-id']).toHaveLength(1);
    delete metadata['x-request-id'];
    delete metadata.date;
    return { code: status.code, details: status.details, metadata };
  }

  it.each(refused)('refuses %s before the handler runs', async (_label, which, reason, certificateError) => {
    const before = handlerStarts.count;
    const outcome = await unary(client(readersOnly, which === undefined ? undefined : pki[which]), 'Public');
    expect(outcome.status.code).toBe(Status.PERMISSION_DENIED);
    expect(outcome.status.details).toBe('Permission denied.');
    expect(handlerStarts.count).toBe(before);
    const requestId = outcome.status.metadata.get('x-request-id')[0];
    const lines = audit.lines().filter((l) => l.requestId === requestId);
    expect(lines).toEqual([expect.objectContaining({ event: 'request.denied', reason, code: 'permission_denied' })]);
    // The code alone: nothing of the certificate, whose subject is never read.
    expect(lines[0]?.detail).toEqual(certificateError === undefined ? undefined : { certificateError });
    expect(lines[0]?.subject).toBeUndefined();
  });

  it('answers a certificate that failed verification exactly as it answers none', async () => {
    const none = publicAnswer((await unary(client(readersOnly), 'Public')).status);
    for (const [, which] of refused) {
      if (which === undefined) continue;
      expect(publicAnswer((await unary(client(readersOnly, pki[which]), 'Public')).status)).toEqual(none);
    }
  });

  it('reads a connection’s peer certificate once, however many calls it carries', async () => {
    // grpc-js asks the socket for it on every call; the socket answers from its first answer.
    const proto = TLSSocket.prototype;
    const original = Object.getOwnPropertyDescriptor(proto, 'getPeerCertificate')?.value as (
      this: TLSSocket,
      detailed: boolean,
    ) => ReturnType<TLSSocket['getPeerCertificate']>;
    let serverReads = 0;
    proto.getPeerCertificate = function (this: TLSSocket, detailed?: boolean) {
      if ((this as unknown as { _tlsOptions?: { isServer?: boolean } })._tlsOptions?.isServer === true)
        serverReads += 1;
      return original.call(this, detailed === true);
    } as TLSSocket['getPeerCertificate'];
    try {
      const c = client(readersOnly, pki.reader);
      for (let i = 0; i < 20; i++) expect((await unary(c, 'Public')).status.code).toBe(Status.OK);
    } finally {
      proto.getPeerCertificate = original as TLSSocket['getPeerCertificate'];
    }
    expect(serverReads).toBeGreaterThan(0);
    expect(serverReads).toBeLessThanOrEqual(2);
  });

  it('refuses a verified certificate that matches none of the rules', async () => {
    const outcome = await unary(client(readersOnly, pki.backup), 'Public');
    expect(outcome.status.code).toBe(Status.PERMISSION_DENIED);
    const requestId = outcome.status.metadata.get('x-request-id')[0];
    expect(audit.lines().some((l) => l.requestId === requestId && l.reason === 'certificate_mismatch')).toBe(true);
  });

  it('refuses bad rules and misspelt options at construction', () => {
    expect(() => mtls({ allow: [{ spiffeId: 'spiffe://a/(.*)' }] })).toThrow(ConfigurationError);
    expect(() => mtls({ alow: [] } as never)).toThrow(/^mtls: unknown option "alow" \(did you mean "allow"\?\)/);
  });
});
