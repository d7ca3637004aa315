import { SecurityError } from '@fluxguard/core';

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/**
 * Checks a declared SHA-256 (lowercase or uppercase hex) and returns it in lowercase.
 * Throws `invalid_argument` naming `field`, never quoting the value.
 */
export function checkSha256Hex(value: unknown, field = 'sha256'): string {
  const lower = typeof value === 'string' ? value.toLowerCase() : '';
  if (!HEX_SHA256.test(lower)) {
    throw new SecurityError('invalid_argument', { details: { field }, reason: 'app.bad_digest' });
  }
  return lower;
}

/**
 * Reads the SHA-256 of an RFC 9530 `Repr-Digest` header (`sha-256=:BASE64:`, possibly among
 * other algorithms) and returns it as lowercase hex.
 *
 * @example
 * ```ts
 * parseReprDigest('sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:');
 * // 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
 * ```
 */
export function parseReprDigest(header: string | undefined): string {
  const refuse = (): never => {
    throw new SecurityError('invalid_argument', { details: { field: 'Repr-Digest' }, reason: 'app.bad_repr_digest' });
  };
  if (header === undefined || header.length > 1024) return refuse();
  let digest: string | undefined;
  for (const member of header.split(',')) {
    const eq = member.indexOf('=');
    if (eq < 0 || member.slice(0, eq).trim() !== 'sha-256') continue;
    // Two sha-256 digests (two Repr-Digest headers, which Node joins into one list): refused,
    // never one of them picked.
    if (digest !== undefined) return refuse();
    const match = /^:([A-Za-z0-9+/]{43}=):$/.exec(member.slice(eq + 1).trim());
    if (match?.[1] === undefined) return refuse();
    digest = Buffer.from(match[1], 'base64').toString('hex');
  }
  return digest ?? refuse();
}

/**
 * The `Repr-Digest` header value for a SHA-256 given in hex.
 *
 * @example
 * ```ts
 * reprDigestOf('e3b0c442...b855'); // 'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:'
 * ```
 */
export function reprDigestOf(sha256Hex: string): string {
  return `sha-256=:${Buffer.from(sha256Hex, 'hex').toString('base64')}:`;
}
