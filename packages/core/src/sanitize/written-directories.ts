import { LruCache } from '../cache/lru.js';

/** Directories made by writes not kept yet, remembered at once; beyond, the oldest is forgotten. */
const PROVISIONAL_MAX_ENTRIES = 10_000;

/**
 * How a walk removing a failed write's directories ended: `done` (it removed what it could and
 * stopped at one it may not remove), or `not_empty` (a directory it may remove still held
 * something: another process's write may be inside).
 *
 * @internal
 */
export type RemovalOutcome = 'done' | 'not_empty';

/**
 * How a walk ends on a failed `rmdir` or look: `not_empty` when the directory held something
 * (Linux says `ENOTEMPTY`, some systems `EEXIST`).
 *
 * @internal
 */
export function removalStopped(err: unknown): RemovalOutcome {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOTEMPTY' || code === 'EEXIST' ? 'not_empty' : 'done';
}

/**
 * When a walk that stopped at a non-empty directory is tried again, in ms after the previous
 * try: about 23 minutes in all, beyond the longest a write may take (a deadline's maximum).
 */
const RETRY_DELAYS_MS = [1_000, 4_000, 16_000, 64_000, 256_000, 1_024_000] as const;
/** Walks waiting for another try at once; beyond, a new one is not tried again. */
const RETRIES_MAX_ENTRIES = 1_000;

/**
 * What one path resolver knows of the directories that writes make under its root, by
 * relative path: which were made by writes that have not kept a file in them yet (with their
 * identity, device and inode), and which are on the way of a write in progress. A failed
 * write removes a directory only when it is the first and no write is using the second: so in
 * this process a write never loses a directory it is walking into or writing in.
 *
 * @internal
 */
export class WrittenDirectories {
  readonly #provisional = new LruCache<string, string>(PROVISIONAL_MAX_ENTRIES);
  /**
   * Directories a removal left (see {@link unused}) because a write was using them: the write,
   * if it fails, takes them with its own once they are empty.
   */
  readonly #emptied = new LruCache<string, true>(PROVISIONAL_MAX_ENTRIES);
  readonly #inUse = new Map<string, number>();
  /** Walks waiting to be tried again, by the path of the write that failed. */
  readonly #retrying = new Set<string>();

  /**
   * A write starts down `paths` (each directory on its way, shallowest first): none of them is
   * removed until the returned function is called (more calls do nothing).
   */
  enter(paths: readonly string[]): () => void {
    for (const path of paths) this.#inUse.set(path, (this.#inUse.get(path) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      for (const path of paths) {
        const count = (this.#inUse.get(path) ?? 1) - 1;
        if (count === 0) this.#inUse.delete(path);
        else this.#inUse.set(path, count);
      }
    };
  }

  /** A write made the directory `path`, which is `id`. */
  made(path: string, id: string): void {
    this.#provisional.set(path, id);
  }

  /** A write kept a file below `paths`: those directories are never removed by a failed write. */
  kept(paths: readonly string[]): void {
    for (const path of paths) {
      this.#provisional.delete(path);
      this.#emptied.delete(path);
    }
  }

  /** Whether a failed write may remove `path`, which is `id` now, if it is empty. */
  removable(path: string, id: string): boolean {
    return (this.#provisional.get(path) === id || this.#emptied.get(path) === true) && !this.#inUse.has(path);
  }

  removed(path: string): void {
    this.#provisional.delete(path);
    this.#emptied.delete(path);
  }

  /**
   * A file below `paths` was removed: those a write is using now cannot go yet, and are left to
   * that write, which removes them if it fails and they are empty (one slow upload held a deleted
   * artifact's directories for good otherwise).
   */
  emptied(paths: readonly string[]): void {
    for (const path of paths) if (this.#inUse.has(path)) this.#emptied.set(path, true);
  }

  /**
   * What an emptied path may remove (see `PinnedDirectory.removeEmpty`): any directory no write
   * is using, whoever made it.
   */
  readonly unused: Pick<WrittenDirectories, 'removable' | 'removed'> = Object.freeze({
    removable: (path: string): boolean => !this.#inUse.has(path),
    removed: (path: string): void => {
      this.removed(path);
    },
  });

  /**
   * Runs `walk` (the removal of the directories of the failed write to `path`) now and, while
   * it ends `not_empty`, again later. What this resolver knows of writes is this process's: a
   * write of another process sharing the directory may be inside one it made, and once that
   * write has failed too, only this one may remove the directories. Timers do not hold the
   * process open.
   */
  async removeNowAndLater(path: string, walk: () => Promise<RemovalOutcome>): Promise<void> {
    if ((await walk()) === 'not_empty') this.#retry(path, walk, 0);
  }

  #retry(path: string, walk: () => Promise<RemovalOutcome>, attempt: number): void {
    const delay = RETRY_DELAYS_MS[attempt];
    if (delay === undefined || this.#retrying.has(path) || this.#retrying.size >= RETRIES_MAX_ENTRIES) return;
    this.#retrying.add(path);
    setTimeout(() => {
      this.#retrying.delete(path);
      walk().then(
        (outcome) => {
          if (outcome === 'not_empty') this.#retry(path, walk, attempt + 1);
        },
        () => undefined,
      );
    }, delay).unref();
  }
}
