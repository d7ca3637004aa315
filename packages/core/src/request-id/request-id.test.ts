import { describe, expect, it } from 'vitest';
import { resolveRequestId } from './request-id.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('resolveRequestId', () => {
  it('keeps a well-formed client id so traces can be followed', () => {
    expect(resolveRequestId('trace-01.ABC_9')).toBe('trace-01.ABC_9');
    expect(resolveRequestId(['only-one'])).toBe('only-one');
  });

  it('generates an id when none is sent', () => {
    expect(resolveRequestId(undefined)).toMatch(UUID);
    expect(resolveRequestId(undefined)).not.toBe(resolveRequestId(undefined));
  });

  it.each([
    ['a log-injection attempt', 'abc\n{"level":60,"msg":"forged"}'],
    ['an over-long id', 'a'.repeat(201)],
    ['an empty id', ''],
    ['spaces and quotes', 'a b"c'],
    ['non-ASCII', 'ïd'],
  ])('replaces %s', (_label, value) => {
    expect(resolveRequestId(value)).toMatch(UUID);
  });

  it('accepts the longest well-formed id', () => {
    expect(resolveRequestId('a'.repeat(200))).toBe('a'.repeat(200));
  });

  it('refuses several ids at once as ambiguous', () => {
    expect(resolveRequestId(['a', 'b'])).toMatch(UUID);
  });
});
