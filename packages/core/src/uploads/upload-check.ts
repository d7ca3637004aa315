import { createHash, timingSafeEqual } from 'node:crypto';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { wholeNumber } from '../options/whole-number.js';
import { UPLOAD_CHECK_TURNS } from './check-turns.js';
import { CompressedContent, type StreamCheck } from './compressed-content.js';
import { PickleImportScan } from './pickle-scan.js';
import { TarMembers } from './tar-members.js';
import { ZipEntryNames } from './zip-entries.js';
import { NUMPY_MAGIC, holdsNumpyObjects, numpyHeadLength } from './numpy-header.js';
import { copyBytes } from './copy-bytes.js';

/**
 * Why an upload was refused: its bytes do not match the SHA-256 it declared (`digest_mismatch`),
 * its name has an extension the rule does not allow (`extension_refused`), its content is a
 * kind the rule refuses (`content_refused`: a pickle, an executable), its declared content type
 * is not allowed (`content_type_refused`), or its compressed content inflates past the check's
 * ratio (`compression_ratio_exceeded`), stops inflating while a pickle or tar in it is read
 * (`content_unreadable`), or is compressed in a way the check cannot open
 * (`compression_not_opened`).
 *
 * @example
 * ```ts
 * import type { UploadReason } from '@fluxguard/core';
 * const reason: UploadReason = 'content_refused';
 * ```
 */
export type UploadReason =
  | 'digest_mismatch'
  | 'extension_refused'
  | 'content_refused'
  | 'content_type_refused'
  | 'compression_ratio_exceeded'
  | 'content_unreadable'
  | 'compression_not_opened';

/**
 * Kinds of content an upload check refuses by what the upload holds, whatever its name says.
 * - `pickle`: a Python pickle (loading one runs code): protocol 2 and later by the header
 *   Python writes; any protocol, text opcodes and a left-out header included, that imports a
 *   name (`uploads/pickle-scan.ts` reads the upload as CPython's unpickler does); and ZIP
 *   archives holding a `.pkl` or `.pickle` entry (PyTorch `.pt` files), every entry header in
 *   the whole upload read as it streams, so an archive behind other bytes (which Python's
 *   zipfile opens) is seen too; tar archives, each member's name and content read as a stream
 *   of its own (PyTorch's legacy checkpoints are tars holding a `pickle`); NumPy `.npy` arrays
 *   whose type holds Python objects (a header read whole, as NumPy writes it, each type string
 *   against an allow list of plain types: `uploads/numpy-header.ts`),
 *   alone or as a member of an `.npz`, stored (`np.savez`) or deflated (`np.savez_compressed`):
 *   every ZIP entry's data that starts with the NumPy magic, as it stands and inflated, to its
 *   header's end. An upload that is a gzip or zlib
 *   stream (which joblib decompresses before it unpickles, and a `.tar.gz`), or joblib's own
 *   format before 0.10 (`ZF` and a zlib stream, which `joblib.load` still reads), is inflated
 *   as it streams and its content read the same way, within `maxInflateRatio`. An upload
 *   compressed another way that Python's loaders open (Zstandard, bzip2, xz, legacy lzma,
 *   LZ4) cannot be read, and is refused unless `unopenedCompressions` is `'accept'`.
 *   {@link contentKind} reads only the first bytes it is given.
 * - `executable`: ELF, PE (`MZ`), Mach-O, and scripts starting with `#!`.
 *
 * @example
 * ```ts
 * import type { ContentKind } from '@fluxguard/core';
 * const refused: ContentKind[] = ['pickle', 'executable'];
 * ```
 */
export type ContentKind = 'pickle' | 'executable';

/**
 * Options of {@link createUploadCheck}.
 *
 * @example
 * ```ts
 * import type { UploadCheckOptions } from '@fluxguard/core';
 * const options: UploadCheckOptions = { refuseKinds: ['pickle', 'executable'], refusedExtensions: ['.pt', '.pkl'] };
 * ```
 */
export interface UploadCheckOptions {
  /** Content kinds refused whatever the name says. Default: `pickle` and `executable`. */
  readonly refuseKinds?: readonly ContentKind[] | undefined;
  /** Extensions refused (lowercase, with the dot). Default: pickle and executable extensions. */
  readonly refusedExtensions?: readonly string[] | undefined;
  /** When given, only these extensions are accepted (`''` for a name without one). */
  readonly allowedExtensions?: readonly string[] | undefined;
  /** When given, only these declared content types are accepted (without parameters). */
  readonly allowedContentTypes?: readonly string[] | undefined;
  /**
   * How far a gzip or zlib upload's content may inflate while it is checked for pickles, as a
   * multiple of the compressed bytes read (plus 1 MiB): past it the upload is refused
   * (`compression_ratio_exceeded`). Inflating costs the server's CPU, and stops as soon as the
   * content is known to hold no pickle. Default 16; from 1 to 1032 (deflate's own limit).
   */
  readonly maxInflateRatio?: number | undefined;
  /**
   * An upload compressed in a way the check cannot open while it looks for pickles (Zstandard,
   * bzip2, xz, legacy lzma, LZ4, by their first bytes): `'refuse'` (the default:
   * `compression_not_opened`), or `'accept'` it unread, where a loader that decompresses
   * before it unpickles (joblib, pandas' `read_pickle`) will never be given what is stored.
   */
  readonly unopenedCompressions?: 'refuse' | 'accept' | undefined;
}

/**
 * One upload being checked as it streams: feed it every chunk, then `finish`.
 *
 * @example
 * ```ts
 * const upload = check.begin({ name: 'model.bin', sha256: declared });
 * for await (const chunk of body) { await upload.updateInSlices(chunk, signal); await file.write(chunk); }
 * upload.finish(); // throws when the digest does not match: discard the temporary file
 * ```
 */
export interface UploadInProgress {
  /**
   * Hashes and checks the chunk, and may refuse the upload (throws). Past the first 16 KiB,
   * chunks under 16 KiB are gathered first, so a refusal may come up to 16 KiB later, at the
   * latest from `finish`; the chunk's buffer may be reused once `update` returns.
   */
  update(chunk: Uint8Array): void;
  /**
   * {@link UploadInProgress.update}, 64 KiB at a time, with other work run between the slices.
   * A compressed chunk's content is inflated and read as it is checked, up to `maxInflateRatio`
   * times as large: one gRPC message of 7 MiB (a gzipped tar of 200,000 empty members) took
   * 0.6 s of CPU in one piece, with no other request served meanwhile. The slices of every upload
   * of the process take turns from one queue, in later turns of the event loop than the chunk
   * came in, back to back until 10 ms have passed in a turn: uploads that arrive together are
   * checked in turn with other work between them. Rejects with the signal's reason once it aborts before a
   * slice, so a deadline stops the work. Await it before the next chunk; the chunk's buffer may
   * be reused once it settles.
   *
   * @example
   * ```ts
   * for await (const chunk of body) { await upload.updateInSlices(chunk, signal); await file.write(chunk); }
   * ```
   */
  updateInSlices(chunk: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** Checks the digest once everything has arrived (throws `digest_mismatch`); the bytes' SHA-256 in hex. */
  finish(): string;
}

/**
 * The upload check of {@link createUploadCheck}.
 *
 * @example
 * ```ts
 * import { createUploadCheck, type UploadCheck } from '@fluxguard/core';
 * const check: UploadCheck = createUploadCheck({ allowedExtensions: ['.bin', '.safetensors'] });
 * const upload = check.begin({ name: 'weights.bin', sha256: declared });
 * ```
 */
export interface UploadCheck {
  /**
   * Starts checking one upload: its name and declared content type are checked at once, its
   * declared SHA-256 (hex) at the end.
   */
  begin(upload: {
    readonly name: string;
    readonly sha256: string;
    readonly contentType?: string | undefined;
  }): UploadInProgress;
}

const DEFAULT_REFUSED_EXTENSIONS: readonly string[] = Object.freeze([
  '.pkl',
  '.pickle',
  '.pt',
  '.pth',
  '.ckpt',
  '.joblib',
  '.exe',
  '.dll',
  '.so',
  '.dylib',
  '.sh',
  '.bat',
  '.cmd',
  '.ps1',
]);

const DEFAULTS: Readonly<Required<{ [K in keyof UploadCheckOptions]: UploadCheckOptions[K] }>> = Object.freeze({
  refuseKinds: Object.freeze(['pickle', 'executable'] as const),
  refusedExtensions: DEFAULT_REFUSED_EXTENSIONS,
  allowedExtensions: undefined,
  allowedContentTypes: undefined,
  maxInflateRatio: 16,
  unopenedCompressions: 'refuse',
});

/** The first bytes sniffed: enough for every signature, and for a ZIP's first entry name. */
const SNIFF_BYTES = 512;
/** The most of a chunk `updateInSlices` checks before it lets other work run. */
const SLICE_BYTES = 64 * 1024;
/** Chunks smaller than this are gathered up to it before the checks read them. */
const GATHER_BYTES = 16 * 1024;
const ZIP_SIGNATURE = Buffer.from([0x50, 0x4b, 0x03, 0x04]);
const KINDS: readonly ContentKind[] = ['pickle', 'executable'];

/**
 * Checks uploads while they stream, for handlers that store them: the declared SHA-256 against
 * the bytes (a mismatch is `invalid_argument` naming `sha256`; keep nothing: write to a
 * temporary file and rename it only after `finish`), the name's extension against allow and
 * refuse lists, the declared content type against an allowlist, and the first bytes against
 * the kinds the rule refuses, whatever the name says (a pickle posing as `.bin`). Refusals are
 * `invalid_argument` with a reason of {@link UploadReason}; none echoes the name or the bytes.
 *
 * @throws ConfigurationError for unknown options, an unknown kind or a malformed extension.
 *
 * @example
 * ```ts
 * import { createUploadCheck } from '@fluxguard/core';
 * const check = createUploadCheck({ allowedExtensions: ['.bin', '.safetensors', '.onnx', '.txt'] });
 * ```
 */
export function createUploadCheck(options: UploadCheckOptions = {}): UploadCheck {
  return createUploadCheckGathering(options, GATHER_BYTES);
}

/**
 * {@link createUploadCheck}, with chunks under `gatherBytes` gathered up to it before the checks
 * read them; 0 hands every chunk on as it comes, so that tests reach the checks' handling of
 * bytes cut between chunks.
 *
 * @example
 * ```ts
 * const check = createUploadCheckGathering({}, 0);
 * ```
 *
 * @internal
 */
export function createUploadCheckGathering(options: UploadCheckOptions, gatherBytes: number): UploadCheck {
  const opts = resolveOptions('createUploadCheck', DEFAULTS, options);
  const refuseKinds: ReadonlySet<ContentKind> = new Set(
    checkList(opts.refuseKinds, 'refuseKinds', (k) => KINDS.includes(k as ContentKind)) as ContentKind[],
  );
  const maxInflateRatio = wholeNumber(opts.maxInflateRatio, 'createUploadCheck: "maxInflateRatio"', { max: 1032 });
  const refused = new Set(checkList(opts.refusedExtensions, 'refusedExtensions', isExtension));
  const allowed =
    opts.allowedExtensions === undefined
      ? undefined
      : new Set(checkList(opts.allowedExtensions, 'allowedExtensions', (e) => e === '' || isExtension(e)));
  if (allowed !== undefined) {
    if (allowed.size === 0) {
      throw new ConfigurationError('createUploadCheck: "allowedExtensions" is empty and would refuse every name');
    }
    // Refused wins: an allowlist naming a refused extension reads as allowing it, and does not.
    const both = [...allowed].find((extension) => refused.has(extension));
    if (both !== undefined) {
      throw new ConfigurationError(
        `createUploadCheck: "allowedExtensions" lists "${both}", which "refusedExtensions" refuses (it does by default): take it out of refusedExtensions to allow it`,
      );
    }
  }
  if (options.maxInflateRatio !== undefined && !refuseKinds.has('pickle')) {
    throw new ConfigurationError(
      'createUploadCheck: "maxInflateRatio" bounds the compressed content read for pickles, and "refuseKinds" has no "pickle"',
    );
  }
  if (opts.unopenedCompressions !== 'refuse' && opts.unopenedCompressions !== 'accept') {
    throw new ConfigurationError('createUploadCheck: "unopenedCompressions" must be "refuse" or "accept"');
  }
  if (options.unopenedCompressions !== undefined && !refuseKinds.has('pickle')) {
    throw new ConfigurationError(
      'createUploadCheck: "unopenedCompressions" says what to do with compressed content that cannot be read for pickles, and "refuseKinds" has no "pickle"',
    );
  }
  const refuseUnopened = opts.unopenedCompressions === 'refuse';
  const types =
    opts.allowedContentTypes === undefined
      ? undefined
      : new Set(
          checkList(opts.allowedContentTypes, 'allowedContentTypes', (t) =>
            /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(t),
          ),
        );
  if (types?.size === 0) {
    throw new ConfigurationError('createUploadCheck: "allowedContentTypes" is empty and would refuse every upload');
  }

  const refuse = (reason: UploadReason, field: string): never => {
    throw new SecurityError('invalid_argument', { details: { field }, reason });
  };

  return Object.freeze({
    begin({ name, sha256, contentType }: Parameters<UploadCheck['begin']>[0]): UploadInProgress {
      // A malformed declared digest can match nothing.
      if (!/^[0-9a-f]{64}$/i.test(sha256)) refuse('digest_mismatch', 'sha256');
      const extensions = extensionsOf(name);
      const [extension = ''] = extensions;
      if (extensions.some((each) => refused.has(each)) || (allowed !== undefined && !allowed.has(extension)))
        refuse('extension_refused', 'path');
      if (types !== undefined) {
        const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
        if (!types.has(type)) refuse('content_type_refused', 'content-type');
      }
      const hash = createHash('sha256');
      const refuseContent = () => refuse('content_refused', 'content');
      const checks = new ContentChecks(refuseKinds, refuseContent, true);
      // A gzip or zlib stream's content, read by the same checks (pickles only: what is
      // decompressed is loaded, not run), as joblib and pandas decompress before unpickling.
      const compressed = refuseKinds.has('pickle')
        ? new CompressedContent(
            () => new ContentChecks(PICKLES_ONLY, refuseContent, false),
            maxInflateRatio,
            (reason) => refuse(reason, 'content'),
            refuseUnopened,
          )
        : undefined;
      // Bytes handed to the checks so far.
      let checked = 0;
      const check = (chunk: Uint8Array): void => {
        checked += chunk.byteLength;
        hash.update(chunk);
        checks.push(chunk);
        compressed?.push(chunk);
      };
      // Past its first 16 KiB, an upload's small chunks are gathered before they are checked:
      // every chunk costs each check a step, and an upload sent in one-byte pieces (gRPC
      // messages, HTTP chunks) cost 0.9 s of CPU a MiB, where the same bytes in large chunks
      // cost 2 ms. The first bytes go as they come, so that a pickle in them is refused while
      // the sender still holds the rest.
      let gathered: Buffer | undefined;
      let gatheredBytes = 0;
      const flush = (): void => {
        if (gathered === undefined || gatheredBytes === 0) return;
        const bytes = gathered.subarray(0, gatheredBytes);
        gatheredBytes = 0;
        check(bytes);
      };
      const update = (chunk: Uint8Array): void => {
        if (checked < gatherBytes || chunk.byteLength >= gatherBytes) {
          flush();
          check(chunk);
          return;
        }
        gathered ??= Buffer.allocUnsafe(gatherBytes);
        const length = chunk.byteLength;
        if (gatheredBytes + length < gatherBytes) {
          copyBytes(gathered, gatheredBytes, chunk, 0, length);
          gatheredBytes += length;
          return;
        }
        let taken = 0;
        while (taken < chunk.byteLength) {
          const piece = chunk.subarray(taken, taken + gatherBytes - gatheredBytes);
          gathered.set(piece, gatheredBytes);
          gatheredBytes += piece.byteLength;
          taken += piece.byteLength;
          if (gatheredBytes === gatherBytes) flush();
        }
      };
      return {
        update,
        async updateInSlices(chunk: Uint8Array, signal?: AbortSignal) {
          for (let at = 0; at < chunk.byteLength; at += SLICE_BYTES) {
            const slice = chunk.subarray(at, at + SLICE_BYTES);
            await UPLOAD_CHECK_TURNS.run(() => {
              signal?.throwIfAborted();
              update(slice);
            });
          }
        },
        finish() {
          flush();
          checks.end();
          compressed?.end();
          const actual = hash.digest();
          if (!timingSafeEqual(actual, Buffer.from(sha256, 'hex'))) refuse('digest_mismatch', 'sha256');
          return actual.toString('hex');
        },
      };
    },
  });
}

const PICKLES_ONLY: ReadonlySet<ContentKind> = new Set(['pickle']);

/**
 * The checks of one stream's content by the kinds refused: its first bytes sniffed, and for
 * pickles the stream read as CPython's unpickler reads it, as a tar's members, and (in an
 * upload as sent, not in decompressed content) as ZIP entry names wherever they stand.
 */
class ContentChecks implements StreamCheck {
  readonly #kinds: ReadonlySet<ContentKind>;
  readonly #refuse: () => never;
  #head: Buffer | undefined = Buffer.alloc(0);
  readonly #entries: ZipEntryNames | undefined;
  readonly #imports: PickleImportScan | undefined;
  readonly #members: TarMembers | undefined;

  constructor(kinds: ReadonlySet<ContentKind>, refuse: () => never, zipEntries: boolean) {
    this.#kinds = kinds;
    this.#refuse = refuse;
    const pickles = kinds.has('pickle');
    // Every ZIP entry of the upload: a pickle may stand anywhere in an archive, and an archive
    // anywhere in the upload. Python's zipfile (and so PyTorch) finds an archive by its central
    // directory at the end, whatever bytes come in front of it (a GIF header, a stub).
    this.#entries =
      pickles && zipEntries
        ? new ZipEntryNames(
            (nameEnd) => {
              if (isPickleName(nameEnd.toLowerCase())) refuse();
            },
            // A member of an `.npz` (np.savez stores them) that is an array of Python objects.
            {
              prefix: NUMPY_MAGIC,
              bytes: SNIFF_BYTES,
              // Its whole header, however long (up to NumPy's own limit): its type may stand last.
              lengthOf: (first) => numpyHeadLength(first, SNIFF_BYTES),
              onHead: (head) => {
                if (holdsNumpyObjects(head)) refuse();
              },
            },
            // Headers inside headers, or array heads packed tighter than entries can be: no writer
            // makes them, and a flood of them is made to cost.
            refuse,
          )
        : undefined;
    // A pickle of any protocol, with or without the header the first bytes are sniffed for,
    // that imports a name: what loading it would run.
    this.#imports = pickles ? new PickleImportScan(refuse) : undefined;
    // A tar's members, each a stream of its own (PyTorch's legacy checkpoint is a tar whose
    // member `pickle` torch.load unpickles): a pickle's name, or one that imports a name.
    this.#members = pickles
      ? new TarMembers(
          (name) => {
            const lower = name.toLowerCase();
            if (isPickleName(lower) || lower.slice(lower.lastIndexOf('/') + 1) === 'pickle') refuse();
          },
          () => new PickleImportScan(refuse),
          // A tar the scan cannot read as CPython's tarfile does is refused, not passed unread.
          refuse,
        )
      : undefined;
  }

  /** Whether more bytes can change nothing (ZIP entry names are looked for to the end). */
  get finished(): boolean {
    return (
      this.#head === undefined &&
      this.#entries === undefined &&
      this.#imports?.finished !== false &&
      this.#members?.finished !== false
    );
  }

  push(chunk: Uint8Array): void {
    this.#entries?.push(chunk);
    this.#imports?.push(chunk);
    this.#members?.push(chunk);
    if (this.#head === undefined) return;
    // A .npy's whole header, however long (up to NumPy's own limit): its type may stand last.
    let wanted = numpyHeadLength(this.#head, SNIFF_BYTES);
    let taken = 0;
    while (this.#head.length < wanted && taken < chunk.length) {
      const piece = chunk.subarray(taken, taken + wanted - this.#head.length);
      taken += piece.length;
      this.#head = Buffer.concat([this.#head, piece]);
      wanted = numpyHeadLength(this.#head, SNIFF_BYTES);
    }
    if (this.#head.length >= wanted) this.#sniff();
  }

  end(): void {
    if (this.#head !== undefined) this.#sniff();
    this.#entries?.end();
  }

  #sniff(): void {
    const head = this.#head ?? Buffer.alloc(0);
    this.#head = undefined;
    const kind = contentKind(head);
    if (kind !== undefined && this.#kinds.has(kind)) this.#refuse();
  }
}

/**
 * What the first bytes are, among the kinds refused by default.
 *
 * @example
 * ```ts
 * import { contentKind } from '@fluxguard/core';
 * contentKind(Buffer.from('#!/bin/sh\n')); // 'executable'
 * contentKind(Buffer.from('hello, artifact')); // undefined
 * ```
 */
export function contentKind(head: Buffer): ContentKind | undefined {
  // Pickle protocol 2+: PROTO opcode 0x80, then the protocol number.
  if (head.length >= 2 && head[0] === 0x80 && head[1] !== undefined && head[1] >= 2 && head[1] <= 5) return 'pickle';
  // A ZIP (PyTorch .pt) whose first entry is a pickle: `archive/data.pkl`. An upload check
  // reads every entry of an archive as it streams (`ZipEntryNames`).
  if (head.subarray(0, 4).equals(ZIP_SIGNATURE) && head.length >= 30) {
    const nameLength = head.readUInt16LE(26);
    const entry = head
      .subarray(30, 30 + nameLength)
      .toString('latin1')
      .toLowerCase();
    if (isPickleName(entry)) return 'pickle';
  }
  if (holdsNumpyObjects(head)) return 'pickle';
  if (head.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return 'executable'; // ELF
  if (head.subarray(0, 2).toString('latin1') === 'MZ') return 'executable'; // PE
  const magic = head.length >= 4 ? head.readUInt32BE(0) : 0;
  if ([0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe].includes(magic)) return 'executable'; // Mach-O
  // A universal Mach-O, whose next word counts its architectures; a Java class file has the
  // same magic, then its version (45 and up).
  if (magic === 0xcafebabe && head.length >= 8 && head.readUInt32BE(4) < 45) return 'executable';
  if (head.subarray(0, 2).toString('latin1') === '#!') return 'executable';
  return undefined;
}

/** An entry name (lowercase) that says pickle. */
function isPickleName(entry: string): boolean {
  return entry.endsWith('.pkl') || entry.endsWith('.pickle');
}

/**
 * The extension of a path's last segment, folded as the path resolver folds names (NFKC):
 * `model.ｐｋｌ` and `model．pkl` say `.pkl` as plainly to whoever reads the name; after a
 * compression's extension, the one it wraps too (`''` for none), last first.
 */
function extensionsOf(name: string): string[] {
  let base = name.slice(name.lastIndexOf('/') + 1).normalize('NFKC');
  const extensions: string[] = [];
  for (;;) {
    const dot = base.lastIndexOf('.');
    const extension = dot <= 0 ? '' : base.slice(dot).toLowerCase();
    extensions.push(extension);
    // `model.pkl.zst`, `model.pkl.tar.gz`: pandas' read_pickle takes the compression from the
    // last extension and unpickles what it unpacks, as joblib does.
    if (!COMPRESSION_EXTENSIONS.has(extension) || extensions.length > 3) return extensions;
    base = base.slice(0, dot);
  }
}

/** The extensions pandas and joblib take for a compression (or an archive of one member) around a file. */
const COMPRESSION_EXTENSIONS: ReadonlySet<string> = new Set([
  '.gz',
  '.bz2',
  '.xz',
  '.zst',
  '.zip',
  '.tar',
  '.z',
  '.lzma',
  '.lz4',
]);

function isExtension(value: string): boolean {
  return /^\.[a-z0-9_-]{1,16}$/.test(value);
}

function checkList(value: unknown, name: string, valid: (item: string) => boolean): string[] {
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string' && valid(item))) {
    throw new ConfigurationError(`createUploadCheck: "${name}" has an entry that is not valid`);
  }
  return value;
}
