/** Kinds of stack item the scan tells apart: a mark, a text string (`str`), anything else. */
const MARK = 0;
const STR = 1;
const OTHER = 2;
type Item = typeof MARK | typeof STR | typeof OTHER;

/**
 * The unpickler's stack as kinds of item, in runs of one kind: a file of one byte repeated
 * (a blank raw image of `(` or `N`) is one run, whatever its length.
 */
class KindStack {
  readonly #kinds: Item[] = [];
  readonly #counts: number[] = [];

  /** Runs held: what the stack costs in memory. */
  get runs(): number {
    return this.#kinds.length;
  }

  push(kind: Item, count = 1): void {
    const last = this.#kinds.length - 1;
    if (last >= 0 && this.#kinds[last] === kind) this.#counts[last] = (this.#counts[last] ?? 0) + count;
    else {
      this.#kinds.push(kind);
      this.#counts.push(count);
    }
  }

  /** The top item's kind, or undefined when the stack is empty. */
  top(): Item | undefined {
    return this.#kinds.at(-1);
  }

  /** The kind of the item below the top one. */
  second(): Item | undefined {
    return (this.#counts.at(-1) ?? 0) >= 2 ? this.#kinds.at(-1) : this.#kinds.at(-2);
  }

  /** Pops the top item, a mark included; its kind, or undefined when the stack is empty. */
  pop(): Item | undefined {
    const last = this.#kinds.length - 1;
    const kind = this.#kinds[last];
    if (kind === undefined) return undefined;
    const count = (this.#counts[last] ?? 1) - 1;
    if (count > 0) this.#counts[last] = count;
    else {
      this.#kinds.pop();
      this.#counts.pop();
    }
    return kind;
  }

  /** Pops every item down to the nearest mark, and the mark; false when there is none. */
  popToMark(): boolean {
    while (this.#kinds.length > 0 && this.#kinds.at(-1) !== MARK) {
      this.#kinds.pop();
      this.#counts.pop();
    }
    return this.pop() === MARK;
  }

  clear(): void {
    this.#kinds.length = 0;
    this.#counts.length = 0;
  }
}

/**
 * The memo's kinds by index: indices below {@link MAX_MEMO} in a byte array that grows as they
 * come (the pickler numbers them from 0), others in a map. A `Map` for all made a flood of
 * MEMOIZE opcodes, a byte each, cost a map entry each, a sixth of the scan.
 */
class Memo {
  /** Kind + 1 by index (0: none). */
  #dense = new Uint8Array(64);
  readonly #sparse = new Map<number, Item>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(index: number): Item | undefined {
    if (index >= 0 && index < this.#dense.length) {
      const kind = this.#dense[index] ?? 0;
      return kind === 0 ? undefined : ((kind - 1) as Item);
    }
    return this.#sparse.get(index);
  }

  has(index: number): boolean {
    return this.get(index) !== undefined;
  }

  set(index: number, item: Item): void {
    if (index >= 0 && index < MAX_MEMO) {
      if (index >= this.#dense.length) {
        const grown = new Uint8Array(Math.min(MAX_MEMO, Math.max(index + 1, this.#dense.length * 2)));
        grown.set(this.#dense);
        this.#dense = grown;
      }
      if (this.#dense[index] === 0) this.#size += 1;
      this.#dense[index] = item + 1;
      return;
    }
    if (!this.#sparse.has(index)) this.#size += 1;
    this.#sparse.set(index, item);
  }
}

/** The unpickler's state as far as the scan needs it. */
interface Machine {
  readonly stack: KindStack;
  readonly memo: Memo;
  /**
   * An index the scan could not read, or the memo's bound reached: from then on any index may
   * hold a string, and is read as one.
   */
  memoUncertain: boolean;
  /** A name was imported: what loading runs from here on (a module's code, a call). */
  imported: boolean;
}

const MAX_RUNS = 100_000;
const MAX_MEMO = 100_000;
/** Opcodes read before a stream is called a pickle; runs of one push opcode count once. */
const MAX_OPCODES = 4_000_000;

/** How an opcode's argument is read. */
type Arg =
  | { readonly kind: 'none' }
  | { readonly kind: 'fixed'; readonly bytes: number }
  | { readonly kind: 'sized'; readonly bytes: number; readonly signed: boolean }
  | { readonly kind: 'line'; readonly chars: LineRule; readonly index?: boolean };

/** What a line argument may hold for CPython to read it at all (a superset). */
type LineRule = 'identifier' | 'number' | 'quoted' | 'ascii' | 'any';

/** What an opcode does once its argument is read; false where CPython would stop loading. */
type Effect = (m: Machine, arg: number) => boolean;

interface Opcode {
  readonly arg: Arg;
  readonly effect: Effect;
  /** A push of one kind without argument: a run of it is pushed at once. */
  readonly pushes?: Item | undefined;
}

const NONE: Arg = { kind: 'none' };
const fixed = (bytes: number): Arg => ({ kind: 'fixed', bytes });
const sized = (bytes: number, signed = false): Arg => ({ kind: 'sized', bytes, signed });
const line = (chars: LineRule): Arg => ({ kind: 'line', chars });
/** A line holding a memo index, whose value the scan reads. */
const INDEX_LINE: Arg = { kind: 'line', chars: 'number', index: true };

function push(item: Item): Effect {
  return (m) => {
    m.stack.push(item);
    return true;
  };
}

/** Pops `count` items above the nearest mark, then pushes `then`. */
function pop(count: number, then?: Item): Effect {
  return (m) => {
    for (let i = 0; i < count; i++) {
      const item = m.stack.pop();
      if (item === undefined || item === MARK) return false;
    }
    if (then !== undefined) m.stack.push(then);
    return true;
  };
}

/** Pops `count` items, which the opcode puts into the item below them, which must be there. */
function popOnto(count: number): Effect {
  return (m) => pop(count)(m, 0) && m.stack.top() !== undefined && m.stack.top() !== MARK;
}

/** Pops to the mark, then pushes `then`. */
function popMark(then?: Item): Effect {
  return (m) => {
    if (!m.stack.popToMark()) return false;
    if (then !== undefined) m.stack.push(then);
    return true;
  };
}

/** Pops to the mark, for the item below the mark, which must be there (APPENDS, SETITEMS). */
function popMarkOnto(m: Machine): boolean {
  return m.stack.popToMark() && m.stack.top() !== undefined && m.stack.top() !== MARK;
}

// An index past 2^53 (`Infinity` here) cannot be told apart from its neighbours as a number, and
// Python's pure-Python unpickler (joblib's) takes it whole: whatever it names may be a string.
function memoGet(m: Machine, index: number): boolean {
  const item = m.memoUncertain || index === Number.POSITIVE_INFINITY ? STR : m.memo.get(index);
  if (item === undefined) return false;
  m.stack.push(item);
  return true;
}

function memoPut(m: Machine, index: number): boolean {
  const top = m.stack.top();
  if (top === undefined || top === MARK) return false;
  if (!Number.isSafeInteger(index) || (m.memo.size >= MAX_MEMO && !m.memo.has(index))) m.memoUncertain = true;
  else m.memo.set(index, top);
  return true;
}

/**
 * An opcode that imports a name. Importing runs the module's code, and what the stream does
 * with the name after it (a call, or a method run by `APPEND` or `SETITEM` on what it got) can
 * run anything: an import is the scan's verdict.
 */
function imports(before: Effect = () => true): Effect {
  return (m, arg) => {
    if (!before(m, arg)) return false;
    m.imported = true;
    return true;
  };
}

/** Every opcode of protocols 0 to 5 (CPython's `Lib/pickle.py`); any other byte ends the scan. */
const TABLE: readonly (readonly [string | number, Arg, Effect, Item?])[] = [
  ['(', NONE, push(MARK), MARK],
  // The end of one pickle; a loader may read another after it.
  [
    '.',
    NONE,
    (m) => {
      m.stack.clear();
      // One unpickler loading again keeps its memo, a new one starts empty: either may be read.
      if (m.memo.size > 0) m.memoUncertain = true;
      return true;
    },
  ],
  // POP takes the mark itself when no item stands above it.
  ['0', NONE, (m) => m.stack.pop() !== undefined],
  ['1', NONE, popMark()],
  ['2', NONE, (m) => (m.stack.top() ?? MARK) !== MARK && (m.stack.push(m.stack.top() ?? OTHER), true)],
  ['F', line('number'), push(OTHER)],
  ['I', line('number'), push(OTHER)],
  ['J', fixed(4), push(OTHER)],
  ['K', fixed(1), push(OTHER)],
  ['L', line('number'), push(OTHER)],
  ['M', fixed(2), push(OTHER)],
  ['N', NONE, push(OTHER), OTHER],
  ['P', line('ascii'), push(OTHER)],
  ['Q', NONE, pop(1, OTHER)],
  ['R', NONE, pop(2, OTHER)],
  ['S', line('quoted'), push(STR)],
  ['T', sized(4, true), push(STR)],
  ['U', sized(1), push(STR)],
  ['V', line('any'), push(STR)],
  ['X', sized(4), push(STR)],
  ['a', NONE, popOnto(1)],
  ['b', NONE, popOnto(1)],
  // CPython imports the module before it looks the name up: the module line is the verdict.
  ['c', line('identifier'), imports()],
  ['d', NONE, popMark(OTHER)],
  ['}', NONE, push(OTHER), OTHER],
  ['e', NONE, popMarkOnto],
  ['g', INDEX_LINE, memoGet],
  ['h', fixed(1), memoGet],
  ['i', line('identifier'), imports()],
  ['j', fixed(4), memoGet],
  ['l', NONE, popMark(OTHER)],
  [']', NONE, push(OTHER), OTHER],
  ['o', NONE, (m) => m.stack.top() !== MARK && popMark(OTHER)(m, 0)],
  ['p', INDEX_LINE, memoPut],
  ['q', fixed(1), memoPut],
  ['r', fixed(4), memoPut],
  ['s', NONE, popOnto(2)],
  ['t', NONE, popMark(OTHER)],
  [')', NONE, push(OTHER), OTHER],
  ['u', NONE, popMarkOnto],
  ['G', fixed(8), push(OTHER)],
  ['B', sized(4), push(OTHER)],
  ['C', sized(1), push(OTHER)],
  [0x80, fixed(1), (_m, protocol) => protocol <= 5],
  [0x81, NONE, pop(2, OTHER)],
  // The extension registry (`copyreg`) is empty until something fills it, and CPython refuses a
  // code it does not hold. Filling it takes an import first, which is the verdict already.
  [0x82, fixed(1), () => false],
  [0x83, fixed(2), () => false],
  [0x84, fixed(4), () => false],
  [0x85, NONE, pop(1, OTHER)],
  [0x86, NONE, pop(2, OTHER)],
  [0x87, NONE, pop(3, OTHER)],
  [0x88, NONE, push(OTHER), OTHER],
  [0x89, NONE, push(OTHER), OTHER],
  [0x8a, sized(1), push(OTHER)],
  [0x8b, sized(4, true), push(OTHER)],
  [0x8c, sized(1), push(STR)],
  [0x8d, sized(8), push(STR)],
  [0x8e, sized(8), push(OTHER)],
  [0x8f, NONE, push(OTHER), OTHER],
  [0x90, NONE, popMarkOnto],
  [0x91, NONE, popMark(OTHER)],
  [0x92, NONE, pop(3, OTHER)],
  // Module and name from the stack: both must be `str`, or CPython refuses before importing.
  [0x93, NONE, imports((m) => m.stack.top() === STR && m.stack.second() === STR)],
  [0x94, NONE, (m) => memoPut(m, m.memoUncertain ? Number.NaN : m.memo.size)],
  // FRAME: its end is kept by the scan itself (see #frameEnd).
  [0x95, fixed(8), () => true],
  [0x96, sized(8), push(OTHER)],
  [0x97, NONE, push(OTHER), OTHER],
  [0x98, NONE, pop(1, OTHER)],
];
const OPCODES = new Map<number, Opcode>(
  TABLE.map(([code, arg, effect, pushes]) => [
    typeof code === 'string' ? code.charCodeAt(0) : code,
    { arg, effect, pushes },
  ]),
);

const NEWLINE = 0x0a;
const NUL = 0x00;
const FRAME = 0x95;
const STOP = OPCODES.get(0x2e);

/** The bytes a line argument of each rule may hold for CPython to read it (a superset). */
function bytesOf(...ranges: readonly (string | readonly [number, number])[]): Uint8Array {
  const table = new Uint8Array(256);
  for (const range of ranges) {
    if (typeof range === 'string') for (const c of range) table[c.charCodeAt(0)] = 1;
    else table.fill(1, range[0], range[1] + 1);
  }
  table[NEWLINE] = 0;
  return table;
}
const LINE_BYTES: Readonly<Record<LineRule, Uint8Array | undefined>> = {
  // Dotted Python names. Names in other scripts are legal, but the modules installed have ASCII
  // names, and the scan would otherwise read a fifth of random bytes as names.
  identifier: bytesOf('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789.'),
  // int() (any base its prefixes name, underscores, L of Python 2), float() (exponents, inf,
  // infinity, nan), and the white space both strip.
  number: bytesOf('0123456789+-._eElLxXoObBaAcCdDfFiInNtTyY \t\r\v\f'),
  ascii: bytesOf([0x00, 0x7f]),
  quoted: undefined,
  any: undefined,
};

/**
 * Reads an upload as CPython's unpickler would from its first byte, and tells when the stream
 * imports a name (`GLOBAL`, `INST`, `STACK_GLOBAL` with two strings on the stack), which is
 * what a pickle that runs code on loading does: importing runs the module's code, and what
 * follows may call the name, or run one of its methods through `APPEND` or `SETITEM`. Any
 * protocol, with or without the `PROTO` header CPython writes from protocol 2 on.
 *
 * It keeps the kinds of the stack's items (in runs) and of the memo's, so that a stream which is
 * no pickle stops the scan at the first byte CPython would refuse: an unknown opcode, a stack
 * that runs out, `STACK_GLOBAL` without two strings, a line argument CPython cannot read. Where
 * CPython reads more than the scan models (its C reader ends a number at a NUL byte, one
 * unpickler keeps its memo from one pickle to the next), the scan takes the reading that goes
 * on, and frames it follows as a C reader of a file does (see #frameFault). One reading it
 * does not take: CPython's pure-Python reader (joblib's) imports the module of a module line
 * the end of the stream cuts short, its last byte dropped (`cthisX`). Taken, it would refuse
 * every file of one word starting with `c` or `i`, such as `inside`; such a stream can import
 * a module but call nothing.
 * The extension codes (`EXT1`/`EXT2`/`EXT4`) stop it: their registry is empty until an import
 * fills it.
 *
 * Text and the binary formats in use stop within their first bytes; what is taken for a pickle
 * without being one is text whose first line is one word starting with a lowercase `c` or `i`
 * (`GLOBAL` or `INST` of that module; CPython's pure-Python reader imports before it looks for
 * the mark `INST` needs, and with no name line at all), and about one random binary file in
 * 100,000 whose first bytes happen to spell such a line. Bounded: 100,000 runs of stack items,
 * or 4,000,000 opcodes (a run of one push opcode counting once), is a pickle, and the memo
 * keeps 100,000 entries (past them any index is read as a string). Sized payloads are skipped
 * and lines searched for their end.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: part of the upload check
 * const scan = new PickleImportScan(() => {
 *   throw new Error('a pickle that imports');
 * });
 * for await (const chunk of upload) scan.push(chunk);
 * ```
 */
export class PickleImportScan {
  readonly #onImport: () => void;
  readonly #machine: Machine = { stack: new KindStack(), memo: new Memo(), memoUncertain: false, imported: false };
  /** The opcode whose argument is being read, or undefined between opcodes. */
  #opcode: Opcode | undefined;
  /** Bytes of a fixed or size argument read so far (little-endian). */
  #argBytes: number[] = [];
  /** What is left of a sized argument's payload, to skip. */
  #skip = 0;
  /** A line argument: its length so far, first and last byte. */
  #lineLength = 0;
  #lineFirst = -1;
  #lineLast = -1;
  /** After a NUL, CPython's C reader has its value: the rest of the line is not read. */
  #lineEnded = false;
  /** A byte CPython cannot read was seen in a line inside a frame (see #lineRun). */
  #lineInvalid = false;
  /** Continuation bytes a UTF-8 character of the line still needs. */
  #utf8Left = 0;
  /** A number line's value as a memo index; NaN where the scan cannot read it. */
  #lineValue = 0;
  #lineNegative = false;
  /** Opcodes read: a stream the unpickler reads this far is a pickle. */
  #opcodes = 0;
  /** Bytes of the stream before the current chunk. */
  #base = 0;
  /** Where the current FRAME ends in the stream, while one is being read. */
  #frameEnd: number | undefined;
  /**
   * A frame read otherwise by CPython's C reader of a file (see #frameFault) is a pickle once
   * the stream reaches this end: a frame longer than the stream fails in every reader first.
   */
  #frameFaultAt: number | undefined;
  #done = false;

  constructor(onImport: () => void) {
    this.#onImport = onImport;
  }

  /** Whether the scan has its answer: the stream is no pickle, or the pickle has ended. */
  get finished(): boolean {
    return this.#done && this.#frameFaultAt === undefined;
  }

  push(chunk: Uint8Array): void {
    const base = this.#base;
    this.#base += chunk.length;
    if (this.#frameFaultAt !== undefined && this.#base >= this.#frameFaultAt) {
      this.#frameFaultAt = undefined;
      this.#found();
      return;
    }
    let at = 0;
    while (!this.#done && at < chunk.length) {
      if (this.#skip > 0) {
        const taken = Math.min(this.#skip, chunk.length - at);
        this.#skip -= taken;
        at += taken;
        if (this.#skip === 0) this.#apply(0, base + at);
        continue;
      }
      const opcode = this.#opcode;
      if (opcode?.arg.kind === 'line') {
        at = this.#lineRun(chunk, at, base, opcode.arg.chars, opcode.arg.index === true);
        continue;
      }
      const byte = chunk[at] ?? 0;
      at += 1;
      if (opcode !== undefined) {
        this.#argByte(opcode, byte, base + at);
        continue;
      }
      const next = OPCODES.get(byte);
      if (next === undefined) {
        this.#done = true;
        return;
      }
      // A frame read to its end is over; a new one begun inside another is no stream the
      // pickler writes, and CPython's C reader of a file reads it otherwise than its bytes say.
      const start = base + at - 1;
      if (this.#frameEnd !== undefined && start >= this.#frameEnd) this.#frameEnd = undefined;
      if (byte === FRAME && this.#frameEnd !== undefined) {
        this.#frameFault(base + chunk.length);
        return;
      }
      this.#opcodes += 1;
      if (this.#opcodes > MAX_OPCODES) {
        this.#found();
        return;
      }
      if (next.pushes !== undefined) {
        // A run of one push opcode (a blank raw image) is pushed at once.
        let count = 1;
        while (chunk[at] === byte) {
          at += 1;
          count += 1;
        }
        this.#machine.stack.push(next.pushes, count);
        if (this.#machine.stack.runs >= MAX_RUNS) this.#found();
        continue;
      }
      this.#opcode = next;
      this.#argBytes = [];
      if (next.arg.kind === 'line') this.#startLine();
      else if (next.arg.kind === 'none') this.#apply(0, base + at);
    }
  }

  /** One byte of a fixed or sized argument; `end` is where the stream stands after it. */
  #argByte(opcode: Opcode, byte: number, end: number): void {
    const arg = opcode.arg;
    if (arg.kind !== 'fixed' && arg.kind !== 'sized') return;
    this.#argBytes.push(byte);
    if (this.#argBytes.length < arg.bytes) return;
    const value = this.#argBytes.reduceRight((sum, b) => sum * 256 + b, 0);
    if (arg.kind === 'fixed') {
      if (opcode === OPCODES.get(FRAME)) this.#frameEnd = end + value;
      this.#apply(value, end);
      return;
    }
    // BINSTRING's and LONG4's sizes are signed: CPython refuses a negative one.
    if (arg.signed && value >= 2 ** 31) {
      this.#done = true;
      return;
    }
    this.#skip = value;
    if (value === 0) this.#apply(0, end);
    else if (this.#frameEnd !== undefined && end + value > this.#frameEnd) this.#crossesFrame(end + value);
  }

  /** An argument ends at `end`: past the frame it began in, CPython's C reader of a file reads on elsewhere. */
  #crossesFrame(end: number): void {
    if (this.#frameEnd !== undefined && end > this.#frameEnd) this.#frameFault(this.#base);
  }

  /**
   * The stream leaves its frame otherwise than the pickler writes it (an argument across the
   * frame's end, a frame inside a frame, a pickle ending inside its frame). CPython's C reader
   * of a file then drops the frame's rest and reads on from after it, which the scan cannot
   * follow: it is a pickle, once the stream holds the whole frame (`seen`: bytes so far).
   */
  #frameFault(seen: number): void {
    const frameEnd = this.#frameEnd ?? 0;
    this.#done = true;
    if (seen >= frameEnd) this.#found();
    else this.#frameFaultAt = frameEnd;
  }

  /** Reads a line argument up to its end in `chunk`, or the chunk's end; where it stopped. */
  #lineRun(chunk: Uint8Array, at: number, base: number, rule: LineRule, index: boolean): number {
    const end = chunk.indexOf(NEWLINE, at);
    const stop = end === -1 ? chunk.length : end;
    // A line that runs past its frame's end is read from after the frame by a C file reader,
    // whatever its bytes inside the frame are.
    if (this.#frameEnd !== undefined && base + (end === -1 ? stop : end + 1) > this.#frameEnd) {
      this.#frameFault(base + chunk.length);
      return stop;
    }
    if (!this.#lineBytesValid(chunk, at, stop, rule, index)) {
      // Inside a frame the line may yet run past its end, which decides before its bytes do.
      if (this.#frameEnd === undefined) {
        this.#done = true;
        return stop;
      }
      this.#lineInvalid = true;
    }
    if (stop > at) {
      if (this.#lineLength === 0) this.#lineFirst = chunk[at] ?? -1;
      this.#lineLast = chunk[stop - 1] ?? -1;
      this.#lineLength += stop - at;
    }
    if (end === -1) return stop;
    this.#endLine(rule, base + end + 1);
    return end + 1;
  }

  /**
   * Whether CPython can read `chunk[at..stop)` as more of a line of `rule`. After a NUL a number
   * is read (the rest is not), and a module name is cut there, the rest decoded as UTF-8 all the
   * same.
   */
  #lineBytesValid(chunk: Uint8Array, at: number, stop: number, rule: LineRule, index: boolean): boolean {
    const allowed = LINE_BYTES[rule];
    if (allowed === undefined || this.#lineInvalid || (this.#lineEnded && rule !== 'identifier')) return true;
    // A dotted name does not start with its dot (installed modules may start with a digit).
    if (rule === 'identifier' && this.#lineLength === 0 && stop > at && chunk[at] === 0x2e) return false;
    for (let i = at; i < stop; i++) {
      const byte = chunk[i] ?? 0;
      if (this.#lineEnded) {
        if (!this.#utf8(byte)) return false;
        continue;
      }
      if (byte === NUL) {
        this.#lineEnded = true;
        if (rule === 'identifier') continue;
        return true;
      }
      if (allowed[byte] === 0) return false;
      if (index) this.#numberByte(byte);
    }
    return true;
  }

  /** Whether `byte` goes on valid UTF-8 (simplified: overlong forms pass). */
  #utf8(byte: number): boolean {
    if (this.#utf8Left > 0) {
      this.#utf8Left -= 1;
      return (byte & 0xc0) === 0x80;
    }
    if (byte < 0x80) return true;
    this.#utf8Left =
      byte >= 0xc2 && byte <= 0xdf ? 1 : byte >= 0xe0 && byte <= 0xef ? 2 : byte >= 0xf0 && byte <= 0xf4 ? 3 : -1;
    return this.#utf8Left > 0;
  }

  /** A memo index as int() reads it: digits, a sign, white space and underscores. */
  #numberByte(byte: number): void {
    if (byte >= 0x30 && byte <= 0x39) {
      const value = this.#lineValue * 10 + (byte - 0x30);
      // Past 2^53 two indexes would read as one number: one too long to tell is Infinity.
      this.#lineValue = Number.isSafeInteger(value) || Number.isNaN(value) ? value : Number.POSITIVE_INFINITY;
    } else if (byte === 0x2d) this.#lineNegative = true;
    else if (byte !== 0x20 && byte !== 0x2b && byte !== 0x5f && (byte < 0x09 || byte > 0x0d))
      this.#lineValue = Number.NaN;
  }

  #startLine(): void {
    this.#lineLength = 0;
    this.#lineFirst = -1;
    this.#lineLast = -1;
    this.#lineEnded = false;
    this.#lineInvalid = false;
    this.#utf8Left = 0;
    this.#lineValue = 0;
    this.#lineNegative = false;
  }

  /** A line argument has ended: checked, then the opcode run. */
  #endLine(rule: LineRule, end: number): void {
    const quoted =
      this.#lineLength >= 2 &&
      this.#lineFirst === this.#lineLast &&
      (this.#lineFirst === 0x22 || this.#lineFirst === 0x27);
    const empty = this.#lineLength === 0 && (rule === 'identifier' || rule === 'number');
    if ((rule === 'quoted' && !quoted) || empty || this.#utf8Left > 0 || this.#lineInvalid) {
      this.#done = true;
      return;
    }
    // `-0` is 0; a negative index CPython refuses, or anything the scan cannot read, is NaN.
    const value = this.#lineNegative && this.#lineValue !== 0 ? Number.NaN : this.#lineValue;
    this.#apply(value, end);
  }

  /** Runs the opcode whose argument is complete, where the stream stands at `end`. */
  #apply(value: number, end: number): void {
    const opcode = this.#opcode;
    this.#opcode = undefined;
    if (opcode === undefined) return;
    this.#crossesFrame(end);
    if (this.#done) return;
    // A pickle that ends inside its frame leaves bytes a C reader of a file skips.
    if (opcode === STOP && this.#frameEnd !== undefined && end < this.#frameEnd) {
      this.#frameFault(this.#base);
      return;
    }
    const machine = this.#machine;
    if (!opcode.effect(machine, value)) this.#done = true;
    else if (machine.imported || machine.stack.runs >= MAX_RUNS) this.#found();
  }

  #found(): void {
    this.#done = true;
    this.#onImport();
  }
}
