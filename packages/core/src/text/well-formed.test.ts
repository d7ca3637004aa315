import { describe, expect, it } from 'vitest';
import { isWellFormedText, losslessBytes } from './well-formed.js';

describe('isWellFormedText', () => {
  it('tells a lone surrogate from a pair', () => {
    expect(isWellFormedText('alice')).toBe(true);
    expect(isWellFormedText('emoji \ud83d\ude00')).toBe(true);
    for (const lone of ['v\ud800', 'v\udfff', '\udc00v', 'a\ud83db'])
      expect(isWellFormedText(lone), JSON.stringify(lone)).toBe(false);
  });
});

describe('losslessBytes', () => {
  it('keeps apart what UTF-8 merges, and equals no UTF-8 text', () => {
    const [a, b, c] = ['v\ud800', 'v\udfff', 'v\ufffd'].map(losslessBytes);
    expect(Buffer.from('v\ud800', 'utf8').equals(Buffer.from('v\ufffd', 'utf8'))).toBe(true);
    expect(a?.equals(b ?? Buffer.alloc(0))).toBe(false);
    expect(a?.equals(c ?? Buffer.alloc(0))).toBe(false);
    expect(a?.[0]).toBe(0xff);
  });
});
