import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, CertificateIdentity } from '../call/call-info.js';
import { createMemoryDenylist } from '../denylist/memory.js';
import { AUDIENCE, ISSUER, headersOf, makeKey, sign, type TestKey } from '../testing/jwt-fixtures.js';
import { createJwtVerifier } from '../jwt/verifier.js';
import { parseSecurityPolicy, type SecurityPolicy } from '../policy/policy.js';
import { createMemoryRateLimitStore } from '../ratelimit/store.js';
import { createGuardFromPolicy } from './from-policy.js';

const S = '/fluxguard.example.v1.ArtifactStore';
const audit = createAuditLogger({ level: 'silent' });
const backupCert: CertificateIdentity = Object.freeze({
  spiffeId: 'spiffe://fluxguard.dev/backup',
  uris: ['spiffe://fluxguard.dev/backup'],
  dnsNames: [],
  commonName: undefined,
  fingerprint256: 'ef'.repeat(32),
  validFrom: new Date(0),
  validTo: new Date(4_000_000_000_000),
});

let key: TestKey;
let dir: string;
let policy: SecurityPolicy;
beforeAll(async () => {
  key = await makeKey('ES256', 'k-policy');
  dir = await mkdtemp(join(tmpdir(), 'fluxguard-guard-policy-'));
  await writeFile(join(dir, 'jwks.json'), JSON.stringify({ keys: [key.publicJwk] }));
  policy = parseSecurityPolicy({
    jwt: { issuer: ISSUER, audience: AUDIENCE, jwksFile: 'jwks.json', requireJti: true },
    rbac: {
      rules: [
        { operation: '/grpc.health.v1.Health/*', public: true },
        { operation: 'GET /healthz', public: true },
        { operation: `${S}/GetArtifact`, anyRoles: ['artifacts.reader'] },
        { operation: `${S}/DeleteArtifact`, anyRoles: ['artifacts.admin'] },
        { operation: 'GET /v1/artifacts/*path', anyRoles: ['artifacts.reader'] },
      ],
    },
    mtls: { certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }] },
  });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function call(operation: string, token?: string, peerCertificate?: CertificateIdentity): CallInfo {
  return {
    transport: operation.startsWith('/') ? 'grpc' : 'http',
    operation,
    requestId: 'r-policy',
    peerAddress: '127.0.0.1:3',
    peerCertificate,
    headers: headersOf(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

describe('createGuardFromPolicy', () => {
  it('verifies tokens with the policy keys, applies its rules and its certificate roles', async () => {
    const guard = createGuardFromPolicy(policy, { audit, baseDir: dir });
    const reader = await sign(key, { claims: { roles: ['artifacts.reader'], jti: 'j-1' } });
    await expect(guard.check(call(`${S}/GetArtifact`, reader))).resolves.toMatchObject({ subject: 'alice' });
    await expect(guard.check(call('GET /v1/artifacts/a.txt', reader))).resolves.toMatchObject({ subject: 'alice' });
    await expect(guard.check(call(`${S}/DeleteArtifact`, reader))).rejects.toMatchObject({ code: 'permission_denied' });
    await expect(guard.check(call(`${S}/GetArtifact`, undefined, backupCert))).resolves.toMatchObject({
      authenticatedBy: 'mtls',
    });
    // The policy's requireJti reaches the verifier.
    const noJti = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    await expect(guard.check(call(`${S}/GetArtifact`, noJti))).rejects.toMatchObject({ code: 'unauthenticated' });
  });

  it("holds every call to the policy's strict client certificates, whatever the TLS settings ask", async () => {
    const strict = parseSecurityPolicy({
      rbac: { rules: [{ operation: 'GET /healthz', public: true }] },
      mtls: { clientCertificates: 'strict' },
    });
    const guard = createGuardFromPolicy(strict, { audit });
    await expect(guard.check(call('GET /healthz'))).rejects.toMatchObject({
      code: 'permission_denied',
      reason: 'client_certificate_required',
    });
    await expect(guard.check(call('GET /healthz', undefined, backupCert))).resolves.toBeUndefined();
    // A certificate that failed verification is told apart in the audit facts, answered the same.
    await expect(
      guard.check({ ...call('GET /healthz'), peerCertificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }),
    ).rejects.toMatchObject({
      code: 'permission_denied',
      reason: 'certificate_untrusted',
      auditFields: { certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
    });
    // The same as pipeline controls: the certificate check comes first.
    expect(guard.controls[0]).toMatchObject({ name: 'mtls', stage: 'client-certificate' });
    const perOperation = createGuardFromPolicy(parseSecurityPolicy({ mtls: { clientCertificates: 'per-operation' } }), {
      audit,
    });
    expect(perOperation.controls.some((control) => control.name === 'mtls')).toBe(false);
  });

  it('keeps only the transport rules, so the other transport is denied by default', async () => {
    const guard = createGuardFromPolicy(policy, { audit, baseDir: dir, transport: 'grpc' });
    const reader = await sign(key, { claims: { roles: ['artifacts.reader'], jti: 'j-2' } });
    await expect(guard.check(call(`${S}/GetArtifact`, reader))).resolves.toBeDefined();
    await expect(guard.check(call('GET /v1/artifacts/a.txt', reader))).rejects.toMatchObject({ reason: 'no_rule' });
    expect(guard.rbac.ruleFor('GET /healthz')).toBeUndefined();
  });

  it('consults the denylist it is given', async () => {
    const denylist = createMemoryDenylist();
    const guard = createGuardFromPolicy(policy, { audit, baseDir: dir, denylist });
    const token = await sign(key, { claims: { roles: ['artifacts.reader'], jti: 'revoked-1' } });
    await expect(guard.check(call(`${S}/GetArtifact`, token))).resolves.toBeDefined();
    await denylist.revoke('revoked-1', new Date(Date.now() + 600_000));
    await expect(guard.check(call(`${S}/GetArtifact`, token))).rejects.toMatchObject({ code: 'unauthenticated' });
  });

  it('uses the verifier it is given instead of the policy keys', async () => {
    const other = await makeKey('ES256', 'k-given');
    const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [other.publicJwk] } });
    const guard = createGuardFromPolicy(policy, { audit, jwt });
    const token = await sign(other, { claims: { roles: ['artifacts.reader'] } });
    await expect(guard.check(call(`${S}/GetArtifact`, token))).resolves.toMatchObject({ subject: 'alice' });
    // The denylist was read only by the verifier `jwt` replaces: revocation would be off.
    expect(() => createGuardFromPolicy(policy, { audit, jwt, denylist: createMemoryDenylist() })).toThrow(
      /"denylist" is consulted by the verifier built from policy\.jwt, and "jwt" replaces that verifier/,
    );
  });

  it('refuses a rate-limit store for a policy without rate limits: limits would read as shared and be off', () => {
    expect(() =>
      createGuardFromPolicy(policy, { audit, baseDir: dir, rateLimitStore: createMemoryRateLimitStore() }),
    ).toThrow(
      'createGuardFromPolicy: "rateLimitStore" is where the limits of policy.rateLimits count, and the policy has no "rateLimits": add the section, or leave the store out',
    );
    const limited = parseSecurityPolicy({
      ...policy,
      rateLimits: { rules: [{ name: 'reads', key: 'subject', points: 5, durationSeconds: 60 }] },
    });
    const guard = createGuardFromPolicy(limited, { audit, baseDir: dir, rateLimitStore: createMemoryRateLimitStore() });
    expect(guard.controls.map((c) => c.name)).toContain('rate-limit');
  });

  it('reports rules naming no served operation, and bad options, at start-up', () => {
    expect(() =>
      createGuardFromPolicy(policy, { audit, baseDir: dir, transport: 'grpc', servedOperations: [`${S}/GetArtifact`] }),
    ).toThrow(/DeleteArtifact/);
    expect(() => createGuardFromPolicy(policy, { audit, transprt: 'grpc' } as never)).toThrow(
      /did you mean "transport"/,
    );
    expect(() => createGuardFromPolicy(policy, { audit, transport: 'smtp' } as never)).toThrow(/"grpc" or "http"/);
    expect(() => createGuardFromPolicy(policy, {} as never)).toThrow(/"audit" is required/);
    expect(() => createGuardFromPolicy(policy, { audit, baseDir: join(dir, 'missing') })).toThrow(/cannot read/);
    // Named, rather than the key file's JSON blamed for a TypeError of path.resolve.
    for (const baseDir of [5, '', ' ', ['/etc']]) {
      expect(() => createGuardFromPolicy(policy, { audit, baseDir } as never)).toThrow(
        'createGuardFromPolicy: "baseDir" must be a non-empty string (a directory)',
      );
    }
  });

  it('refuses at start-up a limit whose pattern names no served operation: a misspelt route would leave it off', () => {
    const served = ['GET /healthz', 'GET /v1/artifacts', 'PUT /v1/artifacts/*path', `${S}/ListArtifacts`];
    const rules = [{ operation: 'GET /healthz', public: true }];
    const withLimits = (extra: Record<string, unknown>) =>
      parseSecurityPolicy({
        jwt: { issuer: ISSUER, audience: AUDIENCE, jwksFile: 'jwks.json' },
        rbac: { rules },
        ...extra,
      });
    const guard = (extra: Record<string, unknown>) => () =>
      createGuardFromPolicy(withLimits(extra), { audit, baseDir: dir, transport: 'http', servedOperations: served });
    const lists = (operations: string[]) => ({
      rateLimits: { rules: [{ name: 'lists', key: 'subject', points: 30, durationSeconds: 60, operations }] },
    });
    // One letter short: the limit would never count a list.
    expect(guard(lists([`${S}/ListArtifact`, 'GET /v1/artifact']))).toThrow(
      'createGuardFromPolicy: a pattern names operations this server does not serve: rateLimits.rules[0].operations[1] "GET /v1/artifact"',
    );
    expect(
      guard({
        rateLimits: {
          rules: [
            {
              name: 'all',
              key: 'peer',
              points: 9,
              durationSeconds: 1,
              operationCosts: { 'PUT /v1/artifact/*path': 5 },
            },
          ],
        },
        timeouts: {
          rules: [
            { operation: 'PUT /v1/artifacts/*name', maxMs: 600_000 },
            { operation: 'POST /v1/x', idleMs: 1000 },
          ],
        },
        limits: { rules: [{ operation: 'GET /v1/artefacts', maxBodyBytes: 1024 }] },
      }),
    ).toThrow(
      /rateLimits\.rules\[0\]\.operationCosts "PUT \/v1\/artifact\/\*path", timeouts\.rules\[1\]\.operation "POST \/v1\/x", limits\.rules\[0\]\.operation "GET \/v1\/artefacts"$/,
    );
    // Matching patterns pass; the other transport's patterns are not this server's to serve.
    expect(guard(lists([`${S}/ListArtifacts`, `${S}/Nothing`, 'GET /v1/artifacts', 'GET /v1/*rest']))).not.toThrow();
    expect(() =>
      createGuardFromPolicy(withLimits(lists(['GET /v1/artifact'])), {
        audit,
        baseDir: dir,
        transport: 'grpc',
        servedOperations: [`${S}/ListArtifacts`],
      }),
    ).not.toThrow();
    // Without a transport, every kind the server serves is checked.
    expect(() =>
      createGuardFromPolicy(withLimits(lists([`${S}/ListArtifact`])), {
        audit,
        baseDir: dir,
        servedOperations: served,
      }),
    ).toThrow(/rateLimits\.rules\[0\]\.operations\[0\] "\/fluxguard\.example\.v1\.ArtifactStore\/ListArtifact"/);
  });

  it('refuses rules that ask for roles without a jwt section (a token sent would be read as none), and denies everything without rules', async () => {
    const policy = parseSecurityPolicy({
      rbac: {
        rules: [
          { operation: 'GET /healthz', public: true },
          { operation: 'GET /v1/artifacts/*path', anyRoles: ['artifacts.reader'] },
        ],
      },
    });
    expect(() => createGuardFromPolicy(policy, { audit })).toThrow(
      'the rule "GET /v1/artifacts/*path" needs a principal (roles, scopes or authenticated), but nothing can give a call one',
    );
    // Public rules, and rules a certificate alone passes, need none.
    const open = parseSecurityPolicy({
      rbac: {
        rules: [
          { operation: 'GET /healthz', public: true },
          { operation: 'GET /v1/internal/*path', certificate: [{ spiffeId: 'spiffe://fluxguard.dev/**' }] },
        ],
      },
    });
    await expect(createGuardFromPolicy(open, { audit }).check(call('GET /healthz'))).resolves.toBeUndefined();
    const empty = createGuardFromPolicy({}, { audit });
    await expect(empty.check(call('GET /healthz'))).rejects.toMatchObject({ reason: 'no_rule' });
  });
});
