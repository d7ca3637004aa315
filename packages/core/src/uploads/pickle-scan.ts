/**
 * What a pickle stream's opcodes take as their argument, and what they do to the stack, for
 * {@link PickleImportScan}. Kinds of stack item: a mark, a text string (`str`, which
 * `STACK_GLOBAL` needs), or anything else.
 */
const MARK = 0;
const STR = 1;
const OTHER = 2;
type Item = typeof MARK | typeof STR | typeof OTHER;

/** How an opcode's argument is read. */
type Arg =
  | { readonly kind: 'none' }
  | { readonly kind: 'fixed'; readonly bytes: number }
  | { readonly kind: 'sized'; readonly bytes: number }
  | { readonly kind: 'line'; readonly lines: number; readonly chars: LineRule };

/** What a line argument may hold for Python's unpickler to read it at all (a superset). */
type LineRule = 'identifier' | 'number' | 'quoted' | 'ascii' | 'any';

/** What an opcode does once its argument is read; false when Python would refuse the stream. */
type Effect = (scan: Machine, arg: number) => boolean;

interface Opcode {
  readonly arg: Arg;
  readonly effect: Effect;
}

/** The unpickler's state as far as the scan needs it. */
interface Machine {
  stack: Item[];
  memo: Map<number, Item>;
  /** Memo entries were dropped (the bound, or an index the scan could not read). */
  memoOverflowed: boolean;
  /** A name has been imported: a call from here on may run it. */
  imported: boolean;
  /** A call after an import: the scan's verdict. */
  called: boolean;
}

const MAX_STACK = 100_000;
/** Opcodes read before a stream is called a pickle: no other content keeps the unpickler going. */
const MAX_OPCODES = 1_000_000;
const MAX_MEMO = 100_000;

const NONE: Arg = { kind: 'none' };
const fixed = (bytes: number): Arg => ({ kind: 'fixed', bytes });
const sized = (bytes: number): Arg => ({ kind: 'sized', bytes });
const line = (chars: LineRule, lines = 1): Arg => ({ kind: 'line', lines, chars });

function push(item: Item): Effect {
  return (m) => pushItem(m, item);
}

function pushItem(m: Machine, item: Item): boolean {
  m.stack.push(item);
  return true;
}

function pop(count: number, then?: Item): Effect {
  return (m) => {
    for (let i = 0; i < count; i++) {
      const item = m.stack.pop();
      if (item === undefined || item === MARK) return false;
    }
    return then === undefined || pushItem(m, then);
  };
}

/** Pops `count` items that the opcode uses on the one below them, which must be there. */
function popOnto(count: number): Effect {
  return (m) => pop(count)(m, 0) && m.stack.length > 0 && m.stack.at(-1) !== MARK;
}

/** Pops to the mark, for the item below the mark, which must be there (APPENDS, SETITEMS). */
function popMarkOnto(m: Machine): boolean {
  return popMark()(m, 0) && m.stack.length > 0 && m.stack.at(-1) !== MARK;
}

function popMark(then?: Item): Effect {
  return (m) => {
    for (;;) {
      const item = m.stack.pop();
      if (item === undefined) return false;
      if (item === MARK) return then === undefined || pushItem(m, then);
    }
  };
}

function memoGet(m: Machine, index: number): boolean {
  const item = m.memo.get(index);
  // An index the scan dropped, or could not read, may hold a string: taken as one.
  if (item === undefined) return (m.memoOverflowed || Number.isNaN(index)) && pushItem(m, STR);
  return pushItem(m, item);
}

function memoPut(m: Machine, index: number): boolean {
  const top = m.stack.at(-1);
  if (top === undefined || top === MARK) return false;
  if (Number.isNaN(index) || (m.memo.size >= MAX_MEMO && !m.memo.has(index))) m.memoOverflowed = true;
  else m.memo.set(index, top);
  return true;
}

/** `POP`: the top item, or the mark itself when no item stands above it (as Python does). */
function popOne(m: Machine): boolean {
  return m.stack.pop() !== undefined;
}

/** An opcode that imports a name (and pushes it). */
function imports(pops: Effect = () => true): Effect {
  return (m, arg) => {
    if (!pops(m, arg)) return false;
    m.imported = true;
    return pushItem(m, OTHER);
  };
}

/** An opcode that calls what is on the stack: after an import, the scan's verdict. */
function calls(pops: Effect): Effect {
  return (m, arg) => {
    if (!pops(m, arg)) return false;
    if (m.imported) m.called = true;
    return true;
  };
}

/** Every opcode of protocols 0 to 5 (CPython's `Lib/pickle.py`); any other byte ends the scan. */
const TABLE: readonly (readonly [string | number, Arg, Effect])[] = [
  ['(', NONE, push(MARK)],
  // The end of one pickle; a loader may read another after it.
  ['.', NONE, (m) => ((m.stack = []), m.memo.clear(), (m.memoOverflowed = false), true)],
  ['0', NONE, popOne],
  ['1', NONE, popMark()],
  ['2', NONE, (m) => m.stack.length > 0 && m.stack.at(-1) !== MARK && pushItem(m, m.stack.at(-1) ?? OTHER)],
  ['F', line('number'), push(OTHER)],
  ['I', line('number'), push(OTHER)],
  ['J', fixed(4), push(OTHER)],
  ['K', fixed(1), push(OTHER)],
  ['L', line('number'), push(OTHER)],
  ['M', fixed(2), push(OTHER)],
  ['N', NONE, push(OTHER)],
  ['P', line('ascii'), push(OTHER)],
  ['Q', NONE, pop(1, OTHER)],
  ['R', NONE, calls(pop(2, OTHER))],
  ['S', line('quoted'), push(STR)],
  ['T', sized(4), push(STR)],
  ['U', sized(1), push(STR)],
  ['V', line('any'), push(STR)],
  ['X', sized(4), push(STR)],
  ['a', NONE, popOnto(1)],
  ['b', NONE, calls(popOnto(1))],
  ['c', line('identifier', 2), imports()],
  ['d', NONE, popMark(OTHER)],
  ['}', NONE, push(OTHER)],
  ['e', NONE, popMarkOnto],
  ['g', line('number'), (m, index) => memoGet(m, index)],
  ['h', fixed(1), (m, index) => memoGet(m, index)],
  ['i', line('identifier', 2), (m, arg) => imports(popMark())(m, arg) && calls(() => true)(m, arg)],
  ['j', fixed(4), (m, index) => memoGet(m, index)],
  ['l', NONE, popMark(OTHER)],
  [']', NONE, push(OTHER)],
  ['o', NONE, calls((m) => m.stack.at(-1) !== MARK && popMark(OTHER)(m, 0))],
  ['p', line('number'), (m, index) => memoPut(m, index)],
  ['q', fixed(1), (m, index) => memoPut(m, index)],
  ['r', fixed(4), (m, index) => memoPut(m, index)],
  ['s', NONE, popOnto(2)],
  ['t', NONE, popMark(OTHER)],
  [')', NONE, push(OTHER)],
  ['u', NONE, popMarkOnto],
  ['G', fixed(8), push(OTHER)],
  ['B', sized(4), push(OTHER)],
  ['C', sized(1), push(OTHER)],
  [0x80, fixed(1), (_m, protocol) => protocol <= 5],
  [0x81, NONE, calls(pop(2, OTHER))],
  // The extension registry (`copyreg.add_extension`) is empty unless an application fills
  // it, and Python refuses a code it does not hold: where it is empty, no pickle goes on.
  [0x82, fixed(1), () => false],
  [0x83, fixed(2), () => false],
  [0x84, fixed(4), () => false],
  [0x85, NONE, pop(1, OTHER)],
  [0x86, NONE, pop(2, OTHER)],
  [0x87, NONE, pop(3, OTHER)],
  [0x88, NONE, push(OTHER)],
  [0x89, NONE, push(OTHER)],
  [0x8a, sized(1), push(OTHER)],
  [0x8b, sized(4), push(OTHER)],
  [0x8c, sized(1), push(STR)],
  [0x8d, sized(8), push(STR)],
  [0x8e, sized(8), push(OTHER)],
  [0x8f, NONE, push(OTHER)],
  [0x90, NONE, popMarkOnto],
  [0x91, NONE, popMark(OTHER)],
  [0x92, NONE, calls(pop(3, OTHER))],
  // Module and name from the stack: both must be `str`, or Python refuses before importing.
  [0x93, NONE, imports((m) => m.stack.at(-1) === STR && m.stack.at(-2) === STR && pop(2)(m, 0))],
  [0x94, NONE, (m) => memoPut(m, m.memo.size)],
  [0x95, fixed(8), () => true],
  [0x96, sized(8), push(OTHER)],
  [0x97, NONE, push(OTHER)],
  [0x98, NONE, pop(1, OTHER)],
];
const OPCODES = new Map<number, Opcode>(
  TABLE.map(([code, arg, effect]) => [typeof code === 'string' ? code.charCodeAt(0) : code, { arg, effect }]),
);

const NEWLINE = 0x0a;

/** The bytes a line argument of each rule may hold for Python to read it (a superset). */
function bytesOf(...ranges: readonly (string | readonly [number, number])[]): Uint8Array {
  const table = new Uint8Array(256);
  for (const range of ranges) {
    if (typeof range === 'string') for (const c of range) table[c.charCodeAt(0)] = 1;
    else table.fill(1, range[0], range[1] + 1);
  }
  table[NEWLINE] = 0;
  return table;
}
const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_';
const LINE_BYTES: Readonly<Record<LineRule, Uint8Array | undefined>> = {
  // Dotted Python names; bytes over 0x7f for names in other scripts.
  identifier: bytesOf(LETTERS, '0123456789.', [0x80, 0xff]),
  // int() (any base its prefixes name, underscores, L of Python 2), float() (exponents, inf,
  // infinity, nan), and the white space both strip.
  number: bytesOf('0123456789+-._eElLxXoObBaAcCdDfFiInNtTyY \t\r\v\f'),
  ascii: bytesOf([0x00, 0x7f]),
  quoted: undefined,
  any: undefined,
};

/**
 * Reads an upload as Python's unpickler would from its first byte, and tells when the stream
 * calls something after importing a name, which is what a pickle that runs code on loading
 * does: an import (`GLOBAL`, `INST`, `STACK_GLOBAL` with two strings on the stack), then a
 * call (`REDUCE`, `BUILD`, `OBJ`, `INST`, `NEWOBJ`, `NEWOBJ_EX`). The extension registry's
 * `EXT1`/`EXT2`/`EXT4` import too, but only codes an application registered
 * (`copyreg.add_extension`); with none registered Python refuses them, and so does the scan. Any protocol, with or without the `PROTO` header Python writes from
 * protocol 2 on. It keeps the kinds of the stack's items and of the memo's, so that a stream
 * which is no pickle stops the scan at the first byte the unpickler would refuse: an unknown
 * opcode, a stack that runs out, `STACK_GLOBAL` without two strings, a line argument Python
 * cannot read. Where Python reads more than the scan models, the scan takes the reading that
 * goes on. Text and the binary formats in use stop within their first bytes. Bounded: a stack
 * of 100,000 items, or a million opcodes, is a pickle (no other content gets there; and a
 * stream of harmless opcodes costs a step each), and the memo keeps 100,000 entries, an index
 * beyond those taken for a string. Sized payloads are skipped, and lines any bytes may fill are
 * searched for their end, not read a step per byte.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: part of the upload check
 * const scan = new PickleCallScan(() => {
 *   throw new Error('a pickle that runs code');
 * });
 * for await (const chunk of upload) scan.push(chunk);
 * ```
 */
export class PickleCallScan {
  readonly #onCall: () => void;
  readonly #machine: Machine = {
    stack: [],
    memo: new Map(),
    memoOverflowed: false,
    imported: false,
    called: false,
  };
  /** The opcode whose argument is being read, or undefined between opcodes. */
  #opcode: Opcode | undefined;
  /** Bytes of a fixed or size argument read so far (little-endian). */
  #argBytes: number[] = [];
  /** What is left of a sized argument's payload, to skip. */
  #skip = 0;
  /** Line arguments: lines still to end, the current line's length, first and last byte. */
  #linesLeft = 0;
  #lineLength = 0;
  #lineFirst = -1;
  #lineLast = -1;
  /** A number line's value as a memo index: its digits, NaN once anything else is in it. */
  #lineValue = 0;
  /** Opcodes read: a stream the unpickler reads this far is a pickle. */
  #opcodes = 0;
  #done = false;

  constructor(onCall: () => void) {
    this.#onCall = onCall;
  }

  push(chunk: Uint8Array): void {
    let at = 0;
    while (!this.#done && at < chunk.length) {
      if (this.#skip > 0) {
        const taken = Math.min(this.#skip, chunk.length - at);
        this.#skip -= taken;
        at += taken;
        if (this.#skip === 0) this.#apply(0);
        continue;
      }
      const arg = this.#opcode?.arg;
      if (arg?.kind === 'line') {
        at = this.#lineRun(chunk, at, arg.chars);
        continue;
      }
      const byte = chunk[at] ?? 0;
      at += 1;
      this.#step(byte);
    }
  }

  /** Reads a line argument up to its end in `chunk`, or the chunk's end; where it stopped. */
  #lineRun(chunk: Uint8Array, at: number, rule: LineRule): number {
    const end = chunk.indexOf(NEWLINE, at);
    const stop = end === -1 ? chunk.length : end;
    const allowed = LINE_BYTES[rule];
    if (allowed !== undefined) {
      // A dotted name starts with a letter (or a byte of another script), not a digit or a dot.
      if (rule === 'identifier' && this.#lineLength === 0 && stop > at && (chunk[at] ?? 0) < 0x41) {
        this.#done = true;
        return stop;
      }
      let value = this.#lineValue;
      for (let i = at; i < stop; i++) {
        const byte = chunk[i] ?? 0;
        if (allowed[byte] === 0) {
          this.#done = true;
          return stop;
        }
        if (rule === 'number') value = numberLineValue(value, byte);
      }
      this.#lineValue = value;
    }
    if (stop > at) {
      if (this.#lineLength === 0) this.#lineFirst = chunk[at] ?? -1;
      this.#lineLast = chunk[stop - 1] ?? -1;
      this.#lineLength += stop - at;
    }
    if (end === -1) return stop;
    this.#endLine(rule);
    return end + 1;
  }

  #step(byte: number): void {
    const opcode = this.#opcode;
    if (opcode === undefined) {
      const next = OPCODES.get(byte);
      if (next === undefined) {
        this.#done = true;
        return;
      }
      this.#opcodes += 1;
      if (this.#opcodes > MAX_OPCODES) {
        this.#found();
        return;
      }
      this.#opcode = next;
      this.#argBytes = [];
      if (next.arg.kind === 'line') {
        this.#linesLeft = next.arg.lines;
        this.#startLine();
      } else if (next.arg.kind === 'none') this.#apply(0);
      return;
    }
    const arg = opcode.arg;
    // Lines are read by #lineRun.
    if (arg.kind === 'none' || arg.kind === 'line') return;
    this.#argBytes.push(byte);
    if (this.#argBytes.length < arg.bytes) return;
    const value = this.#argBytes.reduceRight((sum, b) => sum * 256 + b, 0);
    if (arg.kind === 'fixed') {
      this.#apply(value);
      return;
    }
    // BINSTRING's and LONG4's sizes are signed: Python refuses a negative one.
    if (arg.bytes === 4 && value >= 2 ** 31 && (opcode === BINSTRING || opcode === LONG4)) {
      this.#done = true;
      return;
    }
    this.#skip = value;
    if (value === 0) this.#apply(0);
  }

  #startLine(): void {
    this.#lineLength = 0;
    this.#lineFirst = -1;
    this.#lineLast = -1;
    this.#lineValue = 0;
  }

  /** A line argument has ended: checked, then the next line or the opcode. */
  #endLine(rule: LineRule): void {
    const quoted =
      this.#lineLength >= 2 &&
      this.#lineFirst === this.#lineLast &&
      (this.#lineFirst === 0x22 || this.#lineFirst === 0x27);
    if ((rule === 'quoted' && !quoted) || ((rule === 'identifier' || rule === 'number') && this.#lineLength === 0)) {
      this.#done = true;
      return;
    }
    this.#linesLeft -= 1;
    if (this.#linesLeft > 0) {
      this.#startLine();
      return;
    }
    this.#apply(this.#lineValue);
  }

  /** Runs the opcode whose argument is complete. */
  #apply(value: number): void {
    const opcode = this.#opcode;
    this.#opcode = undefined;
    if (opcode === undefined) return;
    const machine = this.#machine;
    if (!opcode.effect(machine, value)) this.#done = true;
    else if (machine.called || machine.stack.length >= MAX_STACK) this.#found();
  }

  #found(): void {
    this.#done = true;
    this.#onCall();
  }
}

const BINSTRING = OPCODES.get(0x54);
const LONG4 = OPCODES.get(0x8b);

/** The memo index a line spells so far: digits, with the white space, `+` and `_` int() allows. */
function numberLineValue(sum: number, byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return sum * 10 + (byte - 0x30);
  if (byte === 0x20 || byte === 0x2b || byte === 0x5f || (byte >= 0x09 && byte <= 0x0d)) return sum;
  return Number.NaN;
}
