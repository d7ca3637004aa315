import { verify, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Express, RequestHandler } from 'express';
import { metadataGate } from './grpc-gate.js';
import { mountRoute, strictApp } from './handlers.js';

const BEARER = 'Bearer ';
const UNAUTHENTICATED = { code: grpc.status.UNAUTHENTICATED, details: 'unauthenticated' };

/**
 * Whether `authorization` is `Bearer <token>` with a valid ES256 signature under `publicKey`:
 * one synchronous `node:crypto` verification over the token up to its last dot, nothing else
 * (no header or claims parsed, no cache). It is the least work a server can do and still check
 * every new token's signature, so it is the floor the new and forged rows are measured against.
 */
export function bearerSignatureValid(authorization: string | undefined, publicKey: KeyObject): boolean {
  if (authorization?.startsWith(BEARER) !== true) return false;
  const token = authorization.slice(BEARER.length);
  const dot = token.lastIndexOf('.');
  if (dot <= 0) return false;
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  // A JWS signs the bytes of `header.payload` as sent; Node decodes header values as latin1, so
  // latin1 gives those bytes back exactly.
  const signingInput = Buffer.from(token.slice(0, dot), 'latin1');
  try {
    return verify('sha256', signingInput, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    // What a client sent can be malformed in ways OpenSSL throws on: that is a refusal, not a crash.
    return false;
  }
}

function requireSignature(publicKey: KeyObject): RequestHandler {
  return (req, res, next) => {
    if (bearerSignatureValid(req.headers.authorization, publicKey)) next();
    else res.status(401).json({ error: 'unauthorized' });
  };
}

/**
 * The HTTP floor: the bare app (Express 5, case-sensitive routing, the same route) with one middleware
 * in front that refuses with 401 any request whose bearer token's signature does not verify.
 */
export function floorApp(publicKey: KeyObject): Express {
  const app = strictApp();
  app.use(requireSignature(publicKey));
  mountRoute(app);
  return app;
}

function authorizationOf(metadata: grpc.Metadata): string | undefined {
  const value = metadata.get('authorization')[0];
  return typeof value === 'string' ? value : undefined;
}

/**
 * The gRPC floor: one grpc-js server interceptor that checks the bearer token's signature when
 * the call's metadata arrives and ends the call with UNAUTHENTICATED (16) when it does not
 * verify; the service behind it is the bare server's.
 */
export function floorInterceptor(publicKey: KeyObject): grpc.ServerInterceptor {
  return metadataGate((metadata) =>
    bearerSignatureValid(authorizationOf(metadata), publicKey) ? undefined : UNAUTHENTICATED,
  );
}
