// Which handler serves which method: grpc-js looks a method's handler up under its name, else
// under proto-loader's lowerCamelCase form of it, so one handler could serve two methods, each
// under its own rules (a reader deleted through `delete_order` what `DeleteOrder` kept for admins).
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, credentials, status as Status, type ServiceDefinition, type StatusObject } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ConfigurationError } from '@fluxguard/core';
import { addService, fluxguardInterceptors, wrapImplementation } from './index.js';
import { captureAudit, startServer, type Started } from './testing/harness.js';

const protos = fileURLToPath(new URL('./testing/protos/', import.meta.url));
const orders = loadSync('aliases.proto', { includeDirs: [protos] })[
  'fluxguard.test.aliases.Orders'
] as unknown as ServiceDefinition;

describe('wrapImplementation and addService: one handler per method', () => {
  const audit = captureAudit();
  const deleted: string[] = [];
  let server: Started;
  let client: Client;

  beforeAll(async () => {
    server = await startServer(fluxguardInterceptors({ audit: audit.audit }), (grpcServer) => {
      addService(grpcServer, orders, {
        DeleteOrder: () => {
          deleted.push('DeleteOrder');
          return {};
        },
      });
    });
    client = new Client(server.address, credentials.createInsecure());
  });

  afterAll(async () => {
    client.close();
    await server.close();
  });

  const call = (method: string) =>
    new Promise<StatusObject>((resolve) => {
      const raw = (bytes: Buffer) => bytes;
      const started = client.makeUnaryRequest(
        `/fluxguard.test.aliases.Orders/${method}`,
        raw,
        raw,
        Buffer.alloc(0),
        { deadline: Date.now() + 5_000 },
        () => undefined,
      );
      started.on('status', resolve);
    });

  it('refuses a handler that grpc-js would find for two methods', () => {
    // proto-loader gives `DeleteOrder` and `delete_order` the one form `deleteOrder`.
    const implementation = { deleteOrder: () => ({}) };
    expect(() => wrapImplementation(orders, implementation)).toThrow(ConfigurationError);
    expect(() => wrapImplementation(orders, implementation)).toThrow(
      /the handler "deleteOrder" would serve two methods, "DeleteOrder" and "delete_order"/,
    );
    // Each named its own way, two handlers serve the two methods.
    expect(() => wrapImplementation(orders, { DeleteOrder: () => ({}), deleteOrder: () => ({}) })).not.toThrow();
  });

  it('answers a method without a handler UNIMPLEMENTED, one named like a handler or like Object.prototype too', async () => {
    expect((await call('DeleteOrder')).code).toBe(Status.OK);
    expect(deleted).toEqual(['DeleteOrder']);
    // `toString` was found on the wrapped handlers' prototype and called as a handler that
    // never answers: the call waited for its deadline.
    for (const method of ['delete_order', 'toString']) {
      expect((await call(method)).code, method).toBe(Status.UNIMPLEMENTED);
    }
    expect(deleted).toEqual(['DeleteOrder']);
  });
});
