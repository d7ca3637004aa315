/** The `.npy` magic, by which NumPy reads a file, or a member of an `.npz`, as an array. */
export const NUMPY_MAGIC = Buffer.from('\x93NUMPY', 'latin1');

/**
 * The longest header NumPy reads unless told otherwise (`max_header_size`); with
 * `allow_pickle=True`, the very loads that unpickle, it reads any length, so a longer one is
 * refused rather than read in part.
 */
export const NUMPY_MAX_HEADER = 10_000;

/** A type string that makes an array of Python objects: `O`, `|O`, `<O8`, `object`, `object_`. */
const OBJECT_TYPE = /^[\d|<>=]*(?:O\d*|object_?\d*)$/;
/** A subarray's shape in a type string (`(2,)O`), taken out before its fields are read. */
const SHAPE = /\([\d\s,]*\)/g;

/**
 * Whether a type string makes Python objects: NumPy reads `'O,'`, `'i4, O'`, `'1O'` and
 * `'(2,)O'` as types with an object field too, so each comma-separated field is held against
 * the object types, its shape and repeat count set aside.
 */
function isObjectType(text: string): boolean {
  if (OBJECT_TYPE.test(text)) return true;
  if (!text.includes(',') && !text.includes('(')) return false;
  return text
    .replace(SHAPE, '')
    .split(',')
    .some((field) => OBJECT_TYPE.test(field.trim()));
}

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
 * Whether a `.npy` (its first bytes, the whole header when there is one) is an array of Python
 * objects, which `np.load(allow_pickle=True)` unpickles. NumPy reads the header with
 * `ast.literal_eval`, so its type strings may be spelt in more ways than NumPy writes them:
 * double quotes, escapes, prefixes (`r''`), triple quotes, literals written side by side
 * (`'|' 'O'`), comments. Each quoted string is held against the object types; a header
 * spelt in any of the ways NumPy never writes (a backslash, a prefix, a triple quote, two
 * strings side by side, a `#`), or longer than {@link NUMPY_MAX_HEADER}, counts as one.
 */
export function holdsNumpyObjects(head: Buffer): boolean {
  const bounds = headerBounds(head);
  if (bounds === undefined) return false;
  if (bounds.length > NUMPY_MAX_HEADER) return true;
  const end = Math.min(head.length, bounds.start + bounds.length);
  return !plainLiterals(head, bounds.start, end);
}

/** What each byte of a header is to {@link plainLiterals}, read as latin1. */
const OTHER = 0;
const SPACE = 1;
const WORD = 2;
const QUOTE = 3;
const COMMENT = 4;
/** What `\s` matches among latin1 characters (tab to carriage return, space, no-break space), `\w` (ASCII letters, digits, `_`), quotes and `#`. */
const BYTE_KINDS = (() => {
  const kinds = new Uint8Array(256);
  for (const code of [9, 10, 11, 12, 13, 32, 160]) kinds[code] = SPACE;
  for (let code = 0; code < 128; code++) if (/\w/.test(String.fromCharCode(code))) kinds[code] = WORD;
  kinds[0x27] = QUOTE;
  kinds[0x22] = QUOTE;
  kinds[0x23] = COMMENT;
  return kinds;
})();
const BACKSLASH = 0x5c;

/**
 * Walks the quoted strings of the Python literal `bytes[start, end)` (latin1): false when a
 * string is an object type ({@link isObjectType}), or when the text is spelt in a way whose
 * strings the walk would not read as Python does. Byte by byte through a table of what each
 * byte is, and only a string holding an `O` or `o` (as every object type does) is made into a
 * string: a flood of `.npz` members, each head 128 strings of one letter, spent most of its
 * time making and testing them.
 */
function plainLiterals(bytes: Buffer, start: number, end: number): boolean {
  // What the last thing outside a string was: a string's end (two side by side join), or a word.
  let previous = OTHER;
  for (let at = start; at < end; at++) {
    const code = bytes[at] ?? 0;
    const kind = BYTE_KINDS[code] ?? OTHER;
    if (kind === SPACE) continue;
    if (kind === COMMENT) return false;
    if (kind !== QUOTE) {
      previous = kind;
      continue;
    }
    // A prefix (r'', b'', u''), a string right after another, or a triple quote.
    if (previous !== OTHER || (at + 1 < end && bytes[at + 1] === code)) return false;
    let close = at + 1;
    let mayBeObjects = false;
    for (; close < end; close++) {
      const inside = bytes[close];
      if (inside === code) break;
      if (inside === BACKSLASH) return false;
      if (inside === 0x4f || inside === 0x6f) mayBeObjects = true;
    }
    // A string the header's end cuts short: what it holds so far.
    if (mayBeObjects && isObjectType(bytes.toString('latin1', at + 1, close))) return false;
    at = close;
    previous = QUOTE;
  }
  return true;
}
