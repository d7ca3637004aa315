// The synchronous node:crypto path against jose's jwtVerify: on every token of a corpus of
// valid, invalid and hostile tokens, both must reach the same decision with the same reason.
import { constants, createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import type { JwtVerifierOptions } from './verifier.js';
import { verifyUncached } from './verifier.js';
import { resolveVerifierSettings, type VerifierSettings } from './verifier-settings.js';

const NOW_S = 1_800_000_000;
const now = (): number => NOW_S * 1000;
const ISS = 'https://id.fluxguard.test';

type Signer = (data: Buffer) => Buffer;
interface TestKey {
  readonly kid: string;
  readonly alg: string;
  readonly publicJwk: Record<string, unknown>;
  readonly sign: Signer;
}

function asymmetric(
  kid: string,
  alg: string,
  pair: { publicKey: KeyObject; privateKey: KeyObject },
  signer: (key: KeyObject, data: Buffer) => Buffer,
): TestKey {
  return {
    kid,
    alg,
    publicJwk: { ...pair.publicKey.export({ format: 'jwk' }), kid },
    sign: (data) => signer(pair.privateKey, data),
  };
}

const p1363 = (hash: string) => (key: KeyObject, data: Buffer) => sign(hash, data, { key, dsaEncoding: 'ieee-p1363' });
const der = (hash: string) => (key: KeyObject, data: Buffer) => sign(hash, data, key);
const pss = (hash: string, saltLength: number) => (key: KeyObject, data: Buffer) =>
  sign(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });

let keys: Record<string, TestKey>;
const SECRET = Buffer.from('a-32-byte-secret-for-hs256-tests!!');

beforeAll(() => {
  const ec = (namedCurve: string) => generateKeyPairSync('ec', { namedCurve });
  const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const list = [
    asymmetric('es256', 'ES256', ec('P-256'), p1363('sha256')),
    asymmetric('es384', 'ES384', ec('P-384'), p1363('sha384')),
    asymmetric('es512', 'ES512', ec('P-521'), p1363('sha512')),
    asymmetric('rs256', 'RS256', rsa2048, der('sha256')),
    asymmetric('ps256', 'PS256', rsa2048, pss('sha256', 32)),
    asymmetric('rs1024', 'RS256', generateKeyPairSync('rsa', { modulusLength: 1024 }), der('sha256')),
    asymmetric('ed', 'EdDSA', generateKeyPairSync('ed25519'), (key, data) => sign(null, data, key)),
  ];
  keys = Object.fromEntries(list.map((k) => [k.kid, k]));
});

function keyOf(kid: string): TestKey {
  const key = keys[kid];
  if (key === undefined) throw new Error(`no test key ${kid}`);
  return key;
}

const b64 = (value: string | Buffer): string => Buffer.from(value).toString('base64url');

/** A compact JWS over any header and payload bytes, signed with `signer`. */
function jws(header: Record<string, unknown>, payload: string | Buffer, signer: Signer): string {
  const input = `${b64(JSON.stringify(header))}.${b64(payload)}`;
  return `${input}.${b64(signer(Buffer.from(input)))}`;
}

const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  iss: ISS,
  aud: 'api',
  sub: 'alice',
  exp: NOW_S + 600,
  iat: NOW_S - 10,
  ...extra,
});

function token(kid: string, payload: Record<string, unknown> | string | Buffer, header: Record<string, unknown> = {}) {
  const key = keyOf(kid);
  const body = typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload);
  return jws({ alg: key.alg, kid, ...header }, body, key.sign);
}

function settingsFor(extra: Partial<JwtVerifierOptions> = {}): VerifierSettings {
  return resolveVerifierSettings({
    jwks: { keys: Object.values(keys).map((k) => k.publicJwk) },
    algorithms: ['ES256', 'ES384', 'ES512', 'RS256', 'PS256', 'EdDSA'],
    issuer: ISS,
    audience: ['api', 'other'],
    now,
    ...extra,
  });
}

async function outcome(settings: VerifierSettings, t: string, engine: 'fast' | 'jose'): Promise<unknown> {
  try {
    return { ok: await verifyUncached(settings, t, engine) };
  } catch (err) {
    return { refused: err instanceof SecurityError ? err.reason : `not a SecurityError: ${String(err)}` };
  }
}

/** Corrupts one character of the signature, or cuts it. */
function withSignature(t: string, change: (signature: string) => string): string {
  const [h, p, s = ''] = t.split('.');
  return `${String(h)}.${String(p)}.${change(s)}`;
}

function corpus(): [string, string][] {
  const rows: [string, string][] = [];
  const add = (name: string, t: string): void => {
    rows.push([name, t]);
  };
  for (const kid of ['es256', 'es384', 'es512', 'rs256', 'ps256', 'ed']) {
    add(`valid ${kid}`, token(kid, claims()));
    add(
      `tampered signature ${kid}`,
      withSignature(token(kid, claims()), (s) => `${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`),
    );
    add(
      `truncated signature ${kid}`,
      withSignature(token(kid, claims()), (s) => s.slice(0, -4)),
    );
    add(
      `payload changed after signing ${kid}`,
      (() => {
        const [h, , s] = token(kid, claims()).split('.');
        return `${String(h)}.${b64(JSON.stringify(claims({ sub: 'mallory' })))}.${String(s)}`;
      })(),
    );
  }
  add(
    'ES256 signature in DER instead of P1363',
    jws({ alg: 'ES256', kid: 'es256' }, JSON.stringify(claims()), (d) =>
      der('sha256')(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, d),
    ),
  );
  add('RS256 header over a PSS signature', token('ps256', claims(), { alg: 'RS256', kid: 'rs256' }));
  add('RSA key of 1,024 bits', token('rs1024', claims()));
  add(
    'signature length 1 mod 4',
    withSignature(token('es256', claims()), (s) => `${s}A`),
  );
  add(
    'payload length 1 mod 4',
    (() => {
      const key = keyOf('es256');
      const input = `${b64(JSON.stringify({ alg: 'ES256', kid: 'es256' }))}.${b64(JSON.stringify(claims()))}A`;
      return `${input}.${b64(key.sign(Buffer.from(input)))}`;
    })(),
  );
  add(
    'header length 1 mod 4',
    (() => {
      const key = keyOf('es256');
      const input = `${b64(JSON.stringify({ alg: 'ES256', kid: 'es256' }))}A.${b64(JSON.stringify(claims()))}`;
      return `${input}.${b64(key.sign(Buffer.from(input)))}`;
    })(),
  );
  // Times (clock tolerance 30 s).
  add('expired beyond tolerance', token('es256', claims({ exp: NOW_S - 31 })));
  add('expired at the tolerance', token('es256', claims({ exp: NOW_S - 30 })));
  add('expired within tolerance', token('es256', claims({ exp: NOW_S - 29 })));
  add('exp a string', token('es256', claims({ exp: String(NOW_S + 600) })));
  add('exp null', token('es256', claims({ exp: null })));
  add('exp missing', token('es256', { iss: ISS, aud: 'api', sub: 'alice' }));
  add('exp far in the future', token('es256', claims({ exp: 1e20 })));
  add('nbf beyond tolerance', token('es256', claims({ nbf: NOW_S + 31 })));
  add('nbf at the tolerance', token('es256', claims({ nbf: NOW_S + 30 })));
  add('nbf a string', token('es256', claims({ nbf: 'now' })));
  add('iat a string', token('es256', claims({ iat: 'yesterday' })));
  add('iat in the future (no max age)', token('es256', claims({ iat: NOW_S + 3_600 })));
  // Issuer and audience.
  add('wrong issuer', token('es256', claims({ iss: 'https://evil.test' })));
  add('issuer in an array', token('es256', claims({ iss: [ISS] })));
  add('issuer missing', token('es256', { aud: 'api', sub: 'alice', exp: NOW_S + 600 }));
  add('audience in an array with another', token('es256', claims({ aud: ['x', 'other'] })));
  add('audience array without ours', token('es256', claims({ aud: ['x', 'y'] })));
  add('audience empty array', token('es256', claims({ aud: [] })));
  add('audience a number', token('es256', claims({ aud: 1 })));
  add('wrong audience', token('es256', claims({ aud: 'apix' })));
  add('subject missing', token('es256', { iss: ISS, aud: 'api', exp: NOW_S + 600 }));
  add('subject a number', token('es256', claims({ sub: 42 })));
  // Payload shapes.
  add('payload a JSON array', token('es256', JSON.stringify([claims()])));
  add('payload null', token('es256', 'null'));
  add('payload not JSON', token('es256', 'not json at all'));
  add('payload invalid UTF-8', token('es256', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])));
  add('payload with __proto__', token('es256', `{"__proto__":{"admin":true},${JSON.stringify(claims()).slice(1)}`));
  add('payload with duplicate keys', token('es256', `{"sub":"mallory",${JSON.stringify(claims()).slice(1)}`));
  add('typ header present but not required', token('es256', claims(), { typ: 'JWT' }));
  return rows;
}

describe('the node:crypto path decides as jose does', () => {
  it('on every token of the corpus, with the default claim rules', async () => {
    const settings = settingsFor();
    const rows = corpus();
    const reasons = new Set<string>();
    for (const [name, t] of rows) {
      const jose = await outcome(settings, t, 'jose');
      const fast = await outcome(settings, t, 'fast');
      expect({ name, fast }).toEqual({ name, fast: jose });
      const refused = (jose as { refused?: string }).refused;
      if (refused !== undefined) reasons.add(refused);
    }
    // The corpus reaches every kind of refusal the fast path can give.
    expect([...reasons].sort()).toEqual(
      [
        'bad_signature',
        'malformed_claims',
        // The header one character too long is refused before any key: by the verifier itself.
        'malformed_header',
        'malformed_token',
        'missing_claim',
        'token_expired',
        'token_not_yet_valid',
        'verification_failed',
        'wrong_audience',
        'wrong_issuer',
      ].sort(),
    );
  });

  it('with a maximum token age and a required typ', async () => {
    const settings = settingsFor({ maxTokenAgeSeconds: 300, typ: 'at+jwt' });
    const rows: [string, string][] = [
      ['typ at+jwt', token('es256', claims(), { typ: 'at+jwt' })],
      ['typ application/at+jwt', token('es256', claims(), { typ: 'application/at+jwt' })],
      ['typ AT+JWT', token('es256', claims(), { typ: 'AT+JWT' })],
      ['typ JWT', token('es256', claims(), { typ: 'JWT' })],
      ['typ missing', token('es256', claims())],
      ['typ a number', token('es256', claims(), { typ: 1 })],
      ['iat too old', token('es256', claims({ iat: NOW_S - 331 }), { typ: 'at+jwt' })],
      ['iat at the limit', token('es256', claims({ iat: NOW_S - 330 }), { typ: 'at+jwt' })],
      ['iat in the future', token('es256', claims({ iat: NOW_S + 31 }), { typ: 'at+jwt' })],
      ['iat missing', token('es256', { iss: ISS, aud: 'api', sub: 'a', exp: NOW_S + 60 }, { typ: 'at+jwt' })],
      ['iat a string', token('es256', claims({ iat: 'x' }), { typ: 'at+jwt' })],
    ];
    const reasons = new Set<string>();
    for (const [name, t] of rows) {
      const jose = await outcome(settings, t, 'jose');
      expect({ name, fast: await outcome(settings, t, 'fast') }).toEqual({ name, fast: jose });
      const refused = (jose as { refused?: string }).refused;
      if (refused !== undefined) reasons.add(refused);
    }
    expect([...reasons].sort()).toEqual(
      ['iat_in_future', 'malformed_claims', 'missing_claim', 'token_too_old', 'wrong_typ'].sort(),
    );
  });

  it('with an HMAC secret', async () => {
    const settings = resolveVerifierSettings({ secret: SECRET, issuer: ISS, audience: 'api', now });
    const hs = (data: Buffer): Buffer => createHmac('sha256', SECRET).update(data).digest();
    const other = (data: Buffer): Buffer =>
      createHmac('sha256', Buffer.from('another-secret-of-32-bytes-or-so!!')).update(data).digest();
    const rows: [string, string][] = [
      ['valid', jws({ alg: 'HS256' }, JSON.stringify(claims()), hs)],
      ['another secret', jws({ alg: 'HS256' }, JSON.stringify(claims()), other)],
      ['truncated mac', withSignature(jws({ alg: 'HS256' }, JSON.stringify(claims()), hs), (s) => s.slice(0, 20))],
      ['expired', jws({ alg: 'HS256' }, JSON.stringify(claims({ exp: NOW_S - 100 })), hs)],
    ];
    for (const [name, t] of rows) {
      const jose = await outcome(settings, t, 'jose');
      expect({ name, fast: await outcome(settings, t, 'fast') }).toEqual({ name, fast: jose });
    }
  });

  it('tries each candidate key when the token names none, as jose does', async () => {
    // Two P-256 keys without kid: a token signed with the second verifies on the second try.
    const second = asymmetric('second', 'ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), p1363('sha256'));
    const first = asymmetric('first', 'ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), p1363('sha256'));
    const strip = (k: TestKey) => Object.fromEntries(Object.entries(k.publicJwk).filter(([name]) => name !== 'kid'));
    const settings = resolveVerifierSettings({
      jwks: { keys: [strip(first), strip(second)] },
      algorithms: ['ES256'],
      issuer: ISS,
      audience: 'api',
      now,
    });
    const signed = jws({ alg: 'ES256' }, JSON.stringify(claims()), second.sign);
    const forged = jws({ alg: 'ES256' }, JSON.stringify(claims()), keyOf('es256').sign);
    for (const t of [signed, forged]) {
      expect(await outcome(settings, t, 'fast')).toEqual(await outcome(settings, t, 'jose'));
    }
    expect(await outcome(settings, signed, 'fast')).toHaveProperty('ok');
  });
});
