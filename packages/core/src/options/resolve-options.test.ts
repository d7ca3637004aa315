import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from './resolve-options.js';

const DEFAULTS: { level: string; timeoutMs: number } = Object.freeze({ level: 'info', timeoutMs: 1000 });

describe('resolveOptions', () => {
  it('merges over the defaults into a new frozen object without touching the caller', () => {
    const callers = { timeoutMs: 50 };
    const out = resolveOptions('createX', DEFAULTS, callers);
    expect(out).toEqual({ level: 'info', timeoutMs: 50 });
    expect(Object.isFrozen(out)).toBe(true);
    expect(out).not.toBe(callers);
    expect(callers).toEqual({ timeoutMs: 50 });
  });

  it('treats an explicit undefined as the default', () => {
    expect(resolveOptions('createX', DEFAULTS, { level: undefined }).level).toBe('info');
  });

  it('refuses a misspelt key with a hint', () => {
    expect(() => resolveOptions('createX', DEFAULTS, { timeoutMS: 5 } as never)).toThrow(
      new ConfigurationError('createX: unknown option "timeoutMS" (did you mean "timeoutMs"?)'),
    );
  });

  it('refuses an unknown key without a far-fetched hint', () => {
    expect(() => resolveOptions('createX', DEFAULTS, { completelyDifferent: 1 } as never)).toThrow(
      /unknown option "completelyDifferent" \(expected "[a-zA-Z]+"(, "[a-zA-Z]+")*\)$/,
    );
  });

  it('accepts extra keys that have no default', () => {
    expect(resolveOptions('createX', DEFAULTS, { stream: 1 } as never, ['stream'])).toMatchObject({ stream: 1 });
  });

  it('refuses options that are not an object', () => {
    expect(() => resolveOptions('createX', DEFAULTS, [] as never)).toThrow(ConfigurationError);
  });

  it('refuses options that are not a plain object, whose inherited keys some checks read and others not', () => {
    class Settings {
      level = 'debug';
    }
    expect(() => resolveOptions('createX', DEFAULTS, new Settings())).toThrow(
      new ConfigurationError(
        'createX: must be a plain object (an object literal or parsed JSON), not an instance of Settings',
      ),
    );
    expect(() => resolveOptions('createX', DEFAULTS, Object.create({ timeoutMs: 5 }) as never)).toThrow(
      /createX: must be a plain object .*not an object that inherits its keys from another$/,
    );
    const bare = Object.assign(Object.create(null) as object, { timeoutMs: 5 });
    expect(resolveOptions('createX', DEFAULTS, bare).timeoutMs).toBe(5);
    expect(resolveOptions('createX', DEFAULTS, JSON.parse('{"timeoutMs":7}') as never).timeoutMs).toBe(7);
    // Made in another realm (a vm context, a test runner's sandbox): plain there, plain here.
    const foreign = runInNewContext('({ timeoutMs: 9 })') as { timeoutMs: number };
    expect(resolveOptions('createX', DEFAULTS, foreign).timeoutMs).toBe(9);
    expect(() => resolveOptions('createX', DEFAULTS, runInNewContext('new Map()') as never)).toThrow(
      /must be a plain object/,
    );
  });
});
