import { createHash } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createUploadCheck } from '../index.js';
import { createUploadCheckGathering } from './upload-check.js';
import { ZipEntryNames } from './zip-entries.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * The pieces an upload is fed in: whole, a byte at a time, and 7 bytes at a time; negative:
 * that many bytes at a time handed on to the ZIP scan one by one, not gathered by the check.
 */
const PIECES = [0, 1, 7, -1, -7] as const;

/** The upload's SHA-256 when the check passes it, else its refusal; fed in pieces of `size` (0: whole). */
function upload(data: Buffer, size: number, name = 'model.bin') {
  const step = size === 0 ? Math.max(data.length, 1) : Math.abs(size);
  try {
    const check = (size < 0 ? createUploadCheckGathering({}, 0) : createUploadCheck()).begin({
      name,
      sha256: sha(data),
    });
    for (let at = 0; at < data.length; at += step) check.update(data.subarray(at, at + step));
    return check.finish();
  } catch (error) {
    return error as { reason: string };
  }
}

/** The name ends `ZipEntryNames` hands on for `data` fed in pieces of `|size|` bytes (0: whole). */
function nameEnds(data: Buffer, size: number): string[] {
  const names: string[] = [];
  const entries = new ZipEntryNames((nameEnd) => names.push(nameEnd));
  const step = size === 0 ? Math.max(data.length, 1) : Math.abs(size);
  for (let at = 0; at < data.length; at += step) entries.push(data.subarray(at, at + step));
  entries.end();
  return names;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One field of an extra field: its ID, its length (of `data`, unless told) and `data`. */
function field(id: number, data: Buffer, length = data.length): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16LE(id, 0);
  head.writeUInt16LE(length, 2);
  return Buffer.concat([head, data]);
}

/** An Info-ZIP Unicode Path field (0x7075) naming `unicode`, for a header whose own name is `name`. */
function unicodePath(name: string, unicode: string, { version = 1, crc = crc32(Buffer.from(name)) } = {}): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(version, 0);
  head.writeUInt32LE(crc, 1);
  return field(0x7075, Buffer.concat([head, Buffer.from(unicode)]));
}

interface Entry {
  readonly name: string;
  readonly data?: Buffer;
  /** The local header's extra field, and the central one's. */
  readonly extra?: Buffer;
  readonly centralExtra?: Buffer;
  /** What the central header says its extra field's length is, if not its length. */
  readonly centralExtraLength?: number;
}

/** A ZIP's bytes, stored: a local header for each entry, then a central directory and its end. */
function zip(entries: readonly Entry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name);
    const data = entry.data ?? Buffer.from('bytes of the entry');
    const extra = entry.extra ?? Buffer.alloc(0);
    const centralExtra = entry.centralExtra ?? Buffer.alloc(0);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(crc32(data), 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    locals.push(local, name, extra, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt32LE(crc32(data), 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt16LE(entry.centralExtraLength ?? centralExtra.length, 30);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name, centralExtra);
    offset += local.length + name.length + extra.length + data.length;
  }
  const size = centrals.reduce((sum, part) => sum + part.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(size, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, ...centrals, end]);
}

// pickle.dumps(os.getpid, protocol=2), as the outside tester's payload holds it.
const PAYLOAD = Buffer.from('8002636f730a6765747069640a29522e', 'hex');
const STORED = 'archive/data.bin';
const HIDDEN = 'archive/data.pkl';
/** A timestamp field (0x5455) and a Unicode comment (0x6375) that names a pickle: neither is a name. */
const TIMESTAMP = field(0x5455, Buffer.from([1, 0, 0, 0, 0]));
const COMMENT = field(0x6375, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), Buffer.from('see data.pkl')]));

describe('ZipEntryNames, Unicode Path extra fields (0x7075)', () => {
  const both = zip([
    { name: 'archive/version' },
    { name: STORED, data: PAYLOAD, extra: unicodePath(STORED, HIDDEN), centralExtra: unicodePath(STORED, HIDDEN) },
  ]);

  it.each(PIECES)('hands on the name of each, on local and central headers, in pieces of %i', (size) => {
    expect(nameEnds(both, size)).toEqual(['archive/version', STORED, HIDDEN, 'archive/version', STORED, HIDDEN]);
  });

  it('hands on its last 16 bytes cut at the first NUL, whatever its version and CRC-32 say, behind other fields', () => {
    const extra = Buffer.concat([
      TIMESTAMP,
      COMMENT,
      unicodePath('w.bin', 'a/long/directory/weights.pkl\0.txt', { version: 2, crc: 0 }),
    ]);
    expect(nameEnds(zip([{ name: 'w.bin', centralExtra: extra }]), 7)).toEqual(['w.bin', 'w.bin', 'tory/weights.pkl']);
  });

  it('reads a field cut short, an extra field past the archive, and a field past its extra field, without throwing', () => {
    const short = field(0x7075, Buffer.from([1, 0]));
    const past = field(0x7075, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), Buffer.from('x.json')]), 400);
    for (const size of PIECES) {
      expect(nameEnds(zip([{ name: 'a.bin', extra: short, centralExtra: past }]), size)).toEqual([
        'a.bin',
        'a.bin',
        'x.json',
      ]);
      // The central header claims 5,000 bytes of extra field: the archive ends first.
      const cut = zip([{ name: 'b.bin', centralExtra: unicodePath('b.bin', 'b.json'), centralExtraLength: 5000 }]);
      expect(nameEnds(cut, size)).toEqual(['b.bin', 'b.bin', 'b.json']);
    }
  });

  it('hands on the heads of entries behind Unicode paths as before', () => {
    const heads: string[] = [];
    const entries = new ZipEntryNames(() => undefined, {
      prefix: Buffer.from('HEAD'),
      bytes: 8,
      lengthOf: () => 8,
      onHead: (head) => heads.push(head.toString('latin1')),
    });
    const archive = zip([
      { name: 'a', data: Buffer.from('HEAD-one, and more'), extra: unicodePath('a', 'a.json') },
      { name: 'b', data: Buffer.from('not a head'), extra: unicodePath('b', 'b.json') },
      { name: 'c', data: Buffer.from('HEAD-two'), extra: Buffer.concat([TIMESTAMP, unicodePath('c', 'c.json')]) },
    ]);
    for (let at = 0; at < archive.length; at += 3) entries.push(archive.subarray(at, at + 3));
    entries.end();
    expect(heads).toEqual(['HEAD-one', 'HEAD-two']);
  });

  describe('heads longer than their first read', () => {
    // A head says its own length in its bytes 4 to 8 ('HEAD0600...'), as a NumPy header does.
    const lengthOf = (first: Buffer): number => Math.max(8, Number(first.toString('latin1', 4, 8)) || 0);
    const longHead = (length: number, last: string): Buffer =>
      Buffer.from(`HEAD${String(length).padStart(4, '0')}`.padEnd(length - last.length, ' ') + last + 'data after it');
    /** The heads handed on, and whether the entries were taken for made up, for `archive` in pieces of `size`. */
    const headsOf = (archive: Buffer, size: number): { heads: string[]; forged: boolean } => {
      const heads: string[] = [];
      let forged = false;
      const entries = new ZipEntryNames(
        () => undefined,
        { prefix: Buffer.from('HEAD'), bytes: 8, lengthOf, onHead: (head) => heads.push(head.toString('latin1')) },
        () => {
          forged = true;
        },
      );
      for (let at = 0; at < archive.length; at += size) entries.push(archive.subarray(at, at + size));
      entries.end();
      return { heads, forged };
    };

    it('hands on the whole head, stored or deflated, whatever the pieces', () => {
      const head = longHead(600, 'LAST');
      // Level 0: stored blocks, more than the first read's 4 KiB of compressed data before the head's end.
      const longer = longHead(9000, 'LAST');
      for (const data of [head, deflateRawSync(head), longer, deflateRawSync(longer, { level: 0 })]) {
        const archive = zip([{ name: 'a', data }]);
        for (const size of [1, 7, 100, archive.length]) {
          const { heads, forged } = headsOf(archive, size);
          // Stored data read as deflated is no head; deflated data read as stored is none either.
          const whole = data.length < 1000 ? head.toString('latin1', 0, 600) : longer.toString('latin1', 0, 9000);
          expect(heads).toEqual([whole]);
          expect(forged).toBe(false);
        }
      }
    });

    it('hands on a head that the end of the archive cuts short as far as it goes, stored or deflated', () => {
      const head = longHead(6000, 'LAST');
      for (const data of [head, deflateRawSync(head, { level: 0 })]) {
        const archive = zip([{ name: 'a', data }]).subarray(0, 31 + 3000);
        for (const size of [7, archive.length]) {
          const { heads, forged } = headsOf(archive, size);
          expect(heads).toHaveLength(1);
          expect(heads[0]?.startsWith('HEAD6000')).toBe(true);
          expect(heads[0]?.length).toBeGreaterThan(2900);
          expect(forged).toBe(false);
        }
      }
    });

    it('takes a flood of entries that each claim a long head for made up, and passes as many as the bytes hold', () => {
      const head = longHead(9000, 'LAST');
      // Real entries do not overlap: 200 of them, each its whole head long.
      const real = zip(Array.from({ length: 200 }, (_, i) => ({ name: String(i), data: head })));
      expect(headsOf(real, 64 * 1024)).toMatchObject({ forged: false });
      expect(headsOf(real, 64 * 1024).heads).toHaveLength(200);
      // Made-up ones, one every 120 bytes, each claiming the 9,000 bytes that follow.
      const fake = Buffer.concat([
        zip([{ name: 'a', data: head.subarray(0, 90) }]).subarray(0, 31),
        head.subarray(0, 89),
      ]);
      const flood = Buffer.concat(Array.from({ length: 10_000 }, () => fake));
      expect(headsOf(flood, 64 * 1024).forged).toBe(true);
      // The same, deflated: a few bytes each that give 9,000.
      const deflated = deflateRawSync(head);
      const fakeDeflated = Buffer.concat([zip([{ name: 'a', data: deflated }]).subarray(0, 31), deflated]);
      const floodDeflated = Buffer.concat(Array.from({ length: 20_000 }, () => fakeDeflated));
      expect(headsOf(floodDeflated, 64 * 1024).forged).toBe(true);
    });
  });

  it('walks a flood of made-up headers, each with 64 KiB of small fields over the next, in linear time', () => {
    // Per 64 bytes: a header whose extra field starts in zeros, and fields of length 6 that hop
    // over each signature and length, so that every walk meets the next headers' fields (13 in 64 bytes).
    const fake = Buffer.alloc(64);
    fake.writeUInt32LE(0x04034b50, 0);
    fake.writeUInt16LE(6, 24);
    fake.writeUInt16LE(2, 26);
    fake.writeUInt16LE(0xffff, 28);
    fake.write('ab', 30, 'latin1');
    fake.writeUInt16LE(6, 62);
    const flood = Buffer.concat([...Array.from({ length: (8 * 1024 * 1024) / 64 }, () => fake), both]);
    let hidden = 0;
    const entries = new ZipEntryNames((nameEnd) => {
      if (nameEnd === HIDDEN) hidden += 1;
    });
    for (let at = 0; at < flood.length; at += 64 * 1024) entries.push(flood.subarray(at, at + 64 * 1024));
    entries.end();
    expect(hidden).toBe(2);
    // About 0.4 s here; a walk field by field to its end (some 13,000 fields a header) took about
    // 100 times as long, past this test's time limit.
  }, 30_000);
});

describe('the upload check, a ZIP entry named a pickle by a Unicode Path extra field (0x7075)', () => {
  it.each([
    [
      'on local and central headers (the outside tester’s archive)',
      zip([
        { name: STORED, data: PAYLOAD, extra: unicodePath(STORED, HIDDEN), centralExtra: unicodePath(STORED, HIDDEN) },
      ]),
    ],
    ['on a local header only', zip([{ name: STORED, data: PAYLOAD, extra: unicodePath(STORED, HIDDEN) }])],
    ['on a central header only', zip([{ name: STORED, data: PAYLOAD, centralExtra: unicodePath(STORED, HIDDEN) }])],
    [
      'behind a timestamp and a Unicode comment, on a central header after other entries',
      zip([
        { name: 'archive/version', extra: TIMESTAMP, centralExtra: TIMESTAMP },
        { name: STORED, data: PAYLOAD, centralExtra: Buffer.concat([TIMESTAMP, COMMENT, unicodePath(STORED, HIDDEN)]) },
      ]),
    ],
    [
      'whose CRC-32 does not match its header’s name',
      zip([{ name: STORED, data: PAYLOAD, centralExtra: unicodePath(STORED, HIDDEN, { crc: 1 }) }]),
    ],
    [
      'cut at a NUL, as Python cuts it',
      zip([{ name: STORED, data: PAYLOAD, centralExtra: unicodePath(STORED, `${HIDDEN}\0.txt`) }]),
    ],
  ])('refuses one %s, whole, byte by byte and in 7-byte pieces', (_label, archive) => {
    for (const size of PIECES) expect(upload(archive, size)).toMatchObject({ reason: 'content_refused' });
  });

  it.each([
    [
      'a Unicode path naming a harmless file',
      zip([
        {
          name: STORED,
          extra: unicodePath(STORED, 'archive/données.bin'),
          centralExtra: unicodePath(STORED, 'archive/données.bin'),
        },
      ]),
    ],
    [
      'other fields, among them a Unicode comment naming a pickle',
      zip([{ name: 'notes.txt', extra: Buffer.concat([TIMESTAMP, COMMENT]), centralExtra: COMMENT }]),
    ],
    [
      'a Unicode Path field cut short, and one running past its extra field',
      zip([
        {
          name: 'a.bin',
          extra: field(0x7075, Buffer.from([1, 0])),
          centralExtra: field(0x7075, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), Buffer.from('a.json')]), 900),
        },
      ]),
    ],
    [
      'an extra field length that runs past the archive’s end',
      zip([{ name: 'b.bin', centralExtra: unicodePath('b.bin', 'b.json'), centralExtraLength: 0xffff }]),
    ],
  ])('passes %s, whole, byte by byte and in 7-byte pieces', (_label, archive) => {
    for (const size of PIECES) expect(upload(archive, size)).toBe(sha(archive));
  });
});
