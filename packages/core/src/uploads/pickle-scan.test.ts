// The pickle scan against pickles CPython 3 loads (each imported, and most ran, a harmless
// `posix.getcwd` when this table was made with `pickle.loads`; the rows after the protocols are
// ways past an earlier scan, found by attacking it), and against content that is no pickle:
// text, the binary formats of models and archives, random bytes.
import { describe, expect, it } from 'vitest';
import { PickleImportScan } from './pickle-scan.js';

/** Whether the scan finds an import, with `data` cut into chunks of `size` bytes. */
function importsIn(data: Buffer, size = data.length): boolean {
  let found = false;
  const scan = new PickleImportScan(() => {
    found = true;
  });
  for (let i = 0; i < data.length; i += size) scan.push(data.subarray(i, i + size));
  return found;
}

const hex = (text: string): Buffer => Buffer.from(text, 'hex');

/** `size` bytes that look random, the same for the same `seed` on every run (mulberry32). */
function pseudoRandom(seed: number, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  let state = seed >>> 0;
  for (let i = 0; i < size; i += 4) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    bytes.writeUInt32LE((t ^ (t >>> 14)) >>> 0, i);
  }
  return bytes;
}
const text = (value: string): Buffer => Buffer.from(value, 'latin1');

const RUNS_CODE: readonly [string, Buffer][] = [
  ['protocol 0', hex('63706f7369780a6765746377640a70300a28745270310a2e')],
  ['protocol 1', hex('63706f7369780a6765746377640a7100295271012e')],
  ['protocol 2', hex('800263706f7369780a6765746377640a7100295271012e')],
  ['protocol 3', hex('800363706f7369780a6765746377640a7100295271012e')],
  ['protocol 4', hex('80049517000000000000008c05706f736978948c066765746377649493942952942e')],
  ['protocol 5', hex('80059517000000000000008c05706f736978948c066765746377649493942952942e')],
  ['protocol 2 without its header', hex('63706f7369780a6765746377640a7100295271012e')],
  ['protocol 4 without its header', hex('9517000000000000008c05706f736978948c066765746377649493942952942e')],
  ['a long string in front', text(`S'${'x'.repeat(5000)}'\n0cposix\ngetcwd\n(tR.`)],
  ['a mark popped by POP', text('(0cposix\ngetcwd\n)R.')],
  ['an INT line with white space', text('I 5 \n0cposix\ngetcwd\n)R.')],
  ['names from the memo (STACK_GLOBAL)', hex('8c05706f736978948c0667657463776494680068019329522e')],
  ['names from a line GET', hex('8c05706f736978948c066765746377649467300a67310a9329522e')],
  ['INST', text('(iposix\ngetcwd\n.')],
  ['OBJ', text('(cposix\ngetcwd\no.')],
  ['a second pickle after a harmless one', text('N.cposix\ngetcwd\n)R.')],
  ['BUILD on an imported object', text('cposix\ngetcwd\n}b.')],
  ['an import that nothing calls (importing runs the module)', text('cthis\ns\n.')],
  ['SETITEM on an imported object (os.environ)', text('cos\nenviron\nVX\nVY\ns.')],
  // CPython's C reader ends a number at a NUL, and ignores the rest of the line.
  ['a NUL ending an INT line in front', hex('493000ff0a3063706f7369780a6765746377640a29522e')],
  ['a NUL ending a FLOAT line in front', hex('46312e3500ff0a3063706f7369780a6765746377640a29522e')],
  ['a NUL ending a PUT index', hex('4e703000ff0a3063706f7369780a6765746377640a29522e')],
  // The C reader cuts a module name at a NUL; what follows must decode as UTF-8.
  ['a NUL in a module name', hex('636f7300c3a90a6765746377640a29522e')],
  // `-0` is index 0: the str put there hides an earlier item under the same index.
  ['a memo index of -0', hex('4e710030566275696c74696e730a702d300a30680056657865630a9329522e')],
  ['MEMOIZE after an index of -0', hex('566275696c74696e730a702d300a304e943067300a56657865630a9329522e')],
  // One unpickler loading twice keeps its memo: the second pickle gets the first one's strings.
  ['the memo of a first pickle', hex('566275696c74696e730a71003056657865630a71012e680068019329522e')],
  // The module is imported before its name is looked up: the name line is anything.
  ['a name line that is no name', text('cposix\n-\n.')],
  // A one-time reader of a file (CPython's C unpickler) drops the rest of a frame when a read
  // runs past its end, and reads on from after it: the scan cannot follow, and refuses.
  [
    'a line across its frame end',
    Buffer.concat([hex('4e30950800000000000000420000000030632d'), text('posix\ngetcwd\n)R.')]),
  ],
  [
    'a sized argument across its frame end',
    Buffer.concat([hex('4e309503000000000000008c05417878787858'), text('cposix\ngetcwd\n)R.')]),
  ],
  [
    'a frame inside a frame',
    Buffer.concat([hex('4e3095140000000000000042000000003095080000000000000058ffffff7f'), text('cposix\ngetcwd\n)R.')]),
  ],
  [
    'a pickle ending inside its frame',
    Buffer.concat([hex('9507000000000000004e2e58ffffff7f'), text('cposix\ngetcwd\n)R.')]),
  ],
  // A new unpickler after the first pickle starts with an empty memo: its indices differ.
  ['a memo read afresh after STOP', hex('4e942e8c05706f736978948c066765746377649468006801932e')],
  ['a module whose name starts with a digit (installed by mypyc)', text('c81d243bd2c585b0f4821__mypyc\nx\n.')],
  // The extension registry filled from inside the pickle, then EXT1: the import of copyreg first.
  // Python's pure-Python reader (joblib's) keeps memo indexes whole: past 2^53 two of them read
  // as one number here, and the string put under one was taken for the None put under the other.
  [
    'memo indexes that differ past 2^53',
    text('Vos\np10000000000000000001\n0Np10000000000000000000\n0g10000000000000000001\nVgetpid\n\x93)R.'),
  ],
  ['a registry filled for EXT1', text('ccopyreg\n_inverted_registry\nK\x01(Vbuiltins\nVexec\nts0\x82\x01(V1\ntR.')],
];

describe('PickleImportScan', () => {
  it.each(RUNS_CODE)('finds the import of %s, in any chunks', (_label, data) => {
    expect(importsIn(data)).toBe(true);
    expect(importsIn(data, 1)).toBe(true);
    expect(importsIn(data, 7)).toBe(true);
  });

  it.each([
    ['a pickle of data only (no import)', text("(lp0\nI1\naS'two'\np1\na.")],
    ['STACK_GLOBAL over bytes, which Python refuses', hex('43056f7320202043066765746377649329522e')],
    ['a module name whose rest after a NUL is no UTF-8, which Python refuses', hex('63706f73697800ff0a2e')],
    ['a module line of one byte cut short by the end (an empty module name)', text('cX')],
    ['a module line whose invalid byte is not its last', hex('63706f736978ff58')],
    // The one reading the scan does not take (see PickleImportScan): CPython's pure-Python
    // reader imports `this` from `cthisX`, where every file of one word like `inside` would go.
    ['one word starting with i or c, with no line end', text('inside')],
    ['a module line the end of the stream cuts short', text('cthisX')],
    [
      'a frame fault in a frame longer than the stream, which every reader refuses first',
      hex('9500100000000000009501000000000000000030'),
    ],
    ['a word list whose first word starts with c and ends there', text('cat dog\nfish\n')],
    ['a raw image of one value (0x88, NEWTRUE), 300 KB', Buffer.alloc(300_000, 0x88)],
    ['a raw image of one value (0x4b, BININT1), 300 KB', Buffer.alloc(300_000, 0x4b)],
    ['a raw image of one value (0x28, MARK), 300 KB', Buffer.alloc(300_000, 0x28)],
    ['a CSV', text('col1,col2\nvalue,1\n')],
    ['JSON', text('{"name":"model","layers":[1,2,3]}')],
    ['a README', text('# fluxguard\n\nSecure gRPC and HTTP services.\n')],
    ['a PNG header', hex('89504e470d0a1a0a0000000d49484452')],
    ['a safetensors header', Buffer.concat([hex('4000000000000000'), text('{"w":{"dtype":"F32","shape":[1]}}')])],
    ['a GGUF header', hex('47475546030000000000000000000000')],
    ['an NPY header', Buffer.concat([hex('934e554d505901007600'), text("{'descr': '<f4'}")])],
  ])('finds no import in %s', (_label, data) => {
    expect(importsIn(data)).toBe(false);
    expect(importsIn(data, 1)).toBe(false);
  });

  it('takes text whose first line is one word starting with c for a pickle', () => {
    // GLOBAL of a module that could be imported: the known false alarm.
    expect(importsIn(text('cat\ndog\nfish\n'))).toBe(true);
    expect(importsIn(text('ctest_build\n-----------\n'))).toBe(true);
  });

  it('takes at most one in 10,000 pseudo-random uploads of 4 KiB for a pickle', () => {
    // About one random file in 100,000 reads as a GLOBAL of a short module name (`cq\n`), an
    // import to CPython: the rate is what is checked, on a fixed corpus (a seeded generator) so
    // that the count is the same on every run.
    let found = 0;
    for (let i = 0; i < 20_000; i++) if (importsIn(pseudoRandom(i, 4096))) found += 1;
    expect(found).toBeLessThanOrEqual(2);
  });

  it('stays bounded: 100,000 runs of stack items are a pickle, a memo past its bound is read as strings', () => {
    expect(importsIn(Buffer.from('(N'.repeat(50_001)), 4096)).toBe(true);
    expect(importsIn(Buffer.from('(N'.repeat(49_000)), 4096)).toBe(false);
    // 100,001 strings memoized, then two fetched back by an index past the memo's bound.
    const puts = Buffer.concat(Array.from({ length: 100_001 }, () => hex('8c017894')));
    const far = hex('6aa08601006aa0860100');
    const call = Buffer.concat([puts, far, hex('9329522e')]);
    expect(importsIn(call, 64 * 1024)).toBe(true);
  });

  it('calls four million harmless opcodes a pickle, and finds an import behind a line of 8 MiB', () => {
    expect(importsIn(Buffer.from('N0'.repeat(2_000_001)), 64 * 1024)).toBe(true);
    expect(importsIn(Buffer.from('N0'.repeat(1_900_000)), 64 * 1024)).toBe(false);
    const line = Buffer.concat([text('V'), Buffer.alloc(8 * 1024 * 1024, 0x61), text('\n0cposix\ngetcwd\n)R.')]);
    expect(importsIn(line, 64 * 1024)).toBe(true);
  });

  it('skips a payload of any declared size without reading it byte by byte', () => {
    // BINBYTES8 declaring 1 GiB, 1 MiB of it present: nothing found, nothing held.
    const header = Buffer.concat([hex('8e'), Buffer.from([0, 0, 0, 0x40, 0, 0, 0, 0])]);
    expect(importsIn(Buffer.concat([header, Buffer.alloc(1024 * 1024, 0x63)]), 64 * 1024)).toBe(false);
  });
});
