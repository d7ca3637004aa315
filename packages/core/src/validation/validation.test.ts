import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { compileJsonShape } from './json-shape.js';
import { checkSchema, validateWith, type StandardSchemaV1 } from './standard-schema.js';

function refusal(run: () => unknown): { reason?: unknown; details?: unknown; message?: unknown } {
  try {
    run();
  } catch (error) {
    return error as { reason?: unknown; details?: unknown; message?: unknown };
  }
  throw new Error('expected a refusal');
}

describe('compileJsonShape', () => {
  const check = compileJsonShape({ maxDepth: 3, maxKeys: 4 });

  it('passes a document within its limits, braces and colons inside strings included', () => {
    expect(() => {
      check('{"a":{"b":[1,"{[{[:"]},"c":"\\"}:"}', 'body');
    }).not.toThrow();
  });

  it.each([
    ['too deep', '[[[[1]]]]', 'json_too_deep'],
    ['too many keys', '{"a":1,"b":2,"c":3,"d":4,"e":5}', 'json_too_many_keys'],
    ['__proto__', '{"__proto__":{}}', 'json_forbidden_key'],
    ['an escaped __proto__', '{"\\u005f\\u005fproto__":{}}', 'json_forbidden_key'],
    ['constructor', '{"a":{"constructor":1}}', 'json_forbidden_key'],
    ['prototype, space before the colon', '{"prototype" :1}', 'json_forbidden_key'],
    ['a key given twice', '{"url":"a","url":"b"}', 'json_duplicate_key'],
    ['a key given twice in a nested object', '{"a":{"b":1,"b":2}}', 'json_duplicate_key'],
    ['a key given twice, escaped once', '{"url":"a","\\u0075rl":"b"}', 'json_duplicate_key'],
    ['a key given twice in an object in an array', '[{"a":1},{"b":1,"b":1}]', 'json_duplicate_key'],
  ])('refuses %s, naming the field', (_label, text, reason) => {
    expect(
      refusal(() => {
        check(text, 'body');
      }),
    ).toMatchObject({ reason, details: { field: 'body' } });
  });

  it('allows one key in several objects, and the same words as keys and values', () => {
    expect(() => {
      compileJsonShape()('{"a":{"a":1},"b":[{"a":2},{"a":"a"}],"c":{"b":{"a":1}}}', 'body');
    }).not.toThrow();
  });

  it('allows the forbidden words as values', () => {
    expect(() => {
      check('{"a":"__proto__","b":["constructor"]}', 'body');
    }).not.toThrow();
  });

  it('refuses bad limits', () => {
    expect(() => compileJsonShape({ maxDepth: 0 })).toThrow(ConfigurationError);
    // A misspelt limit left the default of 32 in force.
    expect(() => compileJsonShape({ maxDeth: 2 } as never)).toThrow(
      /unknown option "maxDeth" \(did you mean "maxDepth"\?\)/,
    );
  });
});

describe('validateWith', () => {
  it('returns the schema output', () => {
    expect(validateWith(z.object({ n: z.coerce.number() }), { n: '3' }, 'query')).toEqual({ n: 3 });
  });

  it('names the path, shows an odd key as [_], and keeps the rule unless it repeats the value', () => {
    const err = refusal(() => validateWith(z.record(z.string(), z.number()), { 'a b': 'x' }, 'body'));
    expect(err.details).toEqual({ field: 'body[_]' });
    const echoed = refusal(() => validateWith(z.literal('yes'), 'SECRET', 'query'));
    expect(String(echoed.message)).not.toContain('SECRET');
  });

  it('never echoes a key the client chose: unknown keys of a strict object are not repeated', () => {
    const key = '<img src=x onerror=alert(1)> secret=hunter2';
    const err = refusal(() => validateWith(z.strictObject({ a: z.string() }), { a: 'x', [key]: 1 }, 'body'));
    expect(err.details).toEqual({ field: 'body' });
    expect(String(err.message)).toBe('The request is invalid: body.');
    expect(String(err.message)).not.toContain('hunter2');
  });

  it('leaves out a message that repeats a key or value of the offending object, quoted or not', () => {
    const echoing = (text: string): StandardSchemaV1 => ({
      '~standard': { version: 1, vendor: 'test', validate: () => ({ issues: [{ message: text }] }) },
    });
    const sent = { planted: 'token-1234' };
    expect(String(refusal(() => validateWith(echoing('unknown key planted'), sent, 'body')).message)).not.toContain(
      'planted',
    );
    expect(String(refusal(() => validateWith(echoing('bad value token-1234'), sent, 'body')).message)).not.toContain(
      'token-1234',
    );
    const many = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${String(i)}`, i]));
    expect(String(refusal(() => validateWith(echoing('too many'), many, 'body')).message)).toBe(
      'The request is invalid: body.',
    );
    // A rule that repeats nothing the client sent is kept: it tells the client what to fix.
    expect(String(refusal(() => validateWith(z.string().max(3), 'abcdef', 'query')).message)).toMatch(
      /^The request is invalid: query: .*3/,
    );
  });

  it('refuses an asynchronous schema: validation does not wait', () => {
    const slow: StandardSchemaV1 = {
      '~standard': { version: 1, vendor: 'test', validate: () => Promise.resolve({ value: 1 }) },
    };
    expect(() => validateWith(slow, 1, 'body')).toThrow(ConfigurationError);
  });

  it('recognises a Standard Schema and refuses anything else', () => {
    expect(checkSchema(z.string(), 'x')).toBeDefined();
    expect(() => checkSchema({ parse: () => 1 }, 'rule.schema')).toThrow('rule.schema must be a Standard Schema');
  });
});
