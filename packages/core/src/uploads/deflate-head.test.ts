// The deflate decoder of compressed .npz members, held against zlib: the same first bytes for
// every stream zlib writes (every level and strategy), and never fewer bytes than zlib gives
// before it fails a damaged stream.
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { codeLengthsRead, inflateHead, partial } from './deflate-head.js';
import { NUMPY_MAGIC } from './numpy-header.js';

const NONE = new Uint8Array(0);

/** A small deterministic generator (mulberry32), so that a failure can be run again. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function npy(descr: string, data: Buffer): Buffer {
  let header = `{'descr': ${descr}, 'fortran_order': False, 'shape': (2,), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const length = Buffer.alloc(2);
  length.writeUInt16LE(header.length);
  return Buffer.concat([NUMPY_MAGIC, Buffer.from([1, 0]), length, Buffer.from(header, 'latin1'), data]);
}

/** Contents of every kind a ZIP holds: text, NumPy arrays, random bytes, runs. */
function contents(next: () => number): Buffer[] {
  const words = ['weights', 'bias', 'layer', 'tensor', 'float32', 'model', '\n', ' ', '{', '}'];
  const text = Array.from({ length: 2000 }, () => words[Math.floor(next() * words.length)]).join(' ');
  const noise = Buffer.from(Array.from({ length: 3000 }, () => Math.floor(next() * 256)));
  return [
    Buffer.from(text),
    npy("'<f8'", noise.subarray(0, 800)),
    npy("'|O'", Buffer.from('\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02e.', 'latin1')),
    noise,
    Buffer.alloc(5000),
    Buffer.from('ab'.repeat(2000)),
    Buffer.from('x'),
    Buffer.alloc(0),
  ];
}

const STRATEGIES = [
  constants.Z_DEFAULT_STRATEGY,
  constants.Z_FILTERED,
  constants.Z_HUFFMAN_ONLY,
  constants.Z_RLE,
  constants.Z_FIXED,
];

/** What zlib gives of `stream` before it fails it (or all of it): the output of its longest readable start. */
function zlibBefore(stream: Buffer): Buffer {
  try {
    return inflateRawSync(stream);
  } catch {
    let best = Buffer.alloc(0);
    for (let end = 1; end <= stream.length; end++) {
      try {
        best = inflateRawSync(stream.subarray(0, end), { finishFlush: constants.Z_SYNC_FLUSH });
      } catch {
        break;
      }
    }
    return best;
  }
}

describe('inflateHead', () => {
  it('gives the first 512 bytes zlib gives, for streams of every level and strategy', () => {
    let streams = 0;
    for (const content of contents(random(1))) {
      for (let level = 0; level <= 9; level++) {
        for (const strategy of STRATEGIES) {
          for (const memLevel of [1, 8, 9]) {
            const stream = deflateRawSync(content, { level, strategy, memLevel });
            const head = inflateHead(stream, 512, NONE);
            expect(head).toEqual({ kind: 'head', bytes: content.subarray(0, 512) });
            streams += 1;
          }
        }
      }
    }
    expect(streams).toBe(8 * 10 * 5 * 3);
  });

  it('never reads fewer bytes than zlib gives of a damaged stream, nor other bytes', () => {
    const next = random(2);
    let differing = 0;
    for (let i = 0; i < 600; i++) {
      const content = contents(next)[i % 6] ?? Buffer.alloc(0);
      const stream = Buffer.from(
        deflateRawSync(content.subarray(0, 700), { level: i % 10, strategy: STRATEGIES[i % 5] }).subarray(0, 400),
      );
      for (let flips = 1 + (i % 3); flips > 0; flips--) {
        const at = Math.floor(next() * Math.min(stream.length, 48));
        stream[at] = (stream[at] ?? 0) ^ (1 << Math.floor(next() * 8));
      }
      const zlib = zlibBefore(stream).subarray(0, 512);
      const head = inflateHead(stream, 512, NONE);
      if (head.kind === 'forged') continue;
      const ours = head.kind === 'head' ? head.bytes : head.kind === 'more' ? partialBytes() : Buffer.alloc(0);
      expect(ours.length).toBeGreaterThanOrEqual(zlib.length);
      expect(Buffer.from(ours.subarray(0, zlib.length))).toEqual(zlib);
      if (ours.length > zlib.length) differing += 1;
    }
    // Most damaged streams fail somewhere; the decoder reads up to the very bit zlib fails at.
    expect(differing).toBeLessThan(600);
  });

  it('stops at the first byte that is not the prefix, and waits for more input while the prefix holds', () => {
    const array = deflateRawSync(npy("'|O'", Buffer.alloc(600, 1)));
    expect(inflateHead(array, 512, NUMPY_MAGIC)).toMatchObject({ kind: 'head' });
    expect(inflateHead(deflateRawSync(Buffer.from('\x93NUMPX', 'latin1')), 512, NUMPY_MAGIC)).toEqual({
      kind: 'other',
    });
    // Cut short: more may tell; what came holds the magic, so a head can be taken from it.
    expect(inflateHead(array.subarray(0, 12), 512, NUMPY_MAGIC)).toEqual({ kind: 'more' });
    const cut = partial(NUMPY_MAGIC);
    expect(cut.kind).toBe('head');
    expect(cut.kind === 'head' && cut.bytes.subarray(0, 6).equals(NUMPY_MAGIC)).toBe(true);
    // A stream that ends before the magic is out is no array.
    expect(inflateHead(deflateRawSync(Buffer.from('\x93NUM', 'latin1')), 512, NUMPY_MAGIC)).toEqual({ kind: 'other' });
    expect(inflateHead(Buffer.from([0x07]), 512, NUMPY_MAGIC)).toEqual({ kind: 'other' });
  });

  it('reads the blocks a flushing writer makes, and refuses what no writer makes before its first bytes', () => {
    const content = npy("'|O'", Buffer.alloc(100));
    /** Raw deflate blocks of `parts`, each closed by a sync flush (an empty stored block), then a final empty one. */
    const flushed = (parts: Buffer[]) =>
      Buffer.concat([
        ...parts.map((part) => deflateRawSync(part, { finishFlush: constants.Z_SYNC_FLUSH })),
        Buffer.from([0x03, 0x00]),
      ]);
    const emptyStored = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);
    // Two flushes before the data: read.
    const twoFlushes = Buffer.concat([emptyStored, emptyStored, deflateRawSync(content)]);
    expect(inflateHead(twoFlushes, 512, NUMPY_MAGIC)).toMatchObject({ kind: 'head' });
    expect(zlibBefore(twoFlushes)).toEqual(content);
    // Five: refused, though zlib reads it.
    const fiveFlushes = Buffer.concat([...Array.from({ length: 5 }, () => emptyStored), deflateRawSync(content)]);
    expect(zlibBefore(fiveFlushes)).toEqual(content);
    expect(inflateHead(fiveFlushes, 512, NUMPY_MAGIC)).toEqual({ kind: 'forged' });
    // The header in three pieces, a flush after each: read; in eight pieces: refused.
    const three = flushed([content.subarray(0, 3), content.subarray(3, 40), content.subarray(40)]);
    expect(zlibBefore(three)).toEqual(content);
    expect(inflateHead(three, 512, NUMPY_MAGIC)).toMatchObject({ kind: 'head' });
    const pieces = Array.from({ length: 8 }, (_, i) => content.subarray(i * 10, i === 7 ? undefined : i * 10 + 10));
    expect(inflateHead(flushed(pieces), 512, NUMPY_MAGIC)).toEqual({ kind: 'forged' });
  });

  it('reads a stored block after a dynamic block whose code lengths were read ahead of its last bits', () => {
    // A dynamic block that gives only the magic's first byte, then the rest of an array in a
    // stored block: its lengths are read 7 bits ahead, and the stored block starts at the next byte.
    const stream = Buffer.from(
      '04c5b10500000000a0ffe71e0e30970068ff4e554d5059010076007b276465736372273a20277c4f272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a80027d71005809000000756e7069636b6c6564710188732e',
      'hex',
    );
    const zlib = inflateRawSync(stream);
    expect(zlib.subarray(0, 6)).toEqual(NUMPY_MAGIC);
    expect(inflateHead(stream, 512, NUMPY_MAGIC)).toEqual({ kind: 'head', bytes: zlib.subarray(0, 512) });
  });

  it('refuses an empty dynamic block before the prefix, which zlib never writes', () => {
    // A dynamic block whose only codes are the end of block and one literal, holding nothing.
    const bits: number[] = [];
    const put = (value: number, count: number) => {
      for (let i = 0; i < count; i++) bits.push((value >> i) & 1);
    };
    put(0, 1);
    put(2, 2);
    put(0, 5); // 257 literal/length codes
    put(0, 5); // 1 distance code
    put(15, 4); // 19 code-length codes: lengths 16, 17, 18 then 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15
    // Code-length code: symbols 1 and 18 of length 1 (complete).
    for (const symbol of [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]) {
      put(symbol === 18 || symbol === 1 ? 1 : 0, 3);
    }
    // Code lengths with that code (1 -> "0", 18 -> "1"): 'A' (65) and 256 get length 1, the rest 0.
    const zeros = (n: number) => {
      while (n > 0) {
        const run = Math.min(n, 138);
        if (run < 11) throw new Error('unexpected short run');
        put(1, 1);
        put(run - 11, 7);
        n -= run;
      }
    };
    zeros(65);
    put(0, 1); // 'A': length 1
    zeros(256 - 66);
    put(0, 1); // 256: length 1
    put(0, 1); // the one distance code: length 1
    put(1, 1); // end of block (code "1": 256 sorts after 'A')
    // An empty stored block, which brings the stream to a whole byte, then the array.
    put(0, 3);
    while (bits.length % 8 !== 0) bits.push(0);
    put(0, 16);
    put(0xffff, 16);
    const packed = Buffer.alloc(bits.length / 8);
    bits.forEach((bit, i) => {
      packed[i >> 3] = (packed[i >> 3] ?? 0) | (bit << (i & 7));
    });
    const content = npy("'|O'", Buffer.alloc(10));
    const stream = Buffer.concat([packed, deflateRawSync(content, { strategy: constants.Z_FIXED })]);
    expect(zlibBefore(stream)).toEqual(content);
    expect(inflateHead(stream, 512, NUMPY_MAGIC)).toEqual({ kind: 'forged' });
  });

  it('counts the code lengths of the dynamic blocks it set out to read, and none for fixed or stored ones', () => {
    const text = Buffer.from(Array.from({ length: 300 }, (_, i) => `w${String((i * 31) % 97)}`).join(' '));
    const dynamic = deflateRawSync(text, { level: 9 });
    expect(inflateHead(dynamic, 512, Buffer.from('w0'))).toMatchObject({ kind: 'head' });
    // HLIT + HDIST, as the block header says: 257 to 286 and 1 to 30.
    expect(codeLengthsRead()).toBeGreaterThanOrEqual(258);
    expect(codeLengthsRead()).toBeLessThanOrEqual(316);
    inflateHead(deflateRawSync(text, { strategy: constants.Z_FIXED }), 512, Buffer.from('w0'));
    expect(codeLengthsRead()).toBe(0);
    inflateHead(deflateRawSync(text, { level: 0 }), 512, Buffer.from('w0'));
    expect(codeLengthsRead()).toBe(0);
  });

  it('judges code lengths as zlib does: an incomplete or over-subscribed set fails the stream', () => {
    const next = random(3);
    let agreed = 0;
    for (let i = 0; i < 3000; i++) {
      // A dynamic block header of random bytes: most are sets zlib refuses.
      const stream = Buffer.from(
        Array.from({ length: 300 }, (_, j) => (j === 0 ? 0x04 | (i & 0xf8) : Math.floor(next() * 256))),
      );
      const zlib = zlibBefore(stream);
      const head = inflateHead(stream, 512, NONE);
      if (head.kind === 'forged') continue;
      const ours = head.kind === 'head' ? head.bytes : partialBytes();
      expect(Buffer.from(ours.subarray(0, zlib.length))).toEqual(zlib.subarray(0, 512));
      expect(ours.length).toBeGreaterThanOrEqual(Math.min(zlib.length, 512));
      agreed += 1;
    }
    expect(agreed).toBeGreaterThan(2900);
  });
});

/** The bytes a `more` left, held against no prefix. */
function partialBytes(): Buffer {
  const head = partial(NONE);
  return head.kind === 'head' ? Buffer.from(head.bytes) : Buffer.alloc(0);
}
