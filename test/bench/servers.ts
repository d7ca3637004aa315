import { createPublicKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { JSONWebKeySet } from 'jose';
import { createSecureServer, fluxguard } from '@fluxguard/express';
import { addService, createServerCredentials, fluxguardInterceptors, secureServerOptions } from '@fluxguard/grpc';
import type { Control } from '@fluxguard/core';
import { floorApp, floorInterceptor } from './floor.js';
import {
  GRPC_RULES,
  HTTP_RULES,
  apiKeyRateLimitControls,
  benchGuard,
  benchRateLimitControls,
  nullAudit,
} from './fixtures.js';
import { ITEMS_SERVICE } from './grpc-service.js';
import { getItem, mountRoute, strictApp } from './handlers.js';
import { peerInterceptor } from './peer-grpc.js';
import { peerApp } from './peer-http.js';

/** How a server is reached: HTTP/1.1 plain or mTLS, gRPC insecure or TLS with client certificates. */
export const TRANSPORTS = ['http', 'https', 'grpc', 'grpc-tls'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/**
 * What runs in front of the handler:
 * - `bare`: nothing (plain Express 5, or a grpc-js server with `server.addService`);
 * - `peer`, `peer+ratelimit`: the stack built from popular packages (`peer-http.ts`, `peer-grpc.ts`);
 * - `fluxguard`: `fluxguard({ audit, guard })` / `fluxguardInterceptors({ audit, guard })` with
 *   `secureServerOptions()` and `addService`;
 * - `fluxguard+ratelimit`: the same with `benchRateLimitControls()`;
 * - `fluxguard+apikeys`: the same with one rule keyed by an `x-api-key` header
 *   (`apiKeyRateLimitControls()`), for the memory group's flood of made-up keys;
 * - `floor`: bare plus one synchronous ES256 signature check of the bearer token (`floor.ts`),
 *   the least any server that checks every new token can spend;
 * - `fluxguard-guard`: `fluxguard` without its guard and without timeouts (the adapter's own
 *   layer: request id, call context, safe errors), to tell what the layer costs from what the
 *   controls cost (`pnpm bench:compare`);
 * - `bare+options` (gRPC only): bare with `secureServerOptions()`: what fluxguard's server
 *   settings cost.
 * The `+ratelimit` limits are far above what a run sends: they measure counting, not refusals.
 */
export const VARIANTS = [
  'bare',
  'peer',
  'peer+ratelimit',
  'fluxguard',
  'fluxguard+ratelimit',
  'fluxguard+apikeys',
  'floor',
  'fluxguard-guard',
  'bare+options',
] as const;
export type Variant = (typeof VARIANTS)[number];

/** PEM material of the development PKI. */
export interface BenchTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** What a server process needs to start one server (sent to it as JSON). */
export interface ServerSpec {
  readonly transport: Transport;
  readonly variant: Variant;
  readonly jwks: JSONWebKeySet;
  readonly tls: BenchTls;
}

const LOOPBACK = '127.0.0.1';

// Served as the README recommends: the app behind `wrap`, with `before` mounted in it too.
// `'layer only'`: the `fluxguard-guard` variant, with neither guard nor timeouts.
function guardedApp(jwks: JSONWebKeySet, controls: readonly Control[] | undefined | 'layer only'): RequestListener {
  const audit = nullAudit();
  const app = strictApp();
  const { before, after, wrap } = fluxguard(
    controls === 'layer only'
      ? { audit, timeouts: false }
      : { audit, guard: benchGuard(audit, jwks, HTTP_RULES), ...(controls === undefined ? {} : { controls }) },
  );
  app.use(before);
  mountRoute(app);
  app.use(after);
  return wrap(app);
}

/** The controls a fluxguard variant adds to its guard (new ones for each server). */
function controlsOf(variant: Variant): readonly Control[] | undefined {
  if (variant === 'fluxguard+ratelimit') return benchRateLimitControls();
  if (variant === 'fluxguard+apikeys') return apiKeyRateLimitControls();
  return undefined;
}

/** The bench's one public key as a KeyObject, made once per server from the JWKS. */
function publicKeyOf(jwks: JSONWebKeySet): KeyObject {
  const [jwk] = jwks.keys;
  if (jwk === undefined) throw new Error('the bench JWKS has no key');
  return createPublicKey({ key: jwk, format: 'jwk' });
}

function appFor(variant: Variant, jwks: JSONWebKeySet): RequestListener {
  const publicKey = (): KeyObject => publicKeyOf(jwks);
  switch (variant) {
    case 'bare': {
      const app = strictApp();
      mountRoute(app);
      return app;
    }
    case 'peer':
      return peerApp(publicKey(), false);
    case 'peer+ratelimit':
      return peerApp(publicKey(), true);
    case 'fluxguard':
    case 'fluxguard+ratelimit':
    case 'fluxguard+apikeys':
      return guardedApp(jwks, controlsOf(variant));
    case 'fluxguard-guard':
      return guardedApp(jwks, 'layer only');
    case 'floor':
      return floorApp(publicKey());
    case 'bare+options':
      throw new Error('the bare+options variant exists for gRPC only');
  }
}

async function listen(server: HttpServer): Promise<number> {
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

function grpcServerFor(variant: Variant, jwks: JSONWebKeySet): grpc.Server {
  switch (variant) {
    case 'bare':
    case 'peer':
    case 'peer+ratelimit': {
      const server =
        variant === 'bare'
          ? new grpc.Server()
          : new grpc.Server({ interceptors: [peerInterceptor(jwks, variant === 'peer+ratelimit')] });
      server.addService(ITEMS_SERVICE, { GetItem: getItem });
      return server;
    }
    case 'fluxguard':
    case 'fluxguard+ratelimit':
    case 'fluxguard+apikeys': {
      const audit = nullAudit();
      const controls = controlsOf(variant);
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
    case 'fluxguard-guard': {
      const server = new grpc.Server({
        ...secureServerOptions(),
        interceptors: fluxguardInterceptors({ audit: nullAudit(), timeouts: false }),
      });
      addService(server, ITEMS_SERVICE, { GetItem: getItem });
      return server;
    }
    case 'bare+options': {
      const server = new grpc.Server(secureServerOptions());
      server.addService(ITEMS_SERVICE, { GetItem: getItem });
      return server;
    }
    case 'floor': {
      const server = new grpc.Server({ interceptors: [floorInterceptor(publicKeyOf(jwks))] });
      server.addService(ITEMS_SERVICE, { GetItem: getItem });
      return server;
    }
  }
}

function grpcCredentials(variant: Variant, tls: BenchTls | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  if (variant.startsWith('fluxguard')) {
    return createServerCredentials(
      { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
      { audit: nullAudit() },
    );
  }
  // The bare and peer servers keep grpc-js's own TLS defaults, with a client certificate required.
  return grpc.ServerCredentials.createSsl(
    Buffer.from(tls.ca),
    [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }],
    true,
  );
}

async function bindGrpc(server: grpc.Server, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${LOOPBACK}:0`, credentials, (err, port) => {
      if (err === null) resolve(port);
      else reject(err);
    });
  });
}

/** Starts one server on loopback, port 0, and returns its port. */
export async function startServer(spec: ServerSpec): Promise<number> {
  const { transport, variant, jwks, tls } = spec;
  switch (transport) {
    case 'http':
      return listen(createHttpServer(appFor(variant, jwks)));
    case 'https': {
      const app = appFor(variant, jwks);
      // The same certificates and the same demand for a client certificate on all variants;
      // bare and peer keep Node's own TLS defaults.
      const server = variant.startsWith('fluxguard')
        ? createSecureServer(app, {
            audit: nullAudit(),
            tls: { ca: tls.ca, cert: tls.cert, key: tls.key, clientCertificates: 'strict' },
          })
        : createHttpsServer(
            { ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true },
            app,
          );
      return listen(server);
    }
    case 'grpc':
      return bindGrpc(grpcServerFor(variant, jwks), grpcCredentials(variant, undefined));
    case 'grpc-tls':
      return bindGrpc(grpcServerFor(variant, jwks), grpcCredentials(variant, tls));
  }
}
