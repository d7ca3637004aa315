// The authenticator's synchronous path: a call without a token is decided without a promise (an
// anonymous caller, or a certificate a rule maps to roles), a token the verifier's cache settles is
// taken without one, and so is a new token whose key the source knows now and whose signature and claims
// the fast path checks (accepted, or refused with the reason verify() gives). Every other case
// (a key to fetch, expiry of a cached token, rotation, a denylist to ask, a malformed or repeated
// header) still goes through `authenticate`, with its refusals.
import { beforeAll, describe, expect, it } from 'vitest';
import type { CertificateIdentity } from '../call/call-info.js';
import { createMemoryDenylist } from '../denylist/memory.js';
import type { JwksSource } from '../jwt/key-source.js';
import { createJwtVerifier, type JwtVerifierOptions } from '../jwt/verifier.js';
import { CallState } from '../pipeline/call-context.js';
import {
  AUDIENCE,
  ISSUER,
  GUARD_OPS,
  makeKey,
  refusal,
  sign,
  testCall,
  type TestKey,
  BACKUP_CERTIFICATE,
  b64url,
} from '../testing/jwt-fixtures.js';
import { createAuthenticator } from './authenticate.js';

const IDS = { requestId: 'r-1', peerAddress: '127.0.0.1:5000' };

let key: TestKey;
beforeAll(async () => {
  key = await makeKey('ES256', 'ec-1');
});

function newState(): CallState {
  return new CallState({
    requestId: 'r-1',
    deadline: undefined,
    end: () => undefined,
    onReleaseError: () => undefined,
  });
}

function authenticatorWith(extra: Partial<JwtVerifierOptions> = {}) {
  const source = { version: 1, calls: 0 } as JwksSource & { version: number; calls: number };
  Object.assign(source, {
    getKeys: () => {
      source.calls += 1;
      return Promise.resolve([key.publicKey]);
    },
  });
  const jwt = createJwtVerifier({ keySource: source, issuer: ISSUER, audience: AUDIENCE, ...extra });
  return { authenticator: createAuthenticator({ jwt }), source };
}

/** Runs `onStart` once: whether it answered at once, and the principal it set. */
async function start(
  authenticator: ReturnType<typeof createAuthenticator>,
  headers: Record<string, string>,
  certificate?: CertificateIdentity,
): Promise<{ synchronous: boolean; state: CallState }> {
  const state = newState();
  const result = authenticator.onStart?.(testCall(IDS, GUARD_OPS.GET, headers, certificate), state);
  if (result !== undefined) await result;
  return { synchronous: result === undefined, state };
}

describe('createAuthenticator: a call without a token', () => {
  it('is decided at once: anonymous, or the principal of a certificate a rule maps to roles', async () => {
    const { authenticator } = authenticatorWith();
    const anonymous = await start(authenticator, {});
    expect(anonymous.synchronous).toBe(true);
    expect(anonymous.state.principal).toBeUndefined();
    const withCertificate = await start(authenticator, {}, BACKUP_CERTIFICATE);
    expect(withCertificate.synchronous).toBe(true);
    expect(withCertificate.state.principal).toBeUndefined();

    const mapped = createAuthenticator({
      jwt: createJwtVerifier({ jwks: { keys: [key.publicJwk] }, issuer: ISSUER, audience: AUDIENCE }),
      certificateRoles: [{ spiffeId: BACKUP_CERTIFICATE.spiffeId ?? '', roles: ['artifacts.reader'] }],
    });
    const byCertificate = await start(mapped, {}, BACKUP_CERTIFICATE);
    expect(byCertificate.synchronous).toBe(true);
    expect(byCertificate.state.principal).toMatchObject({ authenticatedBy: 'mtls', roles: ['artifacts.reader'] });
    expect(await mapped.authenticate(testCall(IDS, GUARD_OPS.GET, {}, BACKUP_CERTIFICATE))).toEqual(
      byCertificate.state.principal,
    );
  });
});

describe('createAuthenticator: a token the cache settles', () => {
  it('is taken synchronously once cached (from the third call on), with the same frozen principal', async () => {
    const { authenticator, source } = authenticatorWith();
    const headers = { authorization: `Bearer ${await sign(key)}` };
    const first = await start(authenticator, headers);
    expect(first.synchronous).toBe(false);
    // The cache admits a token on its second verification (the doorkeeper).
    const second = await start(authenticator, headers);
    expect(second.synchronous).toBe(false);
    const third = await start(authenticator, headers);
    expect(third.synchronous).toBe(true);
    expect(third.state.principal).toBe(second.state.principal);
    expect(Object.isFrozen(third.state.principal)).toBe(true);
    expect(third.state.principal?.subject).toBe('alice');
    expect(source.calls).toBe(2);
  });

  it('merges a verified certificate on the synchronous path as on the other', async () => {
    const { authenticator } = authenticatorWith();
    const certificate = BACKUP_CERTIFICATE;
    const headers = { authorization: `Bearer ${await sign(key)}` };
    const first = await start(authenticator, headers, certificate);
    await start(authenticator, headers, certificate);
    const third = await start(authenticator, headers, certificate);
    expect(third.synchronous).toBe(true);
    expect(third.state.principal).toEqual(first.state.principal);
    expect(third.state.principal?.authenticatedBy).toBe('both');
  });

  it('is refused once it expires, through the asynchronous path', async () => {
    let clock = Date.now();
    const { authenticator } = authenticatorWith({ clockToleranceSeconds: 0, now: () => clock });
    const headers = {
      authorization: `Bearer ${await sign(key, { nowSeconds: Math.floor(clock / 1000), ttlSeconds: 60 })}`,
    };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    clock += 61_000;
    const error = await refusal(start(authenticator, headers));
    expect(error.reason).toBe('token_expired');
  });

  it('is verified again after the key set changed', async () => {
    const { authenticator, source } = authenticatorWith();
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    source.version = 2;
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    expect(source.calls).toBe(2);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
  });

  it('is verified again when the key set changes after the token was settled, and refused when its key is gone', async () => {
    const { authenticator, source } = authenticatorWith();
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    await start(authenticator, headers);
    // Settled twice: the second time among the last hits, found without hashing the token.
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    source.version = 2;
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    expect(source.calls).toBe(3);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    // The key rotates out: the settled token is refused, not served from either cache.
    const other = await makeKey('ES256', 'ec-2');
    Object.assign(source, { getKeys: () => Promise.resolve([other.publicKey]) });
    source.version = 3;
    expect((await refusal(start(authenticator, headers))).code).toBe('unauthenticated');
    expect((await refusal(start(authenticator, headers))).code).toBe('unauthenticated');
  });

  it('settles the tokens of many clients, and tokens too long to be kept by value, each with its own principal', async () => {
    const { authenticator } = authenticatorWith();
    const clients = await Promise.all(
      Array.from({ length: 80 }, async (_, i) => ({
        subject: `client-${String(i)}`,
        headers: { authorization: `Bearer ${await sign(key, { claims: { sub: `client-${String(i)}` } })}` },
      })),
    );
    const long = { authorization: `Bearer ${await sign(key, { claims: { sub: 'long', pad: 'x'.repeat(3000) } })}` };
    clients.push({ subject: 'long', headers: long });
    expect(long.authorization.length).toBeGreaterThan(3000);
    for (let round = 0; round < 2; round += 1) for (const client of clients) await start(authenticator, client.headers);
    for (let round = 0; round < 2; round += 1) {
      for (const client of clients) {
        const settled = await start(authenticator, client.headers);
        expect(settled.synchronous).toBe(true);
        expect(settled.state.principal?.subject).toBe(client.subject);
      }
    }
  });

  it("refuses a forgery on a settled token's signature, or one that ends as its header ends", async () => {
    const { authenticator } = authenticatorWith();
    const token = await sign(key, { claims: { sub: 'alice' } });
    const headers = { authorization: `Bearer ${token}` };
    for (let n = 0; n < 3; n += 1) await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    const [encodedHeader = '', payload = '', signature = ''] = token.split('.');
    // Another payload under the cached token's signature: the cache's key, not its token.
    const admin = b64url({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: 'admin' });
    const forgeries = [
      `${encodedHeader}.${admin}.${signature}`,
      // Same length, same last characters (so the same print among the last hits), one
      // character changed before the signature.
      `${encodedHeader}.${payload.slice(0, 10)}${payload[10] === 'A' ? 'B' : 'A'}${payload.slice(11)}.${signature}`,
    ];
    for (const forged of forgeries) {
      for (let n = 0; n < 3; n += 1) {
        const refused = await refusal(start(authenticator, { authorization: `Bearer ${forged}` }));
        expect(refused.code).toBe('unauthenticated');
      }
    }
    // The real token is still settled at once, as itself.
    const again = await start(authenticator, headers);
    expect(again.synchronous).toBe(true);
    expect(again.state.principal?.subject).toBe('alice');
  });

  it('still asks the denylist about a token with a jti, and refuses it once revoked', async () => {
    const denylist = createMemoryDenylist();
    const { authenticator } = authenticatorWith({ denylist });
    const headers = { authorization: `Bearer ${await sign(key, { claims: { jti: 'j-1' } })}` };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    await denylist.revoke('j-1', new Date(Date.now() + 600_000));
    expect((await refusal(start(authenticator, headers))).reason).toBe('revoked');
  });

  it('takes a token without a jti synchronously even with a denylist', async () => {
    const { authenticator } = authenticatorWith({ denylist: createMemoryDenylist() });
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
  });

  it('refuses a cached token sent twice, or under another scheme', async () => {
    const { authenticator } = authenticatorWith();
    const token = await sign(key);
    await start(authenticator, { authorization: `Bearer ${token}` });
    await start(authenticator, { authorization: `Bearer ${token}` });
    // A cache hit: from now on this header is among the last hits, found by comparing it whole.
    expect((await start(authenticator, { authorization: `Bearer ${token}` })).synchronous).toBe(true);
    // The same token in another spelling of the header is the same token, found in the cache.
    const spelled = await start(authenticator, { authorization: ` bearer  ${token} ` });
    expect(spelled.synchronous).toBe(true);
    expect(spelled.state.principal?.subject).toBe('alice');
    const state = newState();
    const headers = {
      get: () => `Bearer ${token}`,
      getAll: () => [`Bearer ${token}`, `Bearer ${token}`],
    };
    const twice = authenticator.onStart?.({ ...testCall(IDS, GUARD_OPS.GET), headers }, state);
    expect(twice).toBeInstanceOf(Promise);
    expect((await refusal(Promise.resolve(twice))).reason).toBe('multiple_authorization');
    expect((await refusal(start(authenticator, { authorization: `Basic ${token}` }))).reason).toBe('not_bearer');
  });

  it('is never taken when the cache is off', async () => {
    const { authenticator, source } = authenticatorWith({ cacheMaxEntries: 0 });
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    expect(source.calls).toBe(2);
  });
});

describe('createAuthenticator: a new token whose key the source knows now', () => {
  let attacker: TestKey;
  beforeAll(async () => {
    attacker = await makeKey('ES256', 'ec-1');
  });

  /** A verifier on a local key set, its key already imported by one first verification. */
  async function localAuthenticator(extra: Partial<JwtVerifierOptions> = {}) {
    const jwt = createJwtVerifier({ jwks: { keys: [key.publicJwk] }, issuer: ISSUER, audience: AUDIENCE, ...extra });
    await jwt.verify(await sign(key, { claims: { sub: 'warm-up' } }));
    return { authenticator: createAuthenticator({ jwt }), jwt };
  }

  /** Runs `onStart` and says how it decided: at once (allowed or thrown) or through a promise. */
  function decide(authenticator: ReturnType<typeof createAuthenticator>, token: string) {
    const state = newState();
    try {
      const result = authenticator.onStart?.(testCall(IDS, GUARD_OPS.GET, { authorization: `Bearer ${token}` }), state);
      return { synchronous: result === undefined, pending: result, state, thrown: undefined };
    } catch (error) {
      return { synchronous: true, pending: undefined, state, thrown: error as { reason?: string } };
    }
  }

  it('is verified and taken synchronously from its first call on, then from the cache', async () => {
    // Before its key is imported, a token takes the asynchronous path once.
    const cold = createAuthenticator({
      jwt: createJwtVerifier({ jwks: { keys: [key.publicJwk] }, issuer: ISSUER, audience: AUDIENCE }),
    });
    const first = decide(cold, await sign(key));
    expect(first.synchronous).toBe(false);
    await first.pending;
    expect(decide(cold, await sign(key, { claims: { sub: 'bob' } })).state.principal?.subject).toBe('bob');

    const { authenticator } = await localAuthenticator();
    const token = await sign(key);
    const calls = [decide(authenticator, token), decide(authenticator, token), decide(authenticator, token)];
    expect(calls.map((c) => c.synchronous)).toEqual([true, true, true]);
    expect(calls.map((c) => c.state.principal?.subject)).toEqual(['alice', 'alice', 'alice']);
    // The second verification admits it to the cache: the third call gets that same principal.
    expect(calls[2]?.state.principal).toBe(calls[1]?.state.principal);
    expect(Object.isFrozen(calls[0]?.state.principal)).toBe(true);
  });

  it('refuses at once what the fast path decides, with the reason verify() gives', async () => {
    const { authenticator, jwt } = await localAuthenticator({ clockToleranceSeconds: 0 });
    const now = Math.floor(Date.now() / 1000);
    const tokens = {
      forged: await sign(attacker),
      expired: await sign(key, { nowSeconds: now - 600, ttlSeconds: 60 }),
      wrongAudience: await sign(key, { claims: { aud: 'billing' } }),
      wrongIssuer: await sign(key, { claims: { iss: 'https://evil.example' } }),
      noExp: await sign(key, { omit: ['exp'] }),
      embeddedKey: await sign(attacker, { header: { jwk: attacker.publicJwk } }),
      algNone: `${b64url({ alg: 'none', kid: 'ec-1' })}.${b64url({ sub: 'mallory', iss: ISSUER, aud: AUDIENCE })}.`,
      notJws: 'a.b',
    };
    for (const [name, token] of Object.entries(tokens)) {
      const expected = await refusal(jwt.verify(token));
      const decided = decide(authenticator, token);
      expect(decided.synchronous, name).toBe(true);
      expect(decided.thrown?.reason, name).toBe(expected.reason);
      expect(decided.state.principal, name).toBeUndefined();
    }
  });

  it('goes through the asynchronous path for a kid the source does not know, and refuses it', async () => {
    const { authenticator } = await localAuthenticator();
    const decided = decide(authenticator, await sign(key, { header: { kid: 'made-up' } }));
    expect(decided.synchronous).toBe(false);
    expect((await refusal(Promise.resolve(decided.pending))).reason).toBe('unknown_kid');
  });

  it('asks the denylist first when there is one: no synchronous verification, and a revoked jti is refused', async () => {
    const denylist = createMemoryDenylist();
    const { authenticator } = await localAuthenticator({ denylist });
    await denylist.revoke('j-9', new Date(Date.now() + 600_000));
    const revoked = decide(authenticator, await sign(key, { claims: { jti: 'j-9' } }));
    expect(revoked.synchronous).toBe(false);
    expect((await refusal(Promise.resolve(revoked.pending))).reason).toBe('revoked');
  });

  it('decides a flood of distinct new tokens and forgeries at once, each correctly', async () => {
    const { authenticator } = await localAuthenticator({ cacheMaxEntries: 64 });
    const now = Math.floor(Date.now() / 1000);
    const tokens = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        i % 3 === 0
          ? sign(attacker, { claims: { sub: `m-${String(i)}` } })
          : sign(key, { claims: { sub: `u-${String(i)}` }, nowSeconds: now }),
      ),
    );
    const outcomes = tokens.map((token) => decide(authenticator, token));
    expect(outcomes.every((o) => o.synchronous)).toBe(true);
    expect(
      outcomes.filter((o, i) => (i % 3 === 0 ? o.thrown?.reason !== 'bad_signature' : o.thrown !== undefined)),
    ).toEqual([]);
    expect(outcomes.filter((o, i) => i % 3 !== 0 && o.state.principal?.subject !== `u-${String(i)}`)).toEqual([]);
  });
});
