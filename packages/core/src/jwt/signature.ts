import { KeyObject, constants, createHmac, timingSafeEqual, verify as cryptoVerify } from 'node:crypto';
import type { CryptoKey } from 'jose';
import type { VerificationKey } from './key-source.js';

/**
 * The synchronous verification of a compact JWS and its JWT claims with `node:crypto`, made to
 * decide exactly as jose's `jwtVerify` does (same key checks, same claim checks in the same
 * order), at less than half the CPU: WebCrypto's `subtle.verify` costs a promise and a
 * thread-pool round trip per token, `crypto.verify` neither. A differential test holds the two
 * to the same decision and reason on a corpus of valid, invalid and hostile tokens; jose stays
 * the path for anything this module does not know (it answers `undefined` then).
 */

/** What jose's options say about the claims, as `resolveVerifierSettings` builds them. */
export interface ClaimRules {
  readonly issuer: readonly string[];
  readonly audience: readonly string[];
  readonly requiredClaims: readonly string[];
  readonly clockTolerance: number;
  readonly maxTokenAge?: number | undefined;
  readonly typ?: string | undefined;
  /**
   * Every claim that must be present: `requiredClaims`, `iat` with a maximum age, `aud` and
   * `iss` (jose's presence check), listed once when the settings are made.
   */
  readonly presentClaims: readonly string[];
}

/**
 * A compact JWS split once into its three base64url parts (the verifier has checked their
 * alphabet and that header and payload are not empty).
 */
export interface CompactJws {
  readonly token: string;
  readonly header: string;
  readonly payload: string;
  readonly signature: string;
}

/** The outcome of one key: the claims, or the refusal jose's error would have mapped to. */
export type FastOutcome =
  | { readonly ok: true; readonly claims: Record<string, unknown> }
  | { readonly ok: false; readonly reason: FastRefusal };

/** The {@link JwtReason}s this path can reach (`bad_signature` moves on to the next key). */
export type FastRefusal =
  | 'bad_signature'
  | 'verification_failed'
  | 'malformed_token'
  | 'wrong_typ'
  | 'missing_claim'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'malformed_claims'
  | 'token_not_yet_valid'
  | 'token_expired'
  | 'token_too_old'
  | 'iat_in_future';

interface Algorithm {
  /** WebCrypto's `algorithm.name` the key must have (jose's `checkCryptoKey`). */
  readonly name: 'RSASSA-PKCS1-v1_5' | 'RSA-PSS' | 'ECDSA' | 'Ed25519' | 'HMAC';
  readonly hash?: 'SHA-256' | 'SHA-384' | 'SHA-512';
  readonly namedCurve?: 'P-256' | 'P-384' | 'P-521';
  readonly saltLength?: number;
}

const ALGORITHMS: Readonly<Record<string, Algorithm>> = Object.freeze({
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  RS384: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-384' },
  RS512: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-512' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256', saltLength: 32 },
  PS384: { name: 'RSA-PSS', hash: 'SHA-384', saltLength: 48 },
  PS512: { name: 'RSA-PSS', hash: 'SHA-512', saltLength: 64 },
  ES256: { name: 'ECDSA', hash: 'SHA-256', namedCurve: 'P-256' },
  ES384: { name: 'ECDSA', hash: 'SHA-384', namedCurve: 'P-384' },
  ES512: { name: 'ECDSA', hash: 'SHA-512', namedCurve: 'P-521' },
  EdDSA: { name: 'Ed25519' },
  Ed25519: { name: 'Ed25519' },
  HS256: { name: 'HMAC', hash: 'SHA-256' },
  HS384: { name: 'HMAC', hash: 'SHA-384' },
  HS512: { name: 'HMAC', hash: 'SHA-512' },
});

const NODE_HASH = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' } as const;

/** What {@link usableKey} found for a key, with the algorithm it was asked about. */
interface CheckedKey {
  readonly algorithm: Algorithm;
  readonly keyObject: KeyObject | undefined;
}

// A CryptoKey's check and KeyObject, made once per algorithm asked (a key serves one in
// practice): keys live as long as their key set, and their getters copy on every read.
const checkedKeys = new WeakMap<CryptoKey, CheckedKey>();

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

const refused = (reason: FastRefusal): FastOutcome => ({ ok: false, reason });

/**
 * Verifies a compact JWS (header already checked by the verifier) with one key and checks its
 * claims. `undefined`: an algorithm or key this path does not handle, for jose to decide.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): the verifier's fast path
 * const outcome = verifyCompactSync(jws, { alg: 'ES256', typ: undefined }, key, rules, Date.now());
 * if (outcome?.ok) console.log(outcome.claims.sub);
 * ```
 */
export function verifyCompactSync(
  jws: CompactJws,
  header: { readonly alg: string; readonly typ: unknown },
  key: VerificationKey,
  rules: ClaimRules,
  nowMs: number,
): FastOutcome | undefined {
  const algorithm = ALGORITHMS[header.alg];
  if (algorithm === undefined) return undefined;
  const { header: encodedHeader, payload: encodedPayload, signature: encodedSignature } = jws;
  // jose decodes every part strictly: a length of 1 modulo 4 is no base64 at all.
  if (encodedHeader.length % 4 === 1 || encodedSignature.length % 4 === 1) return refused('malformed_token');

  let verified: boolean;
  const signingInput = Buffer.from(jws.token.slice(0, encodedHeader.length + 1 + encodedPayload.length), 'latin1');
  const signature = Buffer.from(encodedSignature, 'base64url');
  if (key instanceof Uint8Array) {
    if (algorithm.name !== 'HMAC' || algorithm.hash === undefined) return refused('verification_failed');
    const expected = createHmac(NODE_HASH[algorithm.hash], key).update(signingInput).digest();
    verified = expected.length === signature.length && timingSafeEqual(expected, signature);
  } else {
    const keyObject = usableKey(key, algorithm);
    if (keyObject === undefined) return refused('verification_failed');
    verified = verifySignature(algorithm, keyObject, signingInput, signature);
  }
  if (!verified) return refused('bad_signature');

  if (encodedPayload.length % 4 === 1) return refused('malformed_token');
  let claims: unknown;
  try {
    claims = JSON.parse(strictUtf8.decode(Buffer.from(encodedPayload, 'base64url')));
  } catch {
    return refused('malformed_token');
  }
  if (!isPlainObject(claims)) return refused('malformed_token');
  const reason = checkClaims(claims, header.typ, rules, nowMs);
  return reason === undefined ? { ok: true, claims } : refused(reason);
}

/**
 * The key's `KeyObject` when it suits the algorithm as jose's `checkCryptoKey` requires (name,
 * hash, curve, a `verify` usage, a public key, RSA of at least 2,048 bits); else `undefined`.
 */
function usableKey(key: CryptoKey, algorithm: Algorithm): KeyObject | undefined {
  const checked = checkedKeys.get(key);
  if (checked?.algorithm === algorithm) return checked.keyObject;
  const keyObject = checkKey(key, algorithm) ? KeyObject.from(key) : undefined;
  checkedKeys.set(key, { algorithm, keyObject });
  return keyObject;
}

/** jose's `checkCryptoKey` for one key and algorithm. */
function checkKey(key: CryptoKey, algorithm: Algorithm): boolean {
  const given = key.algorithm as {
    name?: unknown;
    hash?: { name?: unknown };
    namedCurve?: unknown;
    modulusLength?: unknown;
  };
  if (key.type !== 'public' || given.name !== algorithm.name || !key.usages.includes('verify')) return false;
  // An EC key names its curve, not a hash (jose's `entry.subtle` for ECDSA has none either).
  if (algorithm.name !== 'ECDSA' && algorithm.hash !== undefined && given.hash?.name !== algorithm.hash) {
    return false;
  }
  if (algorithm.namedCurve !== undefined && given.namedCurve !== algorithm.namedCurve) return false;
  return !(algorithm.name.startsWith('RSA') && (typeof given.modulusLength !== 'number' || given.modulusLength < 2048));
}

function verifySignature(algorithm: Algorithm, key: KeyObject, data: Buffer, signature: Buffer): boolean {
  const hash = algorithm.hash === undefined ? null : NODE_HASH[algorithm.hash];
  try {
    switch (algorithm.name) {
      case 'ECDSA':
        return cryptoVerify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
      case 'RSA-PSS':
        return cryptoVerify(
          hash,
          data,
          { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: algorithm.saltLength ?? 0 },
          signature,
        );
      case 'RSASSA-PKCS1-v1_5':
      case 'Ed25519':
      case 'HMAC':
        return cryptoVerify(hash, data, key, signature);
    }
  } catch {
    // WebCrypto answers a malformed signature with `false` (or jose maps its throw to one).
    return false;
  }
}

/** jose's `isObject`: a plain object, not an array or a class instance. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Object.prototype.toString.call(value) !== '[object Object]') {
    return false;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || proto === Object.prototype;
}

const normalizeTyp = (value: string): string => {
  const normalized = value.toLowerCase();
  return value.includes('/') ? normalized : `application/${normalized}`;
};

/** jose's `validateClaimsSet`, check for check and in its order, mapped to reasons. */
function checkClaims(
  claims: Record<string, unknown>,
  typ: unknown,
  rules: ClaimRules,
  nowMs: number,
): FastRefusal | undefined {
  if (rules.typ !== undefined && (typeof typ !== 'string' || normalizeTyp(typ) !== normalizeTyp(rules.typ))) {
    return 'wrong_typ';
  }
  for (const claim of rules.presentClaims) if (!Object.hasOwn(claims, claim)) return 'missing_claim';
  if (!rules.issuer.includes(claims.iss as string)) return 'wrong_issuer';
  const aud = claims.aud;
  const audienceOk =
    typeof aud === 'string'
      ? rules.audience.includes(aud)
      : Array.isArray(aud) && rules.audience.some((a) => (aud as unknown[]).includes(a));
  if (!audienceOk) return 'wrong_audience';

  const tolerance = rules.clockTolerance;
  const now = Math.floor(nowMs / 1000);
  const iat = claims.iat;
  if ((iat !== undefined || rules.maxTokenAge !== undefined) && typeof iat !== 'number') return 'malformed_claims';
  const issuedAt = typeof iat === 'number' ? iat : 0;
  const nbf = claims.nbf;
  if (nbf !== undefined) {
    if (typeof nbf !== 'number') return 'malformed_claims';
    if (nbf > now + tolerance) return 'token_not_yet_valid';
  }
  const exp = claims.exp;
  if (exp !== undefined) {
    if (typeof exp !== 'number') return 'malformed_claims';
    if (exp <= now - tolerance) return 'token_expired';
  }
  if (rules.maxTokenAge !== undefined) {
    const age = now - issuedAt;
    if (age - tolerance > rules.maxTokenAge) return 'token_too_old';
    if (age < -tolerance) return 'iat_in_future';
  }
  return undefined;
}
