import type { HeaderReader } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';

// RFC 6750 section 2.1: "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110 11.1).
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;
const SCHEME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?: |$)/;

/**
 * Reads the bearer token of a call: only the `authorization` header (gRPC metadata key
 * `authorization`), only the `Bearer` scheme (any case), exactly one such header. Nothing else
 * is a place a token can come from in fluxguard: not a query string, a cookie or another header.
 *
 * Refuses with `SecurityError('unauthenticated')`, reasons `missing_token` (no header),
 * `multiple_authorization` (more than one), `not_bearer` (another scheme) and
 * `malformed_authorization`.
 *
 * @example
 * ```ts
 * import { extractBearerToken } from '@fluxguard/core';
 * const token = extractBearerToken(call.headers); // 'eyJhbGciOi…'
 * ```
 */
export function extractBearerToken(headers: HeaderReader): string {
  const token = bearerTokenOf(headers);
  if (token !== undefined) return token;
  // Why there is none, for the refusal.
  const values = headers.getAll('authorization');
  if (values.length === 0) throw new SecurityError('unauthenticated', { reason: 'missing_token' });
  if (values.length > 1) throw new SecurityError('unauthenticated', { reason: 'multiple_authorization' });
  const value = (values[0] ?? '').trim();
  if (value === '') throw new SecurityError('unauthenticated', { reason: 'missing_token' });
  const scheme = SCHEME.exec(value)?.[0].trim().toLowerCase();
  if (scheme !== undefined && scheme !== 'bearer') throw new SecurityError('unauthenticated', { reason: 'not_bearer' });
  throw new SecurityError('unauthenticated', { reason: 'malformed_authorization' });
}

/**
 * The token {@link extractBearerToken} would return, or `undefined` where it would refuse,
 * without building the refusal: for a caller that only wants the token when there is one.
 *
 * @internal
 */
export function bearerTokenOf(headers: HeaderReader): string | undefined {
  const values = headers.getAll('authorization');
  return values.length === 1 ? tokenOfAuthorization(values[0] ?? '') : undefined;
}

/**
 * The bearer token of one `authorization` header value, or `undefined` when it is none.
 *
 * @internal
 */
export function tokenOfAuthorization(value: string): string | undefined {
  return BEARER.exec(value.trim())?.[1];
}
