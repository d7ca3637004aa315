import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Metadata,
  Server,
  ServerInterceptingCall,
  status as Status,
  type Client,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import {
  ConfigurationError,
  compileRbac,
  createGuard,
  createJwtVerifier,
  createTimeouts,
  type CallInfo,
  type Control,
  type Guard,
} from '@fluxguard/core';
import { addService, fluxguardInterceptors, guard, metadataHeaders, safeErrors } from './index.js';
import {
  AUDIENCE,
  BACKUP_SPIFFE,
  ISSUER,
  READER_SPIFFE,
  SERVED,
  SERVICE,
  secureService,
  type SecureImpl,
  bearer,
  createTokenSigner,
  handlerStarts,
  op,
  principalOf,
  secureRules,
  startSecureServer,
  unary,
  upload,
  type SecureServer,
  type TokenSigner,
} from './testing/tls.js';

let signer: TokenSigner;
let secure: SecureServer;
/** Calls the guard saw, to check the CallInfo the adapter builds. */
const seen: CallInfo[] = [];
/** Delay of the guard's check, to widen the window in which early messages could slip through. */
let checkDelayMs = 0;

/** What an interceptor after fluxguard's saw of each call: messages, and those before its metadata. */
interface InnerView {
  readonly path: string;
  metadata: boolean;
  messages: number;
  beforeMetadata: number;
}
const innerViews: InnerView[] = [];

/**
 * An application's interceptor after fluxguard's that asks for an upload's messages at once, before
 * its metadata (grpc-js's own handlers ask only after it): it must see them only once the call is
 * allowed, and none of a refused call.
 */
const innerRecorder: ServerInterceptor = (method, call) => {
  const view: InnerView = { path: method.path, metadata: false, messages: 0, beforeMetadata: 0 };
  innerViews.push(view);
  return new ServerInterceptingCall(call, {
    start: (next) => {
      next({
        onReceiveMetadata: (metadata, pass) => {
          view.metadata = true;
          pass(metadata);
        },
        onReceiveMessage: (message, pass) => {
          view.messages++;
          if (!view.metadata) view.beforeMetadata++;
          pass(message);
        },
      });
      if (method.path === op('Upload')) call.startRead();
    },
  });
};

function client(cert?: { certPem: string; keyPem: string }): Client {
  return secure.client(cert);
}

beforeAll(async () => {
  signer = createTokenSigner();
  secure = await startSecureServer((audit, pki) => {
    const core = createGuard({
      audit,
      jwt: createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never }),
      rbac: compileRbac(secureRules(pki), { servedOperations: SERVED }),
      certificateRoles: [{ spiffeId: BACKUP_SPIFFE, roles: ['backup.reader'] }],
    });
    // A control that runs before the guard's own: it sees each call's CallInfo and can slow the check.
    const observer: Control = {
      name: 'observer',
      stage: 'client-certificate',
      onStart: async (call) => {
        seen.push(call);
        if (checkDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, checkDelayMs));
      },
    };
    const observed: Guard = {
      rbac: core.rbac,
      check: (call) => core.check(call),
      controls: [observer, ...core.controls],
    };
    return [...fluxguardInterceptors({ audit, guard: observed }), innerRecorder];
  });
});

afterAll(() => secure.close());

describe('guard interceptor, per-operation mTLS', () => {
  it('lets a public operation through without a certificate or a token', async () => {
    const result = await unary(client(), 'Public');
    expect(result.status.code).toBe(Status.OK);
    expect(principalOf(result.response)).toBeNull();
  });

  it('denies a certificate rule without a certificate, allows the right SPIFFE ID', async () => {
    const none = await unary(client(), 'Workload');
    expect(none.status.code).toBe(Status.UNAUTHENTICATED);
    const right = await unary(client(secure.pki.reader), 'Workload');
    expect(right.status.code).toBe(Status.OK);
  });

  it('denies a SPIFFE ID outside the rules', async () => {
    const result = await unary(client(secure.pki.outsider), 'Workload');
    expect(result.status.code).toBe(Status.PERMISSION_DENIED);
  });

  it('denies a certificate whose fingerprint does not match the pinned one', async () => {
    expect((await unary(client(secure.pki.reader), 'Pinned')).status.code).toBe(Status.PERMISSION_DENIED);
    expect((await unary(client(secure.pki.backup), 'Pinned')).status.code).toBe(Status.OK);
  });

  it('never uses an untrusted certificate as an identity (another CA, or a self-signed one)', async () => {
    const before = seen.length;
    const forged = await unary(client(secure.pki.forged), 'Workload');
    expect(forged.status.code).toBe(Status.UNAUTHENTICATED);
    const selfSigned = await unary(
      client({ certPem: secure.pki.otherCa.certPem, keyPem: secure.pki.otherCa.keyPem }),
      'Workload',
    );
    expect(selfSigned.status.code).toBe(Status.UNAUTHENTICATED);
    const calls = seen.slice(before);
    expect(calls).toHaveLength(2);
    for (const call of calls) expect(call.peerCertificate).toBeUndefined();
  });

  it('builds the CallInfo from the call: operation, request id, verified identity, headers, deadline', async () => {
    const before = seen.length;
    const metadata = bearer(signer.sign({ sub: 'alice', roles: ['reader'] }));
    metadata.set('x-request-id', 'guard-callinfo-1');
    const result = await unary(client(secure.pki.reader), 'Read', metadata);
    expect(result.status.code).toBe(Status.OK);
    const call = seen[before];
    expect(call).toMatchObject({
      transport: 'grpc',
      operation: op('Read'),
      requestId: 'guard-callinfo-1',
      peerCertificate: { spiffeId: READER_SPIFFE, fingerprint256: secure.pki.reader.fingerprint256 },
    });
    expect(call?.peerAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(call?.headers.get('Authorization')).toMatch(/^Bearer /);
    expect(call?.deadline).toBeGreaterThan(Date.now());
    expect(call?.signal.aborted).toBe(true); // the call has ended
  });
});

describe('guard interceptor, JWT and RBAC', () => {
  it('answers UNAUTHENTICATED without a token, and with a bad one', async () => {
    const missing = await unary(client(), 'Read');
    expect(missing.status.code).toBe(Status.UNAUTHENTICATED);
    const garbage = await unary(client(), 'Read', bearer('not.a.token'));
    expect(garbage.status.code).toBe(Status.UNAUTHENTICATED);
    const otherKey = await unary(
      client(),
      'Read',
      bearer(createTokenSigner().sign({ sub: 'mallory', roles: ['reader'] })),
    );
    expect(otherKey.status.code).toBe(Status.UNAUTHENTICATED);
    const expired = await unary(
      client(),
      'Read',
      bearer(signer.sign({ sub: 'alice', roles: ['reader'], iat: 1, exp: 2 })),
    );
    expect(expired.status.code).toBe(Status.UNAUTHENTICATED);
    // The reason is for the log only.
    expect(expired.status.details).toBe(missing.status.details);
  });

  it('answers PERMISSION_DENIED for the wrong role', async () => {
    const result = await unary(client(), 'Read', bearer(signer.sign({ sub: 'bob', roles: ['writer'] })));
    expect(result.status.code).toBe(Status.PERMISSION_DENIED);
  });

  it('hands the verified principal to the handler (getPrincipal), with the certificate when both are sent', async () => {
    const jwtOnly = await unary(client(), 'Read', bearer(signer.sign({ sub: 'alice', roles: ['reader'] })));
    expect(jwtOnly.status.code).toBe(Status.OK);
    expect(principalOf(jwtOnly.response)).toEqual({
      subject: 'alice',
      roles: ['reader'],
      authenticatedBy: 'jwt',
      spiffeId: null,
    });
    const both = await unary(
      client(secure.pki.reader),
      'Read',
      bearer(signer.sign({ sub: 'alice', roles: ['reader'] })),
    );
    expect(principalOf(both.response)).toMatchObject({
      subject: 'alice',
      authenticatedBy: 'both',
      spiffeId: READER_SPIFFE,
    });
  });

  it('authorizes a certificate-only principal (certificateRoles) with no token', async () => {
    const result = await unary(client(secure.pki.backup), 'Backup');
    expect(result.status.code).toBe(Status.OK);
    expect(principalOf(result.response)).toMatchObject({
      roles: ['backup.reader'],
      authenticatedBy: 'mtls',
      spiffeId: BACKUP_SPIFFE,
    });
    // A certificate that no rule maps to roles authenticates nobody.
    expect((await unary(client(secure.pki.reader), 'Backup')).status.code).toBe(Status.UNAUTHENTICATED);
  });

  it('ignores metadata that looks like a principal', async () => {
    const forged = new Metadata();
    forged.set('x-fluxguard-principal', JSON.stringify({ subject: 'root', roles: ['admin'] }));
    forged.set('x-principal', 'root');
    forged.set('x-user', 'root');
    forged.set('x-roles', 'admin');
    const denied = await unary(client(), 'Read', forged);
    expect(denied.status.code).toBe(Status.UNAUTHENTICATED);

    const withToken = bearer(signer.sign({ sub: 'alice', roles: ['reader'] }));
    withToken.set('x-fluxguard-principal', JSON.stringify({ subject: 'root', roles: ['admin'] }));
    const allowed = await unary(client(), 'Read', withToken);
    expect(principalOf(allowed.response)).toMatchObject({ subject: 'alice', roles: ['reader'] });
    const onPublic = await unary(client(), 'Public', forged);
    expect(principalOf(onPublic.response)).toBeNull();
  });

  it('logs each refusal once, with its reason and the request id the client got', async () => {
    const metadata = bearer(signer.sign({ sub: 'bob', roles: ['writer'] }));
    metadata.set('x-request-id', 'guard-denied-1');
    const result = await unary(client(), 'Read', metadata);
    expect(result.status.metadata.get('x-request-id')).toEqual(['guard-denied-1']);
    const lines = secure.lines().filter((l) => l.requestId === 'guard-denied-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ operation: op('Read'), code: 'permission_denied' });
    expect(JSON.stringify(lines[0])).not.toContain(metadata.get('authorization')[0] as string);
  });
});

describe('client streaming while the check is pending', () => {
  it('delivers no message before authorization, and the principal is there for the first one', async () => {
    checkDelayMs = 150;
    try {
      const writer = bearer(signer.sign({ sub: 'wendy', roles: ['writer'] }));
      const viewsBefore = innerViews.length;
      const allowed = await upload(client(), [{ n: 1 }, { n: 2 }, { n: 3 }], writer);
      expect(allowed.status.code).toBe(Status.OK);
      expect(allowed.response).toMatchObject({
        principal: { subject: 'wendy' },
        messages: [{ n: 1 }, { n: 2 }, { n: 3 }],
      });

      const starts = handlerStarts.count;
      const reader = bearer(signer.sign({ sub: 'rita', roles: ['reader'] }));
      const denied = await upload(client(), [{ n: 1 }, { n: 2 }], reader);
      expect(denied.status.code).toBe(Status.PERMISSION_DENIED);
      expect(handlerStarts.count).toBe(starts);
      // None passed the interceptor after fluxguard's before the call was allowed, nor any of the
      // refused call, though it asked for them at once.
      expect(innerViews.slice(viewsBefore).filter((view) => view.path === op('Upload'))).toEqual([
        { path: op('Upload'), metadata: true, messages: 3, beforeMetadata: 0 },
        { path: op('Upload'), metadata: false, messages: 0, beforeMetadata: 0 },
      ]);
    } finally {
      checkDelayMs = 0;
    }
  });
});

describe('guard() construction and failures', () => {
  it('requires a guard', () => {
    expect(() => guard({} as never)).toThrow(ConfigurationError);
    expect(() => guard({ guard: {} as never })).toThrow(/createGuard/);
    expect(() => fluxguardInterceptors({ audit: secure.audit, gaurd: undefined } as never)).toThrow(
      /did you mean "guard"/,
    );
    // A guard read from a configuration that holds none would leave every call unauthenticated.
    const config: { guard?: Guard } = {};
    expect(() => fluxguardInterceptors({ audit: secure.audit, guard: config.guard })).toThrow(
      /^fluxguardInterceptors: "guard" is undefined: pass the guard of createGuard\(\)/,
    );
    expect(() => fluxguardInterceptors({ audit: secure.audit })).not.toThrow();
  });

  it('refuses timeouts next to a deadline control it would be ignored for', () => {
    // A guard from a policy always brings one: a tighter maxMs given here read as in force.
    const controls = [createTimeouts({ maxMs: 60_000 })];
    for (const timeouts of [{ defaultMs: 300, maxMs: 300 }, false] as const) {
      expect(() => fluxguardInterceptors({ audit: secure.audit, controls, timeouts })).toThrow(
        /"timeouts" is given, but a control of the deadline stage is listed already/,
      );
    }
    expect(() => fluxguardInterceptors({ audit: secure.audit, controls })).not.toThrow();
    expect(() =>
      fluxguardInterceptors({ audit: secure.audit, timeouts: { defaultMs: 300, maxMs: 300 } }),
    ).not.toThrow();
  });

  it('answers INTERNAL, never OK, when the guard fails with something else than a SecurityError', async () => {
    const failure = (): Promise<undefined> =>
      Promise.reject(new Error('ECONNREFUSED 10.0.0.7:6379 (secret internals)'));
    const failing: Guard = {
      rbac: compileRbac({}),
      check: failure,
      // A step of the authorization stage: the guard options take no authentication step but
      // createAuthenticator's.
      controls: [{ name: 'failing', stage: 'authorization', onStart: failure }],
    };
    const own = await startSecureServer((audit) => [safeErrors({ audit }), guard({ guard: failing })], {
      pki: secure.pki,
    });
    try {
      const starts = handlerStarts.count;
      const result = await unary(own.client(), 'Public');
      expect(result.status.code).toBe(Status.INTERNAL);
      expect(result.status.details).not.toContain('ECONNREFUSED');
      expect(handlerStarts.count).toBe(starts);
    } finally {
      await own.close();
    }
  });

  it('refuses every call when safeErrors does not run first', async () => {
    const core = createGuard({ audit: secure.audit, rbac: compileRbac({ [op('Public')]: { public: true } }) });
    await expect(startSecureServer(() => [guard({ guard: core })], { pki: secure.pki })).rejects.toThrow(
      'addService: the server runs no fluxguard interceptors',
    );
    // safeErrors behind the guard: the guard finds no call state, and fails closed.
    const own = await startSecureServer((audit) => [guard({ guard: core }), safeErrors({ audit })], {
      pki: secure.pki,
    });
    try {
      expect((await unary(own.client(), 'Public')).status.code).toBe(Status.INTERNAL);
    } finally {
      await own.close();
    }
  });
});

describe('rules that name a method only in other letter case', () => {
  // Under `/Secure/*` for readers, a rule for `/Secure/backup` let a reader call `Backup`:
  // rules match letter for letter, and the method fell under the broader rule.
  const rules = {
    [`/${SERVICE}/*`]: { anyRoles: ['reader'] },
    [`/${SERVICE}/backup`]: { anyRoles: ['admin'] },
  };
  const implementation = Object.fromEntries(
    Object.keys(secureService).map((name) => [name, () => ({})]),
  ) as unknown as Parameters<typeof addService<SecureImpl>>[2];

  it('are refused when the service is added, for fluxguardInterceptors and for controls()', () => {
    const core = createGuard({
      audit: secure.audit,
      jwt: createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never }),
      rbac: compileRbac(rules),
    });
    const refusal = `the rule pattern "/${SERVICE}/backup" names no operation this server serves, only "/${SERVICE}/Backup" in other letter case`;
    const merged = new Server({ interceptors: fluxguardInterceptors({ audit: secure.audit, guard: core }) });
    expect(() => {
      addService(merged, secureService, implementation);
    }).toThrow(refusal);
    const separate = new Server({ interceptors: [safeErrors({ audit: secure.audit }), guard({ guard: core })] });
    expect(() => {
      addService(separate, secureService, implementation);
    }).toThrow(refusal);
    // Written as served, the rules are taken.
    const exact = createGuard({
      audit: secure.audit,
      jwt: createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: signer.jwks as never }),
      rbac: compileRbac({
        [`/${SERVICE}/*`]: { anyRoles: ['reader'] },
        [`/${SERVICE}/Backup`]: { anyRoles: ['admin'] },
      }),
    });
    expect(() => {
      addService(
        new Server({ interceptors: fluxguardInterceptors({ audit: secure.audit, guard: exact }) }),
        secureService,
        implementation,
      );
    }).not.toThrow();
  });
});

describe('metadataHeaders', () => {
  it('reads text values case-insensitively and skips binary ones', () => {
    const metadata = new Metadata();
    metadata.set('authorization', 'Bearer a');
    metadata.add('x-multi', 'one');
    metadata.add('x-multi', 'two');
    metadata.set('x-data-bin', Buffer.from('bytes'));
    const headers = metadataHeaders(metadata);
    expect(headers.get('Authorization')).toBe('Bearer a');
    expect(headers.getAll('X-Multi')).toEqual(['one', 'two']);
    expect(headers.get('x-multi')).toBe('one');
    expect(headers.getAll('x-data-bin')).toEqual([]);
    expect(headers.get('absent')).toBeUndefined();
  });

  it('lists every entry, one named __proto__ included (a plain object of them would lose it)', () => {
    const metadata = new Metadata();
    metadata.set('x-a', '1');
    metadata.set('__proto__', 'hidden');
    expect([...(metadataHeaders(metadata).entries?.() ?? [])]).toEqual([
      ['x-a', '1'],
      ['__proto__', 'hidden'],
    ]);
  });
});
