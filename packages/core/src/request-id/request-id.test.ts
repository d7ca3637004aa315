import { describe, expect, it } from 'vitest';
import { newRequestId, resolveRequestId } from './request-id.js';

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
    ['a compact JWT', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln'],
    ['a JWT without its signature', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.'],
  ])('replaces %s', (_label, value) => {
    expect(resolveRequestId(value)).toMatch(UUID);
  });

  it('keeps ids that only look a little like a token', () => {
    for (const id of ['eyJ-trace-1', 'trace.eyJ.x', 'eyjx.y']) expect(resolveRequestId(id)).toBe(id);
  });

  it('accepts the longest well-formed id', () => {
    expect(resolveRequestId('a'.repeat(200))).toBe('a'.repeat(200));
  });

  it('refuses several ids at once as ambiguous', () => {
    expect(resolveRequestId(['a', 'b'])).toMatch(UUID);
  });
});

describe('newRequestId', () => {
  it('makes distinct version 4 UUIDs across many batches of random bytes', () => {
    const ids = Array.from({ length: 2000 }, () => newRequestId());
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('puts random digits in every position but the version and variant bits', () => {
    const ids = Array.from({ length: 2000 }, () => newRequestId().replaceAll('-', ''));
    for (let position = 0; position < 32; position++) {
      const digits = new Set(ids.map((id) => id[position]));
      // The version nibble is always 4; the variant nibble is one of 8, 9, a, b.
      if (position === 12) expect([...digits]).toEqual(['4']);
      else if (position === 16) expect([...digits].sort()).toEqual(['8', '9', 'a', 'b']);
      else expect(digits.size).toBe(16);
    }
  });
});
