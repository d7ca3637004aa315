import { describe, expect, it } from 'vitest';
import { canonicalHost, isValidHostField } from './host-field.js';

describe('isValidHostField', () => {
  it.each(['a', 'api.example', 'api.example:8443', 'api.example.', '127.0.0.1:1', '[::1]', '[::1]:9000', 'a_b', 'a:'])(
    'accepts %s',
    (host) => {
      expect(isValidHostField(host)).toBe(true);
    },
  );

  it.each([
    'a b',
    'u@a',
    'user:pw@a',
    'a.example/x',
    'a?b',
    'a#b',
    '[::1',
    '[::g]',
    'a:99999',
    'a:1:2',
    'a%20b',
    'é.example',
    '',
    'a'.repeat(300) + '/x',
  ])('refuses %j', (host) => {
    expect(isValidHostField(host)).toBe(false);
  });

  it('gives the same verdict from its kept values as on first reading, past a full map', () => {
    for (let i = 0; i < 600; i++) expect(isValidHostField(`h${String(i)}.example`)).toBe(true);
    for (let round = 0; round < 2; round++) {
      expect(isValidHostField('u@a')).toBe(false);
      expect(isValidHostField('a.example')).toBe(true);
    }
    // Longer than any name a DNS holds: judged each time, never kept.
    const long = `${'a'.repeat(400)}:1`;
    expect(isValidHostField(long)).toBe(true);
    expect(isValidHostField(`${long}@`)).toBe(false);
  });
});

describe('canonicalHost', () => {
  it('reads two spellings of one host alike', () => {
    expect(canonicalHost('https', 'A.Example.:443')).toBe('a.example');
    expect(canonicalHost('http', 'a.example:')).toBe('a.example');
    expect(canonicalHost('http', '[0:0:0:0:0:0:0:1]:80')).toBe('[::1]');
    expect(canonicalHost('http', 'a.example:8080')).toBe('a.example:8080');
  });

  it('reads nothing but a host and a port', () => {
    expect(canonicalHost('http', 'u@a')).toBeUndefined();
    expect(canonicalHost('http', 'a/x')).toBeUndefined();
    expect(canonicalHost('http', 'a?x')).toBeUndefined();
    expect(canonicalHost('http', 'a:99999')).toBeUndefined();
  });
});
