import { beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, CertificateIdentity } from '../call/call-info.js';
import {
  AUDIENCE,
  GUARD_OPS,
  GUARD_RULES,
  ISSUER,
  capturedAudit,
  makeKey,
  refusal,
  sign,
  testCall,
  type TestKey,
} from '../testing/jwt-fixtures.js';
import { createJwtVerifier, type JwtVerifier } from '../jwt/verifier.js';
import { compileRbac, type RbacMode } from '../rbac/rbac.js';
import { CallState, StateCallInfo } from '../pipeline/call-context.js';
import { bearerChallenge, createGuard, httpOperation } from './guard.js';

const { GET, DELETE, HEALTH } = GUARD_OPS;
const RULES = GUARD_RULES;

// A certificate identity as the TLS stack reports it once verified; the handshakes that produce
// one are tested in mtls/ and end to end.
const backupCert: CertificateIdentity = Object.freeze({
  spiffeId: 'spiffe://fluxguard.dev/backup',
  uris: ['spiffe://fluxguard.dev/backup'],
  dnsNames: [],
  commonName: undefined,
  fingerprint256: 'ab'.repeat(32),
  validFrom: new Date(0),
  validTo: new Date(4_000_000_000_000),
});

let key: TestKey;
let verifier: JwtVerifier;
beforeAll(async () => {
  key = await makeKey('ES256', 'k1');
  verifier = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [key.publicJwk] } });
});

function call(
  operation: string,
  headers: Record<string, string> = {},
  peerCertificate?: CertificateIdentity,
): CallInfo {
  return testCall({ requestId: 'r-1', peerAddress: '127.0.0.1:1' }, operation, headers, peerCertificate);
}

function setup(mode: RbacMode = 'enforce', withCertificateRoles = true) {
  const { audit, lines } = capturedAudit();
  const guard = createGuard({
    audit,
    jwt: verifier,
    rbac: compileRbac(RULES, { mode }),
    ...(withCertificateRoles
      ? { certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }] }
      : {}),
  });
  return { guard, lines };
}

describe('createGuard', () => {
  it('lets a public operation through without credentials', async () => {
    await expect(setup().guard.check(call(HEALTH))).resolves.toBeUndefined();
  });

  it('returns the verified principal of an allowed call', async () => {
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    const principal = await setup().guard.check(call(GET, { authorization: `Bearer ${token}` }));
    expect(principal).toMatchObject({ subject: 'alice', roles: ['artifacts.reader'], authenticatedBy: 'jwt' });
  });

  it('refuses a call with no credential as missing_token', async () => {
    const err = await refusal(setup().guard.check(call(GET)));
    expect(err).toMatchObject({ code: 'unauthenticated', reason: 'missing_token' });
    expect(bearerChallenge(err)).toBe('Bearer');
  });

  it('refuses a role the rule does not grant', async () => {
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    expect(await refusal(setup().guard.check(call(DELETE, { authorization: `Bearer ${token}` })))).toMatchObject({
      code: 'permission_denied',
      reason: 'missing_role',
      subject: 'alice',
    });
  });

  it('denies an operation no rule names, even for an admin', async () => {
    const token = await sign(key, { claims: { roles: ['artifacts.admin'] } });
    expect(
      await refusal(
        setup().guard.check(call('/fluxguard.example.v1.ArtifactStore/Export', { authorization: `Bearer ${token}` })),
      ),
    ).toMatchObject({ code: 'permission_denied', reason: 'no_rule' });
  });

  it('refuses a bad token even when a certificate would have authorized the caller', async () => {
    const err = await refusal(setup().guard.check(call(GET, { authorization: 'Bearer not.a.token' }, backupCert)));
    expect(err.code).toBe('unauthenticated');
    expect(bearerChallenge(err, 'artifacts')).toBe('Bearer realm="artifacts", error="invalid_token"');
  });

  it('authenticates a mapped certificate alone, with the roles of its rule', async () => {
    const principal = await setup().guard.check(call(GET, {}, backupCert));
    expect(principal).toMatchObject({
      subject: 'spiffe://fluxguard.dev/backup',
      roles: ['artifacts.reader'],
      authenticatedBy: 'mtls',
    });
    expect(await refusal(setup().guard.check(call(DELETE, {}, backupCert)))).toMatchObject({
      code: 'permission_denied',
    });
  });

  it('never lets a certificate authenticate alone unless certificateRoles says so', async () => {
    expect(await refusal(setup('enforce', false).guard.check(call(GET, {}, backupCert)))).toMatchObject({
      code: 'unauthenticated',
    });
  });

  it('merges token and certificate into one principal authenticated by both', async () => {
    const token = await sign(key, { claims: { roles: ['artifacts.admin'] } });
    const principal = await setup().guard.check(call(DELETE, { authorization: `Bearer ${token}` }, backupCert));
    expect(principal).toMatchObject({ subject: 'alice', authenticatedBy: 'both', certificate: backupCert });
  });

  it('checks a certificate requirement against the verified peer certificate', async () => {
    await expect(
      setup('enforce', false).guard.check(call('/fluxguard.example.v1.Backup/Pull', {}, backupCert)),
    ).resolves.toBeUndefined();
    const other = {
      ...backupCert,
      spiffeId: 'spiffe://fluxguard.dev/intruder',
      uris: ['spiffe://fluxguard.dev/intruder'],
    };
    expect(
      await refusal(setup('enforce', false).guard.check(call('/fluxguard.example.v1.Backup/Pull', {}, other))),
    ).toMatchObject({
      code: 'permission_denied',
    });
  });

  it('identifies nobody by a certificate that has expired since the handshake', async () => {
    const expired = { ...backupCert, validTo: new Date(Date.now() - 1000) };
    expect(await refusal(setup().guard.check(call(GET, {}, expired)))).toMatchObject({ code: 'unauthenticated' });
    expect(
      await refusal(setup('enforce', false).guard.check(call('/fluxguard.example.v1.Backup/Pull', {}, expired))),
    ).toMatchObject({
      code: 'unauthenticated',
    });
  });

  it('ignores client headers that look like a principal', async () => {
    const forged = {
      'x-fluxguard-principal': '{"subject":"root","roles":["artifacts.admin"]}',
      'x-user': 'root',
      'x-roles': 'artifacts.admin',
    };
    expect(await refusal(setup().guard.check(call(DELETE, forged)))).toMatchObject({ code: 'unauthenticated' });
  });

  it('in shadow mode logs a would-be denial and lets the call through', async () => {
    const { guard, lines } = setup('shadow');
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    await expect(guard.check(call(DELETE, { authorization: `Bearer ${token}` }))).resolves.toMatchObject({
      subject: 'alice',
    });
    // Said once when the authorizer was made, then once for each call it would refuse.
    expect(lines[0]).toMatchObject({ event: 'rbac.shadow_mode', level: 40 });
    expect(lines[1]).toMatchObject({
      event: 'rbac.shadow_denied',
      outcome: 'allowed',
      operation: DELETE,
      subject: 'alice',
      requestId: 'r-1',
    });
  });

  it('in shadow mode names the request and the peer of a call whose certificate has expired since the handshake', async () => {
    const { guard, lines } = setup('shadow', false);
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    const expired = { ...backupCert, validTo: new Date(Date.now() - 1000) };
    // As the adapters make it: the request id, the peer and the signal are read through getters.
    const state = new CallState({
      requestId: 'r-expired',
      deadline: undefined,
      end: () => undefined,
      onReleaseError: () => undefined,
    });
    const received = new StateCallInfo(
      state,
      'grpc',
      DELETE,
      '127.0.0.1:2',
      expired,
      call(DELETE, { authorization: `Bearer ${token}` }).headers,
    );
    await expect(guard.check(received)).resolves.toMatchObject({ subject: 'alice', certificate: undefined });
    expect(lines.at(-1)).toMatchObject({
      event: 'rbac.shadow_denied',
      operation: DELETE,
      requestId: 'r-expired',
      peer: '127.0.0.1:2',
    });
  });

  it('in shadow mode names the rule of an HTTP call, not the path the client chose', async () => {
    const { audit, lines } = capturedAudit();
    const guard = createGuard({
      audit,
      jwt: verifier,
      rbac: compileRbac({ 'DELETE /v1/items/:id': { anyRoles: ['artifacts.admin'] } }, { mode: 'shadow' }),
    });
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    const http = (operation: string): CallInfo => ({
      ...call(operation, { authorization: `Bearer ${token}` }),
      transport: 'http',
    });
    await guard.check(http('DELETE /v1/items/a-path-chosen-by-the-client'));
    await guard.check(http('POST /v1/another-path-chosen-by-the-client'));
    expect(lines.slice(1).map((line) => [line.reason, line.operation])).toEqual([
      ['missing_role', 'DELETE /v1/items/:id'],
      ['no_rule', 'POST <unmatched>'],
    ]);
  });

  it('in shadow mode still refuses a token that is sent and invalid', async () => {
    expect(await refusal(setup('shadow').guard.check(call(GET, { authorization: 'Bearer x.y.z' })))).toMatchObject({
      code: 'unauthenticated',
    });
  });

  describe('a certificate that failed verification (per-operation mode)', () => {
    const PULL = '/p.Store/Pull';
    const rules = {
      [PULL]: { anyRoles: ['artifacts.reader'], certificate: [{ spiffeId: 'spiffe://fluxguard.dev/**' }] },
      [GET]: { certificate: [{ spiffeId: 'spiffe://fluxguard.dev/backup' }] },
    };
    const untrusted = (operation: string, headers: Record<string, string> = {}): CallInfo => ({
      ...call(operation, headers),
      peerCertificateError: 'CERT_HAS_EXPIRED',
    });
    const guardOf = (mode: RbacMode = 'enforce') => {
      const { audit, lines } = capturedAudit();
      return { guard: createGuard({ audit, jwt: verifier, rbac: compileRbac(rules, { mode }) }), lines };
    };

    it('names the certificate in the refusal of a certificate rule, with the answer of none', async () => {
      const { guard } = guardOf();
      const authorization = `Bearer ${await sign(key, { claims: { roles: ['artifacts.reader'] } })}`;
      const presented = await refusal(guard.check(untrusted(PULL, { authorization })));
      const none = await refusal(guard.check(call(PULL, { authorization })));
      expect(presented).toMatchObject({
        code: 'permission_denied',
        reason: 'certificate_untrusted',
        subject: 'alice',
        auditFields: { certificateError: 'CERT_HAS_EXPIRED' },
      });
      expect(none).toMatchObject({ code: 'permission_denied', reason: 'certificate_mismatch', auditFields: undefined });
      expect([presented.message, presented.details]).toEqual([none.message, none.details]);
    });

    it('keeps missing_token for a caller with nothing else, naming the certificate in the line only', async () => {
      const err = await refusal(guardOf().guard.check(untrusted(GET)));
      expect(err).toMatchObject({
        code: 'unauthenticated',
        reason: 'missing_token',
        auditFields: { certificateError: 'CERT_HAS_EXPIRED' },
      });
      expect(bearerChallenge(err)).toBe('Bearer');
    });

    it('leaves every other refusal as it was', async () => {
      const authorization = `Bearer ${await sign(key, { claims: { roles: ['artifacts.writer'] } })}`;
      expect(await refusal(guardOf().guard.check(untrusted(PULL, { authorization })))).toMatchObject({
        reason: 'missing_role',
        auditFields: undefined,
      });
    });

    it('says so in a shadow-mode line too', async () => {
      const { guard, lines } = guardOf('shadow');
      const authorization = `Bearer ${await sign(key, { claims: { roles: ['artifacts.reader'] } })}`;
      await guard.check(untrusted(PULL, { authorization }));
      expect(lines.at(-1)).toMatchObject({
        event: 'rbac.shadow_denied',
        reason: 'certificate_untrusted',
        code: 'permission_denied',
        detail: { certificateError: 'CERT_HAS_EXPIRED' },
      });
    });
  });

  it('refuses bad options at construction', () => {
    const audit = createAuditLogger({ level: 'silent' });
    expect(() => createGuard({ audit, rbac: {} as never })).toThrow(/compileRbac/);
    expect(() => createGuard({ audit, rbac: compileRbac(RULES), jwtt: verifier } as never)).toThrow(
      /did you mean "jwt"/,
    );
  });
});

describe('httpOperation', () => {
  it('authorizes HEAD as GET so the GET rule applies', () => {
    expect(httpOperation('HEAD', '/v1/artifacts/a')).toBe('GET /v1/artifacts/a');
    expect(httpOperation('delete', '/v1/artifacts/a')).toBe('DELETE /v1/artifacts/a');
  });
});
