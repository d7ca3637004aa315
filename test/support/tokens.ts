import {
  createPrivateKey,
  createPublicKey,
  createHmac,
  generateKeyPairSync,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompactEncrypt, importJWK, type JWK } from 'jose';
import { DEV_AUDIENCE, DEV_ISSUER } from '@fluxguard/example-artifact-store';

const b64 = (value: unknown): string =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** Builds tokens with the development key the servers trust, and every way of forging one. */
export class TokenForge {
  readonly #privateKey: KeyObject;
  readonly #publicJwk: JWK;
  readonly kid: string;

  constructor(devDir: string) {
    const jwk = JSON.parse(readFileSync(join(devDir, 'jwt-signing.key'), 'utf8')) as JWK;
    this.#privateKey = createPrivateKey({ key: jwk as never, format: 'jwk' });
    const { d: _d, ...publicJwk } = jwk;
    this.#publicJwk = publicJwk;
    this.kid = jwk.kid ?? '';
  }

  claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    const now = Math.floor(Date.now() / 1000);
    return {
      iss: DEV_ISSUER,
      aud: DEV_AUDIENCE,
      sub: 'mallory',
      iat: now,
      exp: now + 600,
      roles: ['artifacts.admin'],
      ...overrides,
    };
  }

  /** ES256 over any header and claims, signed with the trusted key. */
  signWithTrustedKey(header: Record<string, unknown>, claims: Record<string, unknown> = this.claims()): string {
    return this.#es256({ alg: 'ES256', kid: this.kid, typ: 'JWT', ...header }, claims, this.#privateKey);
  }

  /** A well-formed admin token: the baseline every forgery differs from by one thing. */
  valid(claims: Record<string, unknown> = {}): string {
    return this.signWithTrustedKey({}, this.claims(claims));
  }

  #es256(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject): string {
    const input = `${b64(header)}.${b64(claims)}`;
    const signature = cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  }

  /** `alg: none` with an empty signature. */
  algNone(): string {
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(this.claims())}.`;
  }

  /** HS256 using the server's own public key (JWK JSON or PEM) as the HMAC secret. */
  hmacWithPublicKey(form: 'jwk' | 'pem'): string {
    const secret =
      form === 'jwk'
        ? JSON.stringify(this.#publicJwk)
        : createPublicKey({ key: this.#publicJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const input = `${b64({ alg: 'HS256', kid: this.kid, typ: 'JWT' })}.${b64(this.claims())}`;
    return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
  }

  /** Signed by an attacker's key, naming the trusted key id or another one. */
  attackerSigned(kid: string, extraHeader: Record<string, unknown> = {}): string {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return this.#es256({ alg: 'ES256', kid, typ: 'JWT', ...extraHeader }, this.claims(), privateKey);
  }

  /** The attacker's key embedded in the header (`jwk`), signed with it. */
  embeddedJwk(): string {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return this.#es256(
      { alg: 'ES256', typ: 'JWT', jwk: publicKey.export({ format: 'jwk' }) },
      this.claims(),
      privateKey,
    );
  }

  /** RS384: an algorithm outside the allowlist, with a fresh RSA key under the trusted kid. */
  disallowedAlgorithm(): string {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const input = `${b64({ alg: 'RS384', kid: this.kid, typ: 'JWT' })}.${b64(this.claims())}`;
    return `${input}.${cryptoSign('sha384', Buffer.from(input), privateKey).toString('base64url')}`;
  }

  /** The valid token with one signature byte changed. */
  tamperedSignature(): string {
    const token = this.valid();
    const [h, p, s] = token.split('.') as [string, string, string];
    const sig = Buffer.from(s, 'base64url');
    sig[10] = (sig[10] ?? 0) ^ 0xff;
    return `${h}.${p}.${sig.toString('base64url')}`;
  }

  /** A trusted signature over a payload whose claims were changed afterwards (escalation). */
  tamperedPayload(): string {
    const [h, , s] = this.valid({ roles: ['artifacts.reader'] }).split('.') as [string, string, string];
    return `${h}.${b64(this.claims({ roles: ['artifacts.admin'] }))}.${s}`;
  }

  /** A JWE (five parts) encrypted to the server's public key. */
  async jwe(): Promise<string> {
    const key = await importJWK(this.#publicJwk, 'ECDH-ES');
    return new CompactEncrypt(Buffer.from(JSON.stringify(this.claims())))
      .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM' })
      .encrypt(key);
  }
}
