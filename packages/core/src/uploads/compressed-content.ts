import { Gunzip, Unzlib } from 'fflate';

/** A check of a stream's bytes: pushed each piece, told the end; finished once more bytes cannot change its answer. */
export interface StreamCheck {
  push(chunk: Uint8Array): void;
  end(): void;
  readonly finished: boolean;
}

/**
 * Why compressed content is refused: it inflates past the ratio, stops being readable while
 * read, or is compressed in a way this check cannot open.
 */
export type CompressedRefusal = 'compression_ratio_exceeded' | 'content_unreadable' | 'compression_not_opened';

/**
 * Compressed bytes given to the inflater at a time: joblib's zlib reader decompresses 8 KiB read
 * from the file's start at a time and loses a read's output when its input is corrupt, as the
 * inflater here loses a piece's. (Pieces of 2 KiB cost six times as much CPU on a stream of
 * stored blocks, which the inflater hands on only whole.)
 */
const SLICE_BYTES = 8192;
/**
 * Compressed bytes gathered before the inflater is given them: each push costs fflate a copy of
 * its 32 KiB window (about 50 µs), and a stream sent a byte at a time cost 0.7 s of CPU in its
 * first 16 KiB, which the upload check hands on as they come. A pickle in the first KiB is
 * still refused as soon as that KiB is here.
 */
const FEED_BYTES = 1024;
/** Inflated bytes the check reads before the ratio is looked at again. */
const TAKE_BYTES = 64 * 1024;
/** What any compressed upload may inflate to before the ratio applies. */
const FREE_BYTES = 1024 * 1024;

type State = 'sniffing' | 'inflating' | 'off';

/**
 * The first bytes of the compressions Python's loaders open before they unpickle and this check
 * cannot (fflate inflates only deflate): joblib detects bzip2, xz, the legacy `.lzma` format and
 * LZ4 by these bytes, and pandas' `read_pickle` decompresses Zstandard (`.zst`), bzip2 and xz.
 * A Zstandard or LZ4 stream may start with a skippable frame (`50`-`5F 2A 4D 18`).
 */
const UNOPENED_MAGIC: readonly (readonly number[])[] = [
  [0x28, 0xb5, 0x2f, 0xfd], // Zstandard
  [0x42, 0x5a, 0x68], // bzip2: BZh
  [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], // xz
  [0x5d, 0x00, 0x00], // lzma, the legacy format
  [0x04, 0x22, 0x4d, 0x18], // LZ4 frame
];
/** The bytes the sniffing waits for: the longest magic. */
const SNIFF_BYTES = 6;
/**
 * joblib's own format before 0.10, which `joblib.load` still reads: `ZF`, the inflated length in
 * hex padded to 19 characters, an optional space, then a zlib stream of the pickle.
 */
const ZFILE_HEADER_BYTES = 21;

/**
 * The content of an upload that is a gzip or zlib stream, inflated as the upload streams and
 * handed to a check of its own: joblib decompresses a file that starts as either (`\x1f\x8b`,
 * `x`) before it unpickles it, pandas' `read_pickle` a `.gz`, and a `.tar.gz` is unpacked
 * before its members are loaded.
 *
 * Inflating stops as soon as the check is finished (content that is no pickle and no tar stops
 * it within its first bytes), so a bomb costs only what the check still needs. While the check
 * reads, the content may inflate to `maxRatio` times the compressed bytes read, plus 1 MiB;
 * past it the upload is refused (`compression_ratio_exceeded`). Content that stops inflating
 * (corrupt, or cut short) while the check is still reading it is refused
 * (`content_unreadable`): a reader hands on what came before the fault, so a pickle's import
 * could stand there. Only a zlib stream that fails in its first 8 KiB before it gave a byte is
 * passed over, as joblib fails on it too (text that happens to start with `x^`).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: part of the upload check
 * const content = new CompressedContent(() => new PickleImportScan(refuse), 16, (reason) => refuseAs(reason));
 * for await (const chunk of upload) content.push(chunk);
 * content.end();
 * ```
 */
export class CompressedContent {
  readonly #newCheck: () => StreamCheck;
  readonly #maxRatio: number;
  readonly #refuse: (reason: CompressedRefusal) => never;
  #state: State = 'sniffing';
  /** The upload's first bytes, until they tell whether it is compressed. */
  #prefix: Buffer = Buffer.alloc(0);
  #inflater: Gunzip | Unzlib | undefined;
  /**
   * Compressed bytes not yet given to the inflater: fewer than {@link FEED_BYTES}. A new buffer
   * after each feed: the inflater keeps what it is given, unread, while a header is incomplete.
   */
  #pending = Buffer.allocUnsafe(FEED_BYTES);
  #pendingBytes = 0;
  #check: StreamCheck | undefined;
  #bytesIn = 0;
  #bytesOut = 0;
  /** A refusal thrown by the check (or the ratio) from inside the inflater's callback. */
  #refusal: Error | undefined;

  readonly #refuseUnopened: boolean;

  /** `refuseUnopened`: refuse content compressed in a way this check cannot open (see `UNOPENED_MAGIC`). */
  constructor(
    newCheck: () => StreamCheck,
    maxRatio: number,
    refuse: (reason: CompressedRefusal) => never,
    refuseUnopened = true,
  ) {
    this.#newCheck = newCheck;
    this.#maxRatio = maxRatio;
    this.#refuse = refuse;
    this.#refuseUnopened = refuseUnopened;
  }

  push(chunk: Uint8Array): void {
    if (this.#state === 'off') return;
    if (this.#state === 'inflating') {
      this.#gather(chunk);
      return;
    }
    this.#prefix = Buffer.concat([this.#prefix, chunk]);
    const zfile = this.#prefix[0] === 0x5a && (this.#prefix.length < 2 || this.#prefix[1] === 0x46);
    if (this.#prefix.length < (zfile ? ZFILE_HEADER_BYTES + 1 : SNIFF_BYTES)) return;
    let prefix = this.#prefix;
    this.#prefix = Buffer.alloc(0);
    const onData = (data: Uint8Array) => {
      this.#take(data);
    };
    if (zfile) {
      // No length Python's int(text, 16) reads: joblib fails on it as well.
      if (!ZFILE_LENGTH.test(prefix.toString('latin1', 2, ZFILE_HEADER_BYTES))) {
        this.#state = 'off';
        return;
      }
      prefix = prefix.subarray(prefix[ZFILE_HEADER_BYTES] === 0x20 ? ZFILE_HEADER_BYTES + 1 : ZFILE_HEADER_BYTES);
      this.#inflater = new Unzlib(onData);
    }
    // gzip with deflate, the one method there is; joblib looks at the first two bytes only,
    // and a reader refuses another method before it gives a byte.
    else if (prefix[0] === 0x1f && prefix[1] === 0x8b && prefix[2] === 8) this.#inflater = new Gunzip(onData);
    else if (isZlibHeader(prefix[0] ?? 0, prefix[1] ?? 0)) this.#inflater = new Unzlib(onData);
    else {
      this.#state = 'off';
      if (this.#refuseUnopened && isUnopened(prefix)) this.#refuse('compression_not_opened');
      return;
    }
    this.#check = this.#newCheck();
    this.#state = 'inflating';
    this.#gather(prefix);
  }

  /** The upload has ended: the inflater's last output is checked, and a stream cut short is judged. */
  end(): void {
    // Fewer bytes than the sniffing waits for: a compressed stream of them holds no pickle.
    if (this.#state !== 'inflating') return;
    // A fault in the last bytes stops the inflater (or refuses); the final push is then a no-op.
    this.#flush();
    this.#inflate(new Uint8Array(0), true);
    const check = this.#check;
    this.#stop();
    check?.end();
  }

  /** Gives the inflater `chunk` once {@link FEED_BYTES} are here (copied: the caller may reuse it). */
  #gather(chunk: Uint8Array): void {
    if (this.#pendingBytes === 0 && chunk.byteLength >= FEED_BYTES) {
      this.#feed(chunk);
      return;
    }
    let taken = 0;
    while (taken < chunk.byteLength && this.#state === 'inflating') {
      const piece = chunk.subarray(taken, taken + FEED_BYTES - this.#pendingBytes);
      this.#pending.set(piece, this.#pendingBytes);
      this.#pendingBytes += piece.byteLength;
      taken += piece.byteLength;
      if (this.#pendingBytes === FEED_BYTES) this.#flush();
    }
  }

  #flush(): void {
    if (this.#pendingBytes === 0) return;
    const gathered = this.#pending.subarray(0, this.#pendingBytes);
    this.#pending = Buffer.allocUnsafe(FEED_BYTES);
    this.#pendingBytes = 0;
    this.#feed(gathered);
  }

  #feed(data: Uint8Array): void {
    for (let at = 0; at < data.length && this.#state === 'inflating'; at += SLICE_BYTES) {
      const slice = data.subarray(at, at + SLICE_BYTES);
      this.#bytesIn += slice.length;
      this.#inflate(slice, false);
    }
  }

  #inflate(slice: Uint8Array, final: boolean): void {
    try {
      this.#inflater?.push(slice, final);
    } catch {
      if (this.#refusal !== undefined) throw this.#refusal;
      // The inflater's own error. Its output of the failing piece is lost, where a reader that
      // asks for less at a time may have handed it on; so the upload is refused while the
      // check still reads. A zlib stream that fails in its first piece before any output is
      // text that starts with `x^` (or another such pair) to joblib as well: it is passed over.
      const notZlib = this.#inflater instanceof Unzlib && this.#bytesOut === 0 && this.#bytesIn <= SLICE_BYTES;
      const reading = this.#check?.finished !== true;
      this.#stop();
      if (reading && !notZlib) this.#refuse('content_unreadable');
      return;
    }
    if (this.#check?.finished === true) this.#stop();
  }

  #take(data: Uint8Array): void {
    if (this.#state !== 'inflating') return;
    try {
      // In pieces, the ratio checked after each: one slice of input may inflate to 8 MiB, and a
      // check that read it all first spent 200 to 350 ms in one piece on a 12 KB upload.
      for (let at = 0; at < data.length; at += TAKE_BYTES) {
        const piece = data.subarray(at, at + TAKE_BYTES);
        this.#bytesOut += piece.length;
        this.#check?.push(piece);
        // Past the ratio only while the check still reads: content it is done with (zeros, text
        // that is no pickle) is not refused for how far one piece inflated.
        if (this.#check?.finished !== false) return;
        if (this.#bytesOut > this.#maxRatio * this.#bytesIn + FREE_BYTES) this.#refuse('compression_ratio_exceeded');
      }
    } catch (refusal) {
      this.#refusal = refusal instanceof Error ? refusal : new Error('refused');
      this.#stop();
      throw refusal;
    }
  }

  #stop(): void {
    this.#state = 'off';
    this.#inflater = undefined;
    this.#check = undefined;
  }
}

/**
 * A zlib header as Python's zlib reads one: deflate with a 32 KiB window (`x`, which is all
 * joblib looks at), a check value that divides, and no preset dictionary (which no reader
 * without it can inflate).
 */
function isZlibHeader(cmf: number, flg: number): boolean {
  return cmf === 0x78 && ((cmf << 8) | flg) % 31 === 0 && (flg & 0x20) === 0;
}

/** A length as joblib writes it and Python's `int(text, 16)` reads it: hex, `0x` allowed, spaces around. */
const ZFILE_LENGTH = /^\s*\+?(0[xX])?[0-9a-fA-F]+(_[0-9a-fA-F]+)*\s*$/;

function isUnopened(prefix: Uint8Array): boolean {
  if (
    prefix[0] !== undefined &&
    prefix[0] >= 0x50 &&
    prefix[0] <= 0x5f &&
    prefix[1] === 0x2a &&
    prefix[2] === 0x4d &&
    prefix[3] === 0x18
  )
    return true;
  return UNOPENED_MAGIC.some((magic) => magic.every((byte, i) => prefix[i] === byte));
}
