import { describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { extractBearerToken } from './bearer.js';
import { headersOf } from '../testing/jwt-fixtures.js';

function reason(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SecurityError);
    expect((err as SecurityError).code).toBe('unauthenticated');
    return (err as SecurityError).reason;
  }
  throw new Error('expected a refusal');
}

describe('extractBearerToken', () => {
  it('reads the Bearer scheme in any case', () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      expect(extractBearerToken(headersOf({ authorization: `${scheme} abc.def.ghi` }))).toBe('abc.def.ghi');
    }
  });

  it.each<[string, Record<string, string | string[]>, string]>([
    ['no header', {}, 'missing_token'],
    ['an empty header', { authorization: '' }, 'missing_token'],
    ['two headers', { authorization: ['Bearer a.b.c', 'Bearer d.e.f'] }, 'multiple_authorization'],
    ['Basic', { authorization: 'Basic YWxpY2U6cHc=' }, 'not_bearer'],
    ['a token without a scheme', { authorization: 'abc.def.ghi' }, 'not_bearer'],
    ['Bearer alone', { authorization: 'Bearer' }, 'malformed_authorization'],
    ['two tokens', { authorization: 'Bearer a.b.c d.e.f' }, 'malformed_authorization'],
    ['bad characters', { authorization: 'Bearer a.b.c<script>' }, 'malformed_authorization'],
  ])('refuses %s', (_label, headers, expected) => {
    expect(reason(() => extractBearerToken(headersOf(headers)))).toBe(expected);
  });

  it('reads no other header: a token elsewhere is no token', () => {
    expect(reason(() => extractBearerToken(headersOf({ 'x-access-token': 'a.b.c', cookie: 'token=a.b.c' })))).toBe(
      'missing_token',
    );
  });
});
