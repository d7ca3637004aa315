// Two guards on one server (`[safeErrors, guard(users), guard(operators)]`): each decides on the
// caller it verifies itself, never on one the guard before it recorded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Status,
  type Metadata,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { compileRbac, createGuard, createJwtVerifier, type AuditLogger, type RbacRules } from '@fluxguard/core';
import { findCallContext, guard, safeErrors, setPrincipal } from './index.js';
import {
  AUDIENCE,
  BACKUP_SPIFFE,
  ISSUER,
  SERVED,
  bearer,
  createTokenSigner,
  op,
  principalOf,
  startSecureServer,
  unary,
  type SecureServer,
  type TokenSigner,
} from './testing/tls.js';

let users: TokenSigner;
let server: SecureServer;
/** Two guards made alike, with an interceptor between them that records the first one's user again. */
let enriched: SecureServer;

beforeAll(async () => {
  users = createTokenSigner();
  const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: users.jwks as never });
  const anyone: RbacRules = Object.fromEntries(SERVED.map((method) => [method, { authenticated: true }]));
  const userGuard = (audit: AuditLogger) =>
    createGuard({
      audit,
      jwt,
      rbac: compileRbac({ ...anyone, [op('Public')]: { public: true } }, { servedOperations: SERVED }),
    });
  // The operators' guard: workload certificates only, never a token.
  const operatorGuard = (audit: AuditLogger) =>
    createGuard({
      audit,
      rbac: compileRbac(
        { ...anyone, [op('Backup')]: { anyRoles: ['ops'] }, [op('Read')]: { public: true } },
        { servedOperations: SERVED },
      ),
      certificateRoles: [{ spiffeId: BACKUP_SPIFFE, roles: ['ops'] }],
    });
  server = await startSecureServer((audit) => [
    safeErrors({ audit }),
    guard({ guard: userGuard(audit) }),
    guard({ guard: operatorGuard(audit) }),
  ]);
  // As an interceptor that loads a user's roles from a database would.
  const enrich: ServerInterceptor = (_method, call) =>
    new ServerInterceptingCall(
      call,
      new ResponderBuilder()
        .withStart((next) => {
          next(
            new ServerListenerBuilder()
              .withOnReceiveMetadata((metadata, nextMetadata) => {
                const user = findCallContext(metadata)?.principal;
                if (user !== undefined) setPrincipal(metadata, { ...user, roles: [...user.roles] });
                nextMetadata(metadata);
              })
              .build(),
          );
        })
        .build(),
    );
  // On the first server's PKI: the same client certificate is trusted by both.
  enriched = await startSecureServer(
    (audit) => [
      safeErrors({ audit }),
      guard({ guard: userGuard(audit) }),
      enrich,
      guard({ guard: operatorGuard(audit) }),
    ],
    { pki: server.pki },
  );
});

afterAll(async () => {
  await enriched.close();
  await server.close();
});

const call = (
  method: 'Backup' | 'Read',
  metadata?: Metadata,
  cert?: { certPem: string; keyPem: string },
  on: SecureServer = server,
) => unary(on.client(cert), method, metadata);

describe('two guards on one server', () => {
  it("the second decides on the callers it verifies, never on the first one's user", async () => {
    for (const role of ['reader', 'ops']) {
      const result = await call('Backup', bearer(users.sign({ sub: 'mallory', roles: [role] })));
      expect(result.status.code, role).toBe(Status.UNAUTHENTICATED);
    }
  });

  it('serves the caller the second verifies, and its public methods see no caller of the first', async () => {
    const token = bearer(users.sign({ sub: 'mallory', roles: ['ops'] }));
    const operator = await call('Backup', token, server.pki.backup);
    expect(operator.status.code).toBe(Status.OK);
    expect(principalOf(operator.response)).toMatchObject({ subject: BACKUP_SPIFFE, authenticatedBy: 'mtls' });
    const open = await call('Read', bearer(users.sign({ sub: 'mallory', roles: ['ops'] })));
    expect(open.status.code).toBe(Status.OK);
    expect(principalOf(open.response)).toBeNull();
  });

  it("never decides on the first one's user recorded again by an interceptor between them", async () => {
    const token = () => bearer(users.sign({ sub: 'mallory', roles: ['ops'] }));
    expect((await call('Backup', token(), undefined, enriched)).status.code).toBe(Status.UNAUTHENTICATED);
    const operator = await call('Backup', token(), server.pki.backup, enriched);
    expect(operator.status.code).toBe(Status.OK);
    expect(principalOf(operator.response)).toMatchObject({ subject: BACKUP_SPIFFE });
  });
});
