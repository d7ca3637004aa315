/** A local file header's signature (`PK\x03\x04`) and a central directory header's (`PK\x01\x02`). */
const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const PK = Buffer.from('PK', 'latin1');
const EMPTY = Buffer.alloc(0);
/** How much of each name is handed on: enough for any extension. */
const NAME_END_BYTES = 16;

/** Where a header keeps its name's length, and where its name starts; by signature. */
function nameOffsets(signature: number): { readonly lengthAt: number; readonly nameAt: number } | undefined {
  if (signature === LOCAL) return { lengthAt: 26, nameAt: 30 };
  if (signature === CENTRAL) return { lengthAt: 28, nameAt: 46 };
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
  /** What the last chunk left unread: an incomplete header, or a byte that may start a signature. */
  #rest: Buffer = EMPTY;

  constructor(onName: (nameEnd: string) => void) {
    this.#onName = onName;
  }

  push(chunk: Uint8Array): void {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.#scan(this.#rest.length === 0 ? bytes : Buffer.concat([this.#rest, bytes]), false);
  }

  /** The archive has ended: what is left is scanned, and an incomplete header passed over. */
  end(): void {
    const rest = this.#rest;
    this.#rest = EMPTY;
    this.#scan(rest, true);
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
      } else if (!final && (offsets !== undefined || found + 4 > data.length)) {
        // A header (or its signature) that goes on in the next chunk.
        this.#rest = Buffer.from(data.subarray(found));
        return;
      }
      at = found + 2;
    }
  }
}
