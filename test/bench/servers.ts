import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import express, { type Express } from 'express';
import type { JSONWebKeySet } from 'jose';
import { createSecureServer, fluxguard } from '@fluxguard/express';
import { addService, createServerCredentials, fluxguardInterceptors, secureServerOptions } from '@fluxguard/grpc';
import type { Control } from '@fluxguard/core';
import { GRPC_RULES, HTTP_ROUTE, HTTP_RULES, benchGuard, benchRateLimitControls, nullAudit } from './fixtures.js';
import { ITEMS_SERVICE, type Item, type ItemRequest } from './grpc-service.js';

/** Which pair of servers a worker starts. */
export type ServerKind = 'http' | 'https' | 'grpc' | 'grpc-tls';

/** PEM material of the development PKI, made in the main thread. */
export interface BenchTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface ServerWorkerData {
  readonly kind: ServerKind;
  readonly jwks: JSONWebKeySet;
  readonly tls: BenchTls;
}

export interface ServerPorts {
  readonly bare: number;
  readonly guarded: number;
  /** The guarded server plus rate limiting and brute-force protection (`benchRateLimitControls`). */
  readonly ratelimit: number;
}

const LOOPBACK = '127.0.0.1';

/** The route both apps serve, identical in both: only fluxguard's middleware differs. */
function mountRoute(app: Express): void {
  app.get(HTTP_ROUTE, (req, res) => {
    res.json({ id: req.params.id, name: 'bench item' });
  });
}

function bareApp(): Express {
  const app = express();
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  mountRoute(app);
  return app;
}

/** The full fluxguard stack; `controls` adds the rate-limit controls for `fluxguard+ratelimit`. */
function guardedApp(jwks: JSONWebKeySet, controls?: readonly Control[]): Express {
  const audit = nullAudit();
  const app = express();
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  const { before, after } = fluxguard({
    audit,
    guard: benchGuard(audit, jwks, HTTP_RULES),
    ...(controls === undefined ? {} : { controls }),
  });
  app.use(before);
  mountRoute(app);
  app.use(after);
  return app;
}

async function listen(server: HttpServer): Promise<number> {
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

function getItem(call: grpc.ServerUnaryCall<ItemRequest, Item>, callback: grpc.sendUnaryData<Item>): void {
  callback(null, { id: call.request.id, name: 'bench item' });
}

async function bindGrpc(server: grpc.Server, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${LOOPBACK}:0`, credentials, (err, port) => {
      if (err === null) resolve(port);
      else reject(err);
    });
  });
}

function guardedGrpc(jwks: JSONWebKeySet, controls?: readonly Control[]): grpc.Server {
  const audit = nullAudit();
  const server = new grpc.Server({
    ...secureServerOptions(),
    interceptors: fluxguardInterceptors({
      audit,
      guard: benchGuard(audit, jwks, GRPC_RULES),
      ...(controls === undefined ? {} : { controls }),
    }),
  });
  addService(server, ITEMS_SERVICE, { GetItem: getItem });
  return server;
}

/**
 * Starts the bare, the guarded and the guarded + rate-limited server of one kind; all listen
 * on loopback, port 0.
 */
export async function startServers(data: ServerWorkerData): Promise<ServerPorts> {
  const { kind, jwks, tls } = data;
  switch (kind) {
    case 'http':
      return {
        bare: await listen(createHttpServer(bareApp())),
        guarded: await listen(createHttpServer(guardedApp(jwks))),
        ratelimit: await listen(createHttpServer(guardedApp(jwks, benchRateLimitControls()))),
      };
    case 'https': {
      // The same certificates and the same demand for a client certificate on both servers;
      // the bare one keeps Node's own TLS defaults.
      const bare = createHttpsServer(
        { ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true },
        bareApp(),
      );
      const secure = (app: Express): HttpServer =>
        createSecureServer(app, {
          audit: nullAudit(),
          tls: { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
        });
      return {
        bare: await listen(bare),
        guarded: await listen(secure(guardedApp(jwks))),
        ratelimit: await listen(secure(guardedApp(jwks, benchRateLimitControls()))),
      };
    }
    case 'grpc':
    case 'grpc-tls': {
      const bare = new grpc.Server();
      bare.addService(ITEMS_SERVICE, { GetItem: getItem });
      const guarded = guardedGrpc(jwks);
      const ratelimit = guardedGrpc(jwks, benchRateLimitControls());
      if (kind === 'grpc') {
        return {
          bare: await bindGrpc(bare, grpc.ServerCredentials.createInsecure()),
          guarded: await bindGrpc(guarded, grpc.ServerCredentials.createInsecure()),
          ratelimit: await bindGrpc(ratelimit, grpc.ServerCredentials.createInsecure()),
        };
      }
      const bareCredentials = grpc.ServerCredentials.createSsl(
        Buffer.from(tls.ca),
        [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }],
        true,
      );
      const guardedCredentials = (): grpc.ServerCredentials =>
        createServerCredentials(
          { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
          { audit: nullAudit() },
        );
      return {
        bare: await bindGrpc(bare, bareCredentials),
        guarded: await bindGrpc(guarded, guardedCredentials()),
        ratelimit: await bindGrpc(ratelimit, guardedCredentials()),
      };
    }
  }
}
