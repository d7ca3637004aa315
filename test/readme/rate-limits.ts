import { readFileSync } from 'node:fs';
import express from 'express';
import { Redis } from 'ioredis';
import {
  compileRbac,
  createAuditLogger,
  createBruteForceProtection,
  createGuard,
  createJwtVerifier,
  createMemoryRateLimitStore,
  createRateLimit,
  createRedisRateLimitStore,
} from '@fluxguard/core';
import { createSecureServer, fluxguard } from '@fluxguard/express';

const audit = createAuditLogger();
const guard = createGuard({
  audit,
  jwt: createJwtVerifier({
    issuer: 'https://id.example.com',
    audience: 'inventory',
    publicKey: readFileSync('certs/jwt-public.pem', 'utf8'),
  }),
  rbac: compileRbac({ 'GET /v1/items/:id': { anyRoles: ['items.reader'] } }),
});

// Counts live in this process, or in Redis for every replica (a Redis Cluster client works too).
const store =
  process.env.REDIS_URL === undefined
    ? createMemoryRateLimitStore()
    : createRedisRateLimitStore({
        audit,
        client: new Redis(process.env.REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 1 }),
      });
const limits = createRateLimit({
  store,
  trustedProxies: [], // your load balancer's addresses: then its X-Forwarded-For names the client
  rules: [
    // Runs before any token is verified: a flood of bad tokens buys no signature checks.
    { name: 'per-peer', key: 'peer', points: 100, durationSeconds: 1 },
    // Runs after authentication, per verified subject; add `storeFailure: 'closed'` to answer 503 while Redis is down.
    { name: 'reads', key: 'subject', points: 3, durationSeconds: 60, operations: ['GET /v1/items/:id'] },
  ],
});
// 5 failed authentications from one address within 10 minutes block it for 15 minutes.
const bruteForce = createBruteForceProtection({
  store,
  peer: { maxFailures: 5, windowSeconds: 600, blockSeconds: 900 },
});

const app = express();
app.set('case sensitive routing', true);
const { before, after } = fluxguard({ audit, guard, controls: [...limits.controls, bruteForce] });
// gRPC: fluxguardInterceptors({ audit, guard, controls: [...limits.controls, bruteForce] })
app.use(before);
app.get('/v1/items/:id', (req, res) => res.json({ id: req.params.id }));
app.use(after); // 429 problem+json with Retry-After and the RateLimit fields

export const server = createSecureServer(app, {
  audit,
  tls: {
    certFile: 'certs/server.crt',
    keyFile: 'certs/server.key',
    caFile: 'certs/ca.crt',
    clientCertificates: 'strict',
  },
}).listen(Number(process.env.PORT ?? 8443));
