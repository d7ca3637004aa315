/** A local file header's signature (`PK\x03\x04`) and a central directory header's (`PK\x01\x02`). */
const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const PK = Buffer.from('PK', 'latin1');
const EMPTY = Buffer.alloc(0);
/** How much of each name is handed on: enough for any extension. */
const NAME_END_BYTES = 16;
/** Where a local header keeps the length of its extra field. */
const LOCAL_EXTRA_LENGTH_AT = 28;

const LOCAL_OFFSETS = Object.freeze({ lengthAt: 26, nameAt: 30 });
const CENTRAL_OFFSETS = Object.freeze({ lengthAt: 28, nameAt: 46 });

/** Where a header keeps its name's length, and where its name starts; by signature. */
function nameOffsets(signature: number): { readonly lengthAt: number; readonly nameAt: number } | undefined {
  if (signature === LOCAL) return LOCAL_OFFSETS;
  if (signature === CENTRAL) return CENTRAL_OFFSETS;
  return undefined;
}

/**
 * The ends of the entry names of a ZIP archive (their last 16 bytes, which is all a check of an
 * extension needs) as its bytes stream past, from every local file header and every central
 * directory header, so that an entry is seen wherever it stands: a reader such as PyTorch's
 * finds `data.pkl` by its name in the central directory, not by its place. Only the end: a
 * name may be 64 KiB long, and a flood of made-up headers would cost a string that long each.
 *
 * Headers are found by their signatures. The scan goes on just past each signature, never past
 * the name it read: compressed data can hold a signature by chance, or on purpose with a long
 * name length, and skipping that "name" would skip the real headers inside it. A header cut
 * between two chunks is kept until the next one completes it (at most a header and a name of
 * 64 KiB), and one the archive's end leaves incomplete is passed over at `end()`.
 *
 * With `heads`, the first bytes of each local header's entry data, as they stand after its
 * name and extra field (the bytes a reader takes for a stored entry), are handed on too, for
 * the entries whose data starts with `heads.prefix`: NumPy reads any member of an `.npz` that
 * starts with its magic as an array. Whatever the header's method says, since Python's zipfile
 * follows the central directory's. A head waits for the bytes it lacks in the chunks that
 * follow, without holding up the scan for headers.
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
  readonly #heads: EntryHeads | undefined;
  /** What the last chunk left unread: an incomplete header, or a byte that may start a signature. */
  #rest: Buffer = EMPTY;
  /** The heads of entries still being gathered, each fed every byte after its header. */
  #gathering: EntryHead[] = [];

  constructor(onName: (nameEnd: string) => void, heads?: EntryHeads) {
    this.#onName = onName;
    this.#heads = heads;
  }

  push(chunk: Uint8Array): void {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    // Heads begun in earlier chunks first: those the scan below begins are fed from their own start.
    if (this.#gathering.length > 0) this.#gathering = this.#gathering.filter((head) => head.feed(bytes));
    this.#scan(this.#rest.length === 0 ? bytes : Buffer.concat([this.#rest, bytes]), false);
  }

  /** The archive has ended: what is left is scanned, an incomplete header passed over, and heads cut short handed on. */
  end(): void {
    const rest = this.#rest;
    this.#rest = EMPTY;
    this.#scan(rest, true);
    const gathering = this.#gathering;
    this.#gathering = [];
    for (const head of gathering) head.end();
  }

  #scan(data: Buffer, final: boolean): void {
    let at = 0;
    for (;;) {
      const found = data.indexOf(PK, at);
      if (found === -1) {
        // A last `P` may begin a signature the next chunk ends.
        this.#rest = final || data.length === 0 ? EMPTY : Buffer.from(data.subarray(data.length - 1));
        return;
      }
      const offsets = found + 4 <= data.length ? nameOffsets(data.readUInt32LE(found)) : undefined;
      const end =
        offsets === undefined || found + offsets.lengthAt + 2 > data.length
          ? Number.POSITIVE_INFINITY
          : found + offsets.nameAt + data.readUInt16LE(found + offsets.lengthAt);
      if (end <= data.length) {
        const start = found + (offsets?.nameAt ?? 0);
        // Python's zipfile ends a name at its first NUL: `data.pkl\0x` is `data.pkl` to it.
        const nul = data.indexOf(0, start);
        const nameEnd = nul !== -1 && nul < end ? nul : end;
        this.#onName(data.subarray(Math.max(start, nameEnd - NAME_END_BYTES), nameEnd).toString('latin1'));
        if (this.#heads !== undefined && offsets === LOCAL_OFFSETS) {
          const head = new EntryHead(this.#heads, data.readUInt16LE(found + LOCAL_EXTRA_LENGTH_AT));
          if (head.feed(data.subarray(end))) this.#gathering.push(head);
        }
      } else if (!final && (offsets !== undefined || found + 4 > data.length)) {
        // A header (or its signature) that goes on in the next chunk.
        this.#rest = Buffer.from(data.subarray(found));
        return;
      }
      at = found + 2;
    }
  }
}

/** What {@link ZipEntryNames} hands on of each entry's data: its first `bytes`, when they start with `prefix`. */
export interface EntryHeads {
  readonly prefix: Buffer;
  readonly bytes: number;
  readonly onHead: (head: Buffer) => void;
}

/**
 * The first bytes of one entry's data, gathered as they stream past: the extra field skipped,
 * dropped as soon as they do not start with the prefix (so that a flood of made-up headers
 * costs a few bytes each), handed on once there are enough, or at the archive's end.
 */
class EntryHead {
  readonly #heads: EntryHeads;
  #skip: number;
  #parts: Buffer[] = [];
  #length = 0;

  constructor(heads: EntryHeads, skip: number) {
    this.#heads = heads;
    this.#skip = skip;
  }

  /** Takes the bytes that follow; false once the head is handed on or dropped. */
  feed(bytes: Buffer): boolean {
    let data = bytes;
    if (this.#skip > 0) {
      const skipped = Math.min(this.#skip, data.length);
      this.#skip -= skipped;
      data = data.subarray(skipped);
    }
    if (data.length === 0) return true;
    const { prefix, bytes: wanted } = this.#heads;
    const taken = data.subarray(0, wanted - this.#length);
    const checked = Math.min(prefix.length, this.#length + taken.length);
    // The bytes of the prefix this piece holds are compared at once.
    if (this.#length < checked) {
      const from = this.#length;
      if (!taken.subarray(0, checked - from).equals(prefix.subarray(from, checked))) return false;
    }
    // Copied: the chunk's buffer may be reused once the upload check returns.
    this.#parts.push(Buffer.from(taken));
    this.#length += taken.length;
    if (this.#length < wanted) return true;
    this.end();
    return false;
  }

  /** Hands on what was gathered, if it holds the whole prefix. */
  end(): void {
    if (this.#length >= this.#heads.prefix.length) this.#heads.onHead(Buffer.concat(this.#parts, this.#length));
    this.#parts = [];
  }
}
