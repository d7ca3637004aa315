import { KeyObject, createHmac, createSecretKey, sign as cryptoSign } from 'node:crypto';
import { EncryptJWT, SignJWT, exportSPKI } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { createMemoryDenylist } from '../denylist/memory.js';
import { createJwtVerifier, type JwtVerifierOptions } from './verifier.js';
import type { JwksSource } from './key-source.js';
import { AUDIENCE, ISSUER, b64url, headersOf, makeKey, sign, type TestKey } from '../testing/jwt-fixtures.js';

let rsa: TestKey;
let ec: TestKey;
let ed: TestKey;
let attacker: TestKey;
let rs512: TestKey;

beforeAll(async () => {
  [rsa, ec, ed, attacker, rs512] = await Promise.all([
    makeKey('RS256', 'rsa-1'),
    makeKey('ES256', 'ec-1'),
    makeKey('EdDSA', 'ed-1'),
    makeKey('RS256', 'rsa-1'), // same kid as the trusted key, different key
    makeKey('RS512', 'rs512-1'),
  ]);
});

function verifier(extra: Partial<JwtVerifierOptions> = {}) {
  return createJwtVerifier({
    jwks: { keys: [rsa.publicJwk, ec.publicJwk, ed.publicJwk, rs512.publicJwk] },
    issuer: ISSUER,
    audience: AUDIENCE,
    ...extra,
  });
}

async function reasonOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(SecurityError);
    const e = err as SecurityError;
    expect(e.code).toBe('unauthenticated');
    expect(e.message).toBe('Authentication is required.');
    return e.reason;
  }
  throw new Error('expected a refusal');
}

/** An RS256 token signed by hand, for headers jose refuses to produce. */
function handSigned(key: TestKey, header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const input = `${b64url({ alg: 'RS256', kid: key.kid, ...header })}.${b64url(claims)}`;
  const signature = cryptoSign('sha256', Buffer.from(input), KeyObject.from(key.privateKey)).toString('base64url');
  return `${input}.${signature}`;
}

function baseClaims(): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: ISSUER, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300, roles: ['artifacts.admin'] };
}

describe('createJwtVerifier: accepted tokens', () => {
  it.each(['RS256', 'ES256', 'EdDSA'] as const)('verifies a %s token into a Principal', async (alg) => {
    const key = { RS256: rsa, ES256: ec, EdDSA: ed }[alg];
    const token = await sign(key, { claims: { jti: 'j-1', scope: 'read write' } });
    const verified = await verifier().verify(token);
    expect(verified.principal).toMatchObject({
      subject: 'alice',
      roles: ['artifacts.reader'],
      scopes: ['read', 'write'],
      authenticatedBy: 'jwt',
      certificate: undefined,
    });
    expect(verified.jti).toBe('j-1');
    expect(verified.algorithm).toBe(alg);
    expect(verified.expiresAt).toBeInstanceOf(Date);
    expect(Object.isFrozen(verified.principal.claims)).toBe(true);
  });

  it('returns a principal frozen all through, an absent scope or role list included', async () => {
    const verified = await verifier().verify(await sign(rsa, { omit: ['roles'] }));
    const { principal } = verified;
    expect(principal.roles).toEqual([]);
    expect(principal.scopes).toEqual([]);
    for (const part of [principal, principal.roles, principal.scopes, principal.claims]) {
      expect(Object.isFrozen(part)).toBe(true);
    }
  });

  it('verifies with a PEM public key and narrows the allowlist to what the key can do', async () => {
    const v = createJwtVerifier({ publicKey: await exportSPKI(ec.publicKey), issuer: ISSUER, audience: AUDIENCE });
    expect(v.algorithms).toEqual(['ES256']);
    expect((await v.verify(await sign(ec))).principal.subject).toBe('alice');
    expect(await reasonOf(v.verify(await sign(rsa)))).toBe('alg_not_allowed');
  });

  it('accepts HS256 only with an explicit secret', async () => {
    const secret = 'a-very-long-shared-secret-of-32-bytes!!';
    const v = createJwtVerifier({ secret, issuer: ISSUER, audience: AUDIENCE });
    const token = await new SignJWT({ ...baseClaims(), sub: 'svc' })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(secret));
    expect((await v.verify(token)).principal.subject).toBe('svc');
  });

  it('reads roles from a nested path and scopes from scp', async () => {
    const token = await sign(rsa, { claims: { realm_access: { roles: ['artifacts.writer'] }, scp: ['a', 'b'] } });
    const p = (await verifier({ rolesClaim: 'realm_access.roles' }).verify(token)).principal;
    expect(p.roles).toEqual(['artifacts.writer']);
    expect(p.scopes).toEqual(['a', 'b']);
  });

  it('accepts any of several issuers and audiences', async () => {
    const token = await sign(rsa, { claims: { iss: 'https://other.test', aud: ['x', 'y'] } });
    const v = verifier({ issuer: [ISSUER, 'https://other.test'], audience: ['y'] });
    expect((await v.verify(token)).issuer).toBe('https://other.test');
  });

  it('authenticates a call from its Authorization header', async () => {
    const token = await sign(rsa);
    const p = await verifier().authenticate({ headers: headersOf({ Authorization: `bearer ${token}` }) });
    expect(p.subject).toBe('alice');
    expect(await reasonOf(verifier().authenticate({ headers: headersOf({}) }))).toBe('missing_token');
  });
});

describe('createJwtVerifier: attacks refused with unauthenticated', () => {
  it('alg: none, crafted by hand, in any case', async () => {
    for (const alg of ['none', 'None', 'NONE']) {
      const token = `${b64url({ alg, typ: 'JWT' })}.${b64url(baseClaims())}.`;
      expect(await reasonOf(verifier().verify(token))).toBe('alg_none');
    }
  });

  it('HS256 signed with the RSA public key (PEM) as the HMAC secret', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const input = `${b64url({ alg: 'HS256', typ: 'JWT', kid: rsa.kid })}.${b64url(baseClaims())}`;
    const forged = `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
    expect(await reasonOf(verifier().verify(forged))).toBe('alg_not_allowed');
    const pemVerifier = createJwtVerifier({ publicKey: pem, issuer: ISSUER, audience: AUDIENCE });
    expect(await reasonOf(pemVerifier.verify(forged))).toBe('alg_not_allowed');
  });

  it('an algorithm outside the allowlist, even with a trusted key', async () => {
    expect(await reasonOf(verifier().verify(await sign(rs512)))).toBe('alg_not_allowed');
    expect(await reasonOf(verifier({ algorithms: ['ES256'] }).verify(await sign(rsa)))).toBe('alg_not_allowed');
  });

  it("a header seen before is checked against each verifier's own allowlist", async () => {
    const token = await sign(rsa);
    await verifier().verify(token); // the header has passed once: it is known by its encoded form now
    expect(await reasonOf(verifier({ algorithms: ['ES256'] }).verify(token))).toBe('alg_not_allowed');
    expect((await verifier().verify(token)).principal.subject).toBe('alice');
  });

  it('a flood of distinct valid headers changes no decision', async () => {
    const v = verifier();
    for (let i = 0; i < 150; i++) {
      const unknown = await sign(ec, { header: { kid: `flood-${String(i)}` } });
      expect(await reasonOf(v.verify(unknown))).toBe('unknown_kid');
    }
    expect((await v.verify(await sign(ec))).principal.subject).toBe('alice');
    const embedded = handSigned(rsa, { jwk: rsa.publicJwk }, baseClaims());
    expect(await reasonOf(v.verify(embedded))).toBe('embedded_key');
  });

  it('a bad signature: a tampered payload, or a key that is not ours under a trusted kid', async () => {
    const token = await sign(rsa);
    const [h, , s] = token.split('.');
    const tampered = `${h ?? ''}.${b64url({ ...baseClaims(), sub: 'alice' })}.${s ?? ''}`;
    expect(await reasonOf(verifier().verify(tampered))).toBe('bad_signature');
    expect(await reasonOf(verifier().verify(await sign(attacker)))).toBe('bad_signature');
  });

  it('an unknown kid', async () => {
    expect(await reasonOf(verifier().verify(await sign(rsa, { header: { kid: 'nope' } })))).toBe('unknown_kid');
  });

  it('expired, not yet valid, too old, iat in the future (with the clock tolerance)', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await reasonOf(verifier().verify(await sign(rsa, { nowSeconds: now - 400, ttlSeconds: 60 })))).toBe(
      'token_expired',
    );
    expect(await reasonOf(verifier().verify(await sign(rsa, { claims: { nbf: now + 600 } })))).toBe(
      'token_not_yet_valid',
    );
    expect(
      await reasonOf(
        verifier({ maxTokenAgeSeconds: 60 }).verify(await sign(rsa, { nowSeconds: now - 600, ttlSeconds: 3600 })),
      ),
    ).toBe('token_too_old');
    expect(
      await reasonOf(verifier({ maxTokenAgeSeconds: 60 }).verify(await sign(rsa, { nowSeconds: now + 600 }))),
    ).toBe('iat_in_future');
    // Within tolerance (30 s by default): accepted.
    expect(
      (await verifier().verify(await sign(rsa, { nowSeconds: now - 310, ttlSeconds: 300 }))).principal.subject,
    ).toBe('alice');
  });

  it('a time claim no Date can hold: a token that would never expire, nor be revoked', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Written as JSON text: `1e400` parses as Infinity, which no object serializes to.
    const withClaim = (claim: string, value: string) => {
      const claims = JSON.stringify({ ...baseClaims(), [claim]: 0 }).replace(`"${claim}":0`, `"${claim}":${value}`);
      const input = `${b64url({ alg: 'RS256', kid: rsa.kid })}.${Buffer.from(claims).toString('base64url')}`;
      const signature = cryptoSign('sha256', Buffer.from(input), KeyObject.from(rsa.privateKey)).toString('base64url');
      return `${input}.${signature}`;
    };
    for (const [claim, value] of [
      ['exp', '1e400'],
      ['exp', '9e12'],
      ['nbf', '-1e400'],
      ['iat', '-9e12'],
    ] as const) {
      expect(await reasonOf(verifier().verify(withClaim(claim, value))), `${claim} ${value}`).toBe('malformed_claims');
    }
    // A far but real expiry is a date like any other.
    const far = await verifier().verify(withClaim('exp', String(now + 100 * 365 * 86_400)));
    expect(far.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('a wrong issuer or audience, or a missing one', async () => {
    expect(await reasonOf(verifier().verify(await sign(rsa, { claims: { iss: 'https://evil.test' } })))).toBe(
      'wrong_issuer',
    );
    expect(await reasonOf(verifier().verify(await sign(rsa, { claims: { aud: 'other-api' } })))).toBe('wrong_audience');
    expect(await reasonOf(verifier().verify(await sign(rsa, { omit: ['aud'] })))).toBe('missing_claim');
    expect(await reasonOf(verifier().verify(await sign(rsa, { omit: ['exp'] })))).toBe('missing_claim');
    expect(await reasonOf(verifier().verify(await sign(rsa, { omit: ['sub'] })))).toBe('missing_claim');
    expect(await reasonOf(verifier().verify(await sign(rsa, { claims: { sub: '' } })))).toBe('missing_subject');
  });

  it('a token over the length limit, before any parsing', async () => {
    const v = verifier({ maxTokenLength: 1024 });
    const token = await sign(rsa, { claims: { pad: 'x'.repeat(2000) } });
    expect(await reasonOf(v.verify(token))).toBe('token_too_long');
    // Not even a JWT: refused for its length, not its shape.
    expect(await reasonOf(v.verify('!'.repeat(5000)))).toBe('token_too_long');
  });

  it.each([
    ['jwk', (k: TestKey) => k.publicJwk],
    ['jku', () => 'https://evil.test/jwks.json'],
    ['x5u', () => 'https://evil.test/cert.pem'],
    ['x5c', () => ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA']],
  ] as const)('a key offered in the header (%s), even one that verifies the signature', async (name, value) => {
    const token = await sign(attacker, { header: { [name]: value(attacker), kid: 'attacker' } });
    expect(await reasonOf(verifier().verify(token))).toBe('embedded_key');
  });

  it('an unknown crit extension', async () => {
    const token = handSigned(
      rsa,
      { crit: ['urn:example:must-understand'], 'urn:example:must-understand': true },
      baseClaims(),
    );
    expect(await reasonOf(verifier().verify(token))).toBe('unknown_crit');
  });

  it('a JWE where a JWS is expected', async () => {
    const jwe = await new EncryptJWT(baseClaims())
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
      .encrypt(new Uint8Array(32).fill(7));
    expect(jwe.split('.')).toHaveLength(5);
    expect(await reasonOf(verifier().verify(jwe))).toBe('jwe_not_accepted');
  });

  it.each([
    ['empty', ''],
    ['two parts', 'a.b'],
    ['four parts', 'a.b.c.d'],
    ['not base64url', 'ey$.ey.sig'],
    ['header not JSON', `${b64url('not json')}.${b64url({})}.c2ln`],
    ['header an array', `${b64url([1])}.${b64url({})}.c2ln`],
    ['header without alg', `${b64url({ typ: 'JWT' })}.${b64url({})}.c2ln`],
    ['empty signature', `${b64url({ alg: 'RS256', kid: 'rsa-1' })}.${b64url({})}.`],
  ])('a malformed token (%s)', async (_label, token) => {
    expect(await reasonOf(verifier().verify(token))).toMatch(/^(missing_token|malformed_token|malformed_header)$/);
  });

  it('a header over 2,048 encoded characters, unread, though the token is signed', async () => {
    // 200 keys: no issuer writes such a header.
    const many = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${String(i)}`, i]));
    expect(await reasonOf(verifier().verify(handSigned(rsa, many, baseClaims())))).toBe('malformed_header');
    const long = handSigned(rsa, { x: 'a'.repeat(1_504) }, baseClaims());
    expect((long.split('.')[0] ?? '').length).toBeGreaterThan(2_048);
    expect(await reasonOf(verifier().verify(long))).toBe('malformed_header');
    // At the bound: read, and the signed token accepted.
    const under = handSigned(rsa, { x: 'a'.repeat(1_500) }, baseClaims());
    expect((under.split('.')[0] ?? '').length).toBeLessThanOrEqual(2_048);
    expect((await verifier().verify(under)).principal.subject).toBe('mallory');
  });

  it('a wrong typ when one is expected', async () => {
    const v = verifier({ typ: 'at+jwt' });
    expect(await reasonOf(v.verify(await sign(rsa, { header: { typ: 'JWT' } })))).toBe('wrong_typ');
    expect((await v.verify(await sign(rsa, { header: { typ: 'at+jwt' } }))).principal.subject).toBe('alice');
  });

  it('never puts the token in the error', async () => {
    const token = await sign(rsa, { claims: { iss: 'https://evil.test' } });
    try {
      await verifier().verify(token);
      expect.unreachable();
    } catch (err) {
      const e = err as SecurityError;
      const text = JSON.stringify({ m: e.message, r: e.reason, d: e.details, c: String(e.cause), s: e.stack });
      expect(text).not.toContain(token.split('.')[1]);
      expect(text).not.toContain(token.split('.')[2]);
    }
  });
});

describe('createJwtVerifier: verified-token cache', () => {
  function countingSource(keys: TestKey[]): JwksSource & { calls: number } {
    const inner = verifierKeys(keys);
    const source = {
      calls: 0,
      version: 1,
      getKeys(header: { alg: string; kid: string | undefined }) {
        source.calls += 1;
        return inner.getKeys(header);
      },
    };
    return source;
  }
  function verifierKeys(keys: TestKey[]): JwksSource {
    return {
      version: 1,
      getKeys: (header) => {
        const key = keys.find((k) => k.kid === header.kid);
        return key === undefined
          ? Promise.reject(new SecurityError('unauthenticated', { reason: 'unknown_kid' }))
          : Promise.resolve([key.publicKey]);
      },
    };
  }

  it('costs a map lookup on a hit, and still re-checks exp on every hit (fake clock)', async () => {
    let clock = Date.now();
    const source = countingSource([rsa]);
    const v = createJwtVerifier({
      keySource: source,
      issuer: ISSUER,
      audience: AUDIENCE,
      clockToleranceSeconds: 0,
      now: () => clock,
    });
    const token = await sign(rsa, { nowSeconds: Math.floor(clock / 1000), ttlSeconds: 60 });
    // Cached from its second verification on (the doorkeeper), then served from the cache.
    await v.verify(token);
    await v.verify(token);
    expect(source.calls).toBe(2);
    await v.verify(token);
    await v.verify(token);
    expect(source.calls).toBe(2);
    clock += 61_000;
    expect(await reasonOf(v.verify(token))).toBe('token_expired');
    expect(source.calls).toBe(2); // refused from the cache entry, then dropped
    expect(await reasonOf(v.verify(token))).toBe('token_expired');
    expect(source.calls).toBe(3);
  });

  it('caches a token from its second verification: tokens used once never enter the cache', async () => {
    const source = countingSource([rsa]);
    const v = createJwtVerifier({ keySource: source, issuer: ISSUER, audience: AUDIENCE, cacheMaxEntries: 2 });
    const regular = await sign(rsa, { claims: { sub: 'regular' } });
    await v.verify(regular);
    await v.verify(regular); // second sighting: cached now
    expect(source.calls).toBe(2);
    // A stream of one-time tokens, more than the cache holds: none of them is admitted, so the
    // regular caller's entry is not evicted.
    for (let n = 0; n < 5; n++) await v.verify(await sign(rsa, { claims: { sub: `once-${String(n)}` } }));
    expect(source.calls).toBe(7);
    await v.verify(regular);
    expect(source.calls).toBe(7);
  });

  it('verifies a new token once for many concurrent calls, and again after a refusal', async () => {
    const source = countingSource([rsa]);
    const v = createJwtVerifier({ keySource: source, issuer: ISSUER, audience: AUDIENCE });
    const token = await sign(rsa, {});
    const verified = await Promise.all(Array.from({ length: 50 }, () => v.verify(token)));
    expect(source.calls).toBe(1);
    expect(new Set(verified.map((t) => t.principal.subject)).size).toBe(1);

    const forged = `${token.slice(0, -4)}AAAA`;
    const reasons = await Promise.all(Array.from({ length: 20 }, () => reasonOf(v.verify(forged))));
    expect(new Set(reasons)).toEqual(new Set(['bad_signature']));
    expect(source.calls).toBe(2);
    // A refusal is not remembered: the next call with that token is verified (and refused) again.
    expect(await reasonOf(v.verify(forged))).toBe('bad_signature');
    expect(source.calls).toBe(3);
  });

  it('re-checks nbf and maxTokenAge on a hit', async () => {
    let clock = Date.now();
    const v = verifier({ maxTokenAgeSeconds: 120, clockToleranceSeconds: 0, now: () => clock });
    const token = await sign(rsa, { nowSeconds: Math.floor(clock / 1000), ttlSeconds: 3600 });
    await v.verify(token);
    clock += 121_000;
    expect(await reasonOf(v.verify(token))).toBe('token_too_old');
  });

  it('refuses a token revoked after it was cached', async () => {
    const denylist = createMemoryDenylist();
    const v = verifier({ denylist });
    const token = await sign(rsa, { claims: { jti: 'revoke-me' } });
    const verified = await v.verify(token);
    await v.verify(token);
    await denylist.revoke('revoke-me', verified.expiresAt);
    expect(await reasonOf(v.verify(token))).toBe('revoked');
  });

  it('refuses a token without jti when requireJti is set, accepts it otherwise', async () => {
    const denylist = createMemoryDenylist();
    const token = await sign(rsa);
    expect(await reasonOf(verifier({ denylist, requireJti: true }).verify(token))).toBe('missing_jti');
    expect((await verifier({ denylist }).verify(token)).jti).toBeUndefined();
  });

  it('turns a failing custom denylist into unavailable', async () => {
    const v = verifier({
      denylist: { isRevoked: () => Promise.reject(new Error('db down')), revoke: () => Promise.resolve() },
    });
    await expect(v.verify(await sign(rsa, { claims: { jti: 'x' } }))).rejects.toMatchObject({
      code: 'unavailable',
      reason: 'denylist_unavailable',
    });
  });

  it('works with the cache disabled', async () => {
    const source = countingSource([rsa]);
    const v = createJwtVerifier({ keySource: source, issuer: ISSUER, audience: AUDIENCE, cacheMaxEntries: 0 });
    const token = await sign(rsa);
    await v.verify(token);
    await v.verify(token);
    expect(source.calls).toBe(2);
  });
});

describe('createJwtVerifier: configuration', () => {
  const jwks = () => ({ keys: [rsa.publicJwk] });
  it.each<[string, () => unknown, RegExp]>([
    ['no issuer', () => ({ jwks: jwks(), audience: AUDIENCE }), /"issuer" must be/],
    ['no audience', () => ({ jwks: jwks(), issuer: ISSUER }), /"audience" must be/],
    ['no key option', () => ({ issuer: ISSUER, audience: AUDIENCE }), /exactly one of/],
    [
      'two key options',
      () => ({ jwks: jwks(), secret: 'x'.repeat(40), issuer: ISSUER, audience: AUDIENCE }),
      /exactly one of.*got jwks, secret/,
    ],
    [
      'HS256 with public keys',
      () => ({ jwks: jwks(), algorithms: ['RS256', 'HS256'], issuer: ISSUER, audience: AUDIENCE }),
      /HS256 needs an explicit "secret"/,
    ],
    [
      'RS256 with a secret',
      () => ({ secret: 'x'.repeat(40), algorithms: ['RS256'], issuer: ISSUER, audience: AUDIENCE }),
      /only HS256/,
    ],
    ['a short secret', () => ({ secret: 'short', issuer: ISSUER, audience: AUDIENCE }), /at least 32 bytes/],
    [
      // Long enough, but not one of the types read: the error said it was too short.
      'a secret KeyObject',
      () => ({ secret: createSecretKey(Buffer.alloc(32, 7)), issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "secret" must be a string or a Uint8Array \(a Buffer\) of at least 32 bytes; for a KeyObject, pass key\.export\(\)$/,
    ],
    // Every token would be refused, each as an unknown key.
    [
      'a key set none of whose keys verifies an allowed algorithm',
      () => ({ jwks: { keys: [ec.publicJwk] }, algorithms: ['RS256'], issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwks" can verify ES256, none of which is in "algorithms" \(RS256\)$/,
    ],
    ...[{ use: 'enc' }, { alg: 'HS256' }, { key_ops: ['encrypt'] }].map((member): [string, () => unknown, RegExp] => [
      `a key set whose one key is not for verifying ES256 (${JSON.stringify(member)})`,
      () => ({ jwks: { keys: [{ ...ec.publicJwk, ...member }] }, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwks" verifies no signature: each key is for another use \("use", "key_ops"\) or another "alg"$/,
    ]),
    [
      'an empty key set',
      () => ({ jwks: { keys: [] }, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwks": the key set holds no key, so every token would be refused/,
    ],
    // Compared exactly with the claim: no token's would match.
    ['a blank issuer', () => ({ jwks: jwks(), issuer: ' ', audience: AUDIENCE }), /"issuer" must be a non-empty/],
    ['a blank audience', () => ({ jwks: jwks(), issuer: ISSUER, audience: [AUDIENCE, '\t'] }), /"audience" must be/],
    [
      'an issuer with a trailing space',
      () => ({ jwks: jwks(), issuer: `${ISSUER} `, audience: AUDIENCE }),
      /^createJwtVerifier: "issuer" must not start or end with white space \(remove it\)$/,
    ],
    [
      'an audience with a leading space',
      () => ({ jwks: jwks(), issuer: ISSUER, audience: [AUDIENCE, ' other'] }),
      /^createJwtVerifier: "audience" must not start or end with white space/,
    ],
    ['alg none', () => ({ jwks: jwks(), algorithms: ['none'], issuer: ISSUER, audience: AUDIENCE }), /not supported/],
    [
      'a private key in the set',
      () => ({ jwks: { keys: [{ ...rsa.publicJwk, d: 'AAAA' }] }, issuer: ISSUER, audience: AUDIENCE }),
      /private key material/,
    ],
    [
      'a symmetric key in the set',
      () => ({ jwks: { keys: [{ kty: 'oct', k: 'AAAA' }] }, issuer: ISSUER, audience: AUDIENCE }),
      /symmetric/,
    ],
    [
      'a misspelt option',
      () => ({ jwks: jwks(), issuer: ISSUER, audience: AUDIENCE, clockTolerance: 5 }),
      /unknown option "clockTolerance"/,
    ],
    [
      'a private PEM',
      () => ({
        publicKey: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----',
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /private key/,
    ],
    [
      'http JWKS to a remote host',
      () => ({ jwksUrl: 'http://id.example.com/jwks', issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwksUrl" must use https/,
    ],
    // A string read from the environment is truthy: "false" would have allowed plain http.
    ...['false', 'no', 1, {}].map((allowInsecureHttp): [string, () => unknown, RegExp] => [
      `allowInsecureHttp ${JSON.stringify(allowInsecureHttp)}, not a boolean`,
      () => ({
        jwksUrl: 'http://id.example.com/jwks',
        jwksOptions: { allowInsecureHttp },
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /"allowInsecureHttp" must be a boolean/,
    ]),
    [
      'a clock tolerance above five minutes',
      () => ({ jwks: jwks(), issuer: ISSUER, audience: AUDIENCE, clockToleranceSeconds: 301 }),
      /"clockToleranceSeconds" must be a non-negative number, at most 300/,
    ],
    [
      'a JWKS timeout longer than a Node timer',
      () => ({
        jwksUrl: 'https://id.example.com/jwks',
        jwksOptions: { timeoutMs: 2 ** 31 },
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /"timeoutMs" must be a positive whole number of ms, at most 2147483647/,
    ],
    [
      'a fraction of a millisecond for the JWKS timeout',
      () => ({
        jwksUrl: 'https://id.example.com/jwks',
        jwksOptions: { timeoutMs: 0.5 },
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /"timeoutMs" must be a positive whole number of ms/,
    ],
    ...['5', 5, null, ['x']].map((jwksOptions): [string, () => unknown, RegExp] => [
      `jwksOptions ${JSON.stringify(jwksOptions)}, not an object`,
      () => ({ jwksUrl: 'https://id.example.com/jwks', jwksOptions, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwksOptions" must be an object \(the options of createRemoteJwksSource\)$/,
    ]),
    [
      // It was silently overridden by jwksUrl.
      'a second key-set address in jwksOptions',
      () => ({
        jwksUrl: 'https://id.example.com/jwks',
        jwksOptions: { url: 'https://other.example.com/jwks' },
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /give the key set's address as "jwksUrl", not "jwksOptions\.url"/,
    ],
    [
      'a refresh-error handler that is no function',
      () => ({
        jwksUrl: 'https://id.example.com/jwks',
        jwksOptions: { onRefreshError: 'log it' },
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      /"onRefreshError" must be a function/,
    ],
    // A response bound that reads as one and holds any body in memory.
    ...[2 ** 52, 16 * 1024 * 1024 + 1].map((maxBytes): [string, () => unknown, RegExp] => [
      `jwksOptions.maxBytes ${String(maxBytes)}`,
      () => ({ jwksUrl: 'https://id.example.com/jwks', jwksOptions: { maxBytes }, issuer: ISSUER, audience: AUDIENCE }),
      /^createRemoteJwksSource: "maxBytes" must be a positive whole number of bytes, at most 16777216$/,
    ]),
    // Bounds that read as limits and meant none (1e300), or no whole number of seconds.
    ...[1e9, 65_537].map((maxTokenLength): [string, () => unknown, RegExp] => [
      `maxTokenLength ${String(maxTokenLength)}`,
      () => ({ jwksUrl: 'https://id.example.com/jwks', maxTokenLength, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "maxTokenLength" must be a whole number from 64 to 65536$/,
    ]),
    ...[1e300, 315_360_001, 1.5, -1].map((maxTokenAgeSeconds): [string, () => unknown, RegExp] => [
      `maxTokenAgeSeconds ${String(maxTokenAgeSeconds)}`,
      () => ({ jwksUrl: 'https://id.example.com/jwks', maxTokenAgeSeconds, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "maxTokenAgeSeconds" must be a whole number from 0 to 315360000$/,
    ]),
    // Blank: every token refused as wrong_typ, or roles always read as none.
    [
      'a blank typ',
      () => ({ jwksUrl: 'https://id.example.com/jwks', typ: ' ', issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "typ" must be a non-empty string$/,
    ],
    ...[' ', 'realm_access. ', ['realm_access', '\t']].map((rolesClaim): [string, () => unknown, RegExp] => [
      `a blank rolesClaim ${JSON.stringify(rolesClaim)}`,
      () => ({ jwksUrl: 'https://id.example.com/jwks', rolesClaim, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "rolesClaim" must be a (claim name or a dotted path|non-empty array) of non-empty/,
    ]),
    // Named as the caller wrote it, not as the "url" of the key source made from it.
    ...[5, 'not a url'].map((jwksUrl): [string, () => unknown, RegExp] => [
      `jwksUrl ${JSON.stringify(jwksUrl)}, not an absolute URL`,
      () => ({ jwksUrl, issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwksUrl" must be an absolute URL$/,
    ]),
    [
      'a jwksUrl with credentials',
      () => ({ jwksUrl: 'https://u:p@id.example.com/jwks', issuer: ISSUER, audience: AUDIENCE }),
      /^createJwtVerifier: "jwksUrl" must not carry credentials$/,
    ],
  ])('refuses %s at construction', (_label, options, message) => {
    expect(() => createJwtVerifier(options() as JwtVerifierOptions)).toThrow(ConfigurationError);
    expect(() => createJwtVerifier(options() as JwtVerifierOptions)).toThrow(message);
  });

  it('a clock tolerance of five minutes still cannot accept a token expired an hour ago', async () => {
    const lenient = verifier({ clockToleranceSeconds: 300 });
    const now = Math.floor(Date.now() / 1000);
    expect(await reasonOf(lenient.verify(await sign(rsa, { nowSeconds: now - 3900, ttlSeconds: 300 })))).toBe(
      'token_expired',
    );
    expect((await lenient.verify(await sign(rsa, { nowSeconds: now - 500, ttlSeconds: 300 }))).principal.subject).toBe(
      'alice',
    );
  });

  it('refuses public key material given as the HMAC secret: anyone with the public key could sign', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const der = KeyObject.from(rsa.publicKey).export({ format: 'der', type: 'spki' });
    for (const secret of [
      pem,
      `  ${pem}`,
      JSON.stringify(rsa.publicJwk),
      JSON.stringify({ keys: [ec.publicJwk] }),
      der.toString('base64'),
      new Uint8Array(der),
      new TextEncoder().encode(pem),
    ]) {
      expect(() => createJwtVerifier({ secret, issuer: ISSUER, audience: AUDIENCE })).toThrow(
        /"secret" holds a PEM key or a JWK/,
      );
    }
    // A secret of random bytes, raw or in base64, and a long passphrase are not key material.
    const random = new Uint8Array(48).map((_, i) => (i * 151 + 7) % 256);
    for (const secret of [random, Buffer.from(random).toString('base64'), 'correct horse battery staple, but longer'])
      expect(() => createJwtVerifier({ secret, issuer: ISSUER, audience: AUDIENCE })).not.toThrow();
  });
});
