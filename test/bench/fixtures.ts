import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { JSONWebKeySet, JWK } from 'jose';
import {
  compileRbac,
  createAuditLogger,
  createBruteForceProtection,
  createGuard,
  createJwtVerifier,
  createRateLimit,
  type AuditLogger,
  type Control,
  type Guard,
  type RbacRules,
} from '@fluxguard/core';

/** What the benchmark servers trust, and what the benchmark client signs with. */
export const ISSUER = 'https://id.bench.fluxguard.test';
export const AUDIENCE = 'bench';
export const KID = 'bench-es256';
export const READER_ROLE = 'items.reader';

/** The one HTTP route measured, and the concrete path requested. */
export const HTTP_ROUTE = '/v1/items/:id';
export const HTTP_PATH = '/v1/items/42';

/** The one gRPC method measured. */
export const GRPC_SERVICE = 'bench.v1.Items';
export const GRPC_METHOD = `/${GRPC_SERVICE}/GetItem`;

/**
 * A realistic rule set rather than a single rule, so that the RBAC lookup does the work it
 * does in a real service: the measured operation is neither the first nor the last rule.
 */
export const HTTP_RULES: RbacRules = {
  'GET /healthz': { public: true },
  'GET /v1/items': { anyRoles: [READER_ROLE] },
  'GET /v1/items/:id': { anyRoles: [READER_ROLE] },
  'PUT /v1/items/:id': { anyRoles: ['items.writer'] },
  'DELETE /v1/items/:id': { anyRoles: ['items.admin'] },
  'GET /v1/items/:id/history': { anyRoles: [READER_ROLE], scopes: ['items:history'] },
  'POST /v1/orders': { authenticated: true },
  'GET /v1/orders/:id': { authenticated: true },
  'GET /v1/reports/*path': { allRoles: ['reports.reader', 'items.reader'] },
  '* /admin/*path': { anyRoles: ['admin'] },
};

export const GRPC_RULES: RbacRules = {
  '/grpc.health.v1.Health/*': { public: true },
  [`/${GRPC_SERVICE}/ListItems`]: { anyRoles: [READER_ROLE] },
  [GRPC_METHOD]: { anyRoles: [READER_ROLE] },
  [`/${GRPC_SERVICE}/PutItem`]: { anyRoles: ['items.writer'] },
  [`/${GRPC_SERVICE}/DeleteItem`]: { anyRoles: ['items.admin'] },
  '/bench.v1.Orders/*': { authenticated: true },
  '/bench.v1.Admin/*': { anyRoles: ['admin'] },
};

/** An audit logger that formats every line as usual and then drops it: the cost stays, the I/O goes. */
export function nullAudit(): AuditLogger {
  return createAuditLogger({ destination: { write: () => undefined } });
}

/** The full guard: local JWKS verifier (ES256, verified-token cache on), RBAC rules. */
export function benchGuard(audit: AuditLogger, jwks: JSONWebKeySet, rules: RbacRules, cacheMaxEntries?: number): Guard {
  return createGuard({
    audit,
    jwt: createJwtVerifier({
      jwks,
      issuer: ISSUER,
      audience: AUDIENCE,
      ...(cacheMaxEntries === undefined ? {} : { cacheMaxEntries }),
    }),
    rbac: compileRbac(rules),
  });
}

/** Far above anything a run sends: every call is counted, none is refused. */
export const RATE_LIMIT_POINTS = 1_000_000_000;

/**
 * The controls of the `fluxguard+ratelimit` variant, new for each server (each gets its own
 * memory store): a per-peer and a per-caller rule (`createRateLimit`, memory store) and
 * brute-force protection per peer. The limits are so high that nothing is refused: what is
 * measured is the cost of counting (two `consume` calls, one `peek` of the brute-force count,
 * the `RateLimit-Policy` / `RateLimit` response fields), not refusals.
 */
export function benchRateLimitControls(): Control[] {
  const limits = createRateLimit({
    rules: [
      { name: 'per-peer', key: 'peer', points: RATE_LIMIT_POINTS, durationSeconds: 60 },
      { name: 'per-caller', key: 'subject', points: RATE_LIMIT_POINTS, durationSeconds: 60 },
    ],
  });
  const bruteForce = createBruteForceProtection({ peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 } });
  return [...limits.controls, bruteForce];
}

/** The header the `fluxguard+apikeys` variant counts, and the memory group's flood makes up. */
export const API_KEY_HEADER = 'x-api-key';

/**
 * The controls of the `fluxguard+apikeys` variant: one rule keyed by a header a client chooses
 * (an hour's window, so that no key is swept during a run), counted before authentication, in
 * a memory store of the default bound (100 000 keys). A call without the header counts for its
 * address, so the limit is as far above a run as the other variant's.
 */
export function apiKeyRateLimitControls(): Control[] {
  const limits = createRateLimit({
    rules: [{ name: 'per-api-key', key: `header:${API_KEY_HEADER}`, points: RATE_LIMIT_POINTS, durationSeconds: 3600 }],
  });
  return [...limits.controls];
}

export interface SigningKey {
  readonly privateKey: KeyObject;
  /** The public key set the servers trust (no private member). */
  readonly jwks: JSONWebKeySet;
}

/** A fresh ES256 key, generated at every run: nothing is read from disk. */
export function createSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  return { privateKey, jwks: { keys: [{ ...jwk, kid: KID, alg: 'ES256', use: 'sig' }] } };
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Mints valid ES256 tokens with node:crypto directly (fast, synchronous), each one unique. */
export class TokenMinter {
  readonly #key: KeyObject;
  readonly #header = b64({ alg: 'ES256', typ: 'JWT', kid: KID });
  #serial = 0;

  constructor(key: SigningKey) {
    this.#key = key.privateKey;
  }

  /** One new token: a unique `jti` and subject, so that no verified-token cache has seen it. */
  next(): string {
    const n = ++this.#serial;
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: ISSUER,
      aud: AUDIENCE,
      sub: `bench-user-${n}`,
      roles: [READER_ROLE],
      iat: now,
      exp: now + 3600,
      jti: `bench-${process.pid}-${n}`,
    };
    const input = `${this.#header}.${b64(claims)}`;
    const signature = sign('sha256', Buffer.from(input), { key: this.#key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  }

  many(count: number): string[] {
    return Array.from({ length: count }, () => this.next());
  }
}
