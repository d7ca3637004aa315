import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
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
// client is answered: a refusal stays the refusal it was.
describe('an audit destination that throws, over a real gRPC server', () => {
  const signer = createTokenSigner();
  let started: Started;
  /** RBAC in shadow mode: a would-be denial is only written, as `rbac.shadow_denied`. */
  let shadow: Started;
  let warnings: CapturedWarnings;
  let writes = 0;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const audit = createAuditLogger({
      destination: {
        write() {
          writes += 1;
          throw new Error('EPIPE: the log collector went away');
        },
      },
    });
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

  it('keeps a missing token UNAUTHENTICATED with its request id, and warns once', async () => {
    const refused = await callKind(started.client, 'unary', {}, withRequestId('req-lost-line'));
    expect(refused.status.code).toBe(Status.UNAUTHENTICATED);
    expect(refused.status.details).toBe('Authentication is required.');
    expect(metadataValue(refused.status.metadata, 'x-request-id')).toBe('req-lost-line');
    expect(writes).toBeGreaterThan(0);

    const allowed = await callKind(
      started.client,
      'unary',
      {},
      bearer(signer.sign({ sub: 'alice', roles: ['reader'] })),
    );
    expect(allowed.status.code).toBe(Status.OK);

    await warnings.settled();
    expect(warnings.warnings).toHaveLength(1);
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

// A stream fails after `write` returned: its 'error' comes later, and without a listener it
// would end the server's process.
describe('an audit destination stream that fails later, over a real gRPC server', () => {
  const signer = createTokenSigner();
  let started: Started;
  let warnings: CapturedWarnings;

  beforeAll(async () => {
    warnings = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const destination = new Writable({
      write(_chunk, _enc, done) {
        setImmediate(() => {
          done(Object.assign(new Error('the log collector went away'), { code: 'ECONNRESET' }));
        });
      },
    });
    const audit = createAuditLogger({ destination });
    const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never });
    const rules = Object.fromEntries(
      Object.values(testService).map((method) => [method.path, { anyRoles: ['reader'] }]),
    );
    const implementation: SafeImplementation<TestImpl> = {
      Unary: () => ({ ok: true }),
      ClientStream: () => ({ ok: true }),
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
  });

  afterAll(async () => {
    warnings.stop();
    await started.close();
  });

  it('keeps refusing UNAUTHENTICATED and serving, and warns once', async () => {
    for (let i = 0; i < 3; i++) {
      const refused = await callKind(started.client, 'unary', {}, withRequestId(`req-later-${String(i)}`));
      expect(refused.status.code).toBe(Status.UNAUTHENTICATED);
      expect(metadataValue(refused.status.metadata, 'x-request-id')).toBe(`req-later-${String(i)}`);
    }
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
    expect(warnings.messages()[0]).not.toMatch(/collector|req-later/);
  });
});
