import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import express, { type Express } from 'express';
import type { JSONWebKeySet } from 'jose';
import { createSecureServer, fluxguard } from '@fluxguard/express';
import { addService, createServerCredentials, fluxguardInterceptors, secureServerOptions } from '@fluxguard/grpc';
import { GRPC_RULES, HTTP_ROUTE, HTTP_RULES, benchGuard, nullAudit } from './fixtures.js';
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

function guardedApp(jwks: JSONWebKeySet): Express {
  const audit = nullAudit();
  const app = express();
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  const { before, after } = fluxguard({ audit, guard: benchGuard(audit, jwks, HTTP_RULES) });
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

/** Starts the bare and the guarded server of one kind; both listen on loopback, port 0. */
export async function startServers(data: ServerWorkerData): Promise<ServerPorts> {
  const { kind, jwks, tls } = data;
  switch (kind) {
    case 'http':
      return {
        bare: await listen(createHttpServer(bareApp())),
        guarded: await listen(createHttpServer(guardedApp(jwks))),
      };
    case 'https': {
      // The same certificates and the same demand for a client certificate on both servers;
      // the bare one keeps Node's own TLS defaults.
      const bare = createHttpsServer(
        { ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true },
        bareApp(),
      );
      const guarded = createSecureServer(guardedApp(jwks), {
        audit: nullAudit(),
        tls: { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
      });
      return { bare: await listen(bare), guarded: await listen(guarded) };
    }
    case 'grpc':
    case 'grpc-tls': {
      const audit = nullAudit();
      const bare = new grpc.Server();
      bare.addService(ITEMS_SERVICE, { GetItem: getItem });
      const guarded = new grpc.Server({
        ...secureServerOptions(),
        interceptors: fluxguardInterceptors({ audit, guard: benchGuard(audit, jwks, GRPC_RULES) }),
      });
      addService(guarded, ITEMS_SERVICE, { GetItem: getItem });
      if (kind === 'grpc') {
        return {
          bare: await bindGrpc(bare, grpc.ServerCredentials.createInsecure()),
          guarded: await bindGrpc(guarded, grpc.ServerCredentials.createInsecure()),
        };
      }
      const bareCredentials = grpc.ServerCredentials.createSsl(
        Buffer.from(tls.ca),
        [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }],
        true,
      );
      const guardedCredentials = createServerCredentials(
        { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
        { audit },
      );
      return { bare: await bindGrpc(bare, bareCredentials), guarded: await bindGrpc(guarded, guardedCredentials) };
    }
  }
}
