import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { wholeNumber } from './whole-number.js';

describe('wholeNumber', () => {
  it('returns a whole number within its bounds', () => {
    expect(wholeNumber(1, 'f: "n"')).toBe(1);
    expect(wholeNumber(0, 'f: "n"', { min: 0 })).toBe(0);
    expect(wholeNumber(128, 'f: "n"', { max: 128 })).toBe(128);
  });

  it.each([
    [0, {}, 'f: "n" must be a whole number of at least 1'],
    [1.5, {}, 'f: "n" must be a whole number of at least 1'],
    ['10', {}, 'f: "n" must be a whole number of at least 1'],
    [Number.NaN, {}, 'f: "n" must be a whole number of at least 1'],
    [2 ** 53, {}, 'f: "n" must be a whole number of at least 1'],
    [129, { max: 128 }, 'f: "n" must be a whole number from 1 to 128'],
    [50, { min: 100, unit: 'ms' }, 'f: "n" must be a whole number of ms, from 100 to 2147483647'],
    // Node runs a longer timer after 1 ms.
    [2 ** 31, { unit: 'ms' }, 'f: "n" must be a whole number of ms, from 1 to 2147483647'],
    [-1, { min: 0, max: 10, unit: 'ms' }, 'f: "n" must be a whole number of ms, from 0 to 10'],
  ] as const)('refuses %s (%o) with a message that says what is allowed', (value, range, message) => {
    expect(() => wholeNumber(value, 'f: "n"', range)).toThrow(new ConfigurationError(message));
  });
});
