import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createUploadCheck, createUploadCheckGathering } from './upload-check.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * The upload's SHA-256 when the check passes it, else its refusal; fed whole, then a byte at a
 * time as the check gathers them, then a byte at a time handed on to the tar scan one by one.
 */
function upload(data: Buffer, name = 'model.bin'): unknown[] {
  return [
    { step: data.length, make: () => createUploadCheck() },
    { step: 1, make: () => createUploadCheck() },
    { step: 1, make: () => createUploadCheckGathering({}, 0) },
  ].map(({ step, make }) => {
    try {
      const check = make().begin({ name, sha256: sha(data) });
      for (let i = 0; i < data.length; i += step) check.update(data.subarray(i, i + step));
      return check.finish();
    } catch (error) {
      return (error as { reason: string }).reason;
    }
  });
}

function expectRefused(data: Buffer): void {
  expect(upload(data)).toEqual(['content_refused', 'content_refused', 'content_refused']);
}

function expectPassed(data: Buffer): void {
  expect(upload(data)).toEqual([sha(data), sha(data), sha(data)]);
}

// A protocol-0 pickle that calls os.getpid as it loads, and pickle.dumps(os.system, protocol=4).
const EVIL = Buffer.from('cos\ngetpid\n(tR.', 'latin1');
const IMPORTING = Buffer.from('80049514000000000000008c05706f736978948c0673797374656d9493942e', 'hex');

interface Header {
  readonly name: string;
  readonly type?: string;
  readonly size?: number;
  /** The size field's 12 bytes, in place of the octal the size is. */
  readonly sizeField?: Buffer;
  /** The checksum field's 8 bytes from the unsigned and signed sums, in place of `%06o\0 `. */
  readonly checksum?: (unsigned: number, signed: number) => Buffer;
  /** Bytes at 265 (uname): bytes with the high bit set make the signed sum differ. */
  readonly uname?: Buffer;
  readonly mode?: string;
  readonly linkname?: string;
}

/** A ustar header block, as Python's tarfile writes one unless told otherwise. */
function header(spec: Header): Buffer {
  const block = Buffer.alloc(512);
  block.write(spec.name, 0, 'utf8');
  block.write(spec.mode ?? '0000644\0', 100, 'latin1');
  block.write('0000000\0', 108, 'latin1');
  block.write('0000000\0', 116, 'latin1');
  (spec.sizeField ?? Buffer.from(`${(spec.size ?? 0).toString(8).padStart(11, '0')}\0`)).copy(block, 124);
  block.write('00000000000\0', 136, 'latin1');
  block.write(spec.type ?? '0', 156, 'latin1');
  block.write(spec.linkname ?? '', 157, 'utf8');
  block.write('ustar\x0000', 257, 'latin1');
  spec.uname?.copy(block, 265);
  block.fill(0x20, 148, 156);
  let unsigned = 0;
  let signed = 0;
  for (const byte of block) {
    unsigned += byte;
    signed += byte >= 0x80 ? byte - 256 : byte;
  }
  const field = spec.checksum?.(unsigned, signed) ?? Buffer.from(`${unsigned.toString(8).padStart(6, '0')}\0 `);
  field.copy(block, 148);
  return block;
}

const pad = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);

/** A member: its header (size from the data unless given) and its padded data. */
const member = (spec: Header, data = Buffer.alloc(0)) =>
  Buffer.concat([header({ size: data.length, ...spec }), pad(data)]);

/** A PAX header (`x`, `g` or `X`) of these records. */
function pax(records: readonly (readonly [string, string])[], type = 'x'): Buffer {
  const body = records.map(([key, value]) => {
    const rest = ` ${key}=${value}\n`;
    let length = Buffer.byteLength(rest) + 1;
    while (String(length).length + Buffer.byteLength(rest) !== length) length++;
    return `${length}${rest}`;
  });
  return member({ name: 'PaxHeader', type }, Buffer.from(body.join(''), 'utf8'));
}

const END = Buffer.alloc(1024);
const tar = (...parts: Buffer[]) => Buffer.concat([...parts, END]);
const octal = (text: string) => Buffer.from(text, 'latin1');

describe('tar members as CPython tarfile reads them', () => {
  // a. tarfile reads the next header right after a link, directory or device header: its
  // "data" may hold a member the scan skipped.
  it.each([
    ['a hard link', { name: 'link', type: '1', linkname: 'notes.txt' }],
    ['a symlink', { name: 'link', type: '2', linkname: 'notes.txt' }],
    ['a character device', { name: 'dev', type: '3' }],
    ['a block device', { name: 'dev', type: '4' }],
    ['a directory', { name: 'dir', type: '5' }],
    ['a fifo', { name: 'fifo', type: '6' }],
    ['a V7 directory (type NUL, a name ending in a slash)', { name: 'dir/', type: '\0' }],
  ])('refuses a member hidden in the data of %s header, whole or a byte at a time', (_label, spec) => {
    const hidden = Buffer.concat([member({ name: 'weights.bin' }, IMPORTING), Buffer.alloc(512)]);
    expectRefused(tar(header({ ...spec, size: hidden.length }), hidden));
    const pickle = Buffer.concat([member({ name: 'pickle' }, EVIL), Buffer.alloc(512)]);
    expectRefused(tar(header({ ...spec, size: pickle.length }), pickle));
  });

  // b. tarfile takes either checksum, base-256 numbers and whatever Python's int(text, 8) takes.
  it.each([
    ['signed', (_u: number, s: number) => octal(`${s.toString(8).padStart(6, '0')}\0 `)],
    ['in base 256', (u: number) => Buffer.from([0x80, 0, 0, 0, 0, 0, u >> 8, u & 0xff])],
    ['with an underscore', (u: number) => octal(`${u.toString(8).replace(/^(.)/, '$1_')}\0`)],
    ['with a 0o prefix', (u: number) => octal(`0o${u.toString(8)}\0`)],
    ['with a sign and a 0O prefix', (u: number) => octal(`+0O${u.toString(8)}`)],
    ['after \\x1c (Python strips it, trim() does not)', (u: number) => octal(`\x1c${u.toString(8)}\x1f\0`)],
  ])('refuses a pickle behind a header whose checksum is %s, whole or a byte at a time', (_label, checksum) => {
    const uname = Buffer.from([0xe9, 0xe9, 0xe9]);
    expectRefused(tar(member({ name: 'pickle', checksum, uname }, EVIL)));
    expectRefused(
      tar(member({ name: 'notes.txt', checksum, uname }, Buffer.from('hi')), member({ name: 'w.bin' }, IMPORTING)),
    );
  });

  // c. A size tarfile reads otherwise puts the scan out of step with the headers.
  it.each([
    ['an underscore in the size field', octal('0_1000\0'), 512],
    ['a 0o prefix in the size field', octal('0o1000\0'), 512],
    ['a sign and a 0O prefix in the size field', octal('+0O1000\0'), 512],
    ['whitespace Python strips around the size field', octal('\x1e1000\x1d\0'), 512],
  ])('refuses a pickle behind %s, whole or a byte at a time', (_label, sizeField, size) => {
    const data = Buffer.alloc(size, 0x61);
    expectRefused(tar(member({ name: 'notes.txt', sizeField }, data), member({ name: 'w.bin' }, IMPORTING)));
  });

  it.each([
    ['x', 'a PAX extended header'],
    ['X', 'a Solaris extended header'],
  ])('refuses a pickle behind the size %s (%s) gives the next member, whole or a byte at a time', (type) => {
    const hidden = Buffer.concat([member({ name: 'weights.bin' }, IMPORTING), Buffer.alloc(512)]);
    // The header says 1,024 bytes of data; tarfile reads 0 and the next header after it.
    expectRefused(tar(pax([['size', '0']], type), header({ name: 'notes.txt', size: hidden.length }), hidden));
    // The header says 0; tarfile skips 512 bytes of "data", a header whose size hides the pickle.
    const skipped = header({ name: 'notes.txt', size: 1024 });
    expectRefused(
      tar(pax([['size', '512']], type), header({ name: 'a.txt' }), skipped, member({ name: 'w.bin' }, IMPORTING)),
    );
  });

  it('refuses a pickle behind a global PAX size (a g header), whole or a byte at a time', () => {
    // An x header after it takes the global size as its own (the hidden member has its own).
    const hidden = Buffer.concat([pax([['size', String(IMPORTING.length)]]), member({ name: 'w.bin' }, IMPORTING)]);
    const a = header({ name: 'a', size: hidden.length });
    expectRefused(tar(pax([['size', '0']], 'g'), pax([['mtime', '1']]), a, hidden, Buffer.alloc(512)));
    // Without one, extractfile reads the global size but tarfile skips the header's.
    expectRefused(tar(pax([['size', '40']], 'g'), member({ name: 'a.txt' }), member({ name: 'w.bin' }, IMPORTING)));
  });

  // d. tarfile hands out a member of a type it does not know as a regular file.
  it.each(['Z', 'D', 'V', 'M', 'N', '8'])(
    'refuses a pickle in a member of unknown type %s, whole or a byte at a time',
    (type) => {
      expectRefused(tar(member({ name: 'weights.bin', type }, IMPORTING)));
      expectRefused(tar(member({ name: 'data', type }, Buffer.alloc(1000)), member({ name: 'w.bin' }, IMPORTING)));
    },
  );

  it.each([
    ['a negative size', { name: 'a', sizeField: Buffer.from([0xff, ...Array<number>(10).fill(0xff), 0xfe]) }],
    ['a size field Python cannot read', { name: 'a', sizeField: octal('12 34\0') }],
    ['a mode field Python cannot read', { name: 'a', mode: '06-44\0' }],
    ['a checksum spelt as no int() reads it', { name: 'a', checksum: (u: number) => octal(`0${u.toString(8)}_\0`) }],
    ['a sparse member', { name: 'a', type: 'S' }],
  ])('refuses a header with %s, whole or a byte at a time', (_label, spec) => {
    expectRefused(tar(header(spec), member({ name: 'b.txt' }, Buffer.from('hi'))));
  });

  it.each([
    ['a record of a wrong length', member({ name: 'PaxHeader', type: 'x' }, Buffer.from('30 path=a.txt\n'))],
    ['a record with no newline at its end', member({ name: 'PaxHeader', type: 'x' }, Buffer.from('14 path=a.txtX'))],
    ['a record with no =', member({ name: 'PaxHeader', type: 'x' }, Buffer.from('10 pathaa\n'))],
    ['a record cut by the header end', member({ name: 'PaxHeader', type: 'x' }, Buffer.from('900 path=a\n'))],
    ['a GNU sparse record', pax([['GNU.sparse.size', '9']])],
    ['a size Python reads otherwise', pax([['size', '1e3']])],
    ['a negative size', pax([['size', '-1']])],
    ['a global size Python reads otherwise', pax([['size', '\u0661']], 'g')],
  ])('refuses a PAX header with %s, whole or a byte at a time', (_label, extended) => {
    expectRefused(tar(extended, member({ name: 'b.txt' }, Buffer.from('hi'))));
  });

  it('reads a PAX header as tarfile does: the last path record wins, and only the exact keys count', () => {
    const data = member({ name: 'b.txt' }, Buffer.from('hi'));
    const longPickle = `${'d/'.repeat(100)}model.pkl`;
    expectRefused(
      tar(
        pax([
          ['path', 'a.txt'],
          ['mtime', '1'],
          ['path', 'model.pkl'],
        ]),
        data,
      ),
    );
    expectRefused(tar(pax([['path', longPickle]]), data));
    expectPassed(
      tar(
        pax([
          ['path', 'model.pkl'],
          ['path', 'a.txt'],
        ]),
        data,
      ),
    );
    expectPassed(
      tar(
        pax([
          ['paths', 'model.pkl'],
          ['pat', 'model.pkl'],
          ['Path', 'model.pkl'],
          ['sizes', '-1'],
          ['GNU.sparse', '1'],
        ]),
        data,
      ),
    );
  });

  it('refuses a pickle after a block that only looks like the end (zeros but its checksum)', () => {
    const zeros = Buffer.alloc(512);
    zeros.write('000400\0 ', 148, 'latin1');
    expectRefused(tar(zeros, member({ name: 'w.bin' }, IMPORTING)));
  });

  it('passes an ordinary tar: data files, a directory, a symlink, a hard link, long names', () => {
    const longPath = `${'nested/'.repeat(30)}train.csv`;
    expectPassed(
      tar(
        member({ name: 'data/', type: '5' }),
        member({ name: 'data/train.csv' }, Buffer.from('a,b\n1,2\n')),
        member({ name: 'data/latest', type: '2', linkname: 'train.csv' }),
        member({ name: 'data/same', type: '1', linkname: 'data/train.csv' }),
        pax([
          ['path', longPath],
          ['mtime', '1700000000.5'],
        ]),
        member({ name: longPath.slice(0, 99) }, Buffer.from('x,y\n')),
        pax([['comment', 'made by a test']], 'g'),
        member({ name: '././@LongLink', type: 'L' }, Buffer.from(`${'deep/'.repeat(30)}weights.bin\0`)),
        member({ name: 'deep/deep/weights.bin' }, Buffer.alloc(3000, 7)),
        pax([['size', '2000']]),
        member({ name: 'big.bin', size: 0 }).subarray(0, 512),
        Buffer.alloc(2048, 1),
      ),
    );
  });

  it('reads a number field of octal digits up to spaces and a NUL, and refuses one with more after the spaces', () => {
    // tarfile's int() fails on '000644 x' (and the scan's quick read of plain digits must too).
    expectRefused(tar(member({ name: 'a.txt', mode: '000644 x' }, Buffer.from('a'))));
    expectRefused(tar(member({ name: 'a.txt', sizeField: octal('1 0\0        ') }, Buffer.from('a'))));
    // Up to the NUL, whatever follows it; spaces before it, or none at all.
    const hidden = member({ name: 'w.bin' }, IMPORTING);
    expectRefused(tar(member({ name: 'a.txt', sizeField: octal('1000  \0zzzzz') }, Buffer.alloc(512, 1)), hidden));
    expectRefused(tar(member({ name: 'a.txt', sizeField: octal('000000001000') }, Buffer.alloc(512, 1)), hidden));
    expectPassed(
      tar(
        member({ name: 'a.txt', mode: '644    \0' }, Buffer.from('a')),
        member({ name: 'b.bin', sizeField: octal('1000        ') }, Buffer.alloc(512, 3)),
        member({ name: 'c.bin', sizeField: octal('1000 \0zzzzzz') }, Buffer.alloc(512, 4)),
      ),
    );
  });

  it('passes tars whose numbers are spelt as tarfile reads them, and an upload that is no tar', () => {
    const uname = Buffer.from([0xe9]);
    expectPassed(
      tar(
        member({ name: 'a.txt', uname, checksum: (_u, s) => octal(`${s.toString(8)}\0`) }, Buffer.from('a')),
        member({ name: 'b.txt', checksum: (u) => octal(`0o${u.toString(8)}\x1c`) }, Buffer.from('b')),
        member({ name: 'c.bin', sizeField: octal('0o1_000\0') }, Buffer.alloc(512, 3)),
        member({ name: 'd.bin', sizeField: Buffer.from([0x80, ...Array<number>(10).fill(0), 9]) }, Buffer.alloc(9, 4)),
      ),
    );
    expectPassed(Buffer.from('just some text, and no tar at all\n'.repeat(100)));
    expectPassed(Buffer.alloc(4096));
  });
});
