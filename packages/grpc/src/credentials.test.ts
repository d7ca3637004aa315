import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Metadata, Server, ServerCredentials, status as Status, type StatusObject } from '@grpc/grpc-js';
import { ConfigurationError, compileRbac, createGuard } from '@fluxguard/core';
import { createTlsSettings } from '@fluxguard/core/adapter';
import { captureAudit, deserialize, serialize } from './testing/harness.js';
import {
  addService,
  createClientCredentials,
  getCallContext,
  createServerCredentials,
  defaultDeadline,
  fluxguardInterceptors,
  secureServerOptions,
  type FluxguardServerCredentials,
} from './index.js';
import {
  clientFor,
  createTestPki,
  handlerStarts,
  op,
  rawHandshake,
  replaceFile,
  secureService,
  startTlsServer,
  unary,
  waitFor,
  type TestPki,
  type TestServer,
} from './testing/tls.js';

let pki: TestPki;
const audit = captureAudit();
const clients: Client[] = [];

function publicGuard() {
  return createGuard({ audit: audit.audit, rbac: compileRbac({ [op('Public')]: { public: true } }) });
}

function interceptors() {
  return fluxguardInterceptors({ audit: audit.audit, guard: publicGuard() });
}

beforeAll(async () => {
  pki = await createTestPki();
});

afterAll(async () => {
  for (const c of clients) c.close();
  await pki.cleanup();
});

function track(c: Client): Client {
  clients.push(c);
  return c;
}

describe('strict mode: the handshake refuses what does not verify', () => {
  let server: TestServer;
  let credentials: FluxguardServerCredentials;

  beforeAll(async () => {
    credentials = createServerCredentials({ ...pki.files, clientCertificates: 'strict' }, { audit: audit.audit });
    server = await startTlsServer(credentials, interceptors());
  });

  afterAll(async () => {
    credentials.close();
    await server.close();
  });

  const call = (cert?: { certPem: string; keyPem: string }) =>
    unary(track(clientFor(server.address, { ca: pki.ca.certPem, ...(cert === undefined ? {} : { cert }) })), 'Public');

  it('accepts a valid client certificate', async () => {
    expect((await call(pki.reader)).status.code).toBe(Status.OK);
  });

  it.each([
    ['no client certificate', undefined],
    ['a certificate from another CA', 'forged'],
    ['an expired certificate', 'expired'],
    ['a certificate not yet valid', 'notYetValid'],
    ['a revoked certificate (CRL)', 'revoked'],
  ] as const)('fails the call with UNAVAILABLE for %s', async (_name, which) => {
    const result = await call(which === undefined ? undefined : pki[which]);
    expect(result.status.code).toBe(Status.UNAVAILABLE);
  });

  it('refuses TLS 1.1 and a TLS 1.2 suite outside the list, negotiates TLS 1.3', async () => {
    const client = { ca: pki.ca.certPem, cert: pki.reader.certPem, key: pki.reader.keyPem };
    expect(
      await rawHandshake(server.port, {
        ...client,
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
        ciphers: 'DEFAULT@SECLEVEL=0',
      }),
    ).toMatchObject({ ok: false });
    expect(
      await rawHandshake(server.port, { ...client, maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256' }),
    ).toMatchObject({ ok: false });
    expect(await rawHandshake(server.port, client)).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });
});

describe('per-operation mode', () => {
  it('completes the handshake without a client certificate (the guard decides)', async () => {
    const credentials = createServerCredentials(
      { ...pki.files, clientCertificates: 'per-operation' },
      { audit: audit.audit, reload: false },
    );
    const server = await startTlsServer(credentials, interceptors());
    try {
      expect(credentials.clientCertificates).toBe('per-operation');
      expect((await unary(track(clientFor(server.address, { ca: pki.ca.certPem })), 'Public')).status.code).toBe(
        Status.OK,
      );
      // Revoked or untrusted: the handshake completes, the certificate is never an identity.
      const revoked = await unary(
        track(clientFor(server.address, { ca: pki.ca.certPem, cert: pki.revoked })),
        'Public',
      );
      expect(revoked.status.code).toBe(Status.OK);
    } finally {
      await server.close();
    }
  });

  it('accepts built TlsSettings', async () => {
    const settings = createTlsSettings({ ...pki.files, crlFile: undefined, clientCertificates: 'per-operation' });
    const credentials = createServerCredentials(settings, { audit: audit.audit });
    const server = await startTlsServer(credentials, interceptors());
    try {
      expect(credentials.current.certFingerprint256).toBe(pki.server.fingerprint256);
      expect((await unary(track(clientFor(server.address, { ca: pki.ca.certPem })), 'Public')).status.code).toBe(
        Status.OK,
      );
    } finally {
      await server.close();
    }
  });
});

describe('reload without restart', () => {
  let files: TestPki['files'];
  let server: TestServer;
  let credentials: FluxguardServerCredentials;

  beforeAll(async () => {
    // A copy of the files of its own, since this test replaces them.
    const own = await createTestPki();
    files = own.files;
    await replaceFile(files.caFile, pki.ca.certPem);
    await replaceFile(files.certFile, pki.server.certPem);
    await replaceFile(files.keyFile, pki.server.keyPem);
    await replaceFile(files.crlFile, await pki.ca.createCrl({ revokedSerialNumbers: [pki.revoked.serialNumber] }));
    credentials = createServerCredentials(
      { ...files, clientCertificates: 'per-operation', minVersion: 'TLSv1.3' },
      { audit: audit.audit, reloadIntervalMs: 50 },
    );
    server = await startTlsServer(credentials, interceptors());
    return async () => {
      await own.cleanup();
    };
  });

  afterAll(async () => {
    credentials.close();
    await server.close();
  });

  /** The fingerprint of the server certificate a NEW channel is shown. */
  async function servedFingerprint(): Promise<string | undefined> {
    let seen: string | undefined;
    const c = clientFor(server.address, { ca: pki.ca.certPem }, (fingerprint) => {
      seen = fingerprint;
    });
    try {
      const result = await unary(c, 'Public');
      return result.status.code === Status.OK ? seen : undefined;
    } finally {
      c.close();
    }
  }

  it('serves a renewed certificate to new channels, with the hardening kept', async () => {
    expect(await servedFingerprint()).toBe(pki.server.fingerprint256);
    const renewed = await pki.ca.issueServerCertificate();
    await replaceFile(files.keyFile, renewed.keyPem);
    await replaceFile(files.certFile, renewed.certPem);
    await waitFor(async () => (await servedFingerprint()) === renewed.fingerprint256);
    expect(credentials.current.certFingerprint256).toBe(renewed.fingerprint256);
    expect(
      audit.lines().some((l) => l.event === 'tls.reloaded' && l.certFingerprint256 === renewed.fingerprint256),
    ).toBe(true);

    // setSecureContext rebuilds the whole context: minimum version and suites must come again.
    expect(await rawHandshake(server.port, { ca: pki.ca.certPem, maxVersion: 'TLSv1.2' })).toMatchObject({ ok: false });
    expect(
      await rawHandshake(server.port, {
        ca: pki.ca.certPem,
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
        ciphers: 'DEFAULT@SECLEVEL=0',
      }),
    ).toMatchObject({ ok: false });
    expect(await rawHandshake(server.port, { ca: pki.ca.certPem })).toMatchObject({
      ok: true,
      protocol: 'TLSv1.3',
      fingerprint256: renewed.fingerprint256,
    });
  });

  it('keeps the last good certificate when a file is broken, and logs tls.reload_failed', async () => {
    const good = credentials.current.certFingerprint256;
    await replaceFile(files.certFile, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
    await waitFor(() => audit.lines().some((l) => l.event === 'tls.reload_failed'));
    expect(credentials.current.certFingerprint256).toBe(good);
    expect(await servedFingerprint()).toBe(good);
  });
});

describe('a reload that changes the CRL', () => {
  it("sends away the connections made before it: a revoked client's open channel is served no more", async () => {
    const own = await createTestPki();
    await replaceFile(own.files.crlFile, await own.ca.createCrl({ revokedSerialNumbers: [] }));
    const credentials = createServerCredentials(
      { ...own.files, clientCertificates: 'strict' },
      { audit: audit.audit, reloadIntervalMs: 50 },
    );
    const server = await startTlsServer(credentials, interceptors());
    const client = track(clientFor(server.address, { ca: own.ca.certPem, cert: own.reader }));
    try {
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      await replaceFile(own.files.crlFile, await own.ca.createCrl({ revokedSerialNumbers: [own.reader.serialNumber] }));
      // The channel's connection is sent away; the new one fails its handshake.
      await waitFor(async () => (await unary(client, 'Public')).status.code === Status.UNAVAILABLE);
      expect(audit.lines().some((l) => l.event === 'tls.connections_closed')).toBe(true);
      // Its new connection's refused handshake makes no call; it has a line all the same.
      expect(audit.lines().some((l) => l.event === 'tls.handshake_failed')).toBe(true);
    } finally {
      credentials.close();
      await server.close();
      await own.cleanup();
    }
  });
});

describe('a reload that revokes a client in the middle of a call', () => {
  it('cuts the revoked client’s call at once, and lets another client’s call finish', async () => {
    const own = await createTestPki();
    await replaceFile(own.files.crlFile, await own.ca.createCrl({ revokedSerialNumbers: [] }));
    const credentials = createServerCredentials(
      { ...own.files, clientCertificates: 'strict' },
      { audit: audit.audit, reloadIntervalMs: 50 },
    );
    const guard = createGuard({
      audit: audit.audit,
      rbac: compileRbac({ [op('Public')]: { public: true }, [op('Upload')]: { public: true } }),
    });
    const server = await startTlsServer(credentials, fluxguardInterceptors({ audit: audit.audit, guard }));
    /** An upload left open: one message written, the end not yet. */
    const openUpload = (cert: typeof own.reader) => {
      const client = track(clientFor(server.address, { ca: own.ca.certPem, cert }));
      const outcome: { status?: StatusObject; response?: unknown } = {};
      const call = client.makeClientStreamRequest(
        op('Upload'),
        serialize,
        deserialize,
        new Metadata(),
        { deadline: Date.now() + 60_000 },
        (_err, value) => (outcome.response = value),
      );
      call.on('status', (status) => (outcome.status = status));
      call.write({ n: 1 });
      return { call, outcome };
    };
    try {
      const started = handlerStarts.count;
      const linesBefore = audit.lines().length;
      const revoked = openUpload(own.reader);
      const kept = openUpload(own.backup);
      await waitFor(() => handlerStarts.count >= started + 2);
      await replaceFile(own.files.crlFile, await own.ca.createCrl({ revokedSerialNumbers: [own.reader.serialNumber] }));
      await waitFor(() => revoked.outcome.status !== undefined);
      expect(revoked.outcome.status?.code).not.toBe(Status.OK);
      expect(kept.outcome.status).toBeUndefined();
      // Logged as the server's cut, and why: not as a call its client left.
      await waitFor(() =>
        audit
          .lines()
          .slice(linesBefore)
          .some((l) => l.event === 'request.cancelled'),
      );
      expect(
        audit
          .lines()
          .slice(linesBefore)
          .filter((l) => l.event === 'request.cancelled'),
      ).toEqual([expect.objectContaining({ outcome: 'cancelled', reason: 'trust_revoked', operation: op('Upload') })]);
      expect(
        audit
          .lines()
          .filter((l) => l.event === 'tls.connections_closed')
          .at(-1),
      ).toMatchObject({
        connections: 2,
        revoked: 1,
      });
      kept.call.write({ n: 2 });
      kept.call.end();
      await waitFor(() => kept.outcome.status !== undefined);
      expect(kept.outcome.status?.code).toBe(Status.OK);
      expect(kept.outcome.response).toMatchObject({ messages: [{ n: 1 }, { n: 2 }] });
    } finally {
      credentials.close();
      await server.close();
      await own.cleanup();
    }
  });
});

describe('createServerCredentials options', () => {
  it('validates its options with clear errors', () => {
    const tls = { ...pki.files, clientCertificates: 'strict' as const };
    expect(() => createServerCredentials(tls, {} as never)).toThrow(/"audit"/);
    expect(() => createServerCredentials(tls, { audit: audit.audit, watch: true } as never)).toThrow(
      ConfigurationError,
    );
    expect(() => createServerCredentials(tls, { audit: audit.audit, reloadIntervalMs: 1 })).toThrow(/reloadIntervalMs/);
    expect(() => createServerCredentials(createTlsSettings(tls), { audit: audit.audit, reload: true })).toThrow(
      /needs the TLS options to name files/,
    );
    expect(() =>
      createServerCredentials({ ...tls, keyFile: `${pki.dir}/missing.key` }, { audit: audit.audit }),
    ).toThrow(ConfigurationError);
    // Named as the argument it was given as, not as createTlsSettings, which the caller never called.
    expect(() => createServerCredentials({ ...tls, minVersion: 'TLSv1.1' as never }, { audit: audit.audit })).toThrow(
      /^createServerCredentials: "tls": "minVersion" must be "TLSv1.2" or "TLSv1.3"$/,
    );
    const credentials = createServerCredentials(tls, { audit: audit.audit });
    expect(credentials).toBeInstanceOf(ServerCredentials);
    credentials.close();
    credentials.close();
  });
});

describe('createClientCredentials', () => {
  it('refuses to build credentials that would not verify the server, or a mismatched pair', () => {
    expect(() => createClientCredentials({})).toThrow(/always verified/);
    expect(() => createClientCredentials({ ca: pki.ca.certPem, cert: pki.reader.certPem })).toThrow(/together/);
    expect(() =>
      createClientCredentials({ ca: pki.ca.certPem, cert: pki.reader.certPem, key: pki.backup.keyPem }),
    ).toThrow(ConfigurationError);
    expect(() => createClientCredentials({ ca: 'not a certificate' })).toThrow(/no PEM certificate/);
    expect(() => createClientCredentials({ caFile: `${pki.dir}/missing.crt` })).toThrow(/cannot read "caFile"/);
    expect(() => createClientCredentials({ ca: pki.ca.certPem, minVersion: 'TLSv1.1' as never })).toThrow(/minVersion/);
    expect(() => createClientCredentials({ caFile: pki.files.caFile })).not.toThrow();
  });

  it('refuses a server whose certificate another CA issued', async () => {
    const credentials = createServerCredentials(
      { ...pki.files, clientCertificates: 'per-operation' },
      { audit: audit.audit, reload: false },
    );
    const server = await startTlsServer(credentials, interceptors());
    try {
      const wrongCa = await unary(track(clientFor(server.address, { ca: pki.otherCa.certPem })), 'Public');
      expect(wrongCa.status.code).toBe(Status.UNAVAILABLE);
      // An extra check runs after the host name check and can refuse.
      const refusing = track(
        new Client(
          server.address,
          createClientCredentials({ ca: pki.ca.certPem, checkServerIdentity: () => new Error('pinned key mismatch') }),
          { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' },
        ),
      );
      expect((await unary(refusing, 'Public')).status.code).toBe(Status.UNAVAILABLE);
      // The host name is checked even with an extra check that accepts everything.
      const wrongName = track(
        new Client(
          server.address,
          createClientCredentials({ ca: pki.ca.certPem, checkServerIdentity: () => undefined }),
          {
            'grpc.ssl_target_name_override': 'not-the-server.example',
            'grpc.default_authority': 'not-the-server.example',
          },
        ),
      );
      expect((await unary(wrongName, 'Public')).status.code).toBe(Status.UNAVAILABLE);
    } finally {
      await server.close();
    }
  });
});

describe('defaultDeadline', () => {
  it('sets a deadline on calls without one and keeps a deadline the caller set', async () => {
    const credentials = createServerCredentials(
      { ...pki.files, clientCertificates: 'per-operation' },
      { audit: audit.audit, reload: false },
    );
    const deadlines: (number | undefined)[] = [];
    const server = await startTlsServer(credentials, interceptors(), (s) => {
      addService(s, secureService, {
        Public: (call) => {
          deadlines.push(getCallContext(call).deadline);
          return {};
        },
      });
    });
    try {
      const c = track(
        clientFor(server.address, { ca: pki.ca.certPem }, undefined, { interceptors: [defaultDeadline(5_000)] }),
      );
      const started = Date.now();
      await new Promise<void>((resolve) => {
        c.makeUnaryRequest(
          op('Public'),
          (v: unknown) => Buffer.from(JSON.stringify(v)),
          (b: Buffer) => JSON.parse(b.toString()) as unknown,
          {},
          () => {
            resolve();
          },
        );
      });
      expect(deadlines[0]).toBeGreaterThan(started + 4_000);
      expect(deadlines[0]).toBeLessThan(started + 6_000);
      await unary(c, 'Public'); // the helper sets its own 10 s deadline
      expect(deadlines[1]).toBeGreaterThan(started + 9_000);
      expect(() => defaultDeadline(0)).toThrow(ConfigurationError);
    } finally {
      await server.close();
    }
  });
});

describe('secureServerOptions', () => {
  it('limits what grpc-js leaves open, and takes overrides', () => {
    expect(secureServerOptions()).toMatchObject({
      'grpc.max_concurrent_streams': 100,
      'grpc-node.max_session_memory': 32,
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
    });
    expect(secureServerOptions({ maxReceiveMessageBytes: 8 * 1024 * 1024 })['grpc.max_receive_message_length']).toBe(
      8 * 1024 * 1024,
    );
    expect(() => secureServerOptions({ maxConcurrentStreams: 0 })).toThrow(ConfigurationError);
    expect(() => secureServerOptions({ maxStreams: 1 } as never)).toThrow(/unknown option/);
    expect(() => new Server(secureServerOptions())).not.toThrow();
  });

  it('caps concurrent streams on a connection', async () => {
    const credentials = createServerCredentials(
      { ...pki.files, clientCertificates: 'per-operation' },
      { audit: audit.audit, reload: false },
    );
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let running = 0;
    let peak = 0;
    const server = new Server({ ...secureServerOptions({ maxConcurrentStreams: 2 }), interceptors: interceptors() });
    addService(server, secureService, {
      Public: async () => {
        running++;
        peak = Math.max(peak, running);
        await gate;
        running--;
        return {};
      },
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', credentials, (err, bound) => {
        if (err) reject(err);
        else resolve(bound);
      });
    });
    const c = track(clientFor(`127.0.0.1:${String(port)}`, { ca: pki.ca.certPem }));
    try {
      const calls = Array.from({ length: 5 }, () => unary(c, 'Public'));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(peak).toBe(2);
      release();
      const results = await Promise.all(calls);
      expect(results.every((r) => r.status.code === Status.OK)).toBe(true);
    } finally {
      server.forceShutdown();
    }
  });
});
