import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status, type Client, type Metadata, type ServerInterceptor } from '@grpc/grpc-js';
import {
  ConfigurationError,
  compileRbac,
  createAuthenticator,
  createAuthorizer,
  createGuard,
  createJwtVerifier,
  type AuditLogger,
} from '@fluxguard/core';
import { fluxguardInterceptors, jwtAuth, rbac, safeErrors } from './index.js';
import {
  AUDIENCE,
  BACKUP_SPIFFE,
  ISSUER,
  SERVED,
  bearer,
  createTestPki,
  createTokenSigner,
  handlerStarts,
  op,
  principalOf,
  secureRules,
  startSecureServer,
  unary,
  upload,
  type SecureImpl,
  type SecureServer,
  type TestPki,
  type TokenSigner,
} from './testing/tls.js';

let pki: TestPki;
let signer: TokenSigner;
const servers: SecureServer[] = [];
/** jwtAuth alone; rbac alone; jwtAuth then rbac; the one-step guard. */
let authOnly: SecureServer;
let rbacOnly: SecureServer;
let separate: SecureServer;
let combined: SecureServer;

function client(server: SecureServer, cert?: { certPem: string; keyPem: string }): Client {
  return server.client(cert);
}

/** A server on the file's PKI: the same client certificate is trusted by each. */
async function start(interceptors: (audit: AuditLogger) => ServerInterceptor[]): Promise<SecureServer> {
  const server = await startSecureServer(interceptors, { pki });
  servers.push(server);
  return server;
}

beforeAll(async () => {
  pki = await createTestPki();
  signer = createTokenSigner();
  const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never });
  const certificateRoles = [{ spiffeId: BACKUP_SPIFFE, roles: ['backup.reader'] }];
  const compiled = compileRbac(secureRules(pki), { servedOperations: SERVED });
  const guardFor = (audit: AuditLogger) => createGuard({ audit, jwt, rbac: compiled, certificateRoles });
  authOnly = await start((audit) => [
    safeErrors({ audit }),
    jwtAuth({ authenticator: createAuthenticator({ jwt, certificateRoles }) }),
  ]);
  rbacOnly = await start((audit) => [
    safeErrors({ audit }),
    rbac({ authorizer: createAuthorizer({ audit, rbac: compiled }) }),
  ]);
  separate = await start((audit) => {
    const guard = guardFor(audit);
    return [
      safeErrors({ audit }),
      jwtAuth({ authenticator: guard.authenticator }),
      rbac({ authorizer: guard.authorizer }),
    ];
  });
  combined = await start((audit) => fluxguardInterceptors({ audit, guard: guardFor(audit) }));
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await pki.cleanup();
});

describe('jwtAuth alone', () => {
  it('hands the verified principal to the handler, and applies no RBAC', async () => {
    // A writer on Read would be refused by RBAC; jwtAuth alone only authenticates.
    const result = await unary(client(authOnly), 'Read', bearer(signer.sign({ sub: 'bob', roles: ['writer'] })));
    expect(result.status.code).toBe(Status.OK);
    expect(principalOf(result.response)).toEqual({
      subject: 'bob',
      roles: ['writer'],
      authenticatedBy: 'jwt',
      spiffeId: null,
    });
  });

  it('lets an anonymous caller through with no principal', async () => {
    const result = await unary(client(authOnly), 'Read');
    expect(result.status.code).toBe(Status.OK);
    expect(principalOf(result.response)).toBeNull();
  });

  it('refuses a bad token, an expired one and one signed by another key, before the handler', async () => {
    const starts = handlerStarts.count;
    for (const token of [
      'not.a.token',
      signer.sign({ sub: 'alice', roles: ['reader'], iat: 1, exp: 2 }),
      createTokenSigner().sign({ sub: 'mallory', roles: ['admin'] }),
    ]) {
      expect((await unary(client(authOnly), 'Public', bearer(token))).status.code).toBe(Status.UNAUTHENTICATED);
    }
    expect(handlerStarts.count).toBe(starts);
  });

  it('authenticates a certificate that certificateRoles maps, with no token', async () => {
    const result = await unary(client(authOnly, pki.backup), 'Read');
    expect(principalOf(result.response)).toMatchObject({ authenticatedBy: 'mtls', spiffeId: BACKUP_SPIFFE });
  });

  it('ignores metadata that looks like a principal', async () => {
    const forged = bearer(signer.sign({ sub: 'alice', roles: ['reader'] }));
    forged.set('x-fluxguard-principal', JSON.stringify({ subject: 'root', roles: ['admin'] }));
    const result = await unary(client(authOnly), 'Read', forged);
    expect(principalOf(result.response)).toMatchObject({ subject: 'alice', roles: ['reader'] });
  });
});

describe('rbac alone', () => {
  it('treats every caller as anonymous: a protected method is refused, even with a valid token', async () => {
    expect((await unary(client(rbacOnly), 'Read')).status.code).toBe(Status.UNAUTHENTICATED);
    const token = bearer(signer.sign({ sub: 'alice', roles: ['reader'] }));
    expect((await unary(client(rbacOnly), 'Read', token)).status.code).toBe(Status.UNAUTHENTICATED);
  });

  it('lets a public method through, and meets a certificate rule with the verified certificate', async () => {
    const open = await unary(client(rbacOnly), 'Public');
    expect(open.status.code).toBe(Status.OK);
    expect(principalOf(open.response)).toBeNull();
    expect((await unary(client(rbacOnly, pki.reader), 'Workload')).status.code).toBe(Status.OK);
    expect((await unary(client(rbacOnly, pki.outsider), 'Workload')).status.code).toBe(Status.PERMISSION_DENIED);
    expect((await unary(client(rbacOnly, pki.forged), 'Workload')).status.code).toBe(Status.UNAUTHENTICATED);
  });

  it('logs a refusal once, with the request id', async () => {
    const metadata = bearer('ignored');
    metadata.set('x-request-id', 'rbac-alone-1');
    await unary(client(rbacOnly), 'Read', metadata);
    const lines = rbacOnly.lines().filter((l) => l.requestId === 'rbac-alone-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ operation: op('Read'), code: 'unauthenticated', reason: 'missing_token' });
  });
});

describe('jwtAuth then rbac', () => {
  type Case = readonly [
    name: keyof SecureImpl,
    metadata: () => Metadata | undefined,
    cert: () => { certPem: string; keyPem: string } | undefined,
  ];
  const none = () => undefined;
  const token = (sub: string, roles: string[]) => () => bearer(signer.sign({ sub, roles }));
  const cases: readonly Case[] = [
    ['Public', none, none],
    ['Public', () => bearer('not.a.token'), none],
    ['Read', none, none],
    ['Read', () => bearer('not.a.token'), none],
    ['Read', token('alice', ['reader']), none],
    ['Read', token('bob', ['writer']), none],
    ['Read', token('alice', ['reader']), () => pki.reader],
    ['Workload', none, () => pki.reader],
    ['Workload', none, () => pki.outsider],
    ['Workload', none, () => pki.forged],
    ['Pinned', none, () => pki.backup],
    ['Backup', none, () => pki.backup],
    ['Backup', none, () => pki.reader],
  ];

  it('answers every case as the one-step guard does', async () => {
    for (const [name, metadata, cert] of cases) {
      const m1 = metadata();
      const m2 = m1?.clone();
      const [a, b] = await Promise.all([
        unary(client(separate, cert()), name, m1),
        unary(client(combined, cert()), name, m2),
      ]);
      expect({ name, code: a.status.code, principal: principalOf(a.response) }).toEqual({
        name,
        code: b.status.code,
        principal: principalOf(b.response),
      });
    }
  });

  it('delivers no message of a client stream before both steps have allowed the call', async () => {
    const allowed = await upload(
      client(separate),
      [{ n: 1 }, { n: 2 }],
      bearer(signer.sign({ sub: 'wendy', roles: ['writer'] })),
    );
    expect(allowed.response).toMatchObject({ principal: { subject: 'wendy' }, messages: [{ n: 1 }, { n: 2 }] });
    const starts = handlerStarts.count;
    const denied = await upload(client(separate), [{ n: 1 }], bearer(signer.sign({ sub: 'rita', roles: ['reader'] })));
    expect(denied.status.code).toBe(Status.PERMISSION_DENIED);
    expect(handlerStarts.count).toBe(starts);
  });
});

describe('jwtAuth() and rbac() construction', () => {
  it('refuses missing or wrong options', () => {
    expect(() => jwtAuth({} as never)).toThrow(ConfigurationError);
    expect(() => jwtAuth({ authenticator: {} as never })).toThrow(/createAuthenticator/);
    // A copy would lose what makes a second guard forget the caller this one recorded.
    const copy = { ...createAuthenticator({}) };
    expect(() => jwtAuth({ authenticator: copy })).toThrow(/not a copy/);
    expect(() => jwtAuth({ authentcator: {} } as never)).toThrow(/did you mean "authenticator"/);
    expect(() => rbac({} as never)).toThrow(ConfigurationError);
    expect(() => rbac({ authorizer: {} as never })).toThrow(/createAuthorizer/);
    // Any other control in the authorizer's place would authorize nothing: every call, anonymous
    // ones too, would reach the handler. The guard's authenticator is the easiest mix-up.
    const authorizer = createAuthorizer({
      audit: rbacOnly.audit,
      rbac: compileRbac(secureRules(pki), { servedOperations: SERVED }),
    });
    for (const stand of [createAuthenticator({}), { ...authorizer }, { onStart: () => undefined }]) {
      expect(() => rbac({ authorizer: stand as never })).toThrow(/not an authenticator, another control or a copy/);
    }
    expect(rbac({ authorizer })).toBeDefined();
  });

  it('refuses every call when safeErrors does not run first', async () => {
    await expect(start(() => [jwtAuth({ authenticator: createAuthenticator() })])).rejects.toThrow(
      'addService: the server runs no fluxguard interceptors',
    );
    // safeErrors behind jwtAuth: jwtAuth finds no call state, and fails closed.
    const own = await start((audit) => [jwtAuth({ authenticator: createAuthenticator() }), safeErrors({ audit })]);
    expect((await unary(client(own), 'Public')).status.code).toBe(Status.INTERNAL);
  });
});
