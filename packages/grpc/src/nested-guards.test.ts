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
import { compileRbac, createGuard, createJwtVerifier, type RbacRules } from '@fluxguard/core';
import { captureAudit } from './testing/harness.js';
import { findCallContext, guard, safeErrors, setPrincipal } from './index.js';
import {
  AUDIENCE,
  BACKUP_SPIFFE,
  ISSUER,
  SERVED,
  bearer,
  createClientPool,
  createTestPki,
  createTokenSigner,
  op,
  perOperationCredentials,
  principalOf,
  startTlsServer,
  unary,
  type TestPki,
  type TestServer,
  type TokenSigner,
} from './testing/tls.js';

let pki: TestPki;
let users: TokenSigner;
let server: TestServer;
/** The same two guards, with an interceptor between them that records the first one's user again. */
let enriched: TestServer;
const audit = captureAudit();
const clients = createClientPool();

beforeAll(async () => {
  pki = await createTestPki();
  users = createTokenSigner();
  const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: users.jwks as never });
  const anyone: RbacRules = Object.fromEntries(SERVED.map((method) => [method, { authenticated: true }]));
  const userGuard = createGuard({
    audit: audit.audit,
    jwt,
    rbac: compileRbac({ ...anyone, [op('Public')]: { public: true } }, { servedOperations: SERVED }),
  });
  // The operators' guard: workload certificates only, never a token.
  const operatorGuard = createGuard({
    audit: audit.audit,
    rbac: compileRbac(
      { ...anyone, [op('Backup')]: { anyRoles: ['ops'] }, [op('Read')]: { public: true } },
      { servedOperations: SERVED },
    ),
    certificateRoles: [{ spiffeId: BACKUP_SPIFFE, roles: ['ops'] }],
  });
  server = await startTlsServer(perOperationCredentials(pki, audit.audit), [
    safeErrors({ audit: audit.audit }),
    guard({ guard: userGuard }),
    guard({ guard: operatorGuard }),
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
  enriched = await startTlsServer(perOperationCredentials(pki, audit.audit), [
    safeErrors({ audit: audit.audit }),
    guard({ guard: userGuard }),
    enrich,
    guard({ guard: operatorGuard }),
  ]);
});

afterAll(async () => {
  clients.closeAll();
  await Promise.all([server.close(), enriched.close()]);
  await pki.cleanup();
});

const call = (
  method: 'Backup' | 'Read',
  metadata?: Metadata,
  cert?: { certPem: string; keyPem: string },
  on: TestServer = server,
) => unary(clients.open(on.address, pki.ca.certPem, cert), method, metadata);

describe('two guards on one server', () => {
  it("the second decides on the callers it verifies, never on the first one's user", async () => {
    for (const role of ['reader', 'ops']) {
      const result = await call('Backup', bearer(users.sign({ sub: 'mallory', roles: [role] })));
      expect(result.status.code, role).toBe(Status.UNAUTHENTICATED);
    }
  });

  it('serves the caller the second verifies, and its public methods see no caller of the first', async () => {
    const token = bearer(users.sign({ sub: 'mallory', roles: ['ops'] }));
    const operator = await call('Backup', token, pki.backup);
    expect(operator.status.code).toBe(Status.OK);
    expect(principalOf(operator.response)).toMatchObject({ subject: BACKUP_SPIFFE, authenticatedBy: 'mtls' });
    const open = await call('Read', bearer(users.sign({ sub: 'mallory', roles: ['ops'] })));
    expect(open.status.code).toBe(Status.OK);
    expect(principalOf(open.response)).toBeNull();
  });

  it("never decides on the first one's user recorded again by an interceptor between them", async () => {
    const token = () => bearer(users.sign({ sub: 'mallory', roles: ['ops'] }));
    expect((await call('Backup', token(), undefined, enriched)).status.code).toBe(Status.UNAUTHENTICATED);
    const operator = await call('Backup', token(), pki.backup, enriched);
    expect(operator.status.code).toBe(Status.OK);
    expect(principalOf(operator.response)).toMatchObject({ subject: BACKUP_SPIFFE });
  });
});
