import { copyBytes } from './copy-bytes.js';

const BLOCK = 512;
const EMPTY = Buffer.alloc(0);
const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** The most of a GNU long name, or of a PAX `path` or `size` value, kept. */
const MAX_NAME_DATA = 64 * 1024;
/** Types CPython's tarfile knows; a member of any other type is read as a regular file. */
const SUPPORTED_TYPES = new Set('01234567LKS\0');
/** Types whose data follows the header; other supported types have none, whatever their size. */
const REGULAR_TYPES = new Set('07\0');
/** Python's `str.strip()` whitespace among ASCII (JavaScript's `trim()` keeps \x1c–\x1f). */
const PY_SPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20]);
/** `int(s, 8)` in Python: a sign, a `0o` prefix, single underscores between digits. */
const PY_OCTAL = /^([+-]?)(0[oO]_?)?([0-7](?:_?[0-7])*)$/;
const PY_DECIMAL = /^([+-]?)([0-9](?:_?[0-9])*)$/;
/** Number fields CPython's `frombuf` reads from every header (mode to mtime, devmajor, devminor). */
const NUMBER_FIELDS: readonly (readonly [number, number])[] = [
  [100, 108],
  [108, 116],
  [116, 124],
  [136, 148],
  [329, 337],
  [337, 345],
];

/** What the scan is doing at the current position of the stream. */
type State =
  | { readonly kind: 'header' }
  | {
      readonly kind: 'member';
      left: number;
      readonly padding: number;
      readonly data: Sink | undefined;
      /** Called once the data is read (a long name's or PAX header's). */
      readonly end: (() => void) | undefined;
    }
  | { readonly kind: 'padding'; left: number }
  | { readonly kind: 'off' };

/** Where a member's bytes go. */
interface Sink {
  push(chunk: Buffer): void;
}

/**
 * The members of a tar archive as its bytes stream past, read as CPython's `tarfile` reads them
 * (a PyTorch checkpoint of the legacy format is a tar whose `pickle` member `torch.load`
 * unpickles): each member's names (its header's, a GNU long name, a PAX `path`), and the bytes
 * of each member `extractfile` would hand out (regular files and types tarfile does not know)
 * to a check of its own. Only a stream whose first block is a tar header (its checksum right)
 * is read as one; anything else, and anything after the archive's end, is passed over. Where
 * the scan cannot follow CPython for sure (a number it cannot read in a header whose checksum
 * matches, a negative size, a PAX header it cannot parse, a sparse member), it calls `refuse`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's tar scan
 * const members = new TarMembers((name) => checkName(name), () => new PickleImportScan(refuse), refuse);
 * for await (const chunk of upload) members.push(chunk);
 * ```
 */
export class TarMembers {
  readonly #onName: (name: string) => void;
  readonly #contentCheck: () => { push(chunk: Uint8Array): void };
  readonly #refuse: () => void;
  #state: State = { kind: 'header' };
  /** A header block cut between chunks. */
  #partial: Buffer = EMPTY;
  /** The `size` of PAX global (`g`) headers: every later member's, unless an `x` header says otherwise. */
  #globalSize: number | undefined;
  /**
   * The size the first `x` header before the coming member gives it (its own or the global one
   * at the time): CPython applies the outermost last, and skips the member's data by it.
   */
  #chainSize: number | undefined;

  /** @param refuse Called where the scan cannot follow CPython's tarfile: the upload is refused. */
  constructor(
    onName: (name: string) => void,
    contentCheck: () => { push(chunk: Uint8Array): void },
    refuse: () => void,
  ) {
    this.#onName = onName;
    this.#contentCheck = contentCheck;
    this.#refuse = refuse;
  }

  /** Whether the archive has ended, or the stream was no tar: nothing more is read. */
  get finished(): boolean {
    return this.#state.kind === 'off';
  }

  push(chunk: Uint8Array): void {
    const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    // An offset rather than a view per step: a flood of empty members is a header per 512 bytes.
    let at = 0;
    while (at < data.length && this.#state.kind !== 'off') {
      const state = this.#state;
      if (state.kind === 'header') {
        const need = BLOCK - this.#partial.length;
        if (data.length - at < need) {
          this.#partial = Buffer.concat([this.#partial, data.subarray(at)]);
          return;
        }
        const block =
          this.#partial.length === 0
            ? data.subarray(at, at + BLOCK)
            : Buffer.concat([this.#partial, data.subarray(at, at + need)]);
        this.#partial = EMPTY;
        at += need;
        this.#header(block);
        continue;
      }
      const take = Math.min(state.left, data.length - at);
      if (state.kind === 'member') state.data?.push(data.subarray(at, at + take));
      state.left -= take;
      at += take;
      if (state.left > 0) continue;
      this.#state =
        state.kind === 'member' && state.padding > 0 ? { kind: 'padding', left: state.padding } : { kind: 'header' };
      if (state.kind === 'member') state.end?.();
    }
  }

  /** Refuses; should `refuse` return, nothing more is read. */
  #unsure(): void {
    this.#state = { kind: 'off' };
    this.#refuse();
  }

  #header(block: Buffer): void {
    // An archive ends at a block of zeros (tarfile.open(mode='r:') reads nothing past it).
    if (block.equals(ZERO_BLOCK)) {
      this.#state = { kind: 'off' };
      return;
    }
    const sums = checksums(block);
    const stated = fieldNumber(block, 148, 156);
    if (stated === undefined || (stated !== sums[0] && stated !== sums[1])) {
      // No header, and tarfile stops here too; unless the digits are the sum in a spelling
      // this parse does not take.
      if (stated === undefined && looseChecksum(block, sums)) this.#unsure();
      else this.#state = { kind: 'off' };
      return;
    }
    const size = fieldNumber(block, 124, 136);
    if (
      size === undefined ||
      size < 0 ||
      size > Number.MAX_SAFE_INTEGER ||
      NUMBER_FIELDS.some(([from, to]) => fieldNumber(block, from, to) === undefined)
    ) {
      this.#unsure();
      return;
    }
    const type = String.fromCharCode(block[156] ?? 0);
    const rounded = size + padding(size);
    if (type === 'S') {
      // A sparse member's content is its map's, holes and all: not followed.
      this.#unsure();
    } else if (type === 'L' || type === 'K') {
      const name = type === 'L' ? new LongName() : undefined;
      this.#meta(rounded, name, () => {
        if (name === undefined) return;
        if (name.tooLong) this.#unsure();
        else this.#onName(name.text());
      });
    } else if (type === 'x' || type === 'X' || type === 'g') {
      const records = new PaxRecords();
      const global = this.#globalSize;
      this.#meta(rounded, records, () => {
        const size = records.size();
        if (records.bad || !records.complete || records.sparse || size === null) {
          this.#unsure();
          return;
        }
        if (records.path !== undefined) this.#onName(records.path);
        if (type === 'g') this.#globalSize = size ?? this.#globalSize;
        else this.#chainSize ??= size ?? global;
      });
    } else this.#member(block, type, size);
  }

  /** A GNU long name or PAX header: its data, padding included, is what tarfile reads. */
  #meta(length: number, data: Sink | undefined, end: () => void): void {
    if (length === 0) end();
    else this.#state = { kind: 'member', left: length, padding: 0, data, end };
  }

  #member(block: Buffer, type: string, headerSize: number): void {
    this.#onName(nameOf(block, type));
    const chained = this.#chainSize;
    this.#chainSize = undefined;
    // A V7 regular file whose name ends in a slash is a directory to tarfile.
    const nameEnd = block.subarray(0, 100).indexOf(0);
    const directory = type === '\0' && block[(nameEnd === -1 ? 100 : nameEnd) - 1] === 0x2f;
    // Other supported types: tarfile reads the next header right after this one.
    if (directory || (SUPPORTED_TYPES.has(type) && !REGULAR_TYPES.has(type))) {
      this.#state = { kind: 'header' };
      return;
    }
    // A global size is what extractfile reads, the header's size what tarfile skips (bar an `x`).
    const skipped = chained ?? headerSize;
    if ((chained ?? this.#globalSize ?? headerSize) !== skipped) {
      this.#unsure();
      return;
    }
    // An empty member gets no check of its own: a flood of them would cost one each.
    this.#state =
      skipped > 0
        ? { kind: 'member', left: skipped, padding: padding(skipped), data: this.#contentCheck(), end: undefined }
        : { kind: 'header' };
  }
}

/** A GNU long name: its data up to the first NUL (`nts`). */
class LongName implements Sink {
  readonly #parts: Buffer[] = [];
  #kept = 0;
  #ended = false;
  tooLong = false;

  push(chunk: Buffer): void {
    if (this.#ended || this.tooLong) return;
    const nul = chunk.indexOf(0);
    const part = nul === -1 ? chunk : chunk.subarray(0, nul);
    this.#ended = nul !== -1;
    this.#kept += part.length;
    if (this.#kept > MAX_NAME_DATA) this.tooLong = true;
    else this.#parts.push(Buffer.from(part));
  }

  text(): string {
    return Buffer.concat(this.#parts).toString('utf8');
  }
}

/**
 * One kept PAX value: its bytes copied into one buffer that grows as needed, decoded once when
 * read. A record that replaces it starts over in the same buffer; one cut short makes the whole
 * header bad, so the value it overwrote is never read.
 */
class KeptValue {
  #bytes = Buffer.alloc(0);
  #length = -1;

  /** Starts a new value (this one). */
  restart(): this {
    this.#length = 0;
    return this;
  }

  /** Adds `chunk[from, to)`; false past {@link MAX_NAME_DATA}. */
  append(chunk: Buffer, from: number, to: number): boolean {
    const length = this.#length + to - from;
    if (length > MAX_NAME_DATA) return false;
    if (length > this.#bytes.length) {
      const grown = Buffer.alloc(Math.min(MAX_NAME_DATA, Math.max(length, 2 * this.#bytes.length, 256)));
      this.#bytes.copy(grown, 0, 0, this.#length);
      this.#bytes = grown;
    }
    copyBytes(this.#bytes, this.#length, chunk, from, to);
    this.#length = length;
    return true;
  }

  /** The value as tarfile decodes it, or undefined without one. */
  text(): string | undefined {
    return this.#length < 0 ? undefined : this.#bytes.toString('utf8', 0, this.#length);
  }
}

const PATH_KEY = Buffer.from('path', 'latin1');
const SIZE_KEY = Buffer.from('size', 'latin1');
const SPARSE_PREFIX = Buffer.from('GNU.sparse.', 'latin1');
const KEY_PATH = 1;
const KEY_SIZE = 2;
const KEY_SPARSE = 4;

/**
 * A PAX header's records ("<length> <key>=<value>\n") streamed, as CPython's tarfile parses them
 * up to a NUL where a record would start. A record it may read otherwise (a wrong length, no
 * `=`, no newline at its end) makes it `bad`; only `path` and `size` values are kept.
 */
class PaxRecords implements Sink {
  bad = false;
  /** A `GNU.sparse.*` record: extractfile reads such a member by its sparse map. */
  sparse = false;
  /** The last `path` and `size` values (a later record replaces an earlier one, as in tarfile), as read. */
  readonly #kept = { path: new KeptValue(), size: new KeptValue() };
  #phase: 'length' | 'key' | 'value' | 'newline' | 'done' = 'length';
  /** Digits of the current record's length read, and their value (past 2^53 it only grows: such a record never ends). */
  #digits = 0;
  #lengthRead = 0;
  #length = 0;
  /** Bytes of the current record read. */
  #used = 0;
  /**
   * The current key, read byte by byte against the three that matter (`path`, `size`, a
   * `GNU.sparse.` prefix) without making a string of it: a header of tiny records made each
   * record's allocations the cost of a tar, a second of CPU a MiB once gzipped.
   */
  #keyLength = 0;
  #keyCould = KEY_PATH | KEY_SIZE | KEY_SPARSE;
  /** Where the current record's value goes: only `path` and `size` values are kept. */
  #value: KeptValue | undefined;

  /** The `size` record's value; undefined without one, null when tarfile's `int()` may read it otherwise. */
  size(): number | null | undefined {
    const text = this.#kept.size.text();
    if (text === undefined) return undefined;
    const match = PY_DECIMAL.exec(pythonStrip(text));
    if (match === null || match[1] === '-') return null;
    const value = Number((match[2] ?? '').replaceAll('_', ''));
    return Number.isSafeInteger(value) ? value : null;
  }

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.bad && this.#phase !== 'done') {
      const byte = chunk[i] ?? 0;
      if (this.#phase === 'value') {
        const take = Math.min(this.#length - 1 - this.#used, chunk.length - i);
        if (this.#value !== undefined && !this.#value.append(chunk, i, i + take)) this.bad = true;
        this.#used += take;
        i += take;
        if (this.#used === this.#length - 1) this.#phase = 'newline';
        continue;
      }
      i++;
      this.#used++;
      if (this.#phase === 'length') {
        if (byte === 0 && this.#used === 1) this.#phase = 'done';
        else if (byte >= 0x30 && byte <= 0x39 && this.#digits < 20) {
          this.#digits++;
          this.#lengthRead = this.#lengthRead * 10 + (byte - 0x30);
        } else if (byte === 0x20 && this.#digits > 0) {
          this.#length = this.#lengthRead;
          this.#phase = 'key';
          // The shortest record is "5 k=\n".
          if (this.#length < 5) this.bad = true;
        } else this.bad = true;
      } else if (this.#phase === 'key') {
        if (byte === 0x3d && this.#keyLength > 0) this.#startValue();
        else if (byte === 0x3d || this.#used >= this.#length - 1) this.bad = true;
        else {
          const at = this.#keyLength++;
          if (PATH_KEY[at] !== byte) this.#keyCould &= ~KEY_PATH;
          if (SIZE_KEY[at] !== byte) this.#keyCould &= ~KEY_SIZE;
          if (at < SPARSE_PREFIX.length && SPARSE_PREFIX[at] !== byte) this.#keyCould &= ~KEY_SPARSE;
        }
      } else if (byte === 0x0a) this.#endRecord();
      else this.bad = true;
    }
  }

  /** The key just read: `path`, `size` or neither (a key of 4 bytes matches one of them at most). */
  #keyRead(): 'path' | 'size' | undefined {
    if (this.#keyLength !== 4) return undefined;
    if ((this.#keyCould & KEY_PATH) !== 0) return 'path';
    return (this.#keyCould & KEY_SIZE) !== 0 ? 'size' : undefined;
  }

  /** The last `path` record's value. */
  get path(): string | undefined {
    return this.#kept.path.text();
  }

  #startValue(): void {
    if ((this.#keyCould & KEY_SPARSE) !== 0 && this.#keyLength >= SPARSE_PREFIX.length) this.sparse = true;
    const key = this.#keyRead();
    this.#value = key === undefined ? undefined : this.#kept[key].restart();
    this.#phase = this.#used === this.#length - 1 ? 'newline' : 'value';
  }

  #endRecord(): void {
    this.#phase = 'length';
    this.#digits = 0;
    this.#lengthRead = 0;
    this.#used = 0;
    this.#keyLength = 0;
    this.#keyCould = KEY_PATH | KEY_SIZE | KEY_SPARSE;
    this.#value = undefined;
  }

  /** Whether the data ended between records (once all of it is in). */
  get complete(): boolean {
    return this.#phase === 'done' || (this.#phase === 'length' && this.#used === 0);
  }
}

/** The header's checksums as tarfile counts them: bytes unsigned, and signed (Sun, NeXT). */
function checksums(block: Buffer): [number, number] {
  // The checksum field counts as eight spaces; a byte with its high bit set is 256 less signed.
  let unsigned = 256;
  let high = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0 : (block[i] ?? 0);
    unsigned += byte;
    high += byte >> 7;
  }
  return [unsigned, unsigned - 256 * high];
}

/** A checksum field this parse rejects whose octal digits still spell a sum. */
function looseChecksum(block: Buffer, sums: readonly number[]): boolean {
  const digits = block.toString('latin1', 148, 156).replace(/[^0-7]/g, '');
  return digits !== '' && sums.includes(parseInt(digits, 8));
}

/**
 * A number field as CPython's `nti` reads it (see {@link pythonNumber}), as a number: one past
 * 2^53 comes out inexact but still past every checksum and size limit.
 */
function fieldNumber(block: Buffer, from: number, to: number): number | undefined {
  const plain = plainOctal(block, from, to);
  if (plain >= 0) return plain;
  const value = pythonNumber(block, from, to);
  return value === undefined ? undefined : Number(value);
}

/**
 * A field of octal digits then spaces, up to a NUL or its end, as tarfile writes numbers, read
 * without the general parse (eight fields a header, and a flood of empty members is a header
 * per 512 bytes); -1 for any other field. Twelve digits at most: the value is exact.
 */
function plainOctal(block: Buffer, from: number, to: number): number {
  let value = 0;
  let at = from;
  for (; at < to; at++) {
    const byte = block[at] ?? 0;
    if (byte < 0x30 || byte > 0x37) break;
    value = value * 8 + (byte - 0x30);
  }
  while (at < to && block[at] === 0x20) at++;
  return at === to || block[at] === 0 ? value : -1;
}

/**
 * A number field as CPython's `nti` reads it: base-256 after a 0x80 or 0xff byte (0xff:
 * negative), else ASCII up to the first NUL, Python's whitespace stripped, `int(text, 8)`.
 * Undefined where tarfile raises.
 */
function pythonNumber(block: Buffer, from: number, to: number): bigint | undefined {
  const first = block[from] ?? 0;
  if (first === 0x80 || first === 0xff) {
    let value = 0n;
    for (let i = from + 1; i < to; i++) value = value * 256n + BigInt(block[i] ?? 0);
    return first === 0xff ? value - 256n ** BigInt(to - from - 1) : value;
  }
  const nul = block.subarray(from, to).indexOf(0);
  const field = block.subarray(from, nul === -1 ? to : from + nul);
  if (field.some((byte) => byte >= 0x80)) return undefined;
  const text = pythonStrip(field.toString('latin1'));
  if (text === '') return 0n;
  const match = PY_OCTAL.exec(text);
  if (match === null) return undefined;
  const value = BigInt(`0o${(match[3] ?? '').replaceAll('_', '')}`);
  return match[1] === '-' ? -value : value;
}

function pythonStrip(text: string): string {
  let from = 0;
  let to = text.length;
  while (from < to && PY_SPACE.has(text.charCodeAt(from))) from++;
  while (to > from && PY_SPACE.has(text.charCodeAt(to - 1))) to--;
  return text.slice(from, to);
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The name field, after the prefix field (tarfile joins them for all but GNU types). */
function nameOf(block: Buffer, type: string): string {
  const field = (from: number, to: number) => {
    const nul = block.indexOf(0, from);
    return block.toString('utf8', from, nul === -1 || nul > to ? to : nul);
  };
  const name = field(0, 100);
  const prefix = type === 'L' || type === 'K' || type === 'S' ? '' : field(345, 500);
  return prefix === '' ? name : `${prefix}/${name}`;
}
