import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256, type ArtifactClient, type Outcome } from './support/clients.js';
import { expectNoLeak } from './support/leaks.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';
import { TokenForge } from './support/tokens.js';

/**
 * JWT authentication and RBAC, end to end on both transports: every forged or malformed token
 * of `rejections`, each proved by the reason in the audit line of the same request id (so the
 * right defence fired, not an earlier accident), and the full role-by-operation matrix.
 */

let world: E2eEnvironment;
let forge: TokenForge;
beforeAll(async () => {
  world = await createE2eEnvironment();
  // The dev key exists once a server has loaded the reference security: start one first.
});
afterAll(() => {
  world.cleanup();
});

interface Rejection {
  readonly name: string;
  /** A token to send as `Authorization: Bearer`, or undefined to send none. */
  readonly token: () => string | undefined | Promise<string | undefined>;
  /** The reason the audit line must carry. */
  readonly reason: string;
}

const rejections: readonly Rejection[] = [
  { name: 'missing token', token: () => undefined, reason: 'missing_token' },
  { name: 'malformed token', token: () => 'not-a-jwt', reason: 'malformed_token' },
  {
    name: 'malformed header',
    token: () => `${Buffer.from('{"alg":').toString('base64url')}.e30.c2ln`,
    reason: 'malformed_header',
  },
  { name: 'alg none', token: () => forge.algNone(), reason: 'alg_none' },
  {
    name: 'HS256 signed with the public key (JWK) as secret',
    token: () => forge.hmacWithPublicKey('jwk'),
    reason: 'alg_not_allowed',
  },
  {
    name: 'HS256 signed with the public key (PEM) as secret',
    token: () => forge.hmacWithPublicKey('pem'),
    reason: 'alg_not_allowed',
  },
  {
    name: 'an algorithm outside the allowlist (RS384)',
    token: () => forge.disallowedAlgorithm(),
    reason: 'alg_not_allowed',
  },
  { name: 'a bad signature', token: () => forge.tamperedSignature(), reason: 'bad_signature' },
  { name: 'claims changed after signing', token: () => forge.tamperedPayload(), reason: 'bad_signature' },
  {
    name: "an attacker's key under the trusted kid",
    token: () => forge.attackerSigned(forge.kid),
    reason: 'bad_signature',
  },
  { name: 'an unknown kid', token: () => forge.attackerSigned('attacker-kid'), reason: 'unknown_kid' },
  { name: 'expired', token: () => forge.valid({ exp: Math.floor(Date.now() / 1000) - 3600 }), reason: 'token_expired' },
  {
    name: 'not yet valid',
    token: () => forge.valid({ nbf: Math.floor(Date.now() / 1000) + 3600 }),
    reason: 'token_not_yet_valid',
  },
  { name: 'wrong issuer', token: () => forge.valid({ iss: 'https://evil.example' }), reason: 'wrong_issuer' },
  { name: 'wrong audience', token: () => forge.valid({ aud: 'another-service' }), reason: 'wrong_audience' },
  { name: 'over the length limit', token: () => forge.valid({ pad: 'x'.repeat(9000) }), reason: 'token_too_long' },
  { name: 'a key embedded in the header (jwk)', token: () => forge.embeddedJwk(), reason: 'embedded_key' },
  {
    name: 'a key URL in the header (jku)',
    token: () => forge.signWithTrustedKey({ jku: 'https://evil.example/jwks' }),
    reason: 'embedded_key',
  },
  {
    name: 'a certificate URL in the header (x5u)',
    token: () => forge.signWithTrustedKey({ x5u: 'https://evil.example/cert' }),
    reason: 'embedded_key',
  },
  {
    name: 'a certificate chain in the header (x5c)',
    token: () => forge.signWithTrustedKey({ x5c: ['MIIB'] }),
    reason: 'embedded_key',
  },
  {
    name: 'an unknown crit header',
    token: () => forge.signWithTrustedKey({ crit: ['x-policy'], 'x-policy': 1 }),
    reason: 'unknown_crit',
  },
  { name: 'a JWE where a JWS is expected', token: () => forge.jwe(), reason: 'jwe_not_accepted' },
];

type Op = 'get' | 'list' | 'upload' | 'delete';
const ROLES = {
  none: [],
  reader: ['artifacts.reader'],
  writer: ['artifacts.writer'],
  admin: ['artifacts.admin'],
} as const;
/** Who may do what under the reference policy: reader get/list; writer reader + upload; admin writer + delete. */
const ALLOWED: Readonly<Record<keyof typeof ROLES, readonly Op[]>> = {
  none: [],
  reader: ['get', 'list'],
  writer: ['get', 'list', 'upload'],
  admin: ['get', 'list', 'upload', 'delete'],
};
const matrix = (Object.keys(ROLES) as (keyof typeof ROLES)[]).flatMap((role) =>
  (['get', 'list', 'upload', 'delete'] as const).map((op) => ({ role, op, allowed: ALLOWED[role].includes(op) })),
);

async function perform(client: ArtifactClient, op: Op, path: string): Promise<Outcome> {
  switch (op) {
    case 'get':
      return client.get(path);
    case 'list':
      return client.list('matrix/');
    case 'upload':
      return client.upload(path, sha256('m'), [Buffer.from('m')]);
    case 'delete':
      return client.delete(path);
  }
}

describe.each(TRANSPORTS)('JWT and RBAC over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world);
    forge = new TokenForge(world.devDir);
    const seeded = await t.client.upload('auth/target.txt', sha256('t'), [Buffer.from('t')]);
    expect(seeded.ok).toBe(true);
  });
  afterAll(async () => {
    await t.close();
  });

  it.each(rejections)('refuses $name as unauthenticated, the reason in the log only', async (row) => {
    const token = await row.token();
    const client = t.clientWith({ cert: world.pki.clients.valid, token: token ?? null });
    const outcome = await client.get('auth/target.txt');
    expect(outcome.ok).toBe(false);
    expect(outcome.status).toBe(client.statusOf({ code: 'unauthenticated' }));
    expectNoLeak(outcome, t.dataDir);
    if (token !== undefined) expect(outcome.exposed).not.toContain(token.slice(0, 40));
    expect(outcome.exposed).not.toContain(row.reason);
    const logged = t.log.textFor(outcome.requestId ?? 'none');
    expect(logged).toContain(`"reason":"${row.reason}"`);
    // Neither the token nor its signature may reach the log.
    if (token !== undefined) expect(logged).not.toContain(token.length > 40 ? token.slice(-40) : token);
  });

  it('answers a missing token with a bare Bearer challenge and a bad one with invalid_token (HTTP)', async () => {
    const missing = await t.clientWith({ cert: world.pki.clients.valid, token: null }).get('auth/target.txt');
    const bad = await t
      .clientWith({ cert: world.pki.clients.valid, token: forge.tamperedSignature() })
      .get('auth/target.txt');
    if (transport === 'http') {
      expect(missing.exposed).toMatch(/"www-authenticate":"Bearer( realm="[^"]*")?"/);
      expect(bad.exposed).toContain('error=\\"invalid_token\\"');
    } else {
      expect(missing.exposed).not.toMatch(/www-authenticate/i);
      expect(bad.status).toBe(16);
    }
  });

  it('never reads a token from anywhere but the Authorization header', async () => {
    const anonymous = t.clientWith({ cert: world.pki.clients.valid, token: null });
    const outcome = await anonymous.getWithCredentialElsewhere('auth/target.txt', forge.valid());
    expect(outcome.status).toBe(anonymous.statusOf({ code: 'unauthenticated' }));
    expect(t.log.textFor(outcome.requestId ?? 'none')).toContain('"reason":"missing_token"');
  });

  it('accepts the same valid token (the baseline every forgery differs from)', async () => {
    const outcome = await t.clientWith({ cert: world.pki.clients.valid, token: forge.valid() }).get('auth/target.txt');
    expect(outcome.ok, outcome.exposed).toBe(true);
  });

  it.each(matrix)('role $role on $op: allowed=$allowed', async ({ role, op, allowed }) => {
    const path = `matrix/${role}-${op}.txt`;
    const seeded = await t.client.upload(path, sha256('m'), [Buffer.from('m')]);
    expect(seeded.ok).toBe(true);
    const client = t.clientWith({
      cert: world.pki.clients.valid,
      token: await world.token(`user-${role}`, ROLES[role]),
    });
    const outcome = await perform(client, op, path);
    if (allowed) {
      expect(outcome.ok, outcome.exposed).toBe(true);
    } else {
      expect(outcome.status).toBe(client.statusOf({ code: 'permission_denied' }));
      expectNoLeak(outcome, t.dataDir);
      expect(t.log.textFor(outcome.requestId ?? 'none')).toContain(`"subject":"user-${role}"`);
    }
  });

  it('lets no metadata or header a client sends raise its roles', async () => {
    const reader = t.clientWith({
      cert: world.pki.clients.valid,
      token: await world.token('reader', ['artifacts.reader']),
    });
    const outcome = await reader.deleteWithHeaders('auth/target.txt', {
      'x-fluxguard-principal': JSON.stringify({ subject: 'root', roles: ['artifacts.admin'], authenticatedBy: 'jwt' }),
      'x-roles': 'artifacts.admin',
      'x-user': 'root',
    });
    expect(outcome.status).toBe(reader.statusOf({ code: 'permission_denied' }));
  });

  it('keeps health public', async () => {
    const outcome = await t.clientWith({ cert: null, token: null }).health();
    expect(outcome.value).toBe('SERVING');
  });
});
