import { LruCache } from '../cache/lru.js';

/** Directories made by writes not kept yet, remembered at once; beyond, the oldest is forgotten. */
const PROVISIONAL_MAX_ENTRIES = 10_000;

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
  readonly #inUse = new Map<string, number>();

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
    for (const path of paths) this.#provisional.delete(path);
  }

  /** Whether a failed write may remove `path`, which is `id` now, if it is empty. */
  removable(path: string, id: string): boolean {
    return this.#provisional.get(path) === id && !this.#inUse.has(path);
  }

  removed(path: string): void {
    this.#provisional.delete(path);
  }
}
