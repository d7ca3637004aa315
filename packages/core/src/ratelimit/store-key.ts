import { hash } from 'node:crypto';
import type { Principal } from '../call/call-info.js';
import { isWellFormedText, losslessBytes } from '../text/well-formed.js';

const MAX_KEY_LENGTH = 200;

/**
 * A caller's identity as a store key: as it is when short and plain, else `#` and a digest. A
 * value that starts with `#` is hashed too, so that a caller whose identity is the digest of
 * another's cannot take that caller's key. So is one with a lone surrogate, which a Redis
 * client's UTF-8 would merge with others (`v\ud800` with `v\ufffd`: an attacker's token
 * spending a victim's allowance), hashed from bytes no other value has; and one with `{` or `}`,
 * with which a caller would choose its keys' Redis Cluster slot.
 *
 * @internal
 */
export function boundedKey(value: string): string {
  if (!isWellFormedText(value)) return `#${keyDigest(losslessBytes(value))}`;
  return value.length <= MAX_KEY_LENGTH && !value.startsWith('#') && !/[{}]/.test(value)
    ? value
    : `#${keyDigest(value)}`;
}

/**
 * A short digest of `value` for a store key (22 base64url characters of its SHA-256).
 *
 * @internal
 */
export function keyDigest(value: string | Buffer): string {
  return hash('sha256', value, 'base64url').slice(0, 22);
}

/**
 * A principal as one caller's key: a token's subject with its issuer, since a subject is unique
 * only within its issuer (a verifier that accepts two issuers would count tenant A's `alice`
 * and tenant B's as one caller), and a certificate's subject apart from every other (an
 * application's principal without an issuer, an API key's holder, has the empty issuer). The
 * issuer's length ends it, so no issuer and subject can be read as another pair.
 *
 * @internal
 */
export function principalKey(principal: Principal): string {
  if (principal.authenticatedBy === 'mtls') return `crt:${principal.subject}`;
  const claimed = principal.claims.iss;
  const issuer = typeof claimed === 'string' ? claimed : '';
  return `tok:${String(issuer.length)}:${issuer}:${principal.subject}`;
}
