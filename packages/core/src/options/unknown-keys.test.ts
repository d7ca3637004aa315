import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys, closestKey, editDistance } from './unknown-keys.js';

describe('editDistance', () => {
  it.each([
    ['level', 'level', 0],
    ['levl', 'level', 1],
    ['rabc', 'rbac', 1],
    ['timeoutms', 'timeoutms', 0],
    ['', 'abc', 3],
    ['kitten', 'sitting', 3],
  ])('%s -> %s is %i', (a, b, expected) => {
    expect(editDistance(a, b)).toBe(expected);
    expect(editDistance(b, a)).toBe(expected);
  });
});

describe('closestKey', () => {
  it('names a near key, ignoring case, and nothing far-fetched', () => {
    expect(closestKey('timeoutMS', ['level', 'timeoutMs'])).toBe('timeoutMs');
    expect(closestKey('certificateRole', ['clientCertificates', 'certificateRoles'])).toBe('certificateRoles');
    expect(closestKey('completelyDifferent', ['level', 'timeoutMs'])).toBeUndefined();
    expect(closestKey('x', [])).toBeUndefined();
  });

  it('names the same key with another unit, or without one', () => {
    expect(closestKey('clockTolerance', ['audience', 'clockToleranceSeconds'])).toBe('clockToleranceSeconds');
    expect(closestKey('maxBodySize', ['maxBodyBytes', 'maxDepth'])).toBe('maxBodyBytes');
    expect(closestKey('idleTimeoutSeconds', ['idleMs', 'idleTimeoutMs'])).toBe('idleTimeoutMs');
    // A unit alone is no name.
    expect(closestKey('bytes', ['maxBodyBytes'])).toBeUndefined();
  });
});

describe('checkKnownKeys', () => {
  it('accepts known keys only', () => {
    expect(() => {
      checkKnownKeys({ level: 1 }, ['level', 'name'], 'createX', 'option');
    }).not.toThrow();
  });

  it('words an unknown option and an unknown field the same way, with the hint when there is one', () => {
    expect(() => {
      checkKnownKeys({ levl: 1 }, ['level'], 'createAuditLogger', 'option');
    }).toThrow(new ConfigurationError('createAuditLogger: unknown option "levl" (did you mean "level"?)'));
    expect(() => {
      checkKnownKeys({ rabc: {} }, ['version', 'rbac'], 'policy', 'field');
    }).toThrow(new ConfigurationError('policy: unknown field "rabc" (did you mean "rbac"?)'));
    expect(() => {
      checkKnownKeys({ zzz: {} }, ['version', 'rbac'], 'policy', 'field');
    }).toThrow(new ConfigurationError('policy: unknown field "zzz" (expected "version", "rbac")'));
    const many = Array.from({ length: 17 }, (_, i) => `option${String(i)}`);
    expect(() => {
      checkKnownKeys({ zzz: {} }, many, 'createX', 'option');
    }).toThrow(new ConfigurationError('createX: unknown option "zzz"'));
  });
});
