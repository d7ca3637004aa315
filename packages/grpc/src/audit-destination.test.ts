import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
import { brokenDestination, type BrokenDestination } from '@fluxguard/test-support/log-lines';
import { captureWarnings, type CapturedWarnings } from '@fluxguard/test-support/warnings';
import { addService, fluxguardInterceptors, type SafeImplementation } from './index.js';
import {
  callKind,
  metadataValue,
  startServer,
  testService,
  withRequestId,
  type Started,
  type TestImpl,
} from './testing/harness.js';
import { AUDIENCE, ISSUER, bearer, createTokenSigner } from './testing/tls.js';

// An audit destination that cannot write (a full disk, a broken pipe) must not change what a
// client is answered: a refusal stays the refusal it was. A stream that fails after `write`
// returned emits 'error' later, which without a listener would end the server's process.
describe.each(['throw', 'later'] as const)('an audit destination that fails (%s), over a real gRPC server', (fails) => {
  const signer = createTokenSigner();
  let started: Started;
  /** RBAC in shadow mode: a would-be denial is only written, as `rbac.shadow_denied`. */
  let shadow: Started;
  let warnings: CapturedWarnings;
  let broken: BrokenDestination;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    broken = brokenDestination(fails);
    const audit = createAuditLogger({ destination: broken.destination });
    const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never });
    const rules = Object.fromEntries(
      Object.values(testService).map((method) => [method.path, { anyRoles: ['reader'] }]),
    );
    const implementation: SafeImplementation<TestImpl> = {
      Unary: () => ({ ok: true }),
      ClientStream: () => {
        throw new Error('the handler failed');
      },
      ServerStream: (call) => {
        call.end();
      },
      Bidi: (call) => {
        call.end();
      },
    };
    const guard = createGuard({ audit, jwt, rbac: compileRbac(rules) });
    started = await startServer(fluxguardInterceptors({ audit, guard }), (server) => {
      addService(server, testService, implementation);
    });
    const shadowGuard = createGuard({ audit, jwt, rbac: compileRbac(rules, { mode: 'shadow' }) });
    shadow = await startServer(fluxguardInterceptors({ audit, guard: shadowGuard }), (server) => {
      addService(server, testService, implementation);
    });
  });

  afterAll(async () => {
    warnings.stop();
    await started.close();
    await shadow.close();
  });

  it('keeps a missing token UNAUTHENTICATED with its request id, serves, and warns once', async () => {
    for (let i = 0; i < 3; i++) {
      const requestId = `req-lost-line-${String(i)}`;
      const refused = await callKind(started.client, 'unary', {}, withRequestId(requestId));
      expect(refused.status.code).toBe(Status.UNAUTHENTICATED);
      expect(refused.status.details).toBe('Authentication is required.');
      expect(metadataValue(refused.status.metadata, 'x-request-id')).toBe(requestId);
    }
    expect(broken.writes()).toBeGreaterThan(0);

    const allowed = await callKind(
      started.client,
      'unary',
      {},
      bearer(signer.sign({ sub: 'alice', roles: ['reader'] })),
    );
    expect(allowed.status.code).toBe(Status.OK);

    await warnings.settled();
    expect(warnings.messages()).toHaveLength(1);
    expect(warnings.messages()[0]).toMatch(/\(Error ECONNRESET\)/);
    expect(warnings.messages()[0]).not.toMatch(/collector|req-lost-line/);
  });

  it('serves a call that shadow-mode RBAC only writes a line about', async () => {
    const writer = bearer(signer.sign({ sub: 'bob', roles: ['writer'] }));
    const served = await callKind(shadow.client, 'unary', {}, writer);
    expect(served.status.code).toBe(Status.OK);
    expect(served.messages).toEqual([{ ok: true }]);
  });

  it('still answers a handler’s own failure INTERNAL', async () => {
    const metadata = bearer(signer.sign({ sub: 'alice', roles: ['reader'] }));
    const failed = await callKind(started.client, 'clientStream', {}, metadata);
    expect(failed.status.code).toBe(Status.INTERNAL);
  });
});
