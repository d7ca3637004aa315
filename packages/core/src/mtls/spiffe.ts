/**
 * SPIFFE ID syntax (SPIFFE-ID specification, sections 2.1–2.3), checked without regular
 * expressions built from input: a trust domain of lowercase letters, digits, `.`, `-`, `_`,
 * and a non-empty path of segments of letters, digits, `.`, `-`, `_` (no empty, `.` or `..`
 * segment, no trailing slash, no query or fragment, no percent-encoding).
 */

const SCHEME = 'spiffe://';
/** The SPIFFE specification's upper bound on the length of an ID, in bytes. */
const MAX_SPIFFE_ID_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;

/** A parsed SPIFFE ID. */
export interface SpiffeIdParts {
  readonly trustDomain: string;
  /** The path segments, never empty. */
  readonly segments: readonly string[];
}

function isTrustDomainChar(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) || // a-z
    (code >= 0x30 && code <= 0x39) || // 0-9
    code === 0x2e || // .
    code === 0x2d || // -
    code === 0x5f // _
  );
}

function isPathChar(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2e ||
    code === 0x2d ||
    code === 0x5f
  );
}

/** True when `value` is a valid trust domain name. */
export function isValidTrustDomain(value: string): boolean {
  if (value.length === 0 || value.length > MAX_TRUST_DOMAIN_LENGTH) return false;
  for (let i = 0; i < value.length; i++) if (!isTrustDomainChar(value.charCodeAt(i))) return false;
  return true;
}

/** True when `value` is a valid SPIFFE ID path segment. */
export function isValidPathSegment(value: string): boolean {
  if (value.length === 0 || value === '.' || value === '..') return false;
  for (let i = 0; i < value.length; i++) if (!isPathChar(value.charCodeAt(i))) return false;
  return true;
}

/**
 * Parses a workload SPIFFE ID (`spiffe://<trust-domain>/<path>`); `undefined` when the value is
 * not one. The scheme must be lowercase, as the specification requires.
 */
export function parseSpiffeId(value: string): SpiffeIdParts | undefined {
  if (value.length > MAX_SPIFFE_ID_LENGTH || !value.startsWith(SCHEME)) return undefined;
  const rest = value.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined; // no path, or empty trust domain
  const trustDomain = rest.slice(0, slash);
  if (!isValidTrustDomain(trustDomain)) return undefined;
  const segments = rest.slice(slash + 1).split('/');
  for (const segment of segments) if (!isValidPathSegment(segment)) return undefined;
  return { trustDomain, segments };
}

/**
 * True when `value` is a valid workload SPIFFE ID (`spiffe://<trust-domain>/<path>`).
 *
 * @example
 * ```ts
 * import { isSpiffeId } from '@fluxguard/core';
 * isSpiffeId('spiffe://example.org/ns/prod/sa/api'); // true
 * isSpiffeId('spiffe://Example.org/x');              // false: trust domain must be lowercase
 * isSpiffeId('spiffe://example.org/x?y=1');          // false: no query
 * ```
 */
export function isSpiffeId(value: string): boolean {
  return parseSpiffeId(value) !== undefined;
}
