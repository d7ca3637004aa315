import { describe, expect, it } from 'vitest';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createHeaderLimits, type HeaderLimitsOptions } from './header-limits.js';

function call(entries: readonly (readonly [string, string | Buffer])[] | undefined): CallInfo {
  return {
    transport: 'grpc',
    operation: '/a.B/C',
    requestId: 'r',
    peerAddress: undefined,
    peerCertificate: undefined,
    headers: {
      get: () => undefined,
      getAll: () => [],
      ...(entries === undefined ? {} : { entries: () => entries }),
    },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

function refusal(options: HeaderLimitsOptions, entries: readonly (readonly [string, string | Buffer])[] | undefined) {
  try {
    void createHeaderLimits(options).onStart?.(call(entries), undefined as never);
  } catch (error) {
    return error as { code: string; reason?: string };
  }
  return undefined;
}

describe('createHeaderLimits', () => {
  it('passes headers within the limits, a tab in a value included', () => {
    expect(
      refusal({}, [
        ['authorization', 'Bearer x'],
        ['x-note', 'a\tb'],
      ]),
    ).toBeUndefined();
  });

  it.each([
    [
      'too many entries, repeated ones counted',
      { maxCount: 2 },
      [
        ['a', '1'],
        ['a', '2'],
        ['b', '3'],
      ],
      'too_many_headers',
    ],
    [
      'too many bytes in all',
      { maxTotalBytes: 10 },
      [
        ['abc', '12345'],
        ['d', '12'],
      ],
      'headers_too_large',
    ],
    ['a value over its limit', { maxValueBytes: 4 }, [['a', '12345']], 'header_value_too_large'],
    ['a multi-byte value over its limit in bytes', { maxValueBytes: 4 }, [['a', 'ééé']], 'header_value_too_large'],
    [
      'a binary value over its limit',
      { maxBinaryValueBytes: 4 },
      [['a-bin', Buffer.alloc(5)]],
      'header_value_too_large',
    ],
  ] as const)('refuses %s (payload_too_large)', (_label, options, entries, reason) => {
    expect(refusal(options, entries)).toMatchObject({ code: 'payload_too_large', reason });
  });

  it.each(['a\r\nset-cookie: x', 'a\nb', 'a\u0000b', 'a\u007fb'])(
    'refuses a control character in %j (invalid_argument)',
    (value) => {
      expect(refusal({}, [['x-note', value]])).toMatchObject({
        code: 'invalid_argument',
        reason: 'header_bad_character',
      });
    },
  );

  it('fails closed when the adapter cannot list the headers', () => {
    expect(refusal({}, undefined)).toMatchObject({ code: 'internal' });
  });

  it('refuses bad options', () => {
    expect(() => createHeaderLimits({ maxCount: 0 })).toThrow(ConfigurationError);
    expect(() => createHeaderLimits({ maxTotalBytes: 8192, maxValueBytes: 10_000 })).toThrow(
      'createHeaderLimits: "maxValueBytes" is above "maxTotalBytes" (8192) and could never be reached',
    );
    expect(() => createHeaderLimits({ maxTotalBytes: 8192 })).not.toThrow();
    expect(() => createHeaderLimits({ maxCounts: 1 } as HeaderLimitsOptions)).toThrow('did you mean "maxCount"');
  });
});
