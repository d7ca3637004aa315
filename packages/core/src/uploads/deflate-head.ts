/**
 * The first bytes of a raw deflate stream (a ZIP entry's compressed data), decoded as zlib
 * decodes them, to tell whether a compressed `.npz` member starts as a NumPy array and to read
 * its header. A decoder of our own rather than zlib's: each zlib context costs 20 to 60 µs to
 * make, and an archive can hold a made-up entry every 30 bytes. This one makes nothing per call
 * (its tables are shared scratch arrays) and stops at the first byte that differs from the
 * prefix looked for, so an entry of anything else costs a block header and a symbol or two.
 *
 * It follows zlib's rules for what is invalid (block type 3, stored lengths that do not match,
 * code lengths that over-subscribe or leave a set incomplete, a repeat with nothing before it, a
 * missing end-of-block code, a distance before the start): a stream zlib refuses cannot be read
 * by Python's zipfile either, so NumPy never loads it.
 */

/** What the first bytes of a stream turned out to be. */
export type InflatedHead =
  /** At least the prefix, up to the bytes wanted (fewer where the stream ended or turned invalid). */
  | { readonly kind: 'head'; readonly bytes: Buffer }
  /** Not the prefix, or a stream that ends or turns invalid before the prefix is out. */
  | { readonly kind: 'other' }
  /** The input ran out first: more of it may tell. */
  | { readonly kind: 'more' }
  /** Blocks no writer makes before its first bytes (see {@link inflateHead}): refuse. */
  | { readonly kind: 'forged' };

const OTHER: InflatedHead = Object.freeze({ kind: 'other' });
const MORE: InflatedHead = Object.freeze({ kind: 'more' });
const FORGED: InflatedHead = Object.freeze({ kind: 'forged' });

/** Empty stored or fixed blocks a stream may start with (a writer's flush before any data). */
const MAX_EMPTY_BLOCKS = 4;
/** Blocks one head may take in all: a writer puts a whole `.npy` header in its first. */
const MAX_BLOCKS = 8;

const MAX_BITS = 15;
/** The order in which a dynamic block gives the lengths of its code-length code. */
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const LENGTH_BASE = [
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DISTANCE_BASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
  8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA = [
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
];

/** A canonical Huffman code as puff.c keeps it: how many codes of each length, and the symbols in code order. */
interface Code {
  readonly count: Uint16Array;
  readonly symbol: Uint16Array;
}

const newCode = (symbols: number): Code => ({ count: new Uint16Array(MAX_BITS + 1), symbol: new Uint16Array(symbols) });

/** Scratch, shared by every call: decoding is synchronous, so no two calls use them at once. */
const lengthCode = newCode(19);
const literalCode = newCode(288);
const distanceCode = newCode(32);
const lengths = new Uint8Array(286 + 30);
const offsets = new Uint16Array(MAX_BITS + 2);

/**
 * Builds `code` from the first `n` of `codeLengths` (from `start`), as zlib's `inflate_table`
 * judges them: false for an over-subscribed set, or an incomplete one unless `incompleteAllowed`
 * and its only length is 1 (a set with no code at all is accepted: using it fails).
 */
function build(code: Code, codeLengths: Uint8Array, start: number, n: number, incompleteAllowed: boolean): boolean {
  const { count, symbol } = code;
  count.fill(0);
  for (let s = 0; s < n; s++) {
    const length = codeLengths[start + s] ?? 0;
    count[length] = (count[length] ?? 0) + 1;
  }
  let max = MAX_BITS;
  while (max >= 1 && count[max] === 0) max -= 1;
  if (max === 0) return true;
  let left = 1;
  for (let length = 1; length <= MAX_BITS; length++) {
    left = left * 2 - (count[length] ?? 0);
    if (left < 0) return false;
  }
  if (left > 0 && (!incompleteAllowed || max !== 1)) return false;
  offsets[1] = 0;
  for (let length = 1; length < MAX_BITS; length++) {
    offsets[length + 1] = (offsets[length] ?? 0) + (count[length] ?? 0);
  }
  for (let s = 0; s < n; s++) {
    const length = codeLengths[start + s] ?? 0;
    if (length === 0) continue;
    const at = offsets[length] ?? 0;
    symbol[at] = s;
    offsets[length] = at + 1;
  }
  return true;
}

/** The fixed codes of block type 1, built once. */
const fixedLiteralCode = newCode(288);
// Symbols 286, 287 and distances 30, 31 have codes, and are invalid where they come, as in zlib.
const fixedDistanceCode = newCode(32);
{
  const fixed = new Uint8Array(288);
  fixed.fill(8, 0, 144);
  fixed.fill(9, 144, 256);
  fixed.fill(7, 256, 280);
  fixed.fill(8, 280, 288);
  build(fixedLiteralCode, fixed, 0, 288, false);
  build(fixedDistanceCode, new Uint8Array(32).fill(5), 0, 32, false);
}

/** Thrown when the input runs out: made once, so that throwing it captures no stack. */
const OUT_OF_INPUT = new Error('out of input');
/** Thrown where zlib would fail the stream deep in a symbol's bits (elsewhere, {@link invalid} answers). */
const INVALID = new Error('invalid');

/** The input's bits, least significant first, as deflate packs them. */
class Bits {
  #input: Uint8Array = new Uint8Array(0);
  #at = 0;
  #buffer = 0;
  #count = 0;

  reset(input: Uint8Array): void {
    this.#input = input;
    this.#at = 0;
    this.#buffer = 0;
    this.#count = 0;
  }

  /** The next `n` bits (at most 16) as a number. */
  take(n: number): number {
    while (this.#count < n) {
      if (this.#at >= this.#input.length) throw OUT_OF_INPUT;
      this.#buffer |= (this.#input[this.#at++] ?? 0) << this.#count;
      this.#count += 8;
    }
    const value = this.#buffer & ((1 << n) - 1);
    this.#buffer >>>= n;
    this.#count -= n;
    return value;
  }

  /**
   * One symbol of the code-length code through its table (see {@link fillLengthTable}): a
   * dynamic block reads up to 316 of them, and a bit at a time they were most of its cost.
   */
  decodeLength(): number {
    while (this.#count < 7 && this.#at < this.#input.length) {
      this.#buffer |= (this.#input[this.#at++] ?? 0) << this.#count;
      this.#count += 8;
    }
    // Near the input's end the next symbol may take fewer bits than the table looks at.
    if (this.#count < 7) return this.decode(lengthCode);
    const entry = lengthTable[this.#buffer & 0x7f] ?? 0;
    const length = entry & 7;
    this.#buffer >>>= length;
    this.#count -= length;
    return entry >> 3;
  }

  /**
   * Drops the bits left of the current byte, for a stored block. The buffer may hold whole bytes
   * read ahead too ({@link decodeLength} looks 7 bits ahead): those are given back, not dropped.
   */
  align(): void {
    this.#at -= this.#count >> 3;
    this.#buffer = 0;
    this.#count = 0;
  }

  /** The next `n` whole bytes, after {@link align}. */
  bytes(n: number): Uint8Array {
    if (this.#at + n > this.#input.length) throw OUT_OF_INPUT;
    this.#at += n;
    return this.#input.subarray(this.#at - n, this.#at);
  }

  /** How many whole bytes are left. */
  get left(): number {
    return this.#input.length - this.#at;
  }

  /** One symbol of `code`, read a bit at a time (puff.c's way: no table to fill per block). */
  decode(code: Code): number {
    let value = 0;
    let first = 0;
    let index = 0;
    for (let length = 1; length <= MAX_BITS; length++) {
      value |= this.take(1);
      const count = code.count[length] ?? 0;
      if (value - count < first) return code.symbol[index + (value - first)] ?? 0;
      index += count;
      first = (first + count) * 2;
      value *= 2;
    }
    // A bit string the code has no symbol for (an incomplete set).
    throw INVALID;
  }
}

const bits = new Bits();

/** The code-length code by its next 7 bits (as they come, least significant first): symbol << 3 | its length. */
const lengthTable = new Uint16Array(128);
const nextCode = new Uint16Array(8);

/** Fills {@link lengthTable} from the code-length code's lengths (`lengths[0, 19)`), a complete code. */
function fillLengthTable(): void {
  const count = lengthCode.count;
  // RFC 1951's first code of each length.
  let code = 0;
  for (let length = 1; length <= 7; length++) {
    code = (code + (length === 1 ? 0 : (count[length - 1] ?? 0))) * 2;
    nextCode[length] = code;
  }
  for (let symbol = 0; symbol < 19; symbol++) {
    const length = lengths[symbol] ?? 0;
    if (length === 0) continue;
    const canonical = nextCode[length] ?? 0;
    nextCode[length] = canonical + 1;
    // Deflate sends a code's bits from its first: the table is indexed by them reversed.
    let reversed = 0;
    for (let i = 0; i < length; i++) reversed |= ((canonical >> i) & 1) << (length - 1 - i);
    for (let index = reversed; index < 128; index += 1 << length) lengthTable[index] = (symbol << 3) | length;
  }
}

/**
 * Reads the code lengths of a dynamic block and builds its codes into the scratch codes, as
 * zlib does (and judges) them: false where zlib fails the stream. Failures are answered, not
 * thrown: made-up entries fail here by the thousand.
 */
function readDynamicCodes(): boolean {
  const literals = bits.take(5) + 257;
  const distances = bits.take(5) + 1;
  const codeLengths = bits.take(4) + 4;
  if (literals > 286 || distances > 30) return false;
  lengths.fill(0, 0, 19);
  for (let i = 0; i < codeLengths; i++) lengths[CODE_LENGTH_ORDER[i] ?? 0] = bits.take(3);
  // No code at all: zlib reads every length as 0, and finds no end-of-block code.
  if (!build(lengthCode, lengths, 0, 19, false) || lengthCode.count[0] === 19) return false;
  fillLengthTable();
  const total = literals + distances;
  lengthsRead += total;
  let have = 0;
  while (have < total) {
    const symbol = bits.decodeLength();
    if (symbol < 16) {
      lengths[have++] = symbol;
      continue;
    }
    let length = 0;
    let copies: number;
    if (symbol === 16) {
      if (have === 0) return false;
      length = lengths[have - 1] ?? 0;
      copies = 3 + bits.take(2);
    } else if (symbol === 17) {
      copies = 3 + bits.take(3);
    } else {
      copies = 11 + bits.take(7);
    }
    if (have + copies > total) return false;
    lengths.fill(length, have, have + copies);
    have += copies;
  }
  if (lengths[256] === 0) return false;
  if (!build(literalCode, lengths, 0, literals, true)) return false;
  return build(distanceCode, lengths, literals, distances, true);
}

/**
 * The first bytes of the raw deflate stream `input` (as much of it as is here), read as zlib
 * reads them, up to `wanted` bytes, when they start with `prefix`:
 *
 * - `head` once `wanted` bytes are out, or the stream ends or turns invalid after the prefix;
 * - `other` as soon as a byte differs from the prefix, or the stream ends or turns invalid before it;
 * - `more` when `input` ends first (a caller with no more input takes a head from {@link partial});
 * - `forged` for a stream no writer makes: more than 4 empty blocks, an empty dynamic block
 *   before the prefix is out (zlib writes an empty block as a stored or fixed one, which cost
 *   nothing to read), or more than 8 blocks before `wanted` bytes. Python reads such a stream
 *   all the same; refusing it keeps a made-up entry's cost to a few blocks.
 *
 * A head's bytes are the decoder's scratch: valid until the next call.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's reading of a compressed .npz member
 * const first = inflateHead(entryData, 512, NUMPY_MAGIC);
 * if (first.kind === 'head' && holdsNumpyObjects(first.bytes)) refuse();
 * ```
 */
export function inflateHead(input: Uint8Array, wanted: number, prefix: Uint8Array): InflatedHead {
  if (output.length < wanted) output = Buffer.alloc(wanted);
  bits.reset(input);
  lengthsRead = 0;
  produced = 0;
  checked = 0;
  try {
    return readBlocks(wanted, prefix);
  } catch (thrown) {
    if (thrown === OUT_OF_INPUT) return MORE;
    if (thrown === INVALID) return invalid(prefix);
    throw thrown;
  }
}

/**
 * What the last call of {@link inflateHead} that answered `more` had decoded: a head, if it
 * holds the prefix (for a stream the upload's end cuts short, or read as far as it is read).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: an entry cut short by the end of the upload
 * if (inflateHead(rest, 512, NUMPY_MAGIC).kind === 'more') {
 *   const cut = partial(NUMPY_MAGIC);
 *   if (cut.kind === 'head' && holdsNumpyObjects(cut.bytes)) refuse();
 * }
 * ```
 */
export function partial(prefix: Uint8Array): InflatedHead {
  return produced >= prefix.length ? headOf(produced) : OTHER;
}

/**
 * How many code lengths of dynamic blocks the last call of {@link inflateHead} set out to read:
 * the most a stream costs that call before its first bytes tell anything (up to 316 a block, and
 * the codes built from them), so a caller that reads the starts of many entries bounds their sum.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the ZIP scan's bound on what made-up entries may cost
 * inflateHead(entryData, 512, NUMPY_MAGIC);
 * budget.spend(codeLengthsRead());
 * ```
 */
export function codeLengthsRead(): number {
  return lengthsRead;
}

let output = Buffer.alloc(512);
/** The code lengths the current call has set out to read. */
let lengthsRead = 0;
/** How many bytes of `output` the stream has given, and how many of them were held against the prefix. */
let produced = 0;
let checked = 0;

/** Where zlib fails the stream: a head if the prefix came out before, else no array. */
function invalid(prefix: Uint8Array): InflatedHead {
  return produced >= prefix.length ? headOf(produced) : OTHER;
}

function headOf(length: number): InflatedHead {
  return { kind: 'head', bytes: output.subarray(0, length) };
}

/** Whether the bytes out so far still match `prefix` (those it covers): each byte compared once. */
function matches(prefix: Uint8Array): boolean {
  for (; checked < produced && checked < prefix.length; checked++)
    if (output[checked] !== prefix[checked]) return false;
  return true;
}

function readBlocks(wanted: number, prefix: Uint8Array): InflatedHead {
  let empty = 0;
  for (let block = 1; ; block++) {
    if (block > MAX_BLOCKS) return FORGED;
    const final = bits.take(1) === 1;
    const type = bits.take(2);
    const before = produced;
    if (type === 0) {
      bits.align();
      const header = bits.bytes(4);
      const length = (header[0] ?? 0) | ((header[1] ?? 0) << 8);
      const complement = (header[2] ?? 0) | ((header[3] ?? 0) << 8);
      if (length !== (complement ^ 0xffff)) return invalid(prefix);
      const taken = Math.min(length, wanted - produced);
      // A head cut short by the input is read from what there is.
      const here = bits.bytes(Math.min(taken, bits.left));
      output.set(here, produced);
      produced += here.length;
      if (!matches(prefix)) return OTHER;
      if (produced >= wanted) return headOf(produced);
      if (here.length < taken) throw OUT_OF_INPUT;
    } else if (type === 1 || type === 2) {
      if (type === 2 && !readDynamicCodes()) return invalid(prefix);
      const literals = type === 1 ? fixedLiteralCode : literalCode;
      const distances = type === 1 ? fixedDistanceCode : distanceCode;
      for (;;) {
        const symbol = bits.decode(literals);
        if (symbol < 256) {
          output[produced++] = symbol;
        } else if (symbol === 256) {
          break;
        } else {
          const index = symbol - 257;
          if (index >= 29) return invalid(prefix);
          const length = (LENGTH_BASE[index] ?? 0) + bits.take(LENGTH_EXTRA[index] ?? 0);
          const code = bits.decode(distances);
          if (code >= 30) return invalid(prefix);
          const distance = (DISTANCE_BASE[code] ?? 0) + bits.take(DISTANCE_EXTRA[code] ?? 0);
          if (distance > produced) return invalid(prefix);
          const end = Math.min(produced + length, wanted);
          for (; produced < end; produced++) output[produced] = output[produced - distance] ?? 0;
        }
        if (!matches(prefix)) return OTHER;
        if (produced >= wanted) return headOf(produced);
      }
      if (produced === before && type === 2 && produced < prefix.length) return FORGED;
    } else {
      return invalid(prefix);
    }
    if (produced === before && ++empty > MAX_EMPTY_BLOCKS) return FORGED;
    if (final) return produced >= prefix.length ? headOf(produced) : OTHER;
  }
}
