import { constants, existsSync } from 'node:fs';
import { lstat, mkdir, open, rmdir, type FileHandle } from 'node:fs/promises';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { removalStopped, type RemovalOutcome, type WrittenDirectories } from './written-directories.js';

/**
 * A directory inside a root, opened one component at a time without following any symbolic
 * link, and held open: names inside it resolve against the opened directory itself (through
 * `/proc/self/fd`), so renaming or swapping a directory on the way afterwards cannot redirect a
 * read, a write or a rename elsewhere.
 *
 * @example
 * ```ts
 * const dir = await paths.openParent('models/v1/weights.bin', { create: true });
 * try {
 *   await writeFile(dir.entry(dir.name), bytes, { flag: 'wx' });
 *   dir.keep(); // the directories made for it stay
 * } catch (err) {
 *   await dir.removeCreated(); // no empty models/v1/ left behind by a failed write
 *   throw err;
 * } finally {
 *   await dir.close();
 * }
 * ```
 */
export interface PinnedDirectory {
  /** The last segment of the path: the file's name inside the directory. */
  readonly name: string;
  /** A path that names `name` inside this directory, whatever happens to the tree meanwhile. */
  entry(name: string): string;
  /**
   * After a write that failed: removes, deepest first and while each is empty, the directories
   * on this path that writes made (with `create`) and none has kept a file in ({@link keep}),
   * whichever opening made them: what a refused write would otherwise leave behind. A
   * directory another write is using (on its way through it, or writing in it) stays, and so
   * do those above it; the last failed write to leave it removes them. Never throws.
   */
  removeCreated(): Promise<void>;
  /**
   * After the file at this path was removed: removes, deepest first and while each is empty,
   * the directories on this path that no write is using (on its way through it, or writing in
   * it), whoever made them, so that deleting files leaves no empty directories behind for
   * listings to walk. The first directory that is not empty, in use, or gone ends the walk;
   * `rmdir` never follows a link. A directory a write is using is left to that write: if it
   * fails, its `removeCreated` takes it once empty. Never throws.
   */
  removeEmpty(): Promise<void>;
  /** After a write that succeeded: the directories on this path are kept for good. */
  keep(): void;
  /**
   * Releases the directory and this write's hold on its path: call it once done, after `keep` or
   * `removeCreated`; `entry` paths are not to be used afterwards.
   */
  close(): Promise<void>;
}

/** An opened directory and the directories on its way that this walk made. */
export interface PinnedWalk {
  readonly handle: FileHandle;
  /** The directories this walk created: their index into `segments` and their identity. */
  readonly created: readonly { readonly index: number; readonly id: string }[];
}

/** Which directory an open handle or a name is, whatever it is called now: device and inode. */
export const directoryId = (stats: { readonly dev: bigint; readonly ino: bigint }): string =>
  `${String(stats.dev)}:${String(stats.ino)}`;

const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * Whether the platform names open files under `/proc/self/fd` (Linux).
 *
 * @example
 * ```ts
 * import { PINNED_DIRECTORIES_SUPPORTED } from '@fluxguard/core';
 * if (!PINNED_DIRECTORIES_SUPPORTED) console.warn('no /proc/self/fd: paths are checked with resolveOnDisk');
 * ```
 */
export const PINNED_DIRECTORIES_SUPPORTED: boolean = existsSync('/proc/self/fd');

/**
 * Opens `segments` (already checked: no `..`, no separators) below `root` one at a time with
 * `O_NOFOLLOW | O_DIRECTORY`, each relative to the directory opened before it; with `create`,
 * missing directories are made on the way. A symbolic link anywhere on the way is refused
 * (`invalid_argument`, reason `path_symlink_escape`), even one that points inside the root:
 * following none is what makes the walk impossible to redirect.
 *
 * @throws SecurityError `invalid_argument` for a link on the way; the file-system error (`ENOENT`,
 *   `ENOTDIR`) for a missing directory or a file where a directory should be.
 * @throws ConfigurationError on a platform without `/proc/self/fd`.
 *
 * @internal
 */
export async function openPinnedDirectory(
  root: string,
  segments: readonly string[],
  options: { readonly create: boolean; readonly field: string },
): Promise<PinnedWalk> {
  if (!PINNED_DIRECTORIES_SUPPORTED) {
    throw new ConfigurationError('pinned directories need /proc/self/fd (Linux)');
  }
  const created: { index: number; id: string }[] = [];
  let handle = await open(root, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    for (const [index, segment] of segments.entries()) {
      const at = `/proc/self/fd/${String(handle.fd)}/${segment}`;
      let next: FileHandle;
      try {
        next = await openDirectory(at, options.field);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !options.create) throw err;
        // Only a directory this walk made is its to remove: EEXIST means another writer's.
        const made = await mkdir(at, { mode: 0o750 }).then(
          () => true,
          (error: unknown) => {
            if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
            return false;
          },
        );
        next = await openDirectory(at, options.field);
        if (made) created.push({ index, id: directoryId(await next.stat({ bigint: true })) });
      }
      await handle.close();
      handle = next;
    }
    return { handle, created };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Walks down `segments` below `root` (no link followed, as {@link openPinnedDirectory}), then
 * back up from the deepest directory reached: each directory that `writes` holds removable
 * under its relative path (`paths`, one per segment) with the identity it has (device and
 * inode, so a directory put in place of the one a write made is not taken for it) is removed
 * if empty; the first that is not removable, not empty or gone ends the walk. `rmdir` removes only an empty directory and never
 * follows a link at the name, so nothing but an empty directory is ever lost.
 *
 * @internal
 */
export async function removeEmptyDirectories(
  root: string,
  segments: readonly string[],
  paths: readonly string[],
  writes: Pick<WrittenDirectories, 'removable' | 'removed'>,
): Promise<RemovalOutcome> {
  const handles: FileHandle[] = [];
  try {
    handles.push(await open(root, constants.O_RDONLY | constants.O_DIRECTORY));
    for (const segment of segments) {
      const parent = handles[handles.length - 1];
      if (parent === undefined) break;
      handles.push(await openDirectory(`/proc/self/fd/${String(parent.fd)}/${segment}`, 'path'));
    }
  } catch {
    // A directory on the way is gone or is a link: what was reached can still be looked at.
  }
  try {
    for (let depth = handles.length - 1; depth >= 1; depth--) {
      const parent = handles[depth - 1];
      const handle = handles[depth];
      if (parent === undefined || handle === undefined) return 'done';
      const id = directoryId(await handle.stat({ bigint: true }));
      const path = paths[depth - 1] ?? '';
      if (!writes.removable(path, id)) return 'done';
      const at = `/proc/self/fd/${String(parent.fd)}/${segments[depth - 1] ?? ''}`;
      // The name must still be the directory that was opened: a swap meanwhile ends the walk.
      const named = await lstat(at, { bigint: true }).catch(() => undefined);
      if (named === undefined || directoryId(named) !== id) return 'done';
      await rmdir(at);
      writes.removed(path);
    }
    return 'done';
  } catch (err) {
    // Not empty (another writer is inside), or gone: the directories above stay too.
    return removalStopped(err);
  } finally {
    await Promise.all(handles.map((h) => h.close().catch(() => undefined)));
  }
}

/** Opens one directory without following a link at its name; a link is the client's refusal. */
async function openDirectory(at: string, field: string): Promise<FileHandle> {
  try {
    return await open(at, DIRECTORY_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A link at the name is ELOOP, or ENOTDIR with O_DIRECTORY: tell it from a plain file.
    const isLink =
      code === 'ELOOP' ||
      (code === 'ENOTDIR' &&
        (await lstat(at).then(
          (stats) => stats.isSymbolicLink(),
          () => false,
        )));
    if (isLink) {
      throw new SecurityError('invalid_argument', { details: { field }, reason: 'path_symlink_escape', cause: err });
    }
    throw err;
  }
}
