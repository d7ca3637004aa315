// A service registered with grpc-js's own server.addService on a server with fluxguard's
// interceptors is authenticated, but runs without the connection hardening fluxguard's
// addService applies; nothing said so. The first call now warns, once per process.
import { afterEach, describe, expect, it } from 'vitest';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { fluxguardInterceptors, wrapImplementation, addService } from './index.js';
import { callKind, captureAudit, startServer, testService } from './testing/harness.js';

const audit = captureAudit();
const implementation = {
  Unary: () => ({ ok: true }),
  ClientStream: () => ({}),
  ServerStream: (call: { end(): void }) => {
    call.end();
  },
  Bidi: (call: { end(): void }) => {
    call.end();
  },
} as never;

const captured = captureWarnings();
afterEach(() => {
  captured.warnings.length = 0;
});

const warningsOf = (code: string) => captured.warnings.filter((w) => w.code === code);
const nativeWarnings = () => warningsOf('FLUXGUARD_NATIVE_ADD_SERVICE');
const settle = () => captured.settled();

describe('a service added with grpc-js own server.addService', () => {
  // In this order: the warning is given once per process.
  it('says nothing for a service added through fluxguard addService', async () => {
    const served = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: false }), (server) => {
      addService(server, testService, implementation);
    });
    try {
      expect((await callKind(served.client, 'unary', {})).status.code).toBe(0);
      await settle();
      expect(nativeWarnings()).toEqual([]);
    } finally {
      await served.close();
    }
  });

  it('warns at its first call that the connection hardening is missing, once', async () => {
    // The method the server above registered through addService: that server's registration
    // silenced this one's warning, when the methods added were known for the whole process.
    const other = testService.Unary;
    const served = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: false }), (server) => {
      server.addService({ Unary: other }, wrapImplementation({ Unary: other }, { Unary: () => ({ ok: true }) }));
    });
    const call = () =>
      new Promise<unknown>((resolve) => {
        served.client.makeUnaryRequest(
          other.path,
          other.requestSerialize,
          other.responseDeserialize,
          {},
          (error, value) => {
            resolve(error ?? value);
          },
        );
      });
    try {
      // Still served, with fluxguard's interceptors.
      expect(await call()).toEqual({ ok: true });
      expect(await call()).toEqual({ ok: true });
      await settle();
      expect(nativeWarnings()).toHaveLength(1);
      expect(nativeWarnings()[0]?.message).toContain(
        "/fluxguard.test.v1.Test/Unary was registered with grpc-js's own server.addService",
      );
    } finally {
      await served.close();
    }
  });
});

describe('addService on a server that is bound already', () => {
  // grpc-js makes a port's HTTP/2 server at bindAsync: one made before addService ran without
  // the connection limits and HTTP/2 checks, and nothing said so.
  it('is refused, and says to call it before bindAsync; after the first addService, more are fine', async () => {
    const bound = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: false }), () => undefined);
    try {
      expect(() => {
        addService(bound.server, testService, implementation);
      }).toThrow(/the server is bound already.*call addService before bindAsync/);
    } finally {
      await bound.close();
    }
    const other = { Unary: { ...testService.Unary, path: '/fluxguard.test.v1.Other/Unary' } };
    const served = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: false }), (server) => {
      addService(server, testService, implementation);
    });
    try {
      expect(() => {
        addService(served.server, other, { Unary: () => ({ ok: true }) });
      }).not.toThrow();
    } finally {
      await served.close();
    }
  });
});

describe('a rule pattern that names no method the server registered', () => {
  // A misspelt pattern never applies (a rate limit that never counts); without servedOperations
  // nothing said so. The first call warns, once per pattern.
  it('warns at the first call, naming the pattern, and says nothing of the patterns that name a method', async () => {
    const rules = [
      { operation: '/fluxguard.test.v1.Test/Unray', defaultMs: 1_000 },
      { operation: '/fluxguard.test.v1.Tset/*', defaultMs: 1_000 },
      { operation: '/fluxguard.test.v1.Test/Bidi', defaultMs: 1_000 },
      // Added with grpc-js's own addService (as grpc-health-check does): served all the same.
      { operation: '/fluxguard.test.v1.Native/*', defaultMs: 1_000 },
      { operation: 'PUT /v1/items/:id', defaultMs: 1_000 },
    ];
    const native = { Unary: { ...testService.Unary, path: '/fluxguard.test.v1.Native/Unary' } };
    const served = await startServer(fluxguardInterceptors({ audit: audit.audit, timeouts: { rules } }), (server) => {
      addService(server, testService, implementation);
      server.addService(native, wrapImplementation(native, { Unary: () => ({ ok: true }) }));
    });
    const unserved = () => warningsOf('FLUXGUARD_UNSERVED_RULE').map((w) => w.message);
    try {
      expect((await callKind(served.client, 'unary', {})).status.code).toBe(0);
      expect((await callKind(served.client, 'unary', {})).status.code).toBe(0);
      // Held against the methods a second after the first call, when every server has its services.
      await new Promise((resolve) => setTimeout(resolve, 1_300));
      expect(unserved()).toHaveLength(2);
      expect(unserved()[0]).toContain('"/fluxguard.test.v1.Test/Unray" names no method of this server');
      expect(unserved()[1]).toContain('"/fluxguard.test.v1.Tset/*"');
    } finally {
      await served.close();
    }
  });
});
