/** The `.npy` magic, by which NumPy reads a file, or a member of an `.npz`, as an array. */
export const NUMPY_MAGIC = Buffer.from('\x93NUMPY', 'latin1');

/**
 * The longest header NumPy reads unless told otherwise (`max_header_size`); with
 * `allow_pickle=True`, the very loads that unpickle, it reads any length, so a longer one is
 * refused rather than read in part.
 */
export const NUMPY_MAX_HEADER = 10_000;

/** Where the header of a `.npy` starts and how long it says it is, once its first 12 bytes are there. */
function headerBounds(head: Buffer): { readonly start: number; readonly length: number } | undefined {
  if (head.length < 10 || !head.subarray(0, NUMPY_MAGIC.length).equals(NUMPY_MAGIC)) return undefined;
  const version = head[6];
  if (version === 1) return { start: 10, length: head.readUInt16LE(8) };
  if ((version === 2 || version === 3) && head.length >= 12) return { start: 12, length: head.readUInt32LE(8) };
  return undefined;
}

/**
 * How many bytes of an upload starting with `head` the NumPy check needs: the whole header of a
 * `.npy` (at most {@link NUMPY_MAX_HEADER}), else `fallback` (at least 12, to see the header's length).
 */
export function numpyHeadLength(head: Buffer, fallback: number): number {
  const bounds = headerBounds(head);
  if (bounds === undefined) return fallback;
  return Math.max(fallback, bounds.start + Math.min(bounds.length, NUMPY_MAX_HEADER));
}

/**
 * Whether a `.npy` (its first bytes, the whole header when there is one) may be read as an
 * array whose type holds Python objects, which `np.load(allow_pickle=True)` unpickles. NumPy
 * reads the header with `ast.literal_eval` and hands its `descr` to `descr_to_dtype`, which
 * takes far more than NumPy writes: a list of 2-character strings (`['xO']` is a field `x` of
 * type `O`), type strings with spaces (`'2 O'`), object types by other names (`'T'`, `'\x11'`).
 * So the header is read as NumPy writes it, and anything else counts as holding objects:
 *
 * - a dict whose `descr` (and any key but `shape` and `fortran_order`) is a type string, a
 *   `(descr, shape)` tuple, or a list of `(name, descr)` and `(name, descr, shape)` tuples;
 * - each type string made only of the type codes and names of plain numbers, text, bytes and
 *   dates (an allow list: {@link isPlainType});
 * - Python literals only as NumPy writes them: no escapes, prefixes, triple quotes, strings side
 *   by side or comments; a header longer than {@link NUMPY_MAX_HEADER}, or cut short, counts too.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's test of an upload's first bytes
 * if (holdsNumpyObjects(head)) refuse();
 * ```
 */
export function holdsNumpyObjects(head: Buffer): boolean {
  const bounds = headerBounds(head);
  if (bounds === undefined) return false;
  if (bounds.length > NUMPY_MAX_HEADER) return true;
  const end = Math.min(head.length, bounds.start + bounds.length);
  try {
    return (new HeaderReader(head, bounds.start, end).read() & PLAIN_HEADER) === 0;
  } catch (thrown) {
    if (thrown === NOT_PLAIN) return true;
    throw thrown;
  }
}

/*
 * What a literal may stand for in a header NumPy would read as plain values, as bits: each
 * value's bits come from its parts', as it is read, so no tree of the literal is built.
 */
const STRING = 1;
const INTEGER = 1 << 1;
/** An integer or a tuple of integers. */
const SHAPE = 1 << 2;
/** A string, or a `(title, name)` tuple of strings. */
const FIELD_NAME = 1 << 3;
/** A `(name, descr)` or `(name, descr, shape)` tuple. */
const FIELD = 1 << 4;
/** A plain `(descr, shape)` tuple, or a list of plain fields; a string is judged where it stands. */
const DESCR = 1 << 5;
/** A dict whose values are plain descrs, but for the keys `shape` and `fortran_order`. */
const PLAIN_HEADER = 1 << 6;
/** The string `shape` or `fortran_order`. */
const OTHER_KEY = 1 << 7;

/**
 * Thrown (never out of this module) by {@link HeaderReader} for text it does not read as Python
 * would: made once, so that throwing it captures no stack.
 */
const NOT_PLAIN = new Error('not a plain literal');

/** How deep containers may nest; deeper ones NumPy never writes. */
const MAX_DEPTH = 32;

/** What each byte of a header is to {@link HeaderReader}, read as latin1. */
const SPACE = 1;
const WORD = 2;
const DIGIT = 3;
/** Python's whitespace between tokens (tab to carriage return, space); `\w` (ASCII letters, digits, `_`). */
const BYTE_KINDS = (() => {
  const kinds = new Uint8Array(256);
  for (const code of [9, 10, 11, 12, 13, 32]) kinds[code] = SPACE;
  for (let code = 0; code < 128; code++) if (/\w/.test(String.fromCharCode(code))) kinds[code] = WORD;
  for (let code = 0x30; code <= 0x39; code++) kinds[code] = DIGIT;
  return kinds;
})();
const BACKSLASH = 0x5c;
const SHAPE_KEY = Buffer.from('shape');
const ORDER_KEY = Buffer.from('fortran_order');

/**
 * Reads the Python literal `bytes[start, end)` (latin1) for what it may stand for in a header,
 * or throws {@link NOT_PLAIN} at anything NumPy never writes whose meaning to Python the reader
 * would have to guess: a backslash, a comment, a prefix (`r''`), a triple quote, two strings
 * side by side, names other than `True`, `False` and `None`, operators, a literal cut short.
 * Byte by byte through a table of what each byte is; a string's text is made only where it
 * stands as a type, and only when it is not one of the common short codes.
 */
class HeaderReader {
  readonly #bytes: Buffer;
  readonly #end: number;
  #at: number;
  /** Where the string last read starts and ends. */
  #stringStart = 0;
  #stringEnd = 0;

  constructor(bytes: Buffer, start: number, end: number) {
    this.#bytes = bytes;
    this.#at = start;
    this.#end = end;
  }

  read(): number {
    const roles = this.#value(0);
    if (this.#next() !== -1) throw NOT_PLAIN;
    return roles;
  }

  /** The next byte that is not whitespace (-1 at the end), left unread. */
  #next(): number {
    while (this.#at < this.#end && BYTE_KINDS[this.#bytes[this.#at] ?? 0] === SPACE) this.#at++;
    return this.#at < this.#end ? (this.#bytes[this.#at] ?? -1) : -1;
  }

  #close(closer: number): void {
    if (this.#next() !== closer) throw NOT_PLAIN;
    this.#at++;
  }

  /** After a value: true past a comma, false at anything else (left unread). */
  #comma(): boolean {
    if (this.#next() !== 0x2c) return false;
    this.#at++;
    return true;
  }

  #value(depth: number): number {
    if (depth > MAX_DEPTH) throw NOT_PLAIN;
    const code = this.#next();
    if (code === 0x27 || code === 0x22) return this.#string(code);
    this.#at++;
    if (code === 0x28) return this.#tuple(depth + 1);
    if (code === 0x5b) return this.#list(depth + 1);
    if (code === 0x7b) return this.#braced(depth + 1);
    if (code === 0x2d || code === 0x2b) return this.#number(this.#next());
    this.#at--;
    return this.#number(code);
  }

  #string(quote: number): number {
    const bytes = this.#bytes;
    if (bytes[this.#at + 1] === quote && bytes[this.#at + 2] === quote) throw NOT_PLAIN;
    const start = this.#at + 1;
    let close = start;
    for (; close < this.#end; close++) {
      const inside = bytes[close];
      if (inside === quote) break;
      if (inside === BACKSLASH || inside === 0x0a || inside === 0x0d) throw NOT_PLAIN;
    }
    if (close >= this.#end) throw NOT_PLAIN;
    this.#at = close + 1;
    this.#stringStart = start;
    this.#stringEnd = close;
    return (
      STRING |
      FIELD_NAME |
      (isKey(bytes, start, close, SHAPE_KEY) || isKey(bytes, start, close, ORDER_KEY) ? OTHER_KEY : 0)
    );
  }

  /** Whether a value read (its `roles`, and the place of the string it is) is a plain descr. */
  #isDescr(roles: number, start: number, end: number): boolean {
    if ((roles & DESCR) !== 0) return true;
    return (roles & STRING) !== 0 && isPlainTypeAt(this.#bytes, start, end);
  }

  /** `(x)` is x; `()`, `(x,)` and `(x, y)` are tuples. Its first three items are kept by their roles. */
  #tuple(depth: number): number {
    let count = 0;
    let comma = false;
    let all = STRING | INTEGER;
    let first = 0;
    let second = 0;
    let third = 0;
    let firstStart = 0;
    let firstEnd = 0;
    let secondStart = 0;
    let secondEnd = 0;
    while (this.#next() !== 0x29) {
      const item = this.#value(depth);
      if (count === 0) [first, firstStart, firstEnd] = [item, this.#stringStart, this.#stringEnd];
      else if (count === 1) [second, secondStart, secondEnd] = [item, this.#stringStart, this.#stringEnd];
      else if (count === 2) third = item;
      count++;
      all &= item;
      if (!this.#comma()) break;
      comma = true;
    }
    this.#close(0x29);
    if (count === 1 && !comma) {
      this.#stringStart = firstStart;
      this.#stringEnd = firstEnd;
      return first;
    }
    let result = (all & INTEGER) !== 0 ? SHAPE : 0;
    if (count === 2 && (all & STRING) !== 0) result |= FIELD_NAME;
    if (
      (count === 2 || count === 3) &&
      (first & FIELD_NAME) !== 0 &&
      (count === 2 || (third & SHAPE) !== 0) &&
      this.#isDescr(second, secondStart, secondEnd)
    ) {
      result |= FIELD;
    }
    if (count === 2 && (second & SHAPE) !== 0 && this.#isDescr(first, firstStart, firstEnd)) result |= DESCR;
    return result;
  }

  /** A list: a plain descr when each item is a plain field. */
  #list(depth: number): number {
    let all = FIELD;
    while (this.#next() !== 0x5d) {
      all &= this.#value(depth);
      if (!this.#comma()) break;
    }
    this.#close(0x5d);
    return all === 0 ? 0 : DESCR;
  }

  /** `{}` and `{k: v, ...}` are dicts; `{x, ...}` is a set (of no use to a header). */
  #braced(depth: number): number {
    if (this.#next() === 0x7d) {
      this.#at++;
      return PLAIN_HEADER;
    }
    let key = this.#value(depth);
    if (this.#next() !== 0x3a) {
      while (this.#comma() && this.#next() !== 0x7d) this.#value(depth);
      this.#close(0x7d);
      return 0;
    }
    let plain = true;
    for (;;) {
      this.#close(0x3a);
      const value = this.#value(depth);
      if ((key & OTHER_KEY) === 0 && !this.#isDescr(value, this.#stringStart, this.#stringEnd)) plain = false;
      if (!this.#comma() || this.#next() === 0x7d) break;
      key = this.#value(depth);
    }
    this.#close(0x7d);
    return plain ? PLAIN_HEADER : 0;
  }

  /**
   * A number, `True`, `False` or `None`. An integer may carry Python 2's `L` (NumPy drops it
   * from headers of versions 1 and 2 before it reads them a second time).
   */
  #number(code: number): number {
    const bytes = this.#bytes;
    const start = this.#at;
    if (code !== -1 && BYTE_KINDS[code] === DIGIT) {
      this.#at++;
      while (this.#at < this.#end && (BYTE_KINDS[bytes[this.#at] ?? 0] === DIGIT || bytes[this.#at] === 0x5f)) {
        this.#at++;
      }
      // `3L`, or `3 L`: Python reads a number and a name either way.
      if (this.#next() === 0x4c) this.#at++;
      if (this.#at < this.#end && (BYTE_KINDS[bytes[this.#at] ?? 0] ?? 0) >= WORD) throw NOT_PLAIN;
      return INTEGER | SHAPE;
    }
    while (this.#at < this.#end && (BYTE_KINDS[bytes[this.#at] ?? 0] ?? 0) >= WORD) this.#at++;
    const word = bytes.subarray(start, this.#at);
    if (word.equals(TRUE) || word.equals(FALSE) || word.equals(NONE)) return 0;
    throw NOT_PLAIN;
  }
}

/** Whether the string `bytes[start, end)` is `key`. */
function isKey(bytes: Buffer, start: number, end: number, key: Buffer): boolean {
  return end - start === key.length && bytes.compare(key, 0, key.length, start, end) === 0;
}

const TRUE = Buffer.from('True');
const FALSE = Buffer.from('False');
const NONE = Buffer.from('None');

/**
 * The names NumPy gives plain types (`np.sctypeDict`, less `object` and `object_`): a type
 * string may name a type instead of giving its code.
 */
const PLAIN_NAMES =
  'bool|bool_|byte|bytes|bytes_|cdouble|clongdouble|complex|complex64|complex128|complex256|csingle|' +
  'datetime64|double|float|float16|float32|float64|float128|half|int|int_|int8|int16|int32|int64|intc|' +
  'intp|long|longdouble|longlong|short|single|str|str_|timedelta64|ubyte|uint|uint8|uint16|uint32|' +
  'uint64|uintc|uintp|ulong|ulonglong|unicode|ushort|void';

/** The names, alone or after a byte order: how a type string names a plain type most often. */
const PLAIN_TYPE_NAMES: ReadonlySet<string> = new Set(
  PLAIN_NAMES.split('|').flatMap((name) => ['', '<', '>', '|', '='].map((order) => `${order}${name}`)),
);
const WHITESPACE = /[\t\n\v\f\r ]/;
const WHITESPACES = /[\t\n\v\f\r ]/g;

/**
 * Every one-character type code NumPy reads but `O`, `T` and `\x11`: the codes of Python
 * objects and of variable-width strings, both unpickled.
 */
const PLAIN_CODE_LETTERS = '?BDFGHILMNPQSUVabcdefghilmnpqu';

/**
 * One field of a type string with its whitespace and subarray shapes taken out: a byte order,
 * a repeat count, a byte order, then a plain type's code ({@link PLAIN_CODE_LETTERS}) and size
 * or its name, and a date's unit.
 */
const PLAIN_FIELD = new RegExp(
  `^[<>|=]?\\d*[<>|=]?(?:[${PLAIN_CODE_LETTERS}]\\d*|${PLAIN_NAMES})` +
    '(?:\\[\\d*(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as|generic)\\])?$',
);
/** A subarray's shape in a type string (`(2,)f8`). */
const SUBARRAY_SHAPE = /\([\d,]*\)/g;

/**
 * Whether a type string holds only plain types, however NumPy would split it: it reads
 * `'i4, O'`, `'2 O'` and `'(2,)O'` as types with an object field, so whitespace goes, shapes
 * go, and each comma-separated field must be plain (an empty one holds nothing).
 */
function isPlainType(text: string): boolean {
  if (PLAIN_TYPE_NAMES.has(text)) return true;
  const bare = WHITESPACE.test(text) ? text.replace(WHITESPACES, '') : text;
  if (PLAIN_FIELD.test(bare)) return true;
  return bare
    .replace(SUBARRAY_SHAPE, '')
    .split(',')
    .every((field) => field === '' || PLAIN_FIELD.test(field));
}

/** The one-character codes of plain types, and the byte orders, as tables by byte. */
const PLAIN_CODES = new Uint8Array(256);
for (const code of Buffer.from(PLAIN_CODE_LETTERS, 'latin1')) PLAIN_CODES[code] = 1;
const BYTE_ORDERS = new Uint8Array(256);
for (const code of Buffer.from('<>|=', 'latin1')) BYTE_ORDERS[code] = 1;

/**
 * {@link isPlainType} of the string `bytes[start, end)`: the way NumPy writes a type (`<f8`,
 * `|b1`, `<U10`) read from the bytes, any other made into text and matched in full.
 */
function isPlainTypeAt(bytes: Buffer, start: number, end: number): boolean {
  let at = start;
  if (at < end && BYTE_ORDERS[bytes[at] ?? 0] === 1) at++;
  if (at < end && PLAIN_CODES[bytes[at] ?? 0] === 1) {
    at++;
    while (at < end && BYTE_KINDS[bytes[at] ?? 0] === DIGIT) at++;
    if (at === end) return true;
  }
  return isPlainType(latin1(bytes, start, end));
}

/** Latin1 text of a few bytes, made without a call into the runtime (a type string is short). */
function latin1(bytes: Buffer, start: number, end: number): string {
  if (end - start > 32) return bytes.toString('latin1', start, end);
  let text = '';
  for (let at = start; at < end; at++) text += String.fromCharCode(bytes[at] ?? 0);
  return text;
}
