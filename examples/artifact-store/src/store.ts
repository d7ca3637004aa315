import { createHash, randomBytes } from 'node:crypto';
import { constants, type BigIntStats, type Dirent } from 'node:fs';
import { lstat, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { LruCache } from '@fluxguard/core/adapter';
import {
  SecurityError,
  isSecurityError,
  createPathResolver,
  createUploadCheck,
  PINNED_DIRECTORIES_SUPPORTED,
  type PathResolver,
  type PinnedDirectory,
  type SafePath,
  type UploadCheck,
} from '@fluxguard/core';
import { checkSha256Hex } from './digest.js';

/** Metadata of one stored artifact. */
export interface ArtifactInfo {
  readonly path: string;
  /** Lowercase hex SHA-256 of the content. */
  readonly sha256: string;
  readonly size: number;
}

/** One stored artifact with its bytes. */
export interface Artifact extends ArtifactInfo {
  readonly content: Buffer;
}

/** One stored artifact opened for reading, its bytes read as they are asked for. */
export interface OpenedArtifact extends ArtifactInfo {
  /**
   * The bytes, read from the file as it was opened (a replacement meanwhile is not mixed in),
   * as fast as the consumer takes them; the file is closed when the stream ends or is destroyed.
   */
  readonly content: Readable;
}

/**
 * The artifacts one listing returns, in the order of their paths; `truncated`, read once the
 * iteration has ended, says whether more may follow the last one (ask again with `startAfter`
 * set to its path).
 */
export interface Listing extends AsyncIterable<ArtifactInfo> {
  readonly truncated: boolean;
}

/** Options of {@link ArtifactStore}. */
export interface ArtifactStoreOptions {
  /** The directory that holds every artifact; created if missing. */
  readonly dataDir: string;
  /** Largest artifact accepted by `put`, in bytes. Default 64 MiB. */
  readonly maxArtifactBytes?: number;
  /** Most artifacts a listing returns. Default 10,000. */
  readonly maxListEntries?: number;
  /**
   * What uploads are checked for besides their digest (`createUploadCheck` of
   * `@fluxguard/core`). Default: pickles and executables refused, by name and by content.
   */
  readonly uploads?: UploadCheck;
}

const TEMP_PREFIX = '.upload-';
// An upload writes its temporary at least once per idle limit (30 s): one unchanged this long
// was left by a process that ended without finishing it, not by an upload in progress elsewhere.
const LEFTOVER_AGE_MS = 10 * 60_000;
// A walk that keeps losing its new directory to refused uploads of other processes gives up after this.
const CREATE_ATTEMPTS = 3;
// Gathered chunks are written once they reach this size (and at the end).
const WRITE_BATCH_BYTES = 64 * 1024;

/**
 * The ArtifactStore service over files under one data directory, shared by both reference
 * servers. Client paths go through fluxguard's path resolver (no traversal, no symlink
 * escape). Refusals are `SecurityError`s; a file-system failure is thrown as it is, so that
 * the transport's error handler turns it into the generic internal error and logs the cause.
 *
 * @example
 * ```ts
 * const store = new ArtifactStore({ dataDir: '.fluxguard/data' });
 * const info = await store.put('models/a.bin', sha256Hex, chunks);
 * const artifact = await store.get('models/a.bin');
 * ```
 */
export class ArtifactStore {
  readonly #paths: PathResolver;
  readonly #maxBytes: number;
  readonly #uploads: UploadCheck;
  readonly #maxListEntries: number;
  /**
   * SHA-256 of stored files, by what identifies one version of a file (device, inode, size,
   * modification time): a listing or a read hashes a file once, not on every call. Without it,
   * one reader within its limits could make the server read and hash every stored byte per list.
   * It holds four full listings (about 250 bytes an entry): readers alternating between two
   * prefixes of `maxListEntries` files each no longer evict each other's digests.
   */
  readonly #digests: LruCache<string, string>;
  /** Hashings under way, by file version (at most one per version). */
  readonly #hashing = new Map<string, Promise<string>>();

  constructor(options: ArtifactStoreOptions) {
    this.#paths = createPathResolver({ root: options.dataDir });
    this.#maxBytes = options.maxArtifactBytes ?? 64 * 1024 * 1024;
    this.#uploads = options.uploads ?? createUploadCheck();
    this.#maxListEntries = options.maxListEntries ?? 10_000;
    this.#digests = new LruCache(4 * this.#maxListEntries);
  }

  /** The data directory's real path. */
  get dataDir(): string {
    return this.#paths.root;
  }

  /**
   * Removes the temporaries of uploads that a process ended without finishing (a crash, a
   * SIGKILL): hidden from listings and out of reach of every call, each held up to
   * `maxArtifactBytes` of disk for ever. Only those unchanged for ten minutes, so that an upload
   * in progress on another replica sharing the directory keeps its own. Links are not followed.
   * Returns how many were removed.
   */
  async removeLeftoverUploads(now: number = Date.now()): Promise<number> {
    let removed = 0;
    const visit = async (dir: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return; // gone meanwhile, or unreadable: nothing of ours to remove there
      }
      for (const entry of entries) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await visit(path);
        else if (entry.isFile() && entry.name.startsWith(TEMP_PREFIX)) {
          const stats = await lstat(path).catch(() => undefined);
          if (stats === undefined || now - stats.mtimeMs < LEFTOVER_AGE_MS) continue;
          await unlink(path).then(
            () => (removed += 1),
            () => undefined,
          );
        }
      }
    };
    await visit(this.dataDir);
    return removed;
  }

  /**
   * Reads one artifact whole: {@link open}, then every byte. The file is opened inside its
   * directory as it was opened (no link followed on the way or at the file), so swapping a
   * directory for a link meanwhile cannot make it read a file outside the data directory.
   */
  async get(path: string, signal?: AbortSignal): Promise<Artifact> {
    const opened = await this.open(path, signal);
    const content = await readContent(opened);
    return { path: opened.path, sha256: opened.sha256, size: content.length, content };
  }

  /**
   * Opens one artifact for reading as a stream, for a transport that can send it as it is read
   * (HTTP): the server then holds what the client has not taken yet, not the whole artifact.
   * The file is opened as {@link get} opens it.
   */
  async open(path: string, signal?: AbortSignal): Promise<OpenedArtifact> {
    const { relative: at, handle, stats } = await this.#openFile(path);
    try {
      const sha256 = await this.#digestOf(handle, stats, signal);
      const content = handle.createReadStream({ start: 0, autoClose: true, ...(signal ? { signal } : {}) });
      return { path: at, sha256, size: Number(stats.size), content };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** The artifact file of `path`, opened inside its directory without following a link. */
  async #openFile(path: string): Promise<{ relative: string; handle: FileHandle; stats: BigIntStats }> {
    const dir = await this.#openParent(path).catch((err: unknown) => fileSystemFailure(err, 'read', path));
    try {
      const handle = await open(dir.entry(dir.name), FILE_FLAGS).catch((err: unknown) =>
        fileSystemFailure(err, 'read', dir.absolute),
      );
      try {
        const stats = await handle.stat({ bigint: true });
        if (!stats.isFile()) throw notAnArtifact();
        return { relative: dir.relative, handle, stats };
      } catch (err) {
        await handle.close();
        throw err;
      }
    } finally {
      await dir.close();
    }
  }

  /**
   * The SHA-256 of an open file: remembered, or read in chunks (never the whole file at once).
   * Calls that want the digest of a version being hashed wait for that one hashing: thirty
   * concurrent lists after a restart read each file once, not thirty times.
   */
  async #digestOf(handle: FileHandle, stats: BigIntStats, signal?: AbortSignal): Promise<string> {
    const key = versionOf(stats);
    const known = this.#digests.get(key);
    if (known !== undefined) return known;
    let hashing = this.#hashing.get(key);
    if (hashing === undefined) {
      // It reads through this caller's handle, which this caller keeps open until the hashing
      // ends, even when its client has left: the others wait for the same digest.
      hashing = sha256Of(handle).finally(() => this.#hashing.delete(key));
      this.#hashing.set(key, hashing);
    }
    const sha256 = await hashing;
    this.#digests.set(key, sha256);
    signal?.throwIfAborted();
    return sha256;
  }

  /**
   * The directory of `path`, held open (see `openParent` of `@fluxguard/core`). Names that
   * start like the store's temporary files are refused: they would read or replace someone
   * else's upload in progress.
   */
  #openParent(path: string, create = false): Promise<PinnedDirectory & SafePath> {
    if (typeof path === 'string' && path.split('/').some((segment) => segment.startsWith(TEMP_PREFIX))) {
      throw new SecurityError('invalid_argument', { details: { field: 'path' }, reason: 'app.reserved_name' });
    }
    return this.#paths.openParent(path, { create });
  }

  /**
   * Lists artifacts whose path starts with `prefix` and sorts after `startAfter` (by UTF-16 code
   * units, as JavaScript compares strings), sorted by path, at most `maxListEntries`; the
   * listing's `truncated` says whether more may follow. Only the prefix's directory is walked,
   * each directory opened inside the one before it without following a link and read through
   * its open handle, as {@link get} opens a file: a directory swapped for a link meanwhile
   * cannot make a listing name or hash files outside the data directory. A directory whose
   * paths all sort before `startAfter` is not opened.
   */
  list(prefix: string, signal?: AbortSignal, startAfter = ''): Listing {
    const start = (): Walk => ({ left: this.#maxListEntries, depth: 0, startAfter, truncated: false });
    // Each iteration walks anew; `truncated` is the latest one's.
    let walk = start();
    return {
      get truncated() {
        return walk.truncated;
      },
      [Symbol.asyncIterator]: () => {
        walk = start();
        return this.#list(prefix, walk, signal)[Symbol.asyncIterator]();
      },
    };
  }

  async *#list(prefix: string, walk: Walk, signal: AbortSignal | undefined): AsyncGenerator<ArtifactInfo> {
    const checked = this.#paths.checkPrefix(prefix);
    const cut = checked.lastIndexOf('/');
    const segments = cut === -1 ? [] : checked.slice(0, cut).split('/');
    let dir: OpenDirectory | undefined = await openRoot(this.#paths.root);
    for (const segment of segments) {
      const next: OpenDirectory | undefined = await openDirectoryIn(dir, segment).finally(() => dir?.handle.close());
      // Missing, a file, or a link: nothing under it to list.
      if (next === undefined) return;
      dir = next;
    }
    try {
      walk.depth = segments.length;
      yield* this.#walk(dir, segments.join('/'), checked.slice(cut + 1), walk, signal);
    } finally {
      await dir.handle.close();
    }
  }

  /**
   * The artifacts in `dir` and below whose name starts with `namePrefix` (on this level only),
   * in the order of their whole paths: entries sorted by name, a directory's as `name/`, so
   * that everything under `a/` comes where `a/` sorts among its siblings (`a-b` before it).
   */
  async *#walk(
    dir: OpenDirectory,
    relative: string,
    namePrefix: string,
    walk: Walk,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<ArtifactInfo> {
    const entries = (await readdir(dir.at, { withFileTypes: true }))
      .filter((entry) => entry.name.startsWith(namePrefix))
      .filter((entry) => entry.isDirectory() || (entry.isFile() && !entry.name.startsWith(TEMP_PREFIX)))
      .map((entry) => ({ name: entry.name, directory: entry.isDirectory(), key: sortKey(entry) }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const entry of entries) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      // Every path under a directory sorts before `startAfter` when the directory's does and
      // `startAfter` is not under it.
      const before = entry.directory
        ? `${path}/` < walk.startAfter && !walk.startAfter.startsWith(`${path}/`)
        : path <= walk.startAfter;
      if (before) continue;
      if (walk.left === 0) {
        // Something may follow: a file, or a directory that may hold one.
        walk.truncated = true;
        return;
      }
      signal?.throwIfAborted();
      if (entry.directory) {
        // Deeper than a path may be: nothing there was stored through the service.
        if (walk.depth + 1 >= MAX_PATH_SEGMENTS) continue;
        const sub = await openDirectoryIn(dir, entry.name);
        if (sub === undefined) continue;
        walk.depth++;
        try {
          yield* this.#walk(sub, path, '', walk, signal);
        } finally {
          walk.depth--;
          await sub.handle.close();
        }
        continue;
      }
      const handle = await openFileIn(dir, entry.name);
      // Deleted, or replaced by a link or a FIFO, since the directory was read: not listed.
      if (handle === undefined) continue;
      try {
        const stats = await handle.stat({ bigint: true });
        if (!stats.isFile()) continue;
        walk.left--;
        yield { path, sha256: await this.#digestOf(handle, stats, signal), size: Number(stats.size) };
      } finally {
        await handle.close();
      }
    }
  }

  /**
   * Stores an artifact from a stream of chunks, verifying the declared SHA-256. The bytes go
   * to a temporary file beside the target and are renamed into place only once the digest
   * matches, so a reader never sees a partial or unverified artifact.
   */
  async put(
    path: string,
    expectedSha256: string,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<ArtifactInfo> {
    const expected = checkSha256Hex(expectedSha256);
    const { dir, temp, file } = await this.#createTemp(path);
    let kept = false;
    try {
      // The declared digest, the name's extension and the first bytes (no pickle, no
      // executable, whatever the name says), checked as the bytes stream in.
      const upload = this.#uploads.begin({ name: dir.name, sha256: expected });
      let size = 0;
      // Small chunks are gathered and written together: one write per message made 100,000
      // one-byte messages cost seconds of CPU where the same bytes in one chunk cost 10 ms.
      const pending: Uint8Array[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (pendingBytes === 0) return;
        const gathered = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
        pending.length = 0;
        pendingBytes = 0;
        if (gathered !== undefined) await file.write(gathered);
      };
      for await (const chunk of chunks) {
        signal?.throwIfAborted();
        size += chunk.byteLength;
        if (size > this.#maxBytes) {
          throw new SecurityError('payload_too_large', { reason: 'app.artifact_too_large' });
        }
        // In slices: a gzipped chunk is inflated as it is checked, a second of CPU for 8 MiB.
        await upload.updateInSlices(chunk, signal);
        pending.push(chunk);
        pendingBytes += chunk.byteLength;
        if (pendingBytes >= WRITE_BATCH_BYTES) await flush();
      }
      await flush();
      upload.finish();
      await file.sync();
      // Checked as it arrived: no later listing or read needs to hash this version again.
      this.#digests.set(versionOf(await file.stat({ bigint: true })), expected);
      await file.close();
      // Once more before the upload becomes visible: over gRPC, a client that cancels ends its
      // request just before it resets the stream (Node's client does so for grpc-js's cancel and
      // for a client deadline), so the handler sees a whole upload, and the cancellation comes
      // a moment later, by which time the writes above are done.
      signal?.throwIfAborted();
      // rename replaces a link at the name rather than following it.
      await rename(temp, dir.entry(dir.name)).catch((err: unknown) => fileSystemFailure(err, 'write', dir.absolute));
      kept = true;
      dir.keep();
      return { path: dir.relative, sha256: expected, size };
    } finally {
      if (!kept) {
        await file.close().catch(() => undefined);
        await unlink(temp).catch(() => undefined);
        // A refused upload leaves no empty directories behind for the listings to walk, nor
        // do refused uploads that overlap in new directories (the last one out removes them).
        await dir.removeCreated();
      }
      await dir.close();
    }
  }

  /**
   * Stores what `fetchBody` resolves to, checked as {@link put} checks an upload: a body to
   * read as it arrives (`UrlGuard.open`), written to the temporary file chunk by chunk so that
   * an import holds no more than an upload does, or bytes already in hand. `fetchBody` is called
   * only once the path, its name and the declared digest have passed, and the temporary file is
   * ready: an import that could never be stored costs no download. A refusal while it is read
   * stops reading it, which ends the request.
   */
  putFetched(
    path: string,
    expectedSha256: string,
    fetchBody: () => Promise<AsyncIterable<Uint8Array> | Uint8Array>,
    signal?: AbortSignal,
  ): Promise<ArtifactInfo> {
    return this.put(path, expectedSha256, fetchedWhenAsked(fetchBody), signal);
  }

  /**
   * Opens the directory of `path` (made if missing) and a new temporary file in it. The
   * temporary file, its rename and its removal all go through the directory as it was opened:
   * a directory swapped for a link meanwhile cannot send a byte outside. No refused upload of
   * this process removes a directory this one is on its way through, but one of another
   * process sharing the data directory may (`ENOENT`): then the walk starts again, and makes
   * the directory itself.
   */
  async #createTemp(path: string): Promise<{ dir: PinnedDirectory & SafePath; temp: string; file: FileHandle }> {
    for (let attempt = 1; ; attempt++) {
      let dir: (PinnedDirectory & SafePath) | undefined;
      try {
        dir = await this.#openParent(path, true);
        // Not named after the artifact: a name as long as a segment may be (255 bytes) would
        // make the temporary's too long for the file system.
        const temp = dir.entry(`${TEMP_PREFIX}${randomBytes(12).toString('hex')}`);
        const file = await open(
          temp,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o640,
        );
        return { dir, temp, file };
      } catch (err) {
        if (dir !== undefined) {
          await dir.removeCreated();
          await dir.close();
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < CREATE_ATTEMPTS) continue;
        return fileSystemFailure(err, 'write', path);
      }
    }
  }

  /**
   * Deletes one artifact (never a directory; a link is removed itself, never followed), and the
   * directories it leaves empty: uploads and deletes of deep paths left them for every listing
   * to walk, thousands an hour within the write limit.
   */
  async delete(path: string): Promise<void> {
    const dir = await this.#openParent(path).catch((err: unknown) => fileSystemFailure(err, 'delete', path));
    try {
      const target = dir.entry(dir.name);
      const stats = await lstat(target).catch((err: unknown) => fileSystemFailure(err, 'delete', dir.absolute));
      if (stats.isDirectory()) throw notAnArtifact();
      await unlink(target).catch((err: unknown) => fileSystemFailure(err, 'delete', dir.absolute));
      await dir.removeEmpty();
    } finally {
      await dir.close();
    }
  }
}

/** What `fetchBody` resolves to, fetched when its first chunk is asked for. */
async function* fetchedWhenAsked(
  fetchBody: () => Promise<AsyncIterable<Uint8Array> | Uint8Array>,
): AsyncIterable<Uint8Array> {
  const body = await fetchBody();
  if (body instanceof Uint8Array) yield body;
  else yield* body;
}

/**
 * Every byte of an opened artifact, as one buffer: for a transport that must send it whole
 * (a gRPC message).
 *
 * @example
 * ```ts
 * const opened = await store.open('models/a.bin');
 * const content = await readContent(opened);
 * ```
 */
export async function readContent(opened: OpenedArtifact): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of opened.content) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Where a listing stands: how many artifacts it may still return, how deep it is, where it starts. */
interface Walk {
  left: number;
  depth: number;
  readonly startAfter: string;
  truncated: boolean;
}

/**
 * A directory held open while a listing reads it, and how to name what is in it: through the
 * open handle (`/proc/self/fd`) where the platform allows, so that what the name meant when
 * it was opened is what is read; elsewhere by path.
 */
interface OpenDirectory {
  readonly handle: FileHandle;
  /** Names this directory: its handle's `/proc/self/fd` entry, or its path. */
  readonly at: string;
}

// A path has at most this many segments (the path resolver's default `maxDepth`).
const MAX_PATH_SEGMENTS = 16;
const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, holding one of the
// four threads of libuv's pool; four such opens stopped every file operation of the server.
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

async function openRoot(root: string): Promise<OpenDirectory> {
  const handle = await open(root, constants.O_RDONLY | constants.O_DIRECTORY);
  return { handle, at: PINNED_DIRECTORIES_SUPPORTED ? `/proc/self/fd/${String(handle.fd)}` : root };
}

/** `name` in `dir` opened as a directory, or `undefined` when it is gone, a link or no directory. */
async function openDirectoryIn(dir: OpenDirectory, name: string): Promise<OpenDirectory | undefined> {
  const handle = await open(join(dir.at, name), DIRECTORY_FLAGS).catch(skipGone);
  if (handle === undefined) return undefined;
  return { handle, at: PINNED_DIRECTORIES_SUPPORTED ? `/proc/self/fd/${String(handle.fd)}` : join(dir.at, name) };
}

/** `name` in `dir` opened for reading, or `undefined` when it is gone or a link. */
function openFileIn(dir: OpenDirectory, name: string): Promise<FileHandle | undefined> {
  return open(join(dir.at, name), FILE_FLAGS).catch(skipGone);
}

/** What a listing passes over: a name gone since its directory was read, or now a link, a file or a socket. */
function skipGone(err: unknown): undefined {
  const code = (err as NodeJS.ErrnoException).code;
  // ENXIO: a socket, which cannot be opened. Not an artifact: the rest is listed.
  if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENXIO') return undefined;
  throw err;
}

/** A directory sorts as `name/`: its paths then come where they come among whole paths. */
function sortKey(entry: Dirent): string {
  return entry.isDirectory() ? `${entry.name}/` : entry.name;
}

async function sha256Of(handle: FileHandle): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of handle.createReadStream({ start: 0, autoClose: false })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * What identifies one version of a stored file; a replacement (a new inode) or a change differs.
 * The change time too: a restore rewritten in place with its old modification time kept
 * (`cp -p`, `rsync -t --inplace`) was served under the old digest, and no program sets ctime.
 */
function versionOf(stats: BigIntStats): string {
  return `${String(stats.dev)}:${String(stats.ino)}:${String(stats.size)}:${String(stats.mtimeNs)}:${String(stats.ctimeNs)}`;
}

/** A directory where an artifact was asked for: the client's `not_found`, as a missing file. */
function notAnArtifact(): SecurityError {
  return new SecurityError('not_found', { reason: 'app.not_an_artifact' });
}

/**
 * What the client's path makes of a file-system failure: a missing file (or a file where a
 * directory should be, on a read) is `not_found`; a path that collides with what is stored (a
 * file where a directory should be, a directory where the artifact should go) is `conflict`;
 * anything else is the server's, thrown with the path and the errno in its cause so that the
 * log line has both (Node leaves the path out of some errors).
 */
function fileSystemFailure(err: unknown, action: 'read' | 'write' | 'delete', where: string): never {
  if (isSecurityError(err)) throw err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (action !== 'write' && (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR')) {
    throw new SecurityError('not_found', { reason: 'app.artifact_not_found', cause: err });
  }
  // A link at the name (opened without following it): no artifact, as a listing has it.
  if (action === 'read' && code === 'ELOOP') throw notAnArtifact();
  if (action === 'write' && (code === 'ENOTDIR' || code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST')) {
    throw new SecurityError('conflict', { details: { field: 'path' }, reason: 'app.path_conflict', cause: err });
  }
  throw Object.assign(new Error(`cannot ${action} artifact file ${where}`, { cause: err }), { code, path: where });
}
