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
  return !plainLiterals(head.toString('latin1', bounds.start, end), isObjectType);
}

/**
 * What `\s` matches among the characters of a header read as latin1 (tab to carriage return,
 * space, no-break space), without a regular expression per character: a flood of `.npz`
 * members each made to be read spent most of its time there.
 */
function isSpace(code: number): boolean {
  return (code >= 9 && code <= 13) || code === 32 || code === 160;
}

/** What `\w` matches: ASCII letters, digits and `_`. */
function isWordChar(code: number): boolean {
  return (code >= 48 && code <= 57) || (code >= 65 && code <= 90) || (code >= 97 && code <= 122) || code === 95;
}

/** What ends a stretch of a header outside its strings: a string's start, or a comment. */
const STRING_OR_COMMENT = /['"#]/g;

/**
 * Walks the quoted strings of a Python literal: false when `refused` says so of one, or when
 * the text is spelt in a way whose strings the walk would not read as Python does. The runtime
 * finds each quote (a header of 10 KB of spaces took 46 µs read a character at a time, and a
 * flood of `.npz` members may each have one); what stands before a quote is read backwards,
 * over spaces only, so that no character is read twice.
 */
function plainLiterals(text: string, refused: (literal: string) => boolean): boolean {
  // Where the last string's closing quote stands.
  let lastClose = -1;
  let from = 0;
  for (;;) {
    STRING_OR_COMMENT.lastIndex = from;
    const found = STRING_OR_COMMENT.exec(text);
    if (found === null) return true;
    const at = found.index;
    const quote = text[at] ?? '';
    if (quote === '#') return false;
    let before = at - 1;
    while (before >= from && isSpace(text.charCodeAt(before))) before--;
    // A prefix (r'', b'', u''), a string right after another, or a triple quote.
    if (before >= 0 && (before === lastClose || isWordChar(text.charCodeAt(before)))) return false;
    if (text[at + 1] === quote) return false;
    const close = text.indexOf(quote, at + 1);
    // A string the header's end cuts short: what it holds so far.
    const literal = text.slice(at + 1, close === -1 ? text.length : close);
    if (literal.includes('\\') || refused(literal)) return false;
    if (close === -1) return true;
    lastClose = close;
    from = close + 1;
  }
}
