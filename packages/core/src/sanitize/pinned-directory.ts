import { constants, existsSync } from 'node:fs';
import { lstat, mkdir, open, rmdir, type FileHandle } from 'node:fs/promises';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';

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
   * Removes the directories this opening made (with `create`), deepest first, as long as each
   * is empty: what a refused or failed write would otherwise leave behind. A directory that
   * another writer has put something in meanwhile stays, and so do its parents. Never throws.
   */
  removeCreated(): Promise<void>;
  close(): Promise<void>;
}

/** An opened directory and which of the segments on its way this walk made. */
export interface PinnedWalk {
  readonly handle: FileHandle;
  /** Indexes into `segments` of the directories this walk created, in walking order. */
  readonly created: readonly number[];
}

const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** Whether the platform names open files under `/proc/self/fd` (Linux). */
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
  const created: number[] = [];
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
        if (made) created.push(index);
        next = await openDirectory(at, options.field);
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
 * Removes the directories of `created` (indexes into `segments`, as {@link openPinnedDirectory}
 * reports them), deepest first, each through its parent opened again without following a link;
 * stops at the first that cannot go (not empty, gone, replaced). `rmdir` removes only an empty
 * directory and never follows a link at the name, so nothing but an empty directory is lost.
 *
 * @internal
 */
export async function removeCreatedDirectories(
  root: string,
  segments: readonly string[],
  created: readonly number[],
): Promise<void> {
  for (let i = created.length - 1; i >= 0; i--) {
    const index = created[i] ?? 0;
    try {
      const { handle } = await openPinnedDirectory(root, segments.slice(0, index), { create: false, field: 'path' });
      try {
        await rmdir(`/proc/self/fd/${String(handle.fd)}/${segments[index] ?? ''}`);
      } finally {
        await handle.close();
      }
    } catch {
      return;
    }
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
