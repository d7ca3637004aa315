import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { createPathResolver, SecurityError, type PathResolver } from '@fluxguard/core';
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

/** Options of {@link ArtifactStore}. */
export interface ArtifactStoreOptions {
  /** The directory that holds every artifact; created if missing. */
  readonly dataDir: string;
  /** Largest artifact accepted by `put`, in bytes. Default 64 MiB. */
  readonly maxArtifactBytes?: number;
  /** Most artifacts a listing returns. Default 10,000. */
  readonly maxListEntries?: number;
}

const TEMP_PREFIX = '.upload-';

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
  readonly #maxListEntries: number;

  constructor(options: ArtifactStoreOptions) {
    this.#paths = createPathResolver({ root: options.dataDir });
    this.#maxBytes = options.maxArtifactBytes ?? 64 * 1024 * 1024;
    this.#maxListEntries = options.maxListEntries ?? 10_000;
  }

  /** The data directory's real path. */
  get dataDir(): string {
    return this.#paths.root;
  }

  /** Reads one artifact. */
  async get(path: string, signal?: AbortSignal): Promise<Artifact> {
    const safe = await this.#paths.resolveOnDisk(path);
    const content = await readFile(safe.absolute, signal ? { signal } : {}).catch((err: unknown) =>
      fileSystemFailure(err, 'read', safe.absolute),
    );
    return { path: safe.relative, content, sha256: sha256Hex(content), size: content.length };
  }

  /** Lists artifacts whose path starts with `prefix`, sorted by path. */
  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ArtifactInfo> {
    const checked = this.#paths.checkPrefix(prefix);
    const entries: Dirent[] = await readdir(this.#paths.root, { withFileTypes: true, recursive: true });
    const files = entries
      .filter((e) => e.isFile() && !e.name.startsWith('.'))
      .map((e) => relative(this.#paths.root, join(e.parentPath, e.name)).split(sep).join('/'))
      .filter((p) => p.startsWith(checked))
      .sort()
      .slice(0, this.#maxListEntries);
    for (const path of files) {
      signal?.throwIfAborted();
      let content: Buffer;
      try {
        content = await readFile(join(this.#paths.root, path));
      } catch (err) {
        // Deleted between the directory read and now: not part of the listing any more.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      yield { path, sha256: sha256Hex(content), size: content.length };
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
    chunks: AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<ArtifactInfo> {
    const expected = checkSha256Hex(expectedSha256);
    const safe = await this.#paths.resolveOnDisk(path);
    await mkdir(dirname(safe.absolute), { recursive: true, mode: 0o750 });
    // mkdir may have followed a link planted meanwhile: check again once the directory exists.
    await this.#paths.resolveOnDisk(path);
    const temp = join(
      dirname(safe.absolute),
      `${TEMP_PREFIX}${basename(safe.absolute)}.${randomBytes(8).toString('hex')}`,
    );
    const file = await open(temp, 'wx', 0o640);
    let kept = false;
    try {
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of chunks) {
        signal?.throwIfAborted();
        size += chunk.byteLength;
        if (size > this.#maxBytes) {
          throw new SecurityError('payload_too_large', { reason: 'app.artifact_too_large' });
        }
        hash.update(chunk);
        await file.write(chunk);
      }
      const actual = hash.digest();
      if (!timingSafeEqual(actual, Buffer.from(expected, 'hex'))) {
        throw new SecurityError('invalid_argument', { details: { field: 'sha256' }, reason: 'app.digest_mismatch' });
      }
      await file.sync();
      await file.close();
      await rename(temp, safe.absolute);
      kept = true;
      return { path: safe.relative, sha256: expected, size };
    } finally {
      if (!kept) {
        await file.close().catch(() => undefined);
        await unlink(temp).catch(() => undefined);
      }
    }
  }

  /** Deletes one artifact. */
  async delete(path: string): Promise<void> {
    const safe = await this.#paths.resolveOnDisk(path);
    await unlink(safe.absolute).catch((err: unknown) => fileSystemFailure(err, 'delete', safe.absolute));
  }
}

function sha256Hex(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/**
 * A missing file is the client's `not_found`; any other failure is the server's, thrown with
 * the absolute path and the errno in its cause so that the log line has both (Node leaves the
 * path out of some errors, e.g. EISDIR from a read).
 */
function fileSystemFailure(err: unknown, action: string, absolute: string): never {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    throw new SecurityError('not_found', { reason: 'app.artifact_not_found', cause: err });
  }
  throw Object.assign(new Error(`cannot ${action} artifact file ${absolute}`, { cause: err }), {
    code,
    path: absolute,
  });
}
