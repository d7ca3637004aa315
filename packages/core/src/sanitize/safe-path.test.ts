import { existsSync, mkdtempSync, mkdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { ASCII_SEGMENT, createPathResolver, removeEmptyByPath } from './safe-path.js';
import { WrittenDirectories } from './written-directories.js';

const base = mkdtempSync(join(tmpdir(), 'fluxguard-safe-path-'));
const root = join(base, 'root');
const paths = createPathResolver({ root });
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

function refusal(fn: () => unknown): SecurityError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SecurityError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('createPathResolver', () => {
  it('resolves ordinary relative paths under the root', () => {
    expect(paths.resolve('a/b-1/c_2.txt')).toEqual({
      relative: 'a/b-1/c_2.txt',
      absolute: join(paths.root, 'a/b-1/c_2.txt'),
    });
  });

  it.each([
    ['parent traversal', '../etc/passwd', 'path_traversal'],
    ['traversal in the middle', 'a/../../etc/passwd', 'path_traversal'],
    ['a lone dot-dot', '..', 'path_traversal'],
    ['a dot segment', 'a/./b', 'path_traversal'],
    ['an absolute path', '/etc/passwd', 'path_absolute'],
    ['a Windows separator', 'a\\..\\..\\win.ini', 'path_bad_character'],
    ['a drive letter', 'C:/windows', 'path_bad_character'],
    ['a NUL byte', 'a.txt\u0000.png', 'path_bad_character'],
    ['a newline', 'a\nb', 'path_bad_character'],
    ['full-width dots (NFKC ..)', '\uff0e\uff0e/etc', 'path_traversal'],
    ['one-dot leaders (NFKC ..)', '\u2024\u2024/etc', 'path_traversal'],
    ['dots with an accent on them', '..\u0301/x', 'path_traversal'],
    ['a dot with marks on it', '.\u0323\u0307', 'path_traversal'],
    ['dots beside a modifier letter', 'x/..\u02ca', 'path_traversal'],
    ['dots beside a tatweel', '..\u0640/x', 'path_traversal'],
    ['dots beside a presentation-form mark (NFKC: a space and a mark)', '..\ufe70', 'path_traversal'],
    ['a segment that is a combining mark', 'a/\u0301/b', 'path_bad_character'],
    ['a segment that starts with a combining mark', '\u0338etc', 'path_bad_character'],
    ['a segment whose folded form starts with a combining mark', 'a/\uff9ex', 'path_bad_character'],
    ['a full-width solidus (NFKC /)', 'a\uff0fb', 'path_bad_character'],
    ['a full-width reverse solidus (NFKC \\)', 'a\uff3cb', 'path_bad_character'],
    ['a full-width colon (NFKC :)', 'C\uff1a', 'path_bad_character'],
    ['a division slash', 'a\u2215b', 'path_bad_character'],
    ['a right-to-left override', 'evil\u202etxt.exe', 'path_bad_character'],
    ['a zero-width joiner', 'a\u200db', 'path_bad_character'],
    // Invisible, and not format characters: two names that differ by one look alike.
    ['a combining grapheme joiner', 'a\u034fb.txt', 'path_bad_character'],
    ['a Hangul filler', 'a\u3164.txt', 'path_bad_character'],
    ['a variation selector', 'a\ufe0f.txt', 'path_bad_character'],
    ['a no-break space', 'a\u00a0b', 'path_bad_character'],
    ['a line separator', 'a\u2028b', 'path_bad_character'],
    ['the replacement character (invalid or overlong UTF-8)', 'a\ufffd.txt', 'path_bad_character'],
    ['a lone surrogate', 'a\ud800.txt', 'path_bad_character'],
    ['a trailing dot', 'report.', 'path_bad_character'],
    ['a trailing space', 'report ', 'path_bad_character'],
    ['a leading space', ' report', 'path_bad_character'],
    ['a Windows-reserved character', 'a*b', 'path_bad_character'],
    ['a device name', 'CON', 'path_reserved_name'],
    ['a device name with an extension', 'dir/nul.txt', 'path_reserved_name'],
    ['a numbered device name', 'com1', 'path_reserved_name'],
    ['an empty segment', 'a//b', 'path_empty_segment'],
    ['a trailing slash', 'a/', 'path_empty_segment'],
    ['the empty string', '', 'path_empty'],
    ['an over-long path', 'a/'.repeat(600) + 'b', 'path_too_long'],
    // 687 code units as sent; NFC makes each U+FB2C three (2 031), over 1 024.
    [
      'a path over-long once composed (NFC)',
      Array.from({ length: 16 }, () => '\ufb2c'.repeat(42)).join('/'),
      'path_too_long',
    ],
    ['an over-deep path', 'a/'.repeat(16) + 'b', 'path_too_deep'],
    ['an over-long segment', 'a'.repeat(256), 'path_segment_too_long'],
    ['a segment over 255 UTF-8 bytes', 'é'.repeat(128), 'path_segment_too_long'],
  ])('refuses %s without echoing it', (_label, input, reason) => {
    const err = refusal(() => paths.resolve(input));
    expect(err.code).toBe('invalid_argument');
    expect(err.reason).toBe(reason);
    expect(err.details).toEqual({ field: 'path' });
    expect(err.message).toBe('The request is invalid.');
  });

  it.each([
    'my file.txt',
    'café/naïve.txt',
    'résumé (final) [v2].pdf',
    'a..b.txt',
    '.hidden',
    "it's x+y@z~1,2=3#4&5!$%{};^.txt",
    'données/日本語/файл.txt',
    'a/b/c/d/e/f/g/h/i/j.txt',
    'console.log',
    'CONFIG',
    '.\u0301hidden',
    'x..\u0301',
  ])('accepts the ordinary name %j', (name) => {
    expect(paths.resolve(name).relative).toBe(name);
  });

  it('keeps one spelling of a name: decomposed accents come out composed (NFC)', () => {
    expect(paths.resolve('cafe\u0301.txt').relative).toBe('caf\u00e9.txt');
    expect(paths.checkPrefix('cafe\u0301/')).toBe('caf\u00e9/');
    // What is stored keeps to the limits: the composed form is measured too.
    expect(refusal(() => paths.checkPrefix('\ufb2c'.repeat(400))).reason).toBe('path_too_long');
  });

  it('refuses hidden segments when asked, and ASCII_SEGMENT keeps to ASCII', () => {
    const strict = createPathResolver({ root: paths.root, allowHidden: false, segmentPattern: ASCII_SEGMENT });
    expect(refusal(() => strict.resolve('.env')).reason).toBe('path_hidden_segment');
    expect(refusal(() => strict.resolve('my file.txt')).reason).toBe('path_bad_character');
    // The dangerous is refused whatever the pattern.
    const loose = createPathResolver({ root: paths.root, segmentPattern: /^[\s\S]+$/ });
    expect(refusal(() => loose.resolve('a\u202eb')).reason).toBe('path_bad_character');
    expect(refusal(() => loose.resolve('a\uff0fb')).reason).toBe('path_bad_character');
  });

  it('matches the whole segment against a pattern written without anchors', () => {
    // Tested as it was written, this pattern passed any segment that held one such character.
    const unanchored = createPathResolver({ root: paths.root, segmentPattern: /[a-z0-9._-]+/ });
    expect(unanchored.resolve('model-1.bin').relative).toBe('model-1.bin');
    expect(refusal(() => unanchored.resolve('a b c{}[]~!@#.txt')).reason).toBe('path_bad_character');
    const alternation = createPathResolver({ root: paths.root, segmentPattern: /abc|[0-9]+/ });
    expect(refusal(() => alternation.resolve('abc{}')).reason).toBe('path_bad_character');
  });

  it('refuses values that are not strings', () => {
    expect(refusal(() => paths.resolve(['a'])).reason).toBe('path_not_a_string');
    expect(refusal(() => paths.resolve(undefined)).reason).toBe('path_not_a_string');
  });

  it('names the configured field', () => {
    const custom = createPathResolver({ root, field: 'header.path' });
    expect(refusal(() => custom.resolve('../x')).details).toEqual({ field: 'header.path' });
  });

  it('checks listing prefixes, which may be empty or end with a slash', () => {
    expect(paths.checkPrefix('')).toBe('');
    expect(paths.checkPrefix(undefined)).toBe('');
    expect(paths.checkPrefix('models/')).toBe('models/');
    expect(paths.checkPrefix('models/v')).toBe('models/v');
    expect(refusal(() => paths.checkPrefix('../')).reason).toBe('path_traversal');
    expect(refusal(() => paths.checkPrefix('/abs')).reason).toBe('path_absolute');
    // A refused prefix names its own field, not the path's.
    expect(refusal(() => paths.checkPrefix('a\u0000b')).details).toEqual({ field: 'prefix' });
    expect(refusal(() => paths.checkPrefix('../', 'folder')).details).toEqual({ field: 'folder' });
    expect(refusal(() => paths.resolve('a\u0000b')).details).toEqual({ field: 'path' });
  });

  it('refuses a path that leaves the root through a symbolic link', async () => {
    const outside = join(base, 'outside');
    mkdirSync(outside, { recursive: true });
    writeFileSync(join(outside, 'secret.txt'), 'secret');
    symlinkSync(outside, join(paths.root, 'link'));
    await expect(paths.resolveOnDisk('link/secret.txt')).rejects.toMatchObject({
      code: 'invalid_argument',
      reason: 'path_symlink_escape',
    });
    await expect(paths.resolveOnDisk('link/not-yet/created.txt')).rejects.toMatchObject({
      reason: 'path_symlink_escape',
    });
  });

  it('accepts a path on disk, existing or not, that stays inside', async () => {
    mkdirSync(join(paths.root, 'in'), { recursive: true });
    writeFileSync(join(paths.root, 'in', 'f.txt'), 'x');
    await expect(paths.resolveOnDisk('in/f.txt')).resolves.toMatchObject({ relative: 'in/f.txt' });
    await expect(paths.resolveOnDisk('new/dir/f.txt')).resolves.toMatchObject({ relative: 'new/dir/f.txt' });
  });

  it('refuses bad options at construction', () => {
    expect(() => createPathResolver({ root: '' })).toThrow(/"root" must be/);
    // Blank: a directory named " " was made under the working directory.
    expect(() => createPathResolver({ root: ' ' })).toThrow(/"root" must be a non-empty directory path/);
    expect(() => createPathResolver({ root, maxDepth: 0 })).toThrow(/"maxDepth"/);
    expect(() => createPathResolver({ root, segmentPattern: /x/g })).toThrow(/segmentPattern/);
    expect(() => createPathResolver({ root, segmentPattern: /^x$/m })).toThrow(/without the g, y or m flag/);
    expect(() => createPathResolver({ root, maxLenght: 5 } as never)).toThrow(/did you mean "maxLength"/);
    expect(() => createPathResolver({ root, field: { a: 1 } as never })).toThrow(/"field" must be a field name/);
  });

  it('refuses a root that confines nothing: the file system root, or a kernel view, also through a link', () => {
    // `/proc/missing` is refused before it is made: Node's recursive mkdir never returns there.
    for (const system of ['/', '/proc', '/proc/self', '/proc/missing/dir', '/sys/kernel', '/dev']) {
      expect(() => createPathResolver({ root: system }), system).toThrow(/which confines nothing/);
    }
    // Below /dev, /dev/shm is an ordinary tmpfs.
    const shm = mkdtempSync('/dev/shm/fluxguard-root-');
    try {
      expect(createPathResolver({ root: shm }).root).toBe(shm);
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
    const link = join(base, 'to-proc');
    symlinkSync('/proc/self', link);
    expect(() => createPathResolver({ root: link })).toThrow(/"root" is \/proc\/\d+, which confines nothing/);
    // A file where the directory should be: said so, not Node's EEXIST.
    const file = join(base, 'a-file');
    writeFileSync(file, 'x');
    expect(() => createPathResolver({ root: file })).toThrow(
      /^createPathResolver: "root" must be a directory, or a path where one can be made$/,
    );
  });
});

describe('openParent: removeEmpty', () => {
  it('removes the directories a removal left empty, deepest first, up to one that is not', async () => {
    const writer = await paths.openParent('emptied-by-delete/a/b/c/file.bin', { create: true });
    writeFileSync(writer.entry('file.bin'), 'x');
    writer.keep();
    await writer.close();
    writeFileSync(join(paths.root, 'emptied-by-delete/other.bin'), 'y');
    const dir = await paths.openParent('emptied-by-delete/a/b/c/file.bin');
    rmSync(dir.entry('file.bin'));
    await dir.removeEmpty();
    await dir.close();
    expect(existsSync(join(paths.root, 'emptied-by-delete/a'))).toBe(false);
    expect(existsSync(join(paths.root, 'emptied-by-delete/other.bin'))).toBe(true);
  });

  it('leaves a directory a write is using, and those above it', async () => {
    const writing = await paths.openParent('busy/a/b/next.bin', { create: true });
    const dir = await paths.openParent('busy/a/b/file.bin');
    await dir.removeEmpty();
    await dir.close();
    expect(existsSync(join(paths.root, 'busy/a/b'))).toBe(true);
    writeFileSync(writing.entry('next.bin'), 'x');
    writing.keep();
    await writing.close();
    expect(existsSync(join(paths.root, 'busy/a/b/next.bin'))).toBe(true);
  });

  it('leaves a directory a write is using to that write, which takes it if it fails', async () => {
    const writer = await paths.openParent('held/a/b/file.bin', { create: true });
    writeFileSync(writer.entry('file.bin'), 'x');
    writer.keep();
    await writer.close();
    // A slow upload into the same directory, then the file's delete, then the upload fails.
    const slow = await paths.openParent('held/a/b/slow.bin', { create: true });
    const dir = await paths.openParent('held/a/b/file.bin');
    rmSync(dir.entry('file.bin'));
    await dir.removeEmpty();
    await dir.close();
    expect(existsSync(join(paths.root, 'held/a/b'))).toBe(true);
    await slow.removeCreated();
    await slow.close();
    expect(existsSync(join(paths.root, 'held'))).toBe(false);
  });

  it('never follows a link put where a directory on the way was', async () => {
    const outside = join(base, 'outside-emptied');
    mkdirSync(join(outside, 'inner'), { recursive: true });
    mkdirSync(join(paths.root, 'linked/inner'), { recursive: true });
    const dir = await paths.openParent('linked/inner/file.bin');
    rmSync(join(paths.root, 'linked'), { recursive: true });
    symlinkSync(outside, join(paths.root, 'linked'));
    await dir.removeEmpty();
    await dir.close();
    expect(existsSync(join(outside, 'inner'))).toBe(true);
    rmSync(join(paths.root, 'linked'));
  });
});

describe('openParent: removeCreated', () => {
  it('removes the directories its opening made, deepest first, and nothing that was there before', async () => {
    mkdirSync(join(paths.root, 'kept'), { recursive: true });
    const dir = await paths.openParent('kept/new/deeper/file.bin', { create: true });
    expect(existsSync(join(paths.root, 'kept/new/deeper'))).toBe(true);
    await dir.removeCreated();
    await dir.close();
    expect(existsSync(join(paths.root, 'kept/new'))).toBe(false);
    expect(existsSync(join(paths.root, 'kept'))).toBe(true);
  });

  it('leaves a directory another writer has kept a file in, and every directory above it', async () => {
    const first = await paths.openParent('shared/a/one.bin', { create: true });
    const second = await paths.openParent('shared/a/two.bin', { create: true });
    writeFileSync(second.entry('two.bin'), 'x');
    second.keep();
    await first.removeCreated();
    await Promise.all([first.close(), second.close()]);
    expect(existsSync(join(paths.root, 'shared/a/two.bin'))).toBe(true);
  });

  it('leaves the directories of a kept file even once they are empty again', async () => {
    const writer = await paths.openParent('emptied/a/file.bin', { create: true });
    writer.keep();
    await writer.close();
    const failed = await paths.openParent('emptied/a/other.bin', { create: true });
    await failed.removeCreated();
    await failed.close();
    expect(existsSync(join(paths.root, 'emptied/a'))).toBe(true);
  });

  it('lets the last failed writer out remove the directories another one made and left because it was inside', async () => {
    // The first makes chain/a/b, the second chain/a/b/sub inside it. The first fails first:
    // b is not empty, so nothing goes. The second fails later and removes sub, then b and a,
    // which the first made and no write kept.
    const first = await paths.openParent('chain/a/b/one.bin', { create: true });
    const second = await paths.openParent('chain/a/b/sub/two.bin', { create: true });
    await first.removeCreated();
    await first.close();
    expect(existsSync(join(paths.root, 'chain/a/b/sub'))).toBe(true);
    await second.removeCreated();
    await second.close();
    expect(existsSync(join(paths.root, 'chain'))).toBe(false);
  });

  it('removes nothing a write did not make, even when empty', async () => {
    mkdirSync(join(paths.root, 'empty/before'), { recursive: true });
    const dir = await paths.openParent('empty/before/file.bin', { create: true });
    await dir.removeCreated();
    await dir.close();
    expect(existsSync(join(paths.root, 'empty/before'))).toBe(true);
  });

  it('leaves a directory put in place of the one a write made, though it has the same name', async () => {
    const dir = await paths.openParent('replaced/inner/file.bin', { create: true });
    rmSync(join(paths.root, 'replaced/inner'), { recursive: true });
    mkdirSync(join(paths.root, 'replaced/inner'));
    await dir.removeCreated();
    await dir.close();
    expect(existsSync(join(paths.root, 'replaced/inner'))).toBe(true);
  });

  it('never follows a link put where a directory it made was', async () => {
    const outside = join(base, 'outside-target');
    mkdirSync(join(outside, 'inner'), { recursive: true });
    const dir = await paths.openParent('swapped/inner/file.bin', { create: true });
    rmSync(join(paths.root, 'swapped'), { recursive: true });
    symlinkSync(outside, join(paths.root, 'swapped'));
    await dir.removeCreated();
    await dir.close();
    // No link is followed on the way down, and rmdir does not follow one at the name: the
    // link, its target and the empty directory inside the target all stay.
    expect(existsSync(join(outside, 'inner'))).toBe(true);
    rmSync(join(paths.root, 'swapped'));
  });

  it('by path (no /proc/self/fd): up from the directory while each is one a write made, empty and the same', async () => {
    const writes = new WrittenDirectories();
    const at = join(base, 'by-path');
    mkdirSync(join(at, 'kept/made/deeper'), { recursive: true });
    const idOf = (relative: string): string => {
      const stats = statSync(join(at, relative), { bigint: true });
      return `${String(stats.dev)}:${String(stats.ino)}`;
    };
    writes.made('kept/made', idOf('kept/made'));
    writes.made('kept/made/deeper', idOf('kept/made/deeper'));
    await removeEmptyByPath(at, ['kept', 'kept/made', 'kept/made/deeper'], writes);
    expect(existsSync(join(at, 'kept/made'))).toBe(false);
    expect(existsSync(join(at, 'kept'))).toBe(true);
    mkdirSync(join(at, 'kept/full/deeper'), { recursive: true });
    writeFileSync(join(at, 'kept/full/file'), 'x');
    writes.made('kept/full', idOf('kept/full'));
    writes.made('kept/full/deeper', idOf('kept/full/deeper'));
    await removeEmptyByPath(at, ['kept', 'kept/full', 'kept/full/deeper'], writes);
    expect(existsSync(join(at, 'kept/full/deeper'))).toBe(false);
    expect(existsSync(join(at, 'kept/full/file'))).toBe(true);
  });

  it('removes, a moment later, the directories it made that another process was inside when it failed', async () => {
    // Two resolvers of one root are two processes sharing a data directory: each knows only
    // its own writes. The first makes cross/a/b, the second writes a temporary file in b.
    const other = createPathResolver({ root });
    const first = await paths.openParent('cross/a/b/one.bin', { create: true });
    const second = await other.openParent('cross/a/b/two.bin', { create: true });
    writeFileSync(second.entry('.upload-two'), 'x');
    await first.removeCreated();
    await first.close();
    expect(existsSync(join(paths.root, 'cross/a/b/.upload-two'))).toBe(true);
    // The second fails too: it made nothing, so it removes nothing.
    rmSync(join(paths.root, 'cross/a/b/.upload-two'));
    await second.removeCreated();
    await second.close();
    expect(existsSync(join(paths.root, 'cross/a/b'))).toBe(true);
    // The first tries again (after 1 s) and removes what it made.
    await expect.poll(() => existsSync(join(paths.root, 'cross')), { timeout: 5_000 }).toBe(false);
  });

  it('tries again but never removes what another process kept in a directory it made', async () => {
    const other = createPathResolver({ root });
    const first = await paths.openParent('cross-kept/a/one.bin', { create: true });
    const second = await other.openParent('cross-kept/a/two.bin', { create: true });
    writeFileSync(second.entry('two.bin'), 'kept');
    second.keep();
    await second.close();
    await first.removeCreated();
    await first.close();
    // Past the first retry, and again after a later one would run: rmdir never takes a file.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(existsSync(join(paths.root, 'cross-kept/a/two.bin'))).toBe(true);
  });

  it('never removes a directory another write is on its way through, however empty', async () => {
    // The first write made in-use/a/b and fails; the second has started down the same path
    // (its walk holds the directories) but made nothing yet: nothing may go from under it.
    const first = await paths.openParent('in-use/a/b/one.bin', { create: true });
    const second = await paths.openParent('in-use/a/b/two.bin', { create: true });
    await first.removeCreated();
    await first.close();
    expect(existsSync(join(paths.root, 'in-use/a/b'))).toBe(true);
    // Once the second fails too, it is the last out and removes them.
    await second.removeCreated();
    await second.close();
    expect(existsSync(join(paths.root, 'in-use'))).toBe(false);
  });
});
