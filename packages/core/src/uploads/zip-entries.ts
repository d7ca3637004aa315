import { codeLengthsRead, inflateHead, partial, type InflatedHead } from './deflate-head.js';

/** A local file header's signature (`PK\x03\x04`) and a central directory header's (`PK\x01\x02`). */
const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const PK = Buffer.from('PK', 'latin1');
const EMPTY = Buffer.alloc(0);
/** How much of each name is handed on: enough for any extension. */
const NAME_END_BYTES = 16;
/** Info-ZIP's Unicode Path extra field: its ID, and where its name starts (after ID, length, version and CRC-32). */
const UNICODE_PATH = 0x7075;
const UNICODE_PATH_NAME_AT = 9;
/** How many fields of one extra field are walked before the walk is remembered: real ones hold a few. */
const UNREMEMBERED_FIELDS = 8;
/** Slots for remembered walks: more than the stream positions the walks still to come may meet (46 + 2 × 64 KiB). */
const WALK_SLOTS = 1 << 17;
/**
 * Headers that may start inside the name or extra field of a header before it, where no writer
 * puts one: a few come by chance (a CRC-32 or an offset that spells a signature), and a flood
 * of them makes a scan read a header every 4 bytes.
 */
const MAX_NESTED_HEADERS = 64;
/**
 * The fewest bytes one entry whose data starts as a NumPy array takes in a real archive: a
 * local header (30), a name (1) and the array's header (64, as NumPy pads it). Heads closer
 * together than that are made up: a flood of them, one every 37 bytes, had each 512-byte head
 * read, 150 ms of CPU a MiB. Past 64 KiB of slack, `onRefused` is called.
 */
const MIN_HEAD_SPACING = 95;
const HEAD_SLACK_BYTES = 64 * 1024;
/**
 * How many bytes of heads longer than their first read (a NumPy header past 512 bytes) may be
 * read for each byte of the upload so far, past 1 MiB of them: real entries do not overlap, and
 * a writer's header compresses a few times at most. Heads that claim more are made up: a flood
 * of them, each claiming a 10 KB header, would read 100 times the upload. The first MiB costs
 * some 5 ms, and lets an archive of a thousand tables with wide, well-compressed headers pass.
 */
const LONG_HEADS_PER_BYTE = 4;
const LONG_HEADS_SLACK_BYTES = 1024 * 1024;
/**
 * How many code lengths of dynamic blocks the readings of entries as deflated may take, in all,
 * for each byte of the upload so far, past the slack: a real compressed member holds one block
 * header (up to 316) in a few hundred bytes or more, where made-up entries of 35 bytes, each a
 * dynamic block header whose one-bit code lengths run over the entries after it, cost 110 to 130
 * ms of CPU a MiB (9 lengths a byte). At 2, such a flood costs about a quarter of that.
 */
const CODE_LENGTHS_PER_BYTE = 2;

/**
 * The compression methods Python's zipfile opens besides stored and deflated: bzip2 (12), LZMA
 * (14) and Zstandard (93, Python 3.14). NumPy reads an `.npz` member so compressed as any other,
 * and the heads are read only as they stand and as deflated.
 */
const UNREAD_METHODS: ReadonlySet<number> = new Set([12, 14, 93]);

interface HeaderOffsets {
  readonly methodAt: number;
  readonly lengthAt: number;
  readonly extraLengthAt: number;
  readonly nameAt: number;
}

const LOCAL_OFFSETS: HeaderOffsets = Object.freeze({ methodAt: 8, lengthAt: 26, extraLengthAt: 28, nameAt: 30 });
const CENTRAL_OFFSETS: HeaderOffsets = Object.freeze({ methodAt: 10, lengthAt: 28, extraLengthAt: 30, nameAt: 46 });

/** Where a header keeps its name's and extra field's lengths, and where its name starts; by signature. */
function headerOffsets(signature: number): HeaderOffsets | undefined {
  if (signature === LOCAL) return LOCAL_OFFSETS;
  if (signature === CENTRAL) return CENTRAL_OFFSETS;
  return undefined;
}

/**
 * Walks of extra fields, by a stream position each passed: how far past it the walk stopped, and
 * the end it could not pass (both within 64 KiB, one extra field). A slot holds one position; a
 * position pushed out of it is only walked again.
 */
interface Walks {
  readonly positions: Float64Array;
  readonly stops: Uint16Array;
  readonly ends: Uint16Array;
}

/**
 * The ends of the entry names of a ZIP archive (their last 16 bytes, which is all a check of an
 * extension needs) as its bytes stream past, from every local file header and every central
 * directory header, so that an entry is seen wherever it stands: a reader such as PyTorch's
 * finds `data.pkl` by its name in the central directory, not by its place. Only the end: a
 * name may be 64 KiB long, and a flood of made-up headers would cost a string that long each.
 *
 * The name in each Info-ZIP Unicode Path extra field (0x7075) of a header is handed on too,
 * whatever its version and CRC-32 say: Python's zipfile (3.12 on) lists an entry by that name
 * when its CRC-32 matches the header's name, and other readers take it from local headers.
 * The extra field is walked as Python walks it (ID, length, data). Past its first few fields, a
 * walk that meets a stream position an earlier walk passed goes on from where that one stopped:
 * a flood of made-up headers, each claiming 64 KiB of small fields over the next, stays linear.
 *
 * Headers are found by their signatures. The scan goes on just past each signature, never past
 * the header it read: compressed data can hold a signature by chance, or on purpose with long
 * lengths, and skipping that "name" or "extra field" would skip the real headers inside it. Past
 * {@link MAX_NESTED_HEADERS} headers that start inside the name or extra field of one before
 * them, or more heads than the bytes so far can hold (see {@link EntryHeads}), `onRefused` is
 * called (the upload check refuses the upload): a header every 4 bytes, each
 * claiming the next 20 KiB, cost 330 ms of CPU a MiB to read, 150 times plain bytes. A
 * header cut between two chunks is kept until the chunks that follow complete it (at most a
 * header, a name and an extra field of 64 KiB each; gathered and joined once, not at each
 * chunk). At `end()`, a header whose name the archive's end cuts short is passed over, and one
 * whose extra field it cuts short is read as far as it goes.
 *
 * With `heads`, the first bytes of each local header's entry data, as they stand after its
 * name and extra field (the bytes a reader takes for a stored entry), are handed on too, for
 * the entries whose data starts with `heads.prefix`: NumPy reads any member of an `.npz` that
 * starts with its magic as an array. The same data is read as deflated too (`inflateHead`), and
 * its first bytes handed on likewise: whatever the header's method says, since Python's zipfile
 * follows the central directory's. A head whose first bytes say it is longer (`heads.lengthOf`)
 * is handed on whole. A head waits for the bytes it lacks in the chunks that follow, without
 * holding up the scan for headers. A local or central header whose method is one Python's
 * zipfile opens and this scan does not read (bzip2, LZMA, Zstandard) calls `onRefused` too: its
 * entry could be an array of objects that no head shows.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's ZIP scan
 * const names = new ZipEntryNames((nameEnd) => {
 *   if (nameEnd.endsWith('.pkl')) throw new Error('a pickle inside');
 * });
 * for await (const chunk of upload) names.push(chunk);
 * names.end();
 * ```
 */
export class ZipEntryNames {
  readonly #onName: (nameEnd: string) => void;
  readonly #heads: HeadSink | undefined;
  /** What the last chunk left unread: an incomplete header, or a byte that may start a signature. */
  #rest: Buffer = EMPTY;
  /** Chunks that came after `#rest` without completing its header, and how many bytes they hold. */
  #waiting: Buffer[] = [];
  #waitingLength = 0;
  /** How long `#rest` must grow before its header is complete (0 while its lengths are unread). */
  #need = 0;
  /** How many bytes have been pushed: the stream position where the next chunk starts. */
  #pushed = 0;
  /** Made when an extra field holds more fields than real ones do. */
  #walks: Walks | undefined;
  /** The heads of entries still being gathered, each fed every byte after its header. */
  #gathering: (EntryHead | DeflatedHead)[] = [];
  readonly #onRefused: (() => void) | undefined;
  /** The stream position where the names and extra fields of the headers read so far end. */
  #coveredUntil = 0;
  /** Headers read so far that start inside the name or extra field of one before them. */
  #nested = 0;

  constructor(onName: (nameEnd: string) => void, heads?: EntryHeads, onRefused?: () => void) {
    this.#onName = onName;
    this.#onRefused = onRefused;
    let handed = 0;
    let longer = 0;
    let codeLengths = 0;
    this.#heads =
      heads === undefined
        ? undefined
        : {
            ...heads,
            onHead: (head) => {
              handed += 1;
              if (handed * MIN_HEAD_SPACING > this.#pushed + HEAD_SLACK_BYTES) this.#onRefused?.();
              heads.onHead(head);
            },
            claim: (bytes) => {
              longer += bytes;
              if (longer > LONG_HEADS_PER_BYTE * this.#pushed + LONG_HEADS_SLACK_BYTES) this.#onRefused?.();
            },
            read: (lengths) => {
              codeLengths += lengths;
              if (codeLengths > CODE_LENGTHS_PER_BYTE * this.#pushed + HEAD_SLACK_BYTES) this.#onRefused?.();
            },
          };
  }

  push(chunk: Uint8Array): void {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.#pushed += bytes.length;
    // Heads begun in earlier chunks first: those the scan below begins are fed from their own start.
    if (this.#gathering.length > 0) this.#gathering = this.#gathering.filter((head) => head.feed(bytes));
    if (this.#rest.length + this.#waitingLength + bytes.length < this.#need) {
      // Joined once the header is complete: joining at each small chunk would cost its length each.
      // Copied: the chunk's buffer may be reused once the upload check returns.
      this.#waiting.push(Buffer.from(bytes));
      this.#waitingLength += bytes.length;
      return;
    }
    const data =
      this.#rest.length === 0 && this.#waitingLength === 0
        ? bytes
        : Buffer.concat([this.#rest, ...this.#waiting, bytes]);
    this.#waiting = [];
    this.#waitingLength = 0;
    this.#scan(data, false);
  }

  /** The archive has ended: what is left is scanned, an incomplete header passed over, and heads cut short handed on. */
  end(): void {
    const rest = Buffer.concat([this.#rest, ...this.#waiting]);
    this.#rest = EMPTY;
    this.#waiting = [];
    this.#waitingLength = 0;
    this.#need = 0;
    this.#scan(rest, true);
    this.#walks = undefined;
    const gathering = this.#gathering;
    this.#gathering = [];
    for (const head of gathering) head.end();
  }

  #scan(data: Buffer, final: boolean): void {
    // The stream position of `data[0]`.
    const base = this.#pushed - data.length;
    this.#need = 0;
    let at = 0;
    for (;;) {
      const found = data.indexOf(PK, at);
      if (found === -1) {
        // A last `P` may begin a signature the next chunk ends.
        this.#rest = final || data.length === 0 ? EMPTY : Buffer.from(data.subarray(data.length - 1));
        return;
      }
      const offsets = found + 4 <= data.length ? headerOffsets(data.readUInt32LE(found)) : undefined;
      let nameEnd = Number.POSITIVE_INFINITY;
      let extraEnd = Number.POSITIVE_INFINITY;
      if (offsets !== undefined && found + offsets.extraLengthAt + 2 <= data.length) {
        nameEnd = found + offsets.nameAt + data.readUInt16LE(found + offsets.lengthAt);
        extraEnd = nameEnd + data.readUInt16LE(found + offsets.extraLengthAt);
      }
      // A method no check reads, in any header whose method is here and that is whole or last:
      // Python's zipfile cuts a central header's name short at the directory's end and opens
      // the entry all the same, so a name that runs past the upload hides nothing.
      if (
        offsets !== undefined &&
        this.#heads !== undefined &&
        (extraEnd <= data.length || final) &&
        found + offsets.methodAt + 2 <= data.length &&
        UNREAD_METHODS.has(data.readUInt16LE(found + offsets.methodAt))
      ) {
        this.#onRefused?.();
      }
      if (offsets !== undefined && (extraEnd <= data.length || (final && nameEnd <= data.length))) {
        if (base + found < this.#coveredUntil && ++this.#nested > MAX_NESTED_HEADERS) this.#onRefused?.();
        this.#coveredUntil = Math.max(this.#coveredUntil, base + extraEnd);
        this.#handOn(data, found + offsets.nameAt, nameEnd);
        this.#unicodePaths(data, base, nameEnd, Math.min(extraEnd, data.length));
        // Data that is here and does not start with the prefix is passed over in place: a flood
        // of made-up headers would otherwise cost a head each.
        if (this.#heads !== undefined && offsets === LOCAL_OFFSETS) {
          if (!this.#passesOver(data, extraEnd)) {
            const head = new EntryHead(this.#heads, extraEnd - nameEnd);
            if (head.feed(data.subarray(nameEnd))) this.#gathering.push(head);
          }
          // The same data read as deflated, as Python reads an entry whose central header says so:
          // where it stands when the chunk holds enough to tell, else gathered.
          const here = extraEnd + FIRST_DEFLATED_READ <= data.length;
          if (
            !here ||
            !readDeflatedInPlace(this.#heads, data.subarray(extraEnd, extraEnd + MAX_DEFLATED_BYTES), this.#onRefused)
          ) {
            const inflated = new DeflatedHead(this.#heads, extraEnd - nameEnd, this.#onRefused);
            if (inflated.feed(data.subarray(nameEnd))) this.#gathering.push(inflated);
          }
        }
      } else if (!final && (offsets !== undefined || found + 4 > data.length)) {
        // A header (or its signature) that goes on in the next chunks.
        this.#rest = Buffer.from(data.subarray(found));
        this.#need = extraEnd === Number.POSITIVE_INFINITY ? 0 : extraEnd - found;
        return;
      }
      at = found + 2;
    }
  }

  /** Whether the entry data at `data[at]` is here far enough to tell that it does not start with the heads' prefix. */
  #passesOver(data: Buffer, at: number): boolean {
    const prefix = this.#heads?.prefix;
    if (prefix === undefined || at + prefix.length > data.length) return false;
    // The first byte tells most data apart without a call into the runtime.
    if (data[at] !== prefix[0]) return true;
    return data.compare(prefix, 0, prefix.length, at, at + prefix.length) !== 0;
  }

  /** Hands on the end of the name in `data[start, end)`. */
  #handOn(data: Buffer, start: number, end: number): void {
    // Python's zipfile ends a name at its first NUL (a Unicode path's too): `data.pkl\0x` is `data.pkl` to it.
    const nul = data.subarray(start, end).indexOf(0);
    const nameEnd = nul === -1 ? end : start + nul;
    // An empty name names nothing.
    if (nameEnd === start) return;
    this.#onName(data.subarray(Math.max(start, nameEnd - NAME_END_BYTES), nameEnd).toString('latin1'));
  }

  /**
   * Hands on the name of each Unicode Path field of the extra field `data[start, end)`. The fields
   * that follow a stream position depend on its bytes only: past its first few fields, a walk that
   * meets a position an earlier walk passed goes on from where that one stopped (if it may go
   * further), and the positions it passed are remembered, so that no position is walked twice.
   */
  #unicodePaths(data: Buffer, base: number, start: number, end: number): void {
    const last = base + end;
    const passed: number[] = [];
    let fields = 0;
    let at = base + start;
    for (;;) {
      if (fields >= UNREMEMBERED_FIELDS) {
        const walks = (this.#walks ??= {
          positions: new Float64Array(WALK_SLOTS).fill(-1),
          stops: new Uint16Array(WALK_SLOTS),
          ends: new Uint16Array(WALK_SLOTS),
        });
        const slot = at % WALK_SLOTS;
        const stop = walks.stops[slot] ?? 0;
        if (walks.positions[slot] === at && stop > 0) {
          // What lies between was handed on by an earlier walk.
          if (at + (walks.ends[slot] ?? 0) >= last) break;
          passed.push(at);
          at += stop;
          continue;
        }
      }
      const i = at - base;
      if (i + 4 > end) break;
      const fieldEnd = i + 4 + data.readUInt16LE(i + 2);
      // A field cut short by the extra field's end is read as far as it goes: refusing more is safe.
      const nameEnd = Math.min(fieldEnd, end);
      if (data.readUInt16LE(i) === UNICODE_PATH && i + UNICODE_PATH_NAME_AT < nameEnd) {
        this.#handOn(data, i + UNICODE_PATH_NAME_AT, nameEnd);
      }
      if (fieldEnd > end) break;
      if (fields >= UNREMEMBERED_FIELDS) passed.push(at);
      fields += 1;
      at = base + fieldEnd;
    }
    const walks = this.#walks;
    if (walks === undefined) return;
    for (const position of passed) {
      const slot = position % WALK_SLOTS;
      walks.positions[slot] = position;
      walks.stops[slot] = at - position;
      walks.ends[slot] = last - position;
    }
  }
}

/**
 * What {@link ZipEntryNames} hands on of each entry's data: its first `bytes`, when they start
 * with `prefix` (the NumPy magic), or as many as `lengthOf` those first bytes says the whole
 * head takes (a NumPy header may be 10 KB long, its type last); more heads than one per
 * {@link MIN_HEAD_SPACING} bytes so far, or more bytes of longer heads than
 * {@link LONG_HEADS_PER_BYTE} per byte, past some slack, is a forgery.
 */
export interface EntryHeads {
  readonly prefix: Buffer;
  readonly bytes: number;
  /** How many bytes the whole head takes, given its first `bytes`: at least `bytes`. */
  readonly lengthOf: (first: Buffer) => number;
  readonly onHead: (head: Buffer) => void;
}

/**
 * The heads as the gatherers see them: each longer head claims its extra bytes before they are
 * read, and each reading as deflated that tells counts the code lengths it read.
 */
interface HeadSink extends EntryHeads {
  readonly claim: (bytes: number) => void;
  readonly read: (bytes: number) => void;
}

/** The bytes of an extra field still to pass before an entry's data, as chunks stream past. */
class Skipped {
  #left: number;

  constructor(bytes: number) {
    this.#left = bytes;
  }

  /** What of `bytes` lies past the extra field. */
  past(bytes: Buffer): Buffer {
    if (this.#left === 0) return bytes;
    const skipped = Math.min(this.#left, bytes.length);
    this.#left -= skipped;
    return bytes.subarray(skipped);
  }
}

/**
 * The first bytes of one entry's data, gathered as they stream past: the extra field skipped,
 * dropped as soon as they do not start with the prefix (so that a flood of made-up headers
 * costs a few bytes each), handed on once there are enough, or at the archive's end.
 */
class EntryHead {
  readonly #heads: HeadSink;
  readonly #extra: Skipped;
  #parts: Buffer[] = [];
  #length = 0;
  #wanted: number;

  constructor(heads: HeadSink, skip: number) {
    this.#heads = heads;
    this.#extra = new Skipped(skip);
    this.#wanted = heads.bytes;
  }

  /** Takes the bytes that follow; false once the head is handed on or dropped. */
  feed(bytes: Buffer): boolean {
    let data = this.#extra.past(bytes);
    const { prefix } = this.#heads;
    while (data.length > 0) {
      const taken = data.subarray(0, this.#wanted - this.#length);
      const checked = Math.min(prefix.length, this.#length + taken.length);
      // The bytes of the prefix this piece holds are compared at once.
      if (this.#length < checked) {
        const from = this.#length;
        if (!taken.subarray(0, checked - from).equals(prefix.subarray(from, checked))) return false;
      }
      // Copied: the chunk's buffer may be reused once the upload check returns.
      this.#parts.push(Buffer.from(taken));
      this.#length += taken.length;
      if (this.#length < this.#wanted) return true;
      if (!this.#longer()) {
        this.end();
        return false;
      }
      data = data.subarray(taken.length);
    }
    return true;
  }

  /** Once the first bytes are here: whether the whole head is longer (claimed, and waited for). */
  #longer(): boolean {
    if (this.#wanted !== this.#heads.bytes) return false;
    const first = Buffer.concat(this.#parts, this.#length);
    this.#parts = [first];
    const whole = this.#heads.lengthOf(first);
    if (whole <= this.#wanted) return false;
    this.#heads.claim(whole - this.#wanted);
    this.#wanted = whole;
    return true;
  }

  /** Hands on what was gathered, if it holds the whole prefix. */
  end(): void {
    if (this.#length >= this.#heads.prefix.length) this.#heads.onHead(Buffer.concat(this.#parts, this.#length));
    this.#parts = [];
  }
}

/** How much of an entry's compressed data is read for its head: a writer's first 512 bytes take far less. */
const MAX_DEFLATED_BYTES = 4096;
/** The least compressed data read at once while it streams in: less is gathered first. */
const FIRST_DEFLATED_READ = 64;

/**
 * The first bytes of one entry's data read as a raw deflate stream (see `inflateHead`), for an
 * entry whose chunk did not hold enough to tell, or whose head is longer than its first read:
 * gathered (copied) as they stream past and decoded again each time what is gathered doubles,
 * up to {@link MAX_DEFLATED_BYTES} past the head's length. A stream that has not given its whole
 * head within them, or that `inflateHead` finds made up, is a forgery.
 */
class DeflatedHead {
  readonly #heads: HeadSink;
  readonly #onRefused: (() => void) | undefined;
  readonly #extra: Skipped;
  #parts: Buffer[] = [];
  #length = 0;
  #nextRead = FIRST_DEFLATED_READ;
  #wanted: number;
  #maxInput = MAX_DEFLATED_BYTES;

  constructor(heads: HeadSink, skip: number, onRefused: (() => void) | undefined) {
    this.#heads = heads;
    this.#extra = new Skipped(skip);
    this.#onRefused = onRefused;
    this.#wanted = heads.bytes;
  }

  /** Takes the bytes that follow; false once the head is handed on or dropped. */
  feed(bytes: Buffer): boolean {
    let data = this.#extra.past(bytes);
    // A read may find the head longer and take more: the rest of this chunk goes on being taken.
    while (data.length > 0) {
      const taken = data.subarray(0, this.#maxInput - this.#length);
      data = data.subarray(taken.length);
      this.#parts.push(Buffer.from(taken));
      this.#length += taken.length;
      if (this.#length < this.#nextRead && this.#length < this.#maxInput) return true;
      this.#nextRead = this.#length * 2;
      const gathered = Buffer.concat(this.#parts, this.#length);
      this.#parts = [gathered];
      if (!this.#read(gathered)) return false;
      if (this.#length >= this.#maxInput) return this.#done();
    }
    return true;
  }

  /** The archive has ended: a stream cut short is read as far as it goes. */
  end(): void {
    if (this.#length === 0) return;
    if (this.#read(Buffer.concat(this.#parts, this.#length))) handHead(this.#heads, partial(this.#heads.prefix));
    this.#parts = [];
  }

  /** Reads what is gathered: false once the head is handed on or dropped (true: more may tell). */
  #read(input: Buffer): boolean {
    const heads = this.#heads;
    let first = inflateHead(input, this.#wanted, heads.prefix);
    if (first.kind === 'head' && this.#wanted === heads.bytes && first.bytes.length === heads.bytes) {
      const whole = heads.lengthOf(first.bytes);
      if (whole > this.#wanted) {
        heads.claim(whole - this.#wanted);
        this.#wanted = whole;
        this.#maxInput = Math.max(this.#maxInput, whole + MAX_DEFLATED_BYTES);
        first = inflateHead(input, whole, heads.prefix);
      }
    }
    if (first.kind === 'more') return true;
    heads.read(codeLengthsRead());
    if (first.kind === 'forged') this.#onRefused?.();
    else handHead(heads, first);
    this.#parts = [];
    return false;
  }

  /**
   * Past the most input read, the last read having asked for more: a head if the prefix and all
   * of the head it says it has are out, else a forgery (a writer gives them long before).
   */
  #done(): boolean {
    this.#heads.read(codeLengthsRead());
    const cut = partial(this.#heads.prefix);
    if (cut.kind === 'head' && cut.bytes.length >= this.#heads.lengthOf(cut.bytes)) handHead(this.#heads, cut);
    else this.#onRefused?.();
    this.#parts = [];
    return false;
  }
}

/**
 * Reads `input`, the start of an entry's data where it stands, as deflated and hands on its
 * head, or calls `onRefused`: false when it could not tell, the input having run out or the head
 * being longer than its first read (a {@link DeflatedHead} gathers it then).
 */
function readDeflatedInPlace(heads: HeadSink, input: Buffer, onRefused: (() => void) | undefined): boolean {
  const first = inflateHead(input, heads.bytes, heads.prefix);
  if (first.kind === 'more') return false;
  heads.read(codeLengthsRead());
  if (first.kind === 'forged') onRefused?.();
  else if (first.kind === 'head' && first.bytes.length === heads.bytes && heads.lengthOf(first.bytes) > heads.bytes) {
    return false;
  } else handHead(heads, first);
  return true;
}

function handHead(heads: EntryHeads, first: InflatedHead): void {
  // Copied: the head is the decoder's scratch.
  if (first.kind === 'head') heads.onHead(Buffer.from(first.bytes));
}
