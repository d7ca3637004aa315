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
    // Spaces NumPy reads past, and the other types it unpickles: variable-width strings (`T`)
    // and type number 17 (`\x11`, the object type's number).
    ...['2 O', '1O ', '2 object', '1|O\t', '2 O8,i4', 'T', '<T', '2T', 'U1,T', '\x11', 'i4,\x11'].map(
      (descr): [string, string] => [`the type string ${JSON.stringify(descr)}`, `{'descr': '${descr}', ${REST}}`],
    ),
    // descr_to_dtype unpacks each field as (name, type): a 2-character string is a field.
    ['a list of 2-character strings', `{'descr': ['xO'], ${REST}}`],
    ['a dict of 2-character keys', `{'descr': {'xO': 0}, ${REST}}`],
    ['a 2-character string among fields', `{'descr': [('a', '<f8'), 'bO'], ${REST}}`],
    ['a 2-character string as a nested field', `{'descr': [('a', ['bO'])], ${REST}}`],
    ['a type with a space as a field', `{'descr': [('a', '2 O')], ${REST}}`],
    ['a titled object field', `{'descr': [(('title', 'a'), 'O')], ${REST}}`],
    ['a subarray of objects', `{'descr': ('O', (2,)), ${REST}}`],
    ['a dtype dict of names and formats', `{'descr': ('V8', {'names': 'ab', 'formats': 'fO'}), ${REST}}`],
    ['a descr given twice', `{'descr': '<f8', 'descr': [['x', 'O']], ${REST}}`],
    ['a descr under a key spelt otherwise', `{('descr'): '2 O', ${REST}}`],
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
    // As NumPy writes them: padding fields, titles, subarray fields, nested records, a subarray type.
    ['a record with padding', `{'descr': [('', '|V4'), ('x', '<f4')], ${REST}}`],
    ['a record with a title', `{'descr': [(('title', 'a'), '<f8')], ${REST}}`],
    ['a record with a subarray field', `{'descr': [('a', '<f8'), ('b', '<i4', (2, 3))], ${REST}}`],
    ['a nested record', `{'descr': [('a', [('b', '<f8'), ('c', '|S2')])], ${REST}}`],
    ['a subarray type', `{'descr': ('<f8', (2,)), ${REST}}`],
    ['fields named like object types', `{'descr': [('O', '<f8'), ('xO', '<f8'), ('object', '<i4')], ${REST}}`],
    ['numbers by their names', `{'descr': 'float64, int32, datetime64[ns]', ${REST}}`],
    // Codes NumPy reads only with a size (`u` alone is no type) are codes all the same.
    ...['|u1', '<u2', '>u4', '<u8', '|i1', '<i8', '|b1', '<f2', '<c16', '|S3', '<U10', '|V8', '<m8[D]'].map(
      (descr): [string, string] => [`the type ${descr}`, `{'descr': '${descr}', ${REST}}`],
    ),
    ['a record with unsigned fields', `{'descr': [('r', '|u1'), ('g', '|u1'), ('n', '<u4', (2,))], ${REST}}`],
    // Python 2's NumPy wrote a long integer's L; NumPy drops it and reads the header again.
    ['a shape written by Python 2', `{'descr': '<f8', 'fortran_order': False, 'shape': (3L, 4L), }`],
  ])('passes an array of %s', (_label, dict) => {
    expect(holdsNumpyObjects(npy(dict))).toBe(false);
  });

  it('finds objects in every spelling with whitespace, wherever it stands', () => {
    const objectTypes = ['O', '|O', '<O8', '=O', 'object', 'object_', 'T', '<T', '\x11'];
    for (const type of objectTypes) {
      for (const space of [' ', '\t', '\n', '\r', '\v', '\f']) {
        for (const descr of [
          `${space}${type}`,
          `${type}${space}`,
          `2${space}${type}`,
          `(2,)${space}${type}`,
          `<f8,${space}${type}`,
          `${type}${space},i4`,
        ]) {
          const dict = `{'descr': '${descr}', ${REST}}`;
          expect(holdsNumpyObjects(npy(dict)), JSON.stringify(descr)).toBe(true);
        }
      }
    }
  });

  it.each([
    ['not a dict', `['<f8']`],
    ['a descr that is a number', `{'descr': 8, ${REST}}`],
    ['a descr that is a set', `{'descr': {'<f8'}, ${REST}}`],
    ['a field that is a list', `{'descr': [['a', '<f8']], ${REST}}`],
    ['a field of four', `{'descr': [('a', '<f8', (2,), 'x')], ${REST}}`],
    ['a subarray whose shape is a type', `{'descr': ('V8', 'O'), ${REST}}`],
    ['a name NumPy never gives a type', `{'descr': 'Float64', ${REST}}`],
    ['a call', `{'descr': dtype('<f8'), ${REST}}`],
    ['a header cut short', `{'descr': '<f8', 'fortran_order': False, 'shape': (1,`],
    ['a string cut short', `{'descr': '<f8`],
    ['containers nested past any NumPy writes', `{'descr': ${'['.repeat(40)}${']'.repeat(40)}, ${REST}}`],
  ])('takes a header NumPy never writes for one: %s', (_label, dict) => {
    expect(holdsNumpyObjects(npy(dict))).toBe(true);
  });

  it('reads no other format, and asks for the whole header of a .npy', () => {
    expect(holdsNumpyObjects(Buffer.from("{'descr': '|O'}"))).toBe(false);
    expect(holdsNumpyObjects(npy(`{'descr': '|O', ${REST}}`, 4))).toBe(false);
    const long = npy(`{${REST}${' '.repeat(2000)}'descr': '|O'}`);
    expect(numpyHeadLength(long.subarray(0, 12), 512)).toBe(long.length);
    expect(numpyHeadLength(Buffer.from('plain text'), 512)).toBe(512);
  });
});
