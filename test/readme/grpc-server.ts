import { readFileSync } from 'node:fs';
import { Server, loadPackageDefinition, type ServerUnaryCall, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { compileRbac, createAuditLogger, createGuard, createJwtVerifier } from '@fluxguard/core';
import { addService, createServerCredentials, fluxguardInterceptors, getPrincipal, secureServerOptions } from '@fluxguard/grpc';

// inventory.proto: service Items { rpc GetItem (GetItemRequest) returns (Item); }
const proto = loadPackageDefinition(loadSync('inventory.proto')) as unknown as {
  inventory: { v1: { Items: ServiceClientConstructor } };
};

const audit = createAuditLogger();
const guard = createGuard({
  audit,
  jwt: createJwtVerifier({
    issuer: 'https://id.example.com',
    audience: 'inventory',
    publicKey: readFileSync('certs/jwt-public.pem', 'utf8'), // or jwksUrl: 'https://id.example.com/jwks'
  }),
  rbac: compileRbac({ '/inventory.v1.Items/GetItem': { anyRoles: ['items.reader'] } }),
});

const server = new Server({ ...secureServerOptions(), interceptors: fluxguardInterceptors({ audit, guard }) });
addService(server, proto.inventory.v1.Items.service, {
  // Handlers may return, resolve or throw: no failure leaks, each is logged once with its cause.
  GetItem: (call: ServerUnaryCall<{ id: string }, unknown>) => ({ id: call.request.id, reader: getPrincipal(call)?.subject }),
});
// 'strict': no verified client certificate, no connection ('per-operation' would let each rule decide)
const credentials = createServerCredentials(
  { certFile: 'certs/server.crt', keyFile: 'certs/server.key', caFile: 'certs/ca.crt', clientCertificates: 'strict' },
  { audit },
);

export const port = new Promise<number>((resolve, reject) => {
  server.bindAsync(`127.0.0.1:${process.env.PORT ?? '9000'}`, credentials, (err, bound) => {
    if (err) reject(err);
    else resolve(bound);
  });
});
export const stop = (): void => {
  server.forceShutdown();
  credentials.close();
};
