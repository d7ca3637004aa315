// The type of a NumPy array as np.load reads it: `ast.literal_eval` of the header, so a type
// string may be spelt in any way Python's literals allow. Each spelling below passed an earlier
// check (a pattern for single-quoted `'|O'` in the first 512 bytes) and was unpickled by
// `np.load(allow_pickle=True)`, as an outside pass showed.
import { describe, expect, it } from 'vitest';
import { NUMPY_MAX_HEADER, holdsNumpyObjects, numpyHeadLength } from './numpy-header.js';

/** A .npy's first bytes: magic, version, header length, header (padded as NumPy pads it). */
function npy(dict: string, version = 1): Buffer {
  const start = version === 1 ? 10 : 12;
  const header = `${dict}${' '.repeat(63 - ((start + dict.length) % 64))}\n`;
  const length = Buffer.alloc(start - 8);
  if (version === 1) length.writeUInt16LE(header.length);
  else length.writeUInt32LE(header.length);
  return Buffer.concat([
    Buffer.from(`\x93NUMPY${String.fromCharCode(version)}\x00`, 'latin1'),
    length,
    Buffer.from(header),
  ]);
}

const REST = "'fortran_order': False, 'shape': (1,), ";

describe('holdsNumpyObjects', () => {
  it.each([
    ['single quotes', `{'descr': '|O', ${REST}}`],
    ['double quotes', `{"descr": "|O", ${REST}}`],
    ['the word object', `{'descr': 'object', ${REST}}`],
    ['object_ with a size', `{'descr': 'object_', ${REST}}`],
    ['a byte order and a size', `{'descr': '<O8', ${REST}}`],
    ['an escape', `{'descr': '|\\x4f', ${REST}}`],
    ['a raw prefix', `{'descr': r'|O', ${REST}}`],
    ['two strings side by side', `{'descr': '|' 'O', ${REST}}`],
    ['two strings side by side in parentheses', `{'descr': ('|'\n'O'), ${REST}}`],
    ['a triple quote', `{'descr': '''|O''', ${REST}}`],
    ['a comment', `{'descr': '<f8', # '|O'\n${REST}}`],
    ['a structured type with double quotes', `{"descr": [("f0", "|O")], ${REST}}`],
    ['a structured type nested', `{'descr': [('a', [('b', '<f8'), ('c', 'O')])], ${REST}}`],
    ['the type last, after 600 bytes of space', `{${REST}${' '.repeat(600)}'descr': '|O'}`],
    // Comma-separated fields, repeat counts and subarrays: NumPy makes object fields of each.
    ...['O,', '|O,', 'O8,', '1O', '2O', '(2,)O', 'i4,O', 'i4, O', 'O,O', 'U1,O', 'O,(2,)i4', '(2, 3)O8'].map(
      (descr): [string, string] => [`the type string ${descr}`, `{'descr': '${descr}', ${REST}}`],
    ),
  ])('finds an array of objects spelt with %s', (_label, dict) => {
    expect(holdsNumpyObjects(npy(dict))).toBe(true);
    expect(holdsNumpyObjects(npy(dict, 2))).toBe(true);
    expect(holdsNumpyObjects(npy(dict, 3))).toBe(true);
  });

  it('takes a header longer than NumPy reads by default for one: it may hide its type past any point read', () => {
    expect(holdsNumpyObjects(npy(`{'descr': '<f8', ${REST}${' '.repeat(NUMPY_MAX_HEADER)}}`, 2))).toBe(true);
  });

  it.each([
    ['numbers', `{'descr': '<f8', ${REST}}`],
    ['strings of text', `{'descr': '<U10', ${REST}}`],
    ['dates', `{'descr': '<M8[ns]', ${REST}}`],
    ['fields of numbers in a type string', `{'descr': 'i4, (2,)f8, U3', ${REST}}`],
    ['a structured type with a field named Open', `{'descr': [('Open', '<f8'), ('Close', '<f8')], ${REST}}`],
    [
      'a header written with double quotes by NumPy (a field name with a quote)',
      `{'descr': [("it's", '<i4')], ${REST}}`,
    ],
  ])('passes an array of %s', (_label, dict) => {
    expect(holdsNumpyObjects(npy(dict))).toBe(false);
  });

  it('reads no other format, and asks for the whole header of a .npy', () => {
    expect(holdsNumpyObjects(Buffer.from("{'descr': '|O'}"))).toBe(false);
    expect(holdsNumpyObjects(npy(`{'descr': '|O', ${REST}}`, 4))).toBe(false);
    const long = npy(`{${REST}${' '.repeat(2000)}'descr': '|O'}`);
    expect(numpyHeadLength(long.subarray(0, 12), 512)).toBe(long.length);
    expect(numpyHeadLength(Buffer.from('plain text'), 512)).toBe(512);
  });
});
