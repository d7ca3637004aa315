import { createHash } from 'node:crypto';
import { constants, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { gzippedEmptyMembers, tar } from '@fluxguard/test-support/archives';
import { loopTurnsWhile } from '@fluxguard/test-support/loop-turns';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createUploadCheck, createUploadCheckGathering, type UploadCheckOptions } from './upload-check.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

type Outcome = string | { code: string; reason: string; details: unknown };

/**
 * Streams `data` through a check in 7-byte chunks; the digest, or the refusal. Both as the
 * check gathers them and handed on one by one: gathering may delay a refusal, never change it.
 */
function upload(
  data: Buffer,
  name: string,
  options: UploadCheckOptions = {},
  declared = sha(data),
  contentType?: string,
): Outcome {
  const [gathered, oneByOne] = [() => createUploadCheck(options), () => createUploadCheckGathering(options, 0)].map(
    (make): Outcome => {
      try {
        const check = make().begin({ name, sha256: declared, contentType });
        for (let i = 0; i < data.length; i += 7) check.update(data.subarray(i, i + 7));
        return check.finish();
      } catch (error) {
        return error as Exclude<Outcome, string>;
      }
    },
  ) as [Outcome, Outcome];
  const said = (outcome: Outcome) =>
    typeof outcome === 'string' ? outcome : [outcome.code, outcome.reason, JSON.stringify(outcome.details)];
  expect(said(oneByOne)).toEqual(said(gathered));
  return gathered;
}

// Python's pickle.dumps({'a': 1}, protocol=4), and a ZIP whose first entry is archive/data.pkl (PyTorch).
const PICKLE = Buffer.from('80049510000000000000007d94288c016194680294752e', 'hex');
const TORCH = Buffer.concat([
  Buffer.from([0x50, 0x4b, 0x03, 0x04]),
  Buffer.alloc(22),
  Buffer.from([16, 0, 0, 0]),
  Buffer.from('archive/data.pkl'),
  Buffer.alloc(64),
]);

// pickle.dumps(None, protocol=4): data only.
const NONE_PICKLE = Buffer.from('80049500000000000000004e2e', 'hex');

// pickle.dumps(os.system, protocol=4): it imports posix.system as it loads.
const IMPORTING = Buffer.from('80049514000000000000008c05706f736978948c0673797374656d9493942e', 'hex');

/** A NumPy .npy file (format 1.0) with this `descr` (after `padding` spaces) and `data` after its header. */
function npy(descr: string, data: Buffer, padding = 0): Buffer {
  let header = `{${' '.repeat(padding)}'descr': ${descr}, 'fortran_order': False, 'shape': (1,), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const length = Buffer.alloc(2);
  length.writeUInt16LE(header.length);
  return Buffer.concat([Buffer.from('\x93NUMPY\x01\x00', 'latin1'), length, Buffer.from(header, 'latin1'), data]);
}

/** A ZIP's bytes: local headers (each with its own name, or the central one's) and a central directory. */
function zip(
  entries: readonly { name: string; localName?: string; data?: Buffer; extra?: Buffer; method?: number }[],
  between = Buffer.alloc(0),
): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const localName = Buffer.from(entry.localName ?? entry.name);
    const data = entry.data ?? Buffer.from('bytes of the entry');
    const extra = entry.extra ?? Buffer.alloc(0);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(entry.method ?? 0, 8);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(localName.length, 26);
    local.writeUInt16LE(extra.length, 28);
    locals.push(local, localName, extra, data);
    const name = Buffer.from(entry.name);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(entry.method ?? 0, 10);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + localName.length + extra.length + data.length;
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  return Buffer.concat([...locals, between, ...centrals, end]);
}

/** `archive` with the method of its first central directory header set to `method`. */
function withCentralMethod(archive: Buffer, method: number): Buffer {
  archive.writeUInt16LE(method, archive.indexOf('PK\x01\x02', 0, 'latin1') + 10);
  return archive;
}

/** A PyTorch archive as a ZIP reader sees it: entries, central directory and its end. */
const TORCH_ARCHIVE = zip([{ name: 'archive/version' }, { name: 'archive/data.pkl' }]);

describe('createUploadCheck', () => {
  it('passes ordinary content whose digest matches, and returns the digest', () => {
    const data = Buffer.from('weights, in safetensors or plain bytes');
    expect(upload(data, 'models/m.safetensors')).toBe(sha(data));
  });

  it('gathers small chunks as they were given: a caller that reuses its buffer once update returns changes nothing', () => {
    const benign = Buffer.from('plain bytes '.repeat(3_000));
    // Behind the first 16 KiB, which are checked as they come.
    const behind = Buffer.concat([Buffer.alloc(16 * 1024, 0x20), TORCH_ARCHIVE]);
    for (const [data, expected] of [
      [behind, 'content_refused'],
      [benign, sha(benign)],
    ] as const) {
      const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
      const reused = Buffer.alloc(7);
      let outcome: string;
      try {
        for (let i = 0; i < data.length; i += 7) {
          const n = data.copy(reused, 0, i, i + 7);
          check.update(reused.subarray(0, n));
          reused.fill(0);
        }
        outcome = check.finish();
      } catch (error) {
        outcome = (error as { reason: string }).reason;
      }
      expect(outcome).toBe(expected);
    }
  });

  it('refuses a pickle sent a byte at a time at its import, not once more bytes or the end have come', () => {
    const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(IMPORTING) });
    const data = Buffer.concat([IMPORTING, Buffer.alloc(64 * 1024, 0x20)]);
    let refusedAt: number | undefined;
    for (let i = 0; i < data.length && refusedAt === undefined; i++) {
      try {
        check.update(data.subarray(i, i + 1));
      } catch (error) {
        expect(error).toMatchObject({ reason: 'content_refused' });
        refusedAt = i + 1;
      }
    }
    // Within the pickle: the first 16 KiB are checked as they come, not gathered.
    expect(refusedAt).toBeDefined();
    expect(refusedAt).toBeLessThanOrEqual(IMPORTING.length);
  });

  it('refuses a digest that does not match, or is not one', () => {
    expect(upload(Buffer.from('x'), 'a.txt', {}, sha(Buffer.from('y')))).toMatchObject({
      code: 'invalid_argument',
      reason: 'digest_mismatch',
      details: { field: 'sha256' },
    });
    expect(upload(Buffer.from('x'), 'a.txt', {}, 'not-hex')).toMatchObject({ reason: 'digest_mismatch' });
  });

  it.each([
    ['a pickle posing as .bin', PICKLE, 'model.bin'],
    ['a PyTorch archive posing as .bin', TORCH, 'model.bin'],
    ['an ELF executable', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60)]), 'tool.bin'],
    ['a PE executable', Buffer.concat([Buffer.from('MZ'), Buffer.alloc(60)]), 'tool.dat'],
    [
      'a universal Mach-O executable',
      Buffer.concat([Buffer.from('cafebabe00000002', 'hex'), Buffer.alloc(60)]),
      'tool',
    ],
    ['a script', Buffer.from('#!/bin/sh\nrm -rf /\n'), 'notes.txt'],
    // Protocol 0, text opcodes: `os.system('id')` on loading.
    ['a protocol 0 pickle posing as .txt', Buffer.from("cos\nsystem\n(S'id'\ntR."), 'notes.txt'],
    // Protocol 4 without the header Python writes: it loads all the same.
    [
      'a protocol 4 pickle without its header',
      Buffer.from('8c05706f736978948c0667657463776494680068019329522e', 'hex'),
      'model.bin',
    ],
  ])('refuses %s by its content', (_label, data, name) => {
    expect(upload(data, name)).toMatchObject({ code: 'invalid_argument', reason: 'content_refused' });
  });

  it.each(['model.pt', 'model.PKL', 'a/b/setup.exe', 'x.so', 'model.ｐｋｌ', 'model．pkl', 'setup.ＥＸＥ'])(
    'refuses the extension of %s',
    (name) => {
      expect(upload(Buffer.from('harmless'), name)).toMatchObject({
        reason: 'extension_refused',
        details: { field: 'path' },
      });
    },
  );

  it.each([
    ['a pickle that is not the first entry', zip([{ name: 'archive/version' }, { name: 'archive/data.pkl' }])],
    [
      'a pickle named only in the central directory',
      zip([{ name: 'archive/version' }, { name: 'archive/data.pkl', localName: 'archive/data.bin' }]),
    ],
    [
      'a pickle behind a made-up header whose name would run over it',
      // A local header signature just in front of the central directory, whose name length
      // covers the central record that names the pickle and a little more: a scan that skipped
      // names would miss it.
      zip(
        [{ name: 'archive/DATA.PICKLE', localName: 'x' }, { name: 'archive/version' }],
        Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(22), 46 + 'archive/DATA.PICKLE'.length + 4, 0, 0, 0]),
      ),
    ],
    [
      'a pickle, behind other bytes (Python opens it: GIF89a in front)',
      Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(600, 0x20), TORCH_ARCHIVE]),
    ],
    [
      "a pickle whose name goes on after a NUL (Python's zipfile ends it there)",
      zip([{ name: 'archive/data.pkl\u0000x' }]),
    ],
    ['a pickle, behind 64 KiB of other bytes', Buffer.concat([Buffer.alloc(64 * 1024, 0x41), TORCH_ARCHIVE])],
  ])('refuses a ZIP holding %s, in any chunks', (_label, data) => {
    expect(upload(data, 'model.bin')).toMatchObject({ code: 'invalid_argument', reason: 'content_refused' });
    const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
    expect(() => {
      for (const byte of data) check.update(Buffer.from([byte]));
      check.finish();
    }).toThrow(expect.objectContaining({ reason: 'content_refused' }) as Error);
    expect(() => {
      const whole = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
      whole.update(data);
      whole.finish();
    }).toThrow(expect.objectContaining({ reason: 'content_refused' }) as Error);
  });

  it.each([
    // PyTorch's legacy checkpoint: torch.load(weights_only=False) unpickles the member `pickle`.
    [
      'a legacy PyTorch tar',
      tar([
        { name: 'sys_info', data: PICKLE },
        { name: 'pickle', data: IMPORTING },
      ]),
    ],
    [
      'a pickle that imports, in any member',
      tar([
        { name: 'notes.txt', data: Buffer.from('hi') },
        { name: 'w.bin', data: IMPORTING },
      ]),
    ],
    ['a member named as a pickle', tar([{ name: 'model/state.PKL', data: Buffer.from('anything') }])],
    [
      'a pickle named by a GNU long name',
      tar([
        { name: '././@LongLink', type: 'L', data: Buffer.from(`${'d/'.repeat(60)}state.pkl\0`) },
        { name: 'd/d/d/truncated', data: Buffer.from('x') },
      ]),
    ],
    [
      'a pickle named by a PAX path',
      tar([
        { name: 'PaxHeader', type: 'x', data: Buffer.from('27 path=deep/model.pickle\n') },
        { name: 'short', data: Buffer.from('x') },
      ]),
    ],
    ['a NumPy array of Python objects', npy("'|O'", IMPORTING)],
    ['a NumPy record with an object field', npy("[('a', '<f8'), ('b', '|O')]", IMPORTING)],
    // The type alone refuses these: their pickle (None) imports nothing.
    ['a NumPy array of objects, its type in double quotes', npy('"|O"', NONE_PICKLE)],
    ['a NumPy array of objects, its type after 1,000 bytes of its header', npy("'|O'", NONE_PICKLE, 1000)],
  ])('refuses %s, whole or a byte at a time', (_label, data) => {
    expect(upload(data, 'model.bin')).toMatchObject({ code: 'invalid_argument', reason: 'content_refused' });
    const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
    expect(() => {
      for (let i = 0; i < data.length; i++) check.update(data.subarray(i, i + 1));
      check.finish();
    }).toThrow(expect.objectContaining({ reason: 'content_refused' }));
  });

  it('passes tars and NumPy arrays without a pickle', () => {
    const dataset = tar([
      { name: 'data/train.csv', data: Buffer.from('a,b\n1,2\n') },
      { name: 'data/', type: '5', data: Buffer.alloc(0) },
      { name: 'weights.bin', data: Buffer.alloc(3000, 7) },
    ]);
    expect(upload(dataset, 'data.tar')).toBe(sha(dataset));
    const floats = npy("'<f8'", Buffer.alloc(8, 1));
    expect(upload(floats, 'x.npy')).toBe(sha(floats));
    // An image's bytes, as np.save writes a uint8 array.
    const pixels = npy("'|u1'", Buffer.alloc(8, 200));
    expect(upload(pixels, 'image.npy')).toBe(sha(pixels));
    // Bytes after a tar's end, and a stream that only looks like one, are not read as members.
    const after = Buffer.concat([dataset, Buffer.from('trailing')]);
    expect(upload(after, 'data.tar')).toBe(sha(after));
  });

  it('passes a Java class file, whose magic a universal Mach-O shares', () => {
    const javaClass = Buffer.concat([Buffer.from('cafebabe00000034', 'hex'), Buffer.alloc(60)]);
    expect(upload(javaClass, 'Main.class')).toBe(sha(javaClass));
  });

  it('passes a ZIP without a pickle, and reads a flood of made-up headers through to its end', () => {
    const archive = zip([{ name: 'model/weights.bin' }, { name: 'model/config.json' }]);
    expect(upload(archive, 'model.zip')).toBe(sha(archive));
    const behind = Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(600, 0x20), archive]);
    expect(upload(behind, 'model.bin')).toBe(sha(behind));
    // 4 MiB of local headers back to back, each with a 2-byte name: each is read and passed over.
    const fake = Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(22), 2, 0, 0, 0, 0x61, 0x62]);
    const flood = Buffer.concat(Array.from({ length: (4 * 1024 * 1024) / fake.length }, () => fake));
    const check = createUploadCheck().begin({ name: 'model.zip', sha256: sha(flood) });
    for (let i = 0; i < flood.length; i += 64 * 1024) check.update(flood.subarray(i, i + 64 * 1024));
    expect(check.finish()).toBe(sha(flood));
  });

  it('refuses headers nested in the names of headers before them past a few, as no writer makes them', () => {
    // A header every 4 bytes, each claiming a 1 KiB name and a 19 KiB extra field over the next.
    const everyFour = Buffer.alloc(64 * 1024);
    for (let at = 0; at < everyFour.length; at += 4) everyFour.write('PK\x03\x04', at, 'latin1');
    // Headers 30 bytes apart, each claiming a 64 KiB name.
    const fake = Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(22), 0xff, 0xff, 0, 0]);
    const claiming = Buffer.concat(Array.from({ length: 8 * 1024 }, () => fake));
    for (const flood of [everyFour, claiming]) {
      expect(upload(flood, 'model.bin')).toMatchObject({ reason: 'content_refused' });
    }
    // A few, as a CRC-32 or an offset that spells a signature may make, are read and passed over.
    const few = Buffer.concat([...Array.from({ length: 60 }, () => fake), Buffer.alloc(64 * 1024, 0x20)]);
    expect(upload(few, 'model.bin')).toBe(sha(few));
  });

  describe('an .npz (a ZIP of .npy members)', () => {
    // The descr alone says objects: the pickle after it need not import a name to be refused.
    const objects = npy("'|O'", NONE_PICKLE);
    const floats = npy("'<f8'", Buffer.alloc(64, 1));
    const longObjects = npy("'|O'", NONE_PICKLE, 9000);
    /** The upload's verdict when its bytes come in pieces of `size`. */
    const inPieces = (data: Buffer, size: number) => {
      const check = createUploadCheck().begin({ name: 'arrays.npz', sha256: sha(data) });
      try {
        for (let at = 0; at < data.length; at += size) check.update(data.subarray(at, at + size));
        return check.finish();
      } catch (error) {
        return error as { reason: string };
      }
    };

    it.each([
      ['a stored member that is an array of Python objects', zip([{ name: 'arr_0.npy', data: objects }])],
      [
        'one behind other members, named as no array (NumPy reads any member by its magic)',
        zip([
          { name: 'a.npy', data: floats },
          { name: 'weights', data: objects },
        ]),
      ],
      ['one behind an extra field', zip([{ name: 'arr_0.npy', data: objects, extra: Buffer.alloc(3000, 7) }])],
      // NumPy reads a header up to 10,000 bytes long; a structured type with many fields makes one.
      ['one whose header puts its type past 512 bytes', zip([{ name: 'arr_0.npy', data: longObjects }])],
      // Python's zipfile takes the method from the central directory, not from the local header.
      ['one whose local header says deflated', zip([{ name: 'arr_0.npy', data: objects, method: 8 }])],
      ['one behind other bytes', Buffer.concat([Buffer.from('GIF89a'), zip([{ name: 'x.npy', data: objects }])])],
      [
        'one whose header is cut short by the end of the upload',
        Buffer.concat([
          zip([{ name: 'a.npy', data: floats }]).subarray(0, 30),
          Buffer.from('a.npy'),
          objects.subarray(0, 80),
        ]),
      ],
    ])('refuses %s, in one piece and byte by byte', (_label, archive) => {
      expect(inPieces(archive, archive.length)).toMatchObject({ reason: 'content_refused' });
      expect(inPieces(archive, 1)).toMatchObject({ reason: 'content_refused' });
      expect(inPieces(archive, 7)).toMatchObject({ reason: 'content_refused' });
    });

    // Each of these, as a .npy or an .npz member, took np.load(allow_pickle=True) (NumPy 2.4) to
    // its pickle, which imported posix.system, as an outside pass showed.
    it.each([
      ["a list of 2-character strings (descr_to_dtype reads 'xO' as a field x of type O)", "['xO']"],
      ['a dict of 2-character keys', "{'xO': 0}"],
      ['a type string with a space', "'2 O'"],
      ['a type string with a space after it', "'1O '"],
      ['a type name after a repeat count and a space', "'2 object'"],
      ['a type string with a tab', "'1|O\t'"],
      ['comma-separated fields with a space', "'2 O8,i4'"],
      ['a field whose type has a space', "[('a', '2 O')]"],
      ['variable-width strings, which NumPy pickles', "'<T'"],
      ["the object type's number", "'\x11'"],
    ])(
      'refuses an array whose descr is %s: as a .npy, a stored and a deflated member, in pieces of any size',
      (_label, descr) => {
        const array = npy(descr, IMPORTING);
        const uploads = [
          array,
          zip([{ name: 'arr_0.npy', data: array }]),
          zip([
            { name: 'readme.txt', data: Buffer.from('\n\xff') },
            { name: 'arr_0.npy', data: deflateRawSync(array), method: 8 },
          ]),
        ];
        for (const data of uploads) {
          for (const size of [1, 7, 4096, 65_536])
            expect(inPieces(data, size)).toMatchObject({ reason: 'content_refused' });
        }
      },
    );

    // zipfile.ZipFile(f, 'w', compression=ZIP_LZMA or ZIP_BZIP2).writestr('objects.npy', <np.save of
    // np.array([None, {'k': 1}], dtype=object)>): np.load(allow_pickle=True) unpickles the member.
    const LZMA_OBJECTS = Buffer.from(
      'UEsDBD8AAgAOAHQjhF044nhB2gAAAB8BAAALAAAAb2JqZWN0cy5ucHkJBAUAXQAAgAAASZOGpN7TgnlqWw0jODarnZ1MTe7jbcMxYR0apQ/XnAr1k3szS/2duK0AcqeVbalPF4NHVHXgJ3h+TPopMYggkPZbwMQBUgDlb7Z8gbbvaPh5zpUKeY3WIQ9AmjHnASiLwmouzdimbI9hbaFpygvlRBEQfTzHXn3YZGiSIlgnbz3JOu2vEBoz+wrIYkOQqVDIvRASSW/hauMktKm61Us34W3Xw6Na2H3d0KSMVXwEeHd3qvuNMtrce1P5cbwDfaMqp8bCnrfVgTp4Zar/tCYAAFBLAQI/Az8AAgAOAHQjhF044nhB2gAAAB8BAAALAAAAAAAAAAAAAACAAQAAAABvYmplY3RzLm5weVBLBQYAAAAAAQABADkAAAADAQAAAAA=',
      'base64',
    );
    const BZIP2_OBJECTS = Buffer.from(
      'UEsDBC4AAAAMAHUjhF044nhBCwEAAB8BAAALAAAAb2JqZWN0cy5ucHlCWmg5MUFZJlNZw6+iSwAAYf/g/pQBAEDlEHCJG9Iiv2/fLkLkDgAAALAAutCInqn6pkZpBk0aGjIaGmmgAeoNH6kIqbCnqNlMRpkGmTTTRoxMRk0yG1GgamlNPUYQNMTTIDI0yaaZMmINDQtI34XKnXictOQIcr9iRnSFjIzjSDkd+rmXlAGUyNCNWz0O6Ryy0h9sdb4sphYGcgIy+ZJyCvtOZc1GKTt1EGweh5+6UG19LsJAOAhlONKLD4MwuqalvOVT0bikCNLZwOGPEAiFSwzANh6BnyonWglwKTaAVO6Y1lnxnmnEFpSlCcrCKqQ+nQdFQXwJw1tBKiNkzBFQfxdyRThQkMOvoktQSwECLgMuAAAADAB1I4RdOOJ4QQsBAAAfAQAACwAAAAAAAAAAAAAAgAEAAAAAb2JqZWN0cy5ucHlQSwUGAAAAAAEAAQA5AAAANAEAAAAA',
      'base64',
    );

    it.each([
      ["compressed with LZMA (Python's zipfile)", LZMA_OBJECTS],
      ['compressed with bzip2', BZIP2_OBJECTS],
      // Python's zipfile takes the method from the central directory; Zstandard from Python 3.14 on.
      [
        'said to be Zstandard by its central header only',
        withCentralMethod(zip([{ name: 'a.npy', data: Buffer.from('compressed bytes') }]), 93),
      ],
      // Python's zipfile cuts a central name short at the directory's end and opens the entry.
      [
        'compressed with LZMA, its local header saying stored and its central name running past the end',
        (() => {
          const archive = Buffer.from(LZMA_OBJECTS);
          archive.writeUInt16LE(0, 8);
          archive.writeUInt16LE(300, archive.indexOf('PK\x01\x02', 0, 'latin1') + 28);
          return archive;
        })(),
      ],
      [
        'said to be LZMA by its local header only (another reader may follow it)',
        withCentralMethod(zip([{ name: 'a.npy', data: Buffer.from('bytes'), method: 14 }]), 0),
      ],
    ])('refuses an archive with a member %s: it cannot be read for an array of objects', (_label, archive) => {
      for (const size of [1, 7, archive.length])
        expect(inPieces(archive, size)).toMatchObject({ reason: 'content_refused' });
    });

    // np.savez_compressed(f, weights=np.array([1.5, 2.5]), objects=np.array([{'k': 1}, None], dtype=object)),
    // and np.savez_compressed(f, weights=np.arange(6.0).reshape(2, 3), labels=np.array(['a', 'bc'])) (NumPy 2.4).
    const SAVEZ_COMPRESSED_OBJECTS = Buffer.from(
      'UEsDBC0AAAAIAAAAIQCU3hHI//////////8LABQAd2VpZ2h0cy5ucHkBABAAkAAAAAAAAABMAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqGuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6mjoKtQoUAC4GMPhhD6FZHABQSwMELQAAAAgAAAAhALYx+s7//////////wsAFABvYmplY3RzLm5weQEAEAAfAQAAAAAAAM0AAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgXuOvrqOgnpZfVFKUmBefX5SSChJ2S8wpTgWKF2ckFqQC+RpGOpo6CrUKlACuBpapUxggoEcsrzS3oFIvPjm/KFUvtzSnJDOxqCixckoPT3xRanJ+XnFJUWlyyZTJU3pYwSqn9LDnpUCUTJ7izdA6xZkxaUr7lKApGt6M3kytUzKYe1hTSioLUkFamPwtpnR2QGSZexhrpvj5+Xn9BwIw4W1fMiWpM3aKRu2UHsbsKd6MxX6pQBE9AFBLAQItAy0AAAAIAAAAIQCU3hHITAAAAJAAAAALAAAAAAAAAAAAAACAAQAAAAB3ZWlnaHRzLm5weVBLAQItAy0AAAAIAAAAIQC2MfrOzQAAAB8BAAALAAAAAAAAAAAAAACAAYkAAABvYmplY3RzLm5weVBLBQYAAAAAAgACAHIAAACTAQAAAAA=',
      'base64',
    );
    const SAVEZ_COMPRESSED_NUMBERS = Buffer.from(
      'UEsDBC0AAAAIAAAAIQDwzTtG//////////8LABQAd2VpZ2h0cy5ucHkBABAAsAAAAAAAAABXAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqGuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CsaaOgq1CmQDLgYU8MEeynCAUBxQWgBKizgAAFBLAwQtAAAACAAAACEAcEdtlv//////////CgAUAGxhYmVscy5ucHkBABAAkAAAAAAAAABNAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG4TaqSuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6mjoKtQoUAK5EBghIAuJkIAYAUEsBAi0DLQAAAAgAAAAhAPDNO0ZXAAAAsAAAAAsAAAAAAAAAAAAAAIABAAAAAHdlaWdodHMubnB5UEsBAi0DLQAAAAgAAAAhAHBHbZZNAAAAkAAAAAoAAAAAAAAAAAAAAIABlAAAAGxhYmVscy5ucHlQSwUGAAAAAAIAAgBxAAAAHQEAAAAA',
      'base64',
    );

    // np.savez_compressed(f, rows=np.zeros(1, dtype=[(f'c{i:02d}', '<f4') for i in range(70)] + [('payload', 'O')])):
    // a header of 1,270 bytes, its one object field last (NumPy 2.4).
    const SAVEZ_COMPRESSED_OBJECT_FIELD_LAST = Buffer.from(
      'UEsDBC0AAAAIAAAAIQBDYEB+//////////8IABQAcm93cy5ucHkBABAARAwAAAAAAACUAwAAAAAAAO3UP2xbVRiGcZu4SoUyBAgl0AIGCnYghJy/cUqghZa21I0TSltApAqu7chIaWw5jkREKnWg0EoekHKQGBgYGBgYGBg6dGBgYGBgYGBgYGBgYGBAiAEJnvu1Q/PNiKke7u+c1I/0SrXudu3M/OIb+dyfhXdLzdZ6o1c6UHyzXGpMT5cmi6W5FV+amCxmd6PuVt2dunt1D+oe1X1G3SvqPrvzbtQ+o/YZtc+ofUbtM2qfUfuM2mfUPqP2WbXPqn1W7bNqn1X7rNpn1T6r9lm1z6p9Tu1zap9T+5za59Q+p/Y5tc+pfU7tc2qfV/u82ufVPq/2ebXPq31e7fNqn1f7vNoX1L6g9gW1L6h9Qe0Lal9Q+4LaF9S+oPZFtS+qfVHti2pfVPui2hfVvqj2RbUv7tzXrW+udurN7G9bC6WJc7jS6fV79bXlTq/Zyt5CR+ur6y3+vt6ud1vcy2aS9GLxP/3ceanw0exwTj6DPWsbF7qbU8uNTq81dWFjtf92vderb6bByHKv1eisrfd7G41+2k6DXfLNNBhea974ynaq5i6nw/nz6YN0KpWr+Wr+cmoPDXY1+5vdVpYUztpKJV29cuPfhwb5rVQrD4Z40absaeRp5enk6eUZ5BnlOSPPijxns6eR1khrpDXSGmmNtEZaI62R1khrpbXSWmmttFZaK62V1kprpbXSOmmdtE5aJ62T1knrpHXSOmmdtF5aL62X1kvrpfXSemm9tF5aL22QNkgbpA3SBmmDtEHaIG2QNkgbpY3SRmmjtFHaKG2UNkobpY20wzd/rKmfLqZy+672yOCOFX/rf+VcqtVqJ/7hI49qrp/OV3Pvp/bd7aVqAe/B3TiGI3gvjuIeHMP7cBzHcR/ej0V8APfjXizjPpzEB3EaH0KPD2MFiziHj+AhfBSP4GN4HPfjSXwcF/EJPI0lfB3LuIQT+BY+iU18Cts4iav4NHZxCvv4DL6D07iFBi+hxffQ4RX0OMCAH2LEhDP4MVbwE5zFT/EAfobP4uc4h1/gc/glPo9f4UG8hofwOr6AX+OL+A0exm/xCH6HL+H3eBR/wGP4Ix7Hn/Bl/BlP4C9YxV/xJP6G8/g71vAPXMC/cBH/xlfaS/O5PIdTHArZ4VUOu7PDaQ4j2eEMh9HscJbDWHZ4LftlLdzykmiP7vxdHeR3NT/OVzfmi7xhqnu5Xz2XysdyNz+3D7cP/9she83V+QVO/QtQSwECLQMtAAAACAAAACEAQ2BAfpQDAABEDAAACAAAAAAAAAAAAAAAgAEAAAAAcm93cy5ucHlQSwUGAAAAAAEAAQA2AAAAzgMAAAAA',
      'base64',
    );

    it.each<[string, Buffer]>([
      ["np.savez_compressed's archive with an array of objects", SAVEZ_COMPRESSED_OBJECTS],
      [
        "np.savez_compressed's archive with a structured array whose last field is an object",
        SAVEZ_COMPRESSED_OBJECT_FIELD_LAST,
      ],
      [
        'a deflated member whose header puts its type past 512 bytes',
        zip([{ name: 'arr_0.npy', data: deflateRawSync(longObjects), method: 8 }]),
      ],
      // Stored blocks: more than the first read's 4 KiB of compressed data come before the type.
      [
        'a member deflated at level 0 whose header puts its type past 4 KiB',
        zip([{ name: 'arr_0.npy', data: deflateRawSync(longObjects, { level: 0 }), method: 8 }]),
      ],
      ...[0, 1, 6, 9].map((level): [string, Buffer] => [
        `a deflated member at level ${String(level)}, named as no array`,
        zip([
          { name: 'a.npy', data: deflateRawSync(floats), method: 8 },
          { name: 'weights', data: deflateRawSync(objects, { level }), method: 8 },
        ]),
      ]),
      [
        'a deflated member with fixed codes',
        zip([{ name: 'x.npy', data: deflateRawSync(objects, { strategy: constants.Z_FIXED }), method: 8 }]),
      ],
      // Python's zipfile takes the method from the central directory, not from the local header.
      [
        'a deflated member whose local header says stored',
        (() => {
          const archive = zip([{ name: 'x.npy', data: deflateRawSync(objects), method: 8 }]);
          archive.writeUInt16LE(0, 8);
          return archive;
        })(),
      ],
      [
        'a deflated member behind five empty blocks (zlib reads them; no writer makes them)',
        zip([
          {
            name: 'x.npy',
            data: Buffer.concat([
              ...Array.from({ length: 5 }, () => Buffer.from('000000ffff', 'hex')),
              deflateRawSync(objects),
            ]),
            method: 8,
          },
        ]),
      ],
      [
        'a deflated member cut short by the end of the upload',
        Buffer.concat([
          zip([{ name: 'a.npy', data: floats }]).subarray(0, 30),
          Buffer.from('a.npy'),
          deflateRawSync(objects).subarray(0, 40),
        ]),
      ],
    ])('refuses %s, in one piece and byte by byte', (_label, archive) => {
      expect(inPieces(archive, archive.length)).toMatchObject({ reason: 'content_refused' });
      expect(inPieces(archive, 1)).toMatchObject({ reason: 'content_refused' });
      expect(inPieces(archive, 7)).toMatchObject({ reason: 'content_refused' });
    });

    it('passes compressed members of numbers and anything deflated that is no array', () => {
      expect(inPieces(SAVEZ_COMPRESSED_NUMBERS, 1)).toBe(sha(SAVEZ_COMPRESSED_NUMBERS));
      expect(inPieces(SAVEZ_COMPRESSED_NUMBERS, SAVEZ_COMPRESSED_NUMBERS.length)).toBe(sha(SAVEZ_COMPRESSED_NUMBERS));
      const text = Buffer.from('weights and biases, '.repeat(500));
      const many = zip(
        Array.from({ length: 300 }, (_, i) => ({
          name: `doc/${String(i)}.txt`,
          data: deflateRawSync(text.subarray(0, 20 + i * 7), { level: i % 10 }),
          method: 8,
        })),
      );
      expect(inPieces(many, 64 * 1024)).toBe(sha(many));
      expect(inPieces(many, 5)).toBe(sha(many));
    });

    it('passes members of numbers, and arrays of objects only where they are not a member', () => {
      const numbers = zip([
        { name: 'a.npy', data: floats },
        { name: 'b.npy', data: npy("'<i4'", Buffer.alloc(16)) },
      ]);
      expect(inPieces(numbers, 1)).toBe(sha(numbers));
      // The magic and descr inside a member's data, not at its start: no reader takes it for an array.
      const inside = zip([{ name: 'notes.txt', data: Buffer.concat([Buffer.from('see: '), objects]) }]);
      expect(inPieces(inside, 3)).toBe(sha(inside));
    });

    it('passes members of numbers whose headers are long, stored and deflated, read whole', () => {
      const long = npy("'<f8'", Buffer.alloc(64, 1), 9000);
      const archive = zip([
        { name: 'a.npy', data: long },
        { name: 'b.npy', data: deflateRawSync(long), method: 8 },
        { name: 'c.npy', data: deflateRawSync(long, { level: 0 }), method: 8 },
      ]);
      for (const size of [1, 7, 4096, archive.length]) expect(inPieces(archive, size)).toBe(sha(archive));
      // A thousand empty tables of 100 columns each, compressed: their headers (2.5 KB each) take
      // several times the bytes they were sent in, as real ones may.
      const columns = Array.from({ length: 100 }, (_, i) => `('column_${String(i).padStart(3, '0')}', '<f8')`);
      const table = npy(`[${columns.join(', ')}]`, Buffer.alloc(0));
      const tables = zip(
        Array.from({ length: 1000 }, (_, i) => ({ name: `t${String(i)}.npy`, data: deflateRawSync(table), method: 8 })),
      );
      expect(inPieces(tables, 64 * 1024)).toBe(sha(tables));
    });

    it('reads a flood of made-up headers whose data starts as an array to its end; refuses one whose long extra fields hold the next', () => {
      const fakeArray = Buffer.concat([Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(26)]), floats]);
      const arrays = Buffer.concat(
        Array.from({ length: Math.ceil((4 * 1024 * 1024) / fakeArray.length) }, () => fakeArray),
      );
      expect(inPieces(arrays, 64 * 1024)).toBe(sha(arrays));
      // An array's header every 37 bytes: closer than any real archive holds them, each read.
      const close = Buffer.concat([Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(26)]), floats.subarray(0, 7)]);
      const packed = Buffer.concat(Array.from({ length: Math.ceil((1024 * 1024) / close.length) }, () => close));
      expect(inPieces(packed, 64 * 1024)).toMatchObject({ reason: 'content_refused' });
      // As close as real ones may be: a thousand arrays of one number each, local and central headers.
      const tiny = zip(
        Array.from({ length: 1000 }, (_, i) => ({ name: `${String(i)}.npy`, data: npy("'<f8'", Buffer.alloc(8)) })),
      );
      expect(inPieces(tiny, 64 * 1024)).toBe(sha(tiny));
      const fakeExtra = Buffer.from([0x50, 0x4b, 3, 4, ...Buffer.alloc(24), 0xff, 0xff]);
      const extras = Buffer.concat(
        Array.from({ length: Math.ceil((1024 * 1024) / fakeExtra.length) }, () => fakeExtra),
      );
      expect(inPieces(extras, 64 * 1024)).toMatchObject({ reason: 'content_refused' });
    });
    it('refuses a flood of made-up entries whose dynamic block code lengths run over the entries after them; passes real ones', () => {
      // A local header, a name, and a dynamic block header whose code-length code is {0: one bit,
      // 8: one bit}: its 316 code lengths take the next 40 bytes, whatever they are.
      const bits = [0, 0, 1, ...[29, 29].flatMap((v) => [0, 1, 2, 3, 4].map((i) => (v >> i) & 1)), 1, 0, 0, 0];
      for (const v of [0, 0, 0, 1, 1]) bits.push(...[0, 1, 2].map((i) => (v >> i) & 1));
      const dynamic = Buffer.from(
        [0, 1, 2, 3].map((k) => bits.slice(8 * k, 8 * k + 8).reduce((sum, bit, j) => sum | (bit << j), 0)),
      );
      const entry = Buffer.concat([zip([{ name: 'a', data: Buffer.alloc(0) }]).subarray(0, 31), dynamic]);
      const flood = Buffer.concat(Array.from({ length: Math.ceil((1024 * 1024) / entry.length) }, () => entry));
      expect(inPieces(flood, 64 * 1024)).toMatchObject({ reason: 'content_refused' });
      // As far apart as real compressed members, each with a block header of its own.
      const apart = Buffer.concat([entry, Buffer.alloc(200 - entry.length, 0x55)]);
      const sparse = Buffer.concat(Array.from({ length: Math.ceil((1024 * 1024) / apart.length) }, () => apart));
      expect(inPieces(sparse, 64 * 1024)).toBe(sha(sparse));
      const words = Array.from({ length: 120 }, (_, i) => `word${String((i * 7919) % 1000)}`).join(' ');
      const members = zip(
        Array.from({ length: 2000 }, (_, i) => ({
          name: `text/${String(i)}.txt`,
          data: deflateRawSync(`${String(i)} ${words}`, { level: 9 }),
          method: 8,
        })),
      );
      expect(inPieces(members, 64 * 1024)).toBe(sha(members));
      expect(inPieces(members.subarray(0, 256 * 1024), 1)).toBe(sha(members.subarray(0, 256 * 1024)));
    });
  });

  it('allows what a rule allows: a pickle when pickles are not refused, only listed extensions and types', () => {
    expect(typeof upload(PICKLE, 'model.bin', { refuseKinds: [] })).toBe('string');
    const onlyText = { allowedExtensions: ['.txt'], allowedContentTypes: ['text/plain'] };
    expect(typeof upload(Buffer.from('hi'), 'a.txt', onlyText, undefined, 'text/plain; charset=utf-8')).toBe('string');
    expect(upload(Buffer.from('hi'), 'a.csv', onlyText, undefined, 'text/plain')).toMatchObject({
      reason: 'extension_refused',
    });
    expect(upload(Buffer.from('hi'), 'a.txt', onlyText, undefined, 'text/html')).toMatchObject({
      reason: 'content_type_refused',
    });
  });

  it('refuses bad options', () => {
    expect(() => createUploadCheck({ refuseKinds: ['shellcode' as never] })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ refusedExtensions: ['pt'] })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ refuseKind: [] } as UploadCheckOptions)).toThrow('did you mean "refuseKinds"');
  });
});

describe('createUploadCheck, compressed uploads', () => {
  // A tar that holds a large member of zeros first and a pickle that imports after it.
  const hiddenBehindZeros = (zeros: number) =>
    tar([
      { name: 'zeros.bin', data: Buffer.alloc(zeros) },
      { name: 'w.bin', data: IMPORTING },
    ]);

  it.each([
    ['a gzip pickle that imports (joblib decompresses it)', gzipSync(IMPORTING)],
    ['a zlib pickle that imports (joblib: a file starting with x)', deflateSync(IMPORTING)],
    ['a zlib pickle at the best compression', deflateSync(IMPORTING, { level: 9 })],
    ['a gzip pickle of protocol 4, by its header', gzipSync(PICKLE)],
    ['a protocol 0 pickle, gzip', gzipSync(Buffer.from("cos\nsystem\n(S'id'\ntR."))],
    ['a legacy PyTorch tar, gzip', gzipSync(tar([{ name: 'pickle', data: IMPORTING }]))],
    [
      'a tar.gz with a pickle that imports behind other members',
      gzipSync(
        tar([
          { name: 'README', data: Buffer.from('a model') },
          { name: 'm/w.bin', data: IMPORTING },
        ]),
      ),
    ],
    ['a tar.gz member named as a pickle', gzipSync(tar([{ name: 'm/state.pkl', data: Buffer.from('x') }]))],
    [
      'a pickle in the second member of a gzip file (Python reads them as one stream)',
      Buffer.concat([gzipSync(IMPORTING.subarray(0, 12)), gzipSync(IMPORTING.subarray(12))]),
    ],
    ['a NumPy object array, gzip', gzipSync(npy("'|O'", IMPORTING))],
  ])('refuses %s, in any chunks', (_label, data) => {
    expect(upload(data, 'model.bin')).toMatchObject({ code: 'invalid_argument', reason: 'content_refused' });
    for (const size of [1, data.length]) {
      const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
      expect(() => {
        for (let i = 0; i < data.length; i += size) check.update(data.subarray(i, i + size));
        check.finish();
      }).toThrow(expect.objectContaining({ reason: 'content_refused', details: { field: 'content' } }));
    }
  });

  it('refuses a gzip pickle sent a byte at a time once its first KiB is here, while the sender holds the rest', () => {
    // Rows of numbers after the pickle: the stream runs to 16 KiB and more, in Huffman blocks
    // the inflater hands on as they come (a stored block it hands on only whole).
    const rows = Array.from({ length: 8000 }, (_, i) => `${String(i)},${String((i * 7919) % 10007)}\n`).join('');
    const data = gzipSync(Buffer.concat([IMPORTING, Buffer.from(rows)]));
    expect(data.length).toBeGreaterThan(16 * 1024);
    const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(data) });
    let sent = 0;
    expect(() => {
      for (; sent < data.length; sent++) check.update(data.subarray(sent, sent + 1));
    }).toThrow(expect.objectContaining({ reason: 'content_refused' }));
    expect(sent).toBeLessThan(2048);
  });

  it('reads a gzip stream whose header (a file name) runs past the first bytes gathered, in pieces of any size', () => {
    // FNAME set, and a 3,000-byte name before the deflate data: Python's gzip reads past it.
    const plain = gzipSync(IMPORTING);
    const named = Buffer.concat([
      plain.subarray(0, 3),
      Buffer.from([(plain[3] ?? 0) | 0x08]),
      plain.subarray(4, 10),
      Buffer.alloc(3000, 0x61),
      Buffer.from([0]),
      plain.subarray(10),
    ]);
    for (const size of [1, 7, 1000, 1024, 4096, named.length]) {
      const check = createUploadCheck().begin({ name: 'model.bin', sha256: sha(named) });
      expect(() => {
        for (let at = 0; at < named.length; at += size) check.update(named.subarray(at, at + size));
        check.finish();
      }, String(size)).toThrow(expect.objectContaining({ reason: 'content_refused' }));
    }
    const text = gzipSync(Buffer.from('a,b\n1,2\n'.repeat(1000)));
    const namedText = Buffer.concat([
      text.subarray(0, 3),
      Buffer.from([0x08]),
      text.subarray(4, 10),
      Buffer.alloc(3000, 0x61),
      Buffer.from([0]),
      text.subarray(10),
    ]);
    for (const size of [1, 7, 1024]) {
      const check = createUploadCheck().begin({ name: 'data.csv.gz', sha256: sha(namedText) });
      for (let at = 0; at < namedText.length; at += size) check.update(namedText.subarray(at, at + size));
      expect(check.finish()).toBe(sha(namedText));
    }
  });

  it('passes compressed content without a pickle, and text that only starts like zlib', () => {
    const csv = gzipSync(Buffer.from('a,b\n1,2\n'.repeat(1000)));
    expect(upload(csv, 'data.csv.gz')).toBe(sha(csv));
    const dataset = gzipSync(
      tar([
        { name: 'data/train.csv', data: Buffer.from('a,b\n1,2\n') },
        { name: 'weights.bin', data: Buffer.alloc(300_000, 7) },
      ]),
    );
    expect(upload(dataset, 'data.tar.gz')).toBe(sha(dataset));
    const zlibText = deflateSync(Buffer.from('plain text, compressed'));
    expect(upload(zlibText, 'notes.z')).toBe(sha(zlibText));
    // 'x^2' is a zlib header by its check value; the rest does not inflate, so no reader unpickles it.
    const formula = Buffer.from('x^2 + y^2 = z^2, and some more text after it');
    expect(upload(formula, 'notes.txt')).toBe(sha(formula));
    const gzipLike = Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.from('not a gzip stream at all')]);
    expect(upload(gzipLike, 'a.bin')).toBe(sha(gzipLike));
  });

  it('stops inflating a bomb as soon as its content is known to hold no pickle', () => {
    // 256 MiB of zeros in about 256 KiB: zeros are no pickle and no tar, so a few KiB are inflated.
    const bomb = gzipSync(Buffer.alloc(256 * 1024 * 1024), { level: constants.Z_BEST_COMPRESSION });
    expect(bomb.length).toBeLessThan(300 * 1024);
    expect(upload(bomb, 'zeros.gz')).toBe(sha(bomb));
    // In the pieces a server reads (one of 8 KiB inflates to 8 MiB here), and whole.
    for (const size of [64 * 1024, bomb.length]) {
      const check = createUploadCheck().begin({ name: 'zeros.gz', sha256: sha(bomb) });
      for (let i = 0; i < bomb.length; i += size) check.update(bomb.subarray(i, i + size));
      expect(check.finish()).toBe(sha(bomb));
    }
  });

  it('checks a chunk in slices with other work run between them, refusing as update does, until the signal aborts', async () => {
    // A header to read every 512 bytes inflated: the content that costs the check most per byte sent.
    const flood = gzippedEmptyMembers(20_000);
    const slices = Math.ceil(flood.length / (64 * 1024));
    expect(slices).toBeGreaterThan(8);
    const sliced = createUploadCheck().begin({ name: 'data.tar.gz', sha256: sha(flood) });
    expect(await loopTurnsWhile(sliced.updateInSlices(flood))).toBeGreaterThanOrEqual(slices / 2);
    expect(sliced.finish()).toBe(sha(flood));

    const hidden = gzippedEmptyMembers(20_000, [{ name: 'weights.bin', data: IMPORTING }]);
    const refused = createUploadCheck().begin({ name: 'data.tar.gz', sha256: sha(hidden) });
    await expect(refused.updateInSlices(hidden)).rejects.toMatchObject({ reason: 'content_refused' });

    const deadline = new AbortController();
    const stopped = createUploadCheck().begin({ name: 'data.tar.gz', sha256: sha(hidden) });
    const checking = stopped.updateInSlices(hidden, deadline.signal);
    const reason = new Error('deadline');
    setImmediate(() => {
      deadline.abort(reason);
    });
    await expect(checking).rejects.toBe(reason);
  });

  it('checks uploads that arrive together in turns, other work run between them', async () => {
    // 12 KB each that inflate to 12 MiB of pickle opcodes: one slice of a check, tens of ms of CPU.
    const bomb = gzipSync(Buffer.from('I1\n'.repeat(4 * 1024 * 1024)), { level: constants.Z_BEST_COMPRESSION });
    expect(bomb.length).toBeLessThan(16 * 1024);
    const checks = createUploadCheck();
    // Messages of as many connections, arrived in one read of the event loop: checked back to
    // back, twenty such held it for more than a second.
    const together = Promise.all(
      Array.from({ length: 8 }, async () => {
        const upload = checks.begin({ name: 'data.gz', sha256: sha(bomb) });
        await upload.updateInSlices(bomb);
        return upload.finish();
      }).map((checking) => checking.catch((refusal: unknown) => refusal)),
    );
    // None is checked as it is handed over, and they do not all run in one turn.
    expect(await loopTurnsWhile(together)).toBeGreaterThanOrEqual(2);
    for (const refusal of await together) expect(refusal).toMatchObject({ reason: 'compression_ratio_exceeded' });
  });

  it('refuses content that inflates past the ratio while a tar in it is read, the pickle behind it included', () => {
    const bomb = gzipSync(hiddenBehindZeros(64 * 1024 * 1024), { level: constants.Z_BEST_COMPRESSION });
    expect(upload(bomb, 'model.tar.gz')).toMatchObject({
      code: 'invalid_argument',
      reason: 'compression_ratio_exceeded',
      details: { field: 'content' },
    });
    // With a ratio that allows it, the pickle behind the zeros is found.
    expect(upload(bomb, 'model.tar.gz', { maxInflateRatio: 1032 })).toMatchObject({ reason: 'content_refused' });
    // Whole, as one piece: refused all the same.
    const whole = createUploadCheck().begin({ name: 'model.tar.gz', sha256: sha(bomb) });
    expect(() => {
      whole.update(bomb);
      whole.finish();
    }).toThrow(expect.objectContaining({ reason: 'compression_ratio_exceeded' }));
  });

  it('refuses compressed content that stops inflating while a tar or pickle in it is read', () => {
    const archive = gzipSync(
      tar([
        { name: 'a.bin', data: Buffer.alloc(64 * 1024, 1) },
        { name: 'b.bin', data: IMPORTING },
      ]),
    );
    const cut = archive.subarray(0, archive.length - 40);
    expect(upload(cut, 'model.tar.gz')).toMatchObject({ reason: 'content_unreadable', details: { field: 'content' } });
    // A gzip stream of two stored deflate blocks holding a tar's first 8 KiB, then a block of
    // the reserved type 3, which every inflater refuses: the first block's bytes were read.
    const start = tar([{ name: 'a.bin', data: Buffer.alloc(16_384, 1) }]);
    const storedBlock = (data: Buffer) => {
      const head = Buffer.alloc(5);
      head.writeUInt16LE(data.length, 1);
      head.writeUInt16LE(~data.length & 0xffff, 3);
      return Buffer.concat([head, data]);
    };
    const corrupt = Buffer.concat([
      Buffer.from('1f8b0800000000000003', 'hex'),
      storedBlock(start.subarray(0, 4096)),
      storedBlock(start.subarray(4096, 8192)),
      Buffer.from([0x07, 0, 0, 0, 0]),
    ]);
    expect(upload(corrupt, 'model.tar.gz')).toMatchObject({ reason: 'content_unreadable' });
    // A reader asking for a few bytes at a time gets a stored block's start before the fault
    // behind it; the inflater here hands on nothing of the piece that fails.
    const storedPickle = Buffer.concat([storedBlock(IMPORTING), Buffer.from([0x07, 0, 0, 0, 0])]);
    const gzipFault = Buffer.concat([Buffer.from('1f8b0800000000000003', 'hex'), storedPickle]);
    expect(upload(gzipFault, 'model.bin')).toMatchObject({ reason: 'content_unreadable' });
    // A stored block cut short, past the first 8 KiB: its start was readable to such a reader.
    const zlibCut = deflateSync(Buffer.concat([IMPORTING, Buffer.alloc(64 * 1024, 1)]), { level: 0 });
    expect(upload(zlibCut.subarray(0, 20_000), 'model.bin')).toMatchObject({ reason: 'content_unreadable' });
    // joblib reads a zlib file 8 KiB at a time and loses a read that fails: a stream that fails
    // in its first 8 KiB before any output reads as no zlib to it either.
    const zlibFault = Buffer.concat([Buffer.from([0x78, 0x01]), storedPickle]);
    expect(upload(zlibFault, 'model.bin')).toBe(sha(zlibFault));
  });

  /** joblib's format before 0.10, which joblib.load still reads: `ZF`, the length, zlib. */
  const zfile = (content: Buffer, space = '') =>
    Buffer.concat([Buffer.from(`ZF${`0x${content.length.toString(16)}`.padEnd(19)}${space}`), deflateSync(content)]);

  it('refuses a pickle in joblib’s old format (ZF and a zlib stream), with or without the space', () => {
    for (const data of [zfile(IMPORTING), zfile(IMPORTING, ' '), zfile(PICKLE)]) {
      expect(upload(data, 'model.bin')).toMatchObject({ reason: 'content_refused' });
    }
    expect(typeof upload(zfile(Buffer.from('just some text, no pickle')), 'model.bin')).toBe('string');
    // Text that only starts like it: no length joblib reads.
    expect(typeof upload(Buffer.from('ZF is a band name, and this is text about it'), 'notes.txt')).toBe('string');
  });

  it.each([
    ['Zstandard', '28b52ffd'],
    ['a Zstandard skippable frame', '5e2a4d18'],
    ['bzip2', '425a6839'],
    ['xz', 'fd377a585a00'],
    ['legacy lzma', '5d0000'],
    ['an LZ4 frame', '04224d18'],
  ])('refuses %s, which it cannot open, unless told to accept it unread', (_label, magic) => {
    const data = Buffer.concat([Buffer.from(magic, 'hex'), Buffer.alloc(64, 7)]);
    expect(upload(data, 'model.bin')).toMatchObject({
      code: 'invalid_argument',
      reason: 'compression_not_opened',
      details: { field: 'content' },
    });
    expect(typeof upload(data, 'model.bin', { unopenedCompressions: 'accept' })).toBe('string');
    expect(typeof upload(data, 'model.bin', { refuseKinds: ['executable'] })).toBe('string');
  });

  it('refuses a pickle’s extension under a compression’s, as pandas reads the name', () => {
    for (const name of ['model.pkl.zst', 'm/model.PKL.gz', 'model.pkl.tar.gz', 'model.joblib.xz', 'w.pt.zip']) {
      expect(upload(Buffer.from('text'), name), name).toMatchObject({ reason: 'extension_refused' });
    }
    for (const name of ['data.csv.gz', 'archive.tar.gz', 'notes.gz', 'model.bin.zst', 'x.tar']) {
      expect(typeof upload(Buffer.from('text'), name), name).toBe('string');
    }
    // An allowlist reads the last extension, as before.
    expect(typeof upload(Buffer.from('text'), 'data.csv.gz', { allowedExtensions: ['.gz'] })).toBe('string');
  });

  it('checks its unopenedCompressions option', () => {
    expect(() => createUploadCheck({ unopenedCompressions: 'open' as never })).toThrow(
      '"unopenedCompressions" must be "refuse" or "accept"',
    );
    expect(() => createUploadCheck({ refuseKinds: ['executable'], unopenedCompressions: 'accept' })).toThrow(
      /"unopenedCompressions" says what to do with compressed content that cannot be read for pickles/,
    );
  });

  it('opens nothing when pickles are not refused, and checks its ratio option', () => {
    expect(typeof upload(gzipSync(IMPORTING), 'model.bin', { refuseKinds: ['executable'] })).toBe('string');
    expect(() => createUploadCheck({ maxInflateRatio: 0 })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ maxInflateRatio: 2000 })).toThrow('from 1 to 1032');
    expect(() => createUploadCheck({ maxInflateRatio: '16' as never })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ maxInflateRation: 16 } as UploadCheckOptions)).toThrow(
      'did you mean "maxInflateRatio"',
    );
    // Read by nothing: no compressed content is opened without pickles to look for.
    expect(() => createUploadCheck({ refuseKinds: ['executable'], maxInflateRatio: 16 })).toThrow(
      /"maxInflateRatio" bounds the compressed content read for pickles, and "refuseKinds" has no "pickle"/,
    );
  });

  it('refuses an allowlist that reads as allowing what stays refused, or allows nothing', () => {
    // The default refusedExtensions wins: `model.pt` was still refused under this allowlist.
    expect(() => createUploadCheck({ allowedExtensions: ['.pt', '.bin'] })).toThrow(
      'createUploadCheck: "allowedExtensions" lists ".pt", which "refusedExtensions" refuses (it does by default): take it out of refusedExtensions to allow it',
    );
    expect(() => createUploadCheck({ allowedExtensions: [] })).toThrow(/is empty and would refuse every name/);
    expect(() => createUploadCheck({ allowedContentTypes: [] })).toThrow(
      'createUploadCheck: "allowedContentTypes" is empty and would refuse every upload',
    );
    const allowsPt = createUploadCheck({ allowedExtensions: ['.pt'], refusedExtensions: ['.exe'], refuseKinds: [] });
    expect(() => allowsPt.begin({ name: 'model.pt', sha256: 'a'.repeat(64) })).not.toThrow();
  });
});
