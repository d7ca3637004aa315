import { mkdirSync, realpathSync, statSync } from 'node:fs';
import { lstat, mkdir, realpath, rmdir } from 'node:fs/promises';
import {
  PINNED_DIRECTORIES_SUPPORTED,
  directoryId,
  openPinnedDirectory,
  removeEmptyDirectories,
  type PinnedDirectory,
} from './pinned-directory.js';
import { WrittenDirectories, removalStopped, type RemovalOutcome } from './written-directories.js';
import { dirname, join, parse, resolve, sep } from 'node:path';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError, isSecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Why a path was refused (always `invalid_argument`, naming the field, never the path): the
 * shape (`path_not_a_string`, `path_empty`, `path_too_long`, `path_too_deep`, `path_absolute`),
 * a segment (`path_empty_segment`, `path_hidden_segment`, `path_segment_too_long`,
 * `path_bad_character`, `path_reserved_name`: a device name such as `CON` or `nul.txt`), or an
 * escape from the root (`path_traversal`, `path_symlink_escape`).
 *
 * @example
 * ```ts
 * import type { PathReason } from '@fluxguard/core';
 * // Attempts to leave the root, as opposed to clumsy input:
 * const escapes: PathReason[] = ['path_traversal', 'path_symlink_escape'];
 * ```
 */
export type PathReason =
  | 'path_not_a_string'
  | 'path_empty'
  | 'path_too_long'
  | 'path_too_deep'
  | 'path_absolute'
  | 'path_empty_segment'
  | 'path_hidden_segment'
  | 'path_segment_too_long'
  | 'path_bad_character'
  | 'path_reserved_name'
  | 'path_traversal'
  | 'path_symlink_escape';

/**
 * Options of {@link createPathResolver}.
 *
 * @example
 * ```ts
 * import type { PathResolverOptions } from '@fluxguard/core';
 * const options: PathResolverOptions = { root: '/srv/artifacts', maxDepth: 8, allowHidden: false };
 * ```
 */
export interface PathResolverOptions {
  /**
   * The directory every resolved path must stay inside. Created if missing. The file system's
   * root, `/dev` and the kernel views `/proc` and `/sys` (and what is below them) are refused,
   * as given and as their real paths: they confine nothing.
   */
  readonly root: string;
  /** Longest relative path accepted, in UTF-16 code units. Default 1024. */
  readonly maxLength?: number;
  /** Most path segments accepted. Default 16. */
  readonly maxDepth?: number;
  /** Longest single segment, in UTF-8 bytes (most file systems stop at 255). Default 255. */
  readonly maxSegmentLength?: number;
  /**
   * Characters a segment may contain, tested on its NFC form, the whole segment against the
   * whole pattern (anchors are added; the g, y and m flags are refused). Default {@link NAME_SEGMENT}:
   * Unicode letters, marks and digits, spaces and common punctuation. `ASCII_SEGMENT` is the
   * strict alternative. Whatever the pattern, what is dangerous is always refused: control,
   * format (bidi, zero-width), invisible (default-ignorable) and unassigned characters, anything whose NFKC form holds a
   * separator or a character Windows reserves (`/ \ : * ? " < > |`), `.` and `..` in any
   * spelling (marks on the dots included), a segment that starts with a combining mark, a
   * leading or trailing space, a trailing dot, and reserved device names.
   */
  readonly segmentPattern?: RegExp;
  /** Accept segments that start with a dot (`.hidden`). Default true. */
  readonly allowHidden?: boolean;
  /** The field named in the `invalid_argument` error. Default `path`. */
  readonly field?: string;
}

/**
 * A relative path that has passed every check, and where it lives on disk.
 *
 * @example
 * ```ts
 * import type { SafePath } from '@fluxguard/core';
 * const { relative, absolute }: SafePath = paths.resolve('models/v1/weights.bin');
 * // relative 'models/v1/weights.bin', absolute '/srv/artifacts/models/v1/weights.bin'
 * ```
 */
export interface SafePath {
  /** Normalized relative form, `/`-separated: what clients see. */
  readonly relative: string;
  /** Absolute path under the root. */
  readonly absolute: string;
}

/**
 * Resolves client-supplied relative paths under one root, refusing every traversal.
 *
 * @example
 * ```ts
 * import { createPathResolver, type PathResolver } from '@fluxguard/core';
 * const paths: PathResolver = createPathResolver({ root: '/srv/artifacts' });
 * const file = await paths.resolveOnDisk('models/v1/weights.bin'); // no symbolic link leads out of the root
 * ```
 */
export interface PathResolver {
  /** The root's real path. */
  readonly root: string;
  /** Checks and resolves a relative path; throws `invalid_argument` naming the field. */
  resolve(relative: unknown): SafePath;
  /**
   * Checks a listing prefix: like a path, but may be empty or end with `/`. Returns it
   * normalized; a refusal names `field` (default `prefix`).
   */
  checkPrefix(prefix: unknown, field?: string): string;
  /**
   * Resolves, then proves on disk that no symbolic link on the way leads out of the root:
   * the real path of the deepest existing ancestor must be inside the root's real path.
   */
  resolveOnDisk(relative: unknown): Promise<SafePath>;
  /**
   * Checks a relative path and opens the directory that holds it, one component at a time,
   * following no symbolic link (see {@link PinnedDirectory}): what is then read, written,
   * renamed or removed through `entry(name)` stays inside the root however the tree is changed
   * meanwhile. With `create`, missing directories are made, and `removeCreated()` takes them
   * away again after a write that failed. Without `/proc/self/fd` (not Linux) it checks with
   * `resolveOnDisk` and works by path instead, which a concurrent swap of a directory can race.
   */
  openParent(relative: unknown, options?: { readonly create?: boolean }): Promise<PinnedDirectory & SafePath>;
}

/**
 * The default characters of a path segment: Unicode letters, combining marks and digits,
 * spaces, and `. _ - ( ) + @ ~ , ' = # & ! $ % [ ] { } ; ^`.
 *
 * @example
 * ```ts
 * import { NAME_SEGMENT } from '@fluxguard/core';
 * NAME_SEGMENT.test('café naïve (v2).txt'); // true
 * ```
 */
export const NAME_SEGMENT = /^[\p{L}\p{M}\p{N} ._\-()+@~,'=#&!$%[\]{};^]+$/u;

/**
 * A strict alternative to {@link NAME_SEGMENT}: ASCII letters, digits, `.`, `_` and `-`.
 *
 * @example
 * ```ts
 * import { ASCII_SEGMENT, createPathResolver } from '@fluxguard/core';
 * const paths = createPathResolver({ root: '/srv/data', segmentPattern: ASCII_SEGMENT });
 * ```
 */
export const ASCII_SEGMENT = /^[A-Za-z0-9._-]+$/;

// Refused in any segment, whatever the pattern: controls, format characters (bidi overrides,
// zero-width joiners), surrogates, private use, unassigned, line and paragraph separators,
// U+FFFD (what invalid UTF-8 decodes to), and the other characters Unicode says to draw as
// nothing (a combining grapheme joiner, Hangul fillers, variation selectors): names that
// differ by one look the same in a listing.
const ALWAYS_REFUSED = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\uFFFD]/u;
// In the NFKC form, which folds look-alikes (fullwidth solidus, one-dot leader) onto ASCII.
const SEPARATOR_LIKE = /[/\\:*?"<>|]/;
// `.` and `..`, also with accents or other marks on the dots, or modifier letters and spaces
// beside them (`..\u0301`, `..\u02ca`, `..\u0640`: each reads as `..` in a listing).
const DOTS_UNDER_MARKS = /^\.[\p{M}\p{Lm}\p{Sk}\s]*(?:\.[\p{M}\p{Lm}\p{Sk}\s]*)?$/u;
const LEADING_MARK = /^\p{M}/u;
const DEVICE_NAME = /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(?:\..*)?$/i;

const DEFAULTS: Readonly<Required<PathResolverOptions>> = Object.freeze({
  root: '',
  maxLength: 1024,
  maxDepth: 16,
  maxSegmentLength: 255,
  segmentPattern: NAME_SEGMENT,
  allowHidden: true,
  field: 'path',
});

// Kernel views, not directories of files: `/proc/self/environ` or `/proc/self/fd/3` would resolve
// inside such a root (and Node's recursive mkdir never returns on a missing path in `/proc`).
// `/` and `/dev` itself confine nothing; `/dev/shm` below it is an ordinary tmpfs.
const KERNEL_VIEWS = ['/proc', '/sys'];

function confinesNothing(path: string): boolean {
  return (
    path === parse(path).root ||
    path === '/dev' ||
    KERNEL_VIEWS.some((view) => path === view || path.startsWith(view + sep))
  );
}

/**
 * The root, created if missing, as its real path; refused when it is the file system's root,
 * `/dev` or a kernel view, judged before it is created and again on its real path (a link to
 * `/proc` is `/proc`), or when it is not a directory.
 */
function rootDirectory(given: string): string {
  const refuse = (path: string): never => {
    throw new ConfigurationError(
      `createPathResolver: "root" is ${path}, which confines nothing (the file system's root, /dev, or a kernel view such as /proc): give the directory that holds the files`,
    );
  };
  const absolute = resolve(given);
  if (confinesNothing(absolute)) refuse(absolute);
  let root: string;
  try {
    mkdirSync(absolute, { recursive: true, mode: 0o750 });
    root = realpathSync(absolute);
    if (!statSync(root).isDirectory()) throw new Error('not a directory');
  } catch (cause) {
    throw new ConfigurationError('createPathResolver: "root" must be a directory, or a path where one can be made', {
      cause,
    });
  }
  if (confinesNothing(root)) refuse(root);
  return root;
}

/**
 * Creates a traversal-proof resolver of client paths under a root directory. It refuses,
 * rather than cleans, anything unusual: absolute paths, `..` and `.` segments, empty segments,
 * backslashes, NUL and control characters, segments starting with a dot (hidden and temporary
 * files), and paths over the length or depth limits. Checks are string operations; only
 * {@link PathResolver.resolveOnDisk} touches the disk.
 *
 * @example
 * ```ts
 * import { createPathResolver } from '@fluxguard/core';
 * const paths = createPathResolver({ root: '/srv/artifacts' });
 * paths.resolve('models/v1/weights.bin').absolute; // '/srv/artifacts/models/v1/weights.bin'
 * paths.resolve('../etc/passwd'); // throws SecurityError invalid_argument { field: 'path' }
 * ```
 */
export function createPathResolver(options: PathResolverOptions): PathResolver {
  const opts = resolveOptions('createPathResolver', DEFAULTS, options);
  if (typeof opts.root !== 'string' || opts.root.trim() === '') {
    throw new ConfigurationError('createPathResolver: "root" must be a non-empty directory path');
  }
  for (const key of ['maxLength', 'maxDepth', 'maxSegmentLength'] as const) {
    wholeNumber(opts[key], `createPathResolver: "${key}"`);
  }
  if (
    !(opts.segmentPattern instanceof RegExp) ||
    opts.segmentPattern.global ||
    opts.segmentPattern.sticky ||
    opts.segmentPattern.multiline
  ) {
    throw new ConfigurationError('createPathResolver: "segmentPattern" must be a RegExp without the g, y or m flag');
  }
  // The whole segment must match: `/[a-z0-9._-]+/` without anchors passed any segment that
  // held one such character.
  const segmentPattern = new RegExp(`^(?:${opts.segmentPattern.source})$`, opts.segmentPattern.flags);
  if (typeof opts.field !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.field)) {
    throw new ConfigurationError(
      'createPathResolver: "field" must be a field name of 1 to 64 letters, digits, "_", "." or "-"',
    );
  }
  const root = rootDirectory(opts.root);
  const rootWithSep = root.endsWith(sep) ? root : root + sep;
  const { maxLength, maxDepth, maxSegmentLength, field } = opts;
  if (typeof opts.allowHidden !== 'boolean')
    throw new ConfigurationError('createPathResolver: "allowHidden" must be a boolean');
  const allowHidden = opts.allowHidden;

  function refuse(reason: PathReason, at = field): never {
    throw new SecurityError('invalid_argument', { details: { field: at }, reason });
  }

  function checkSegments(segments: readonly string[], at = field): void {
    if (segments.length > maxDepth) refuse('path_too_deep', at);
    for (const segment of segments) {
      if (segment === '') refuse('path_empty_segment', at);
      if (ALWAYS_REFUSED.test(segment)) refuse('path_bad_character', at);
      const folded = segment.normalize('NFKC');
      if (DOTS_UNDER_MARKS.test(folded)) refuse('path_traversal', at);
      // A mark with nothing before it in its segment is drawn over the separator or over nothing
      // (read in the folded form, as the dots are: U+FF9E folds to a combining mark).
      if (LEADING_MARK.test(folded)) refuse('path_bad_character', at);
      if (SEPARATOR_LIKE.test(folded)) refuse('path_bad_character', at);
      // Windows drops a trailing dot or space, and trims spaces: two names would be one file.
      if (folded.startsWith(' ') || folded.endsWith(' ') || folded.endsWith('.')) refuse('path_bad_character', at);
      if (DEVICE_NAME.test(folded)) refuse('path_reserved_name', at);
      if (!allowHidden && segment.startsWith('.')) refuse('path_hidden_segment', at);
      if (Buffer.byteLength(segment) > maxSegmentLength) refuse('path_segment_too_long', at);
      if (!segmentPattern.test(segment)) refuse('path_bad_character', at);
    }
  }

  /** The NFC form of `value`, the one spelling checked, stored and returned. */
  function checkString(value: unknown, at = field): string {
    if (typeof value !== 'string') refuse('path_not_a_string', at);
    // Before normalizing, which costs in proportion; and after, since NFC can triple a length.
    if (value.length > maxLength) refuse('path_too_long', at);
    const normalized = value.normalize('NFC');
    if (normalized.length > maxLength) refuse('path_too_long', at);
    return normalized;
  }

  function resolvePath(relative: unknown): SafePath {
    const value = checkString(relative);
    if (value === '') refuse('path_empty');
    if (value.startsWith('/')) refuse('path_absolute');
    checkSegments(value.split('/'));
    const absolute = resolve(root, value);
    // Belt and braces: the checks above already exclude every way out of the root.
    if (!absolute.startsWith(rootWithSep)) refuse('path_traversal');
    return Object.freeze({ relative: value, absolute });
  }

  function checkPrefix(prefix: unknown, prefixField = 'prefix'): string {
    const value = checkString(prefix ?? '', prefixField);
    if (value === '') return '';
    if (value.startsWith('/')) refuse('path_absolute', prefixField);
    const trimmed = value.endsWith('/') ? value.slice(0, -1) : value;
    checkSegments(trimmed.split('/'), prefixField);
    return value;
  }

  async function resolveOnDisk(relative: unknown): Promise<SafePath> {
    const safe = resolvePath(relative);
    let probe = safe.absolute;
    for (;;) {
      try {
        const real = await realpath(probe);
        if (real !== root && !real.startsWith(rootWithSep)) refuse('path_symlink_escape');
        return safe;
      } catch (err) {
        if (isSecurityError(err)) throw err;
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || probe === root) throw err;
        probe = dirname(probe);
      }
    }
  }

  const writes = new WrittenDirectories();
  // Every directory on the way to a name's directory, shallowest first, as relative paths.
  const pathsOf = (segments: readonly string[]): string[] =>
    segments.map((_, index) => segments.slice(0, index + 1).join('/'));

  async function openParent(
    relative: unknown,
    options: { readonly create?: boolean } = {},
  ): Promise<PinnedDirectory & SafePath> {
    const safe = resolvePath(relative);
    const segments = safe.relative.split('/');
    const name = segments.pop() ?? '';
    const paths = pathsOf(segments);
    // A write holds the directories on its way from before it makes them until it is done.
    const leave = options.create === true ? writes.enter(paths) : () => undefined;
    const kept = (): void => {
      writes.kept(paths);
    };
    try {
      if (!PINNED_DIRECTORIES_SUPPORTED) {
        // No /proc/self/fd: the realpath check of resolveOnDisk, which a concurrent swap can race.
        await resolveOnDisk(relative);
        const dir = dirname(safe.absolute);
        const firstCreated = options.create === true ? await mkdir(dir, { recursive: true, mode: 0o750 }) : undefined;
        if (firstCreated !== undefined) {
          for (let at = dir, depth = segments.length; depth >= 1; at = dirname(at), depth--) {
            writes.made(paths[depth - 1] ?? '', directoryId(await lstat(at, { bigint: true })));
            if (at === firstCreated) break;
          }
        }
        return Object.freeze({
          ...safe,
          name,
          entry: (entry: string) => join(dir, entry),
          removeCreated: async () => {
            leave();
            await writes.removeNowAndLater(safe.relative, () => removeEmptyByPath(root, paths, writes));
          },
          removeEmpty: async () => {
            leave();
            writes.emptied(paths);
            await removeEmptyByPath(root, paths, writes.unused).catch(() => undefined);
          },
          keep: kept,
          close: () => {
            leave();
            return Promise.resolve();
          },
        });
      }
      const { handle, created } = await openPinnedDirectory(root, segments, {
        create: options.create === true,
        field: opts.field,
      });
      for (const { index, id } of created) writes.made(paths[index] ?? '', id);
      const prefix = `/proc/self/fd/${String(handle.fd)}/`;
      return Object.freeze({
        ...safe,
        name,
        entry: (entry: string) => prefix + entry,
        removeCreated: async () => {
          leave();
          await writes.removeNowAndLater(safe.relative, () => removeEmptyDirectories(root, segments, paths, writes));
        },
        removeEmpty: async () => {
          leave();
          writes.emptied(paths);
          await removeEmptyDirectories(root, segments, paths, writes.unused).catch(() => undefined);
        },
        keep: kept,
        close: async () => {
          leave();
          await handle.close();
        },
      });
    } catch (err) {
      leave();
      throw err;
    }
  }

  return Object.freeze({ root, resolve: resolvePath, checkPrefix, resolveOnDisk, openParent });
}

/**
 * `removeCreated` without `/proc/self/fd`: the same walk up as `removeEmptyDirectories`, by
 * path (`paths`: each directory on the way, shallowest first), so a concurrent swap of a
 * directory can race it.
 *
 * @internal
 */
export async function removeEmptyByPath(
  root: string,
  paths: readonly string[],
  writes: Pick<WrittenDirectories, 'removable' | 'removed'>,
): Promise<RemovalOutcome> {
  for (let depth = paths.length; depth >= 1; depth--) {
    const relative = paths[depth - 1] ?? '';
    const at = join(root, relative);
    try {
      if (!writes.removable(relative, directoryId(await lstat(at, { bigint: true })))) return 'done';
      await rmdir(at);
      writes.removed(relative);
    } catch (err) {
      return removalStopped(err);
    }
  }
  return 'done';
}
