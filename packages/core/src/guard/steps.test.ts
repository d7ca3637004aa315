import { beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, CertificateIdentity, Principal } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
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
  BACKUP_CERTIFICATE,
} from '../testing/jwt-fixtures.js';
import { createJwtVerifier, type JwtVerifier } from '../jwt/verifier.js';
import { compileRbac, type RbacMode } from '../rbac/rbac.js';
import { createAuthenticator } from './authenticate.js';
import { createAuthorizer, type Authorizer } from './authorize.js';
import { createGuard } from './guard.js';
import { createGuardFromPolicy } from './from-policy.js';
import { parseSecurityPolicy } from '../policy/policy.js';
import { createTimeouts } from '../timeouts/timeouts.js';
import { stackControls } from './step-options.js';
import type { Control } from '../pipeline/control.js';
import { createRateLimit } from '../ratelimit/rate-limit.js';

const { GET, DELETE, HEALTH, PULL } = GUARD_OPS;
const RULES = GUARD_RULES;
const CERTIFICATE_ROLES = [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }];

const backupCert = BACKUP_CERTIFICATE;
const expiredCert: CertificateIdentity = Object.freeze({ ...backupCert, validTo: new Date(Date.now() - 1000) });

let key: TestKey;
let verifier: JwtVerifier;
beforeAll(async () => {
  key = await makeKey('ES256', 'k-steps');
  verifier = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [key.publicJwk] } });
});

function call(
  operation: string,
  headers: Record<string, string> = {},
  peerCertificate?: CertificateIdentity,
): CallInfo {
  return testCall({ requestId: 'r-steps', peerAddress: '127.0.0.1:2' }, operation, headers, peerCertificate);
}

function refusalOf(authorizer: Authorizer, c: CallInfo, p: Principal | undefined): SecurityError {
  try {
    authorizer.authorize(c, p);
  } catch (err) {
    if (err instanceof SecurityError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

const principal = (subject: string, roles: string[]): Principal => ({
  subject,
  roles,
  scopes: [],
  claims: {},
  certificate: undefined,
  authenticatedBy: 'jwt',
});

describe('createAuthenticator', () => {
  it('returns the principal of a valid token, and anonymous (undefined) without a credential', async () => {
    const authenticator = createAuthenticator({ jwt: verifier });
    const token = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    await expect(authenticator.authenticate(call(DELETE, { authorization: `Bearer ${token}` }))).resolves.toMatchObject(
      {
        subject: 'alice',
        roles: ['artifacts.reader'],
        authenticatedBy: 'jwt',
      },
    );
    // Authentication decides nothing about access: the reader is not refused DELETE here.
    await expect(authenticator.authenticate(call(DELETE))).resolves.toBeUndefined();
  });

  it('always refuses a token that is sent and invalid, even with a mapped certificate', async () => {
    const authenticator = createAuthenticator({ jwt: verifier, certificateRoles: CERTIFICATE_ROLES });
    expect(
      await refusal(authenticator.authenticate(call(GET, { authorization: 'Bearer not.a.token' }, backupCert))),
    ).toMatchObject({
      code: 'unauthenticated',
    });
    const otherKey = await makeKey('ES256', 'k-other');
    const forged = await sign(otherKey, { claims: { roles: ['artifacts.admin'] } });
    expect(await refusal(authenticator.authenticate(call(GET, { authorization: `Bearer ${forged}` })))).toMatchObject({
      code: 'unauthenticated',
    });
  });

  it('accepts no token at all without a verifier (a certificate-only service)', async () => {
    const authenticator = createAuthenticator({ certificateRoles: CERTIFICATE_ROLES });
    const token = await sign(key);
    await expect(authenticator.authenticate(call(GET, { authorization: `Bearer ${token}` }))).resolves.toBeUndefined();
  });

  it('authenticates a mapped certificate alone, merges it with a token, and ignores an unmapped one', async () => {
    const authenticator = createAuthenticator({ jwt: verifier, certificateRoles: CERTIFICATE_ROLES });
    await expect(authenticator.authenticate(call(GET, {}, backupCert))).resolves.toMatchObject({
      subject: 'spiffe://fluxguard.dev/backup',
      roles: ['artifacts.reader'],
      authenticatedBy: 'mtls',
    });
    const token = await sign(key);
    await expect(
      authenticator.authenticate(call(GET, { authorization: `Bearer ${token}` }, backupCert)),
    ).resolves.toMatchObject({
      subject: 'alice',
      authenticatedBy: 'both',
      certificate: backupCert,
    });
    await expect(
      createAuthenticator({ jwt: verifier }).authenticate(call(GET, {}, backupCert)),
    ).resolves.toBeUndefined();
  });

  it('identifies nobody by a certificate that has expired since the handshake', async () => {
    const authenticator = createAuthenticator({ jwt: verifier, certificateRoles: CERTIFICATE_ROLES });
    await expect(authenticator.authenticate(call(GET, {}, expiredCert))).resolves.toBeUndefined();
    const token = await sign(key);
    const merged = await authenticator.authenticate(call(GET, { authorization: `Bearer ${token}` }, expiredCert));
    expect(merged).toMatchObject({ subject: 'alice', authenticatedBy: 'jwt', certificate: undefined });
  });

  it('ignores headers that look like a principal', async () => {
    const forged = { 'x-fluxguard-principal': '{"subject":"root"}', 'x-user': 'root', 'x-roles': 'artifacts.admin' };
    await expect(createAuthenticator({ jwt: verifier }).authenticate(call(DELETE, forged))).resolves.toBeUndefined();
  });

  it('with rbac, does not read credentials on a public operation', async () => {
    const authenticator = createAuthenticator({ jwt: verifier, rbac: compileRbac(RULES) });
    await expect(
      authenticator.authenticate(call(HEALTH, { authorization: 'Bearer not.a.token' })),
    ).resolves.toBeUndefined();
    expect(await refusal(authenticator.authenticate(call(GET, { authorization: 'Bearer not.a.token' })))).toMatchObject(
      {
        code: 'unauthenticated',
      },
    );
  });

  it('refuses bad options at construction', () => {
    expect(() => createAuthenticator({ jwtt: verifier } as never)).toThrow(/did you mean "jwt"/);
    expect(() => createAuthenticator({ jwt: {} as never })).toThrow(/createJwtVerifier/);
    expect(() => createAuthenticator({ certificateRoles: [{ spifeId: 'x' }] as never })).toThrow(
      /createAuthenticator.certificateRoles\[0\]: unknown field "spifeId"/,
    );
  });
});

describe('createAuthorizer', () => {
  function authorizer(mode: RbacMode = 'enforce') {
    const { audit, lines } = capturedAudit();
    return { authorizer: createAuthorizer({ audit, rbac: compileRbac(RULES, { mode }) }), lines };
  }

  it('lets a public operation through for an anonymous caller', () => {
    expect(() => {
      authorizer().authorizer.authorize(call(HEALTH), undefined);
    }).not.toThrow();
  });

  it('refuses an anonymous caller on a protected operation as missing_token', () => {
    expect(refusalOf(authorizer().authorizer, call(GET), undefined)).toMatchObject({
      code: 'unauthenticated',
      reason: 'missing_token',
    });
  });

  it('allows a granted role and names the subject of a refusal', () => {
    const { authorizer: a } = authorizer();
    expect(() => {
      a.authorize(call(GET), principal('alice', ['artifacts.reader']));
    }).not.toThrow();
    expect(refusalOf(a, call(DELETE), principal('alice', ['artifacts.reader']))).toMatchObject({
      code: 'permission_denied',
      reason: 'missing_role',
      subject: 'alice',
    });
    expect(refusalOf(a, call('/x.Y/Z'), principal('root', ['artifacts.admin']))).toMatchObject({
      code: 'permission_denied',
      reason: 'no_rule',
    });
  });

  it('meets a certificate-only rule with the verified peer certificate, never with an expired one', () => {
    const { authorizer: a } = authorizer();
    expect(() => {
      a.authorize(call(PULL, {}, backupCert), undefined);
    }).not.toThrow();
    expect(refusalOf(a, call(PULL, {}, expiredCert), undefined)).toMatchObject({ code: 'unauthenticated' });
    const other = {
      ...backupCert,
      spiffeId: 'spiffe://fluxguard.dev/intruder',
      uris: ['spiffe://fluxguard.dev/intruder'],
    };
    expect(refusalOf(a, call(PULL, {}, other), undefined)).toMatchObject({ code: 'permission_denied' });
  });

  it('in shadow mode logs a would-be denial and lets the call through', () => {
    const { authorizer: a, lines } = authorizer('shadow');
    expect(() => {
      a.authorize(call(DELETE), principal('alice', ['artifacts.reader']));
    }).not.toThrow();
    // Said once when the authorizer was made, then once for each call it would refuse.
    expect(lines[0]).toMatchObject({ event: 'rbac.shadow_mode', level: 40 });
    expect(lines[1]).toMatchObject({
      event: 'rbac.shadow_denied',
      outcome: 'allowed',
      operation: DELETE,
      subject: 'alice',
      requestId: 'r-steps',
    });
  });

  it('refuses bad options at construction', () => {
    const audit = createAuditLogger({ level: 'silent' });
    expect(() => createAuthorizer({ audit, rbac: {} as never })).toThrow(
      /createAuthorizer: "rbac" must be the result of compileRbac/,
    );
    expect(() => createAuthorizer({ audit: {} as never, rbac: compileRbac(RULES) })).toThrow(/AuditLogger/);
    expect(() => createAuthorizer({ audit, rbac: compileRbac(RULES), mode: 'shadow' } as never)).toThrow(
      /unknown option "mode"/,
    );
  });

  it('takes as jwt only a verifier of createJwtVerifier, not any object with authenticate()', () => {
    const audit = createAuditLogger({ level: 'silent' });
    const rbac = compileRbac(RULES);
    const stand = {
      authenticate: () => Promise.resolve({ subject: 'mallory', roles: ['artifacts.admin'], scopes: [] }),
      verify: () => Promise.reject(new Error('unused')),
      algorithms: ['ES256'],
    } as unknown as JwtVerifier;
    const frozen = Object.freeze({ ...verifier });
    for (const jwt of [stand, frozen]) {
      expect(() => createAuthenticator({ jwt, rbac })).toThrow(
        /createAuthenticator: "jwt" must be the result of createJwtVerifier\(\)/,
      );
      expect(() => createGuard({ audit, jwt, rbac })).toThrow(
        /createGuard: "jwt" must be the result of createJwtVerifier/,
      );
    }
    expect(() => createGuard({ audit, jwt: verifier, rbac })).not.toThrow();
  });

  it('names the option given as null, rather than failing inside with a TypeError', () => {
    const audit = createAuditLogger({ level: 'silent' });
    const rbac = compileRbac(RULES);
    expect(() => createAuthorizer({ audit, rbac: null as never })).toThrow(/"rbac" must be the result of compileRbac/);
    expect(() => createGuard({ audit, rbac: null as never })).toThrow(/createGuard: "rbac" must be the result/);
    expect(() => createAuthenticator({ jwt: null as never, rbac })).toThrow(/createAuthenticator: "jwt"/);
    expect(() => createAuthenticator({ rbac: null as never })).toThrow(/createAuthenticator: "rbac"/);
    expect(() =>
      createJwtVerifier({
        issuer: 'https://id.example.com',
        audience: 'a',
        jwksUrl: 'https://id.example.com/j',
        denylist: null as never,
      }),
    ).toThrow(/"denylist" must implement isRevoked and revoke/);
  });
});

describe('createGuard as the composition of the two steps', () => {
  it('decides every case as authenticate then authorize do', async () => {
    const { audit } = capturedAudit();
    const guard = createGuard({ audit, jwt: verifier, rbac: compileRbac(RULES), certificateRoles: CERTIFICATE_ROLES });
    const reader = await sign(key, { claims: { roles: ['artifacts.reader'] } });
    const admin = await sign(key, { claims: { roles: ['artifacts.admin'] } });
    const cases: CallInfo[] = [
      call(HEALTH),
      call(HEALTH, { authorization: 'Bearer bad' }),
      call(GET),
      call(GET, { authorization: `Bearer ${reader}` }),
      call(GET, { authorization: 'Bearer bad' }, backupCert),
      call(GET, {}, backupCert),
      call(GET, {}, expiredCert),
      call(DELETE, { authorization: `Bearer ${reader}` }),
      call(DELETE, { authorization: `Bearer ${admin}` }, backupCert),
      call(PULL, {}, backupCert),
      call('/x.Y/Z', { authorization: `Bearer ${admin}` }),
    ];
    const outcome = (p: Promise<Principal | undefined>) =>
      p.then(
        (value) => ({ ok: true, subject: value?.subject, by: value?.authenticatedBy }),
        (err: unknown) => ({ ok: false, code: (err as SecurityError).code, reason: (err as SecurityError).reason }),
      );
    for (const c of cases) {
      const composed = outcome(
        guard.authenticator.authenticate(c).then((p) => {
          guard.authorizer.authorize(c, p);
          return p;
        }),
      );
      expect(await composed).toEqual(await outcome(guard.check(c)));
    }
  });
});

describe("stackControls: the user's controls", () => {
  // Behind a guard, a group in a one-item list was called `controls[2]` (the guard's two
  // controls come first), and a hole in the list threw a TypeError reading its stage.
  const guard = createGuard({ audit: createAuditLogger({ level: 'silent' }), rbac: compileRbac({}) });
  const limits = createRateLimit({ rules: [{ name: 'per-peer', key: 'peer', points: 5, durationSeconds: 1 }] });

  it('names a bad entry by its place in the list given, behind a guard too', () => {
    expect(() => stackControls('fluxguard', guard, [limits as never], undefined)).toThrow(
      'fluxguard: controls[0] is a group of controls',
    );
    expect(() => stackControls('fluxguard', guard, [...limits.controls, undefined as never], undefined)).toThrow(
      'fluxguard: controls[1] is undefined: leave it out of the list instead',
    );
    expect(() => stackControls('fluxguard', undefined, [null as never], undefined)).toThrow(
      'fluxguard: controls[0] must be a control object',
    );
    expect(stackControls('fluxguard', guard, [...limits.controls], false)).toHaveLength(
      guard.controls.length + limits.controls.length,
    );
  });

  it('refuses a second control of the deadline stage, as a guard from a policy brings one', () => {
    const policyGuard = createGuardFromPolicy(
      parseSecurityPolicy({
        rbac: { rules: [{ operation: 'GET /healthz', public: true }] },
        timeouts: { defaultMs: 5_000 },
      }),
      { audit: createAuditLogger({ level: 'silent' }), transport: 'http' },
    );
    expect(() => stackControls('fluxguard', policyGuard, [createTimeouts({ maxMs: 60_000 })], undefined)).toThrow(
      /^fluxguard: two controls of the deadline stage are listed \("timeouts" and "timeouts"; .*\): a call has one deadline, so list one$/,
    );
    const own: Control = { name: 'my-deadline', stage: 'deadline', onStart: () => undefined };
    expect(() => stackControls('fluxguardInterceptors', undefined, [createTimeouts(), own], undefined)).toThrow(
      /two controls of the deadline stage are listed \("timeouts" and "my-deadline"/,
    );
    // One is kept as it is, and none gets the default.
    expect(stackControls('fluxguard', policyGuard, [], undefined).filter((c) => c.stage === 'deadline')).toHaveLength(
      1,
    );
    expect(stackControls('fluxguard', undefined, [own], undefined)).toEqual([own]);
  });
});
