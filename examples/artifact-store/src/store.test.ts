import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open, type FileHandle } from 'node:fs/promises';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ArtifactStore } from './store.js';
import { loadServerConfig } from './config.js';
import { parseReprDigest, reprDigestOf } from './digest.js';

const base = mkdtempSync(join(tmpdir(), 'fluxguard-store-'));
const store = new ArtifactStore({ dataDir: join(base, 'data'), maxArtifactBytes: 1024 });
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

/** Swaps `<root>/swp` for a link to `<outside>` and back, for ever (a process of its own). */
const SWAPPER = `
const { renameSync, symlinkSync, unlinkSync } = require('node:fs');
const [root, outside] = process.argv.slice(1);
for (;;) {
  try {
    renameSync(root + '/swp', root + '/swp-real');
    symlinkSync(outside, root + '/swp');
    unlinkSync(root + '/swp');
    renameSync(root + '/swp-real', root + '/swp');
  } catch {}
}`;

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
async function* chunks(...parts: string[]): AsyncIterable<Uint8Array> {
  for (const p of parts) {
    await Promise.resolve();
    yield Buffer.from(p);
  }
}
/** A promise and the function that settles it (Node 20 has no `Promise.withResolvers`). */
function gate(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((settle) => {
    resolve = settle;
  });
  return { promise, resolve };
}
/**
 * Counts the writes made through Node's file handles while `run` runs. A count of this
 * process's write system calls (`/proc/self/io`) also counted the test runner's own writes.
 */
async function fileWritesDuring(run: () => Promise<unknown>): Promise<number> {
  const probe = await open(join(base, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as FileHandle;
  await probe.close();
  const spy = vi.spyOn(proto, 'write');
  try {
    await run();
    return spy.mock.calls.length;
  } finally {
    spy.mockRestore();
  }
}
/** Calls `onTurn` at every turn of the event loop while `work` is pending; settles as it does. */
async function loopTurnsWhile<T>(work: Promise<T>, onTurn: () => void): Promise<T> {
  let pending = true;
  const turn = (): void => {
    if (!pending) return;
    onTurn();
    setImmediate(turn);
  };
  setImmediate(turn);
  try {
    return await work;
  } finally {
    pending = false;
  }
}
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name);
}

describe('ArtifactStore', () => {
  it('stores, reads, lists and deletes', async () => {
    const info = await store.put('models/a.bin', sha('hello world'), chunks('hello ', 'world'));
    expect(info).toEqual({ path: 'models/a.bin', sha256: sha('hello world'), size: 11 });
    const artifact = await store.get('models/a.bin');
    expect(artifact.content.toString()).toBe('hello world');
    expect(artifact.sha256).toBe(sha('hello world'));
    await store.put('other/b.txt', sha('b'), chunks('b'));
    const all: string[] = [];
    for await (const item of store.list('')) all.push(item.path);
    expect(all).toEqual(['models/a.bin', 'other/b.txt']);
    const models: string[] = [];
    for await (const item of store.list('models/')) models.push(item.path);
    expect(models).toEqual(['models/a.bin']);
    await store.delete('models/a.bin');
    await expect(store.get('models/a.bin')).rejects.toMatchObject({ code: 'not_found' });
    await expect(store.delete('models/a.bin')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('lists in pages of maxListEntries, each from the last path of the one before, flagged while more may follow', async () => {
    const paged = new ArtifactStore({ dataDir: join(base, 'paged'), maxListEntries: 2 });
    // A directory sorts where `name/` does: `a-b` and `a.txt` before everything under `a/`.
    const paths = ['a/1.bin', 'a/2.bin', 'a/deep/3.bin', 'a-b', 'a.txt', 'b/4.bin', 'c'];
    for (const path of paths) await paged.put(path, sha(path), chunks(path));
    const pages: string[][] = [];
    const flags: boolean[] = [];
    let startAfter = '';
    for (let page = 0; page < 10; page++) {
      const listing = paged.list('', undefined, startAfter);
      const items: string[] = [];
      for await (const item of listing) items.push(item.path);
      pages.push(items);
      flags.push(listing.truncated);
      if (!listing.truncated) break;
      startAfter = items.at(-1) ?? '';
    }
    expect(pages).toEqual([['a-b', 'a.txt'], ['a/1.bin', 'a/2.bin'], ['a/deep/3.bin', 'b/4.bin'], ['c']]);
    expect(flags).toEqual([true, true, true, false]);
    // Whole directories before it are passed over; any string may be the start, a path or not.
    const after = async (prefix: string, from: string) => {
      const items: string[] = [];
      for await (const item of paged.list(prefix, undefined, from)) items.push(item.path);
      return items;
    };
    expect(await after('', 'a/deep')).toEqual(['a/deep/3.bin', 'b/4.bin']);
    expect(await after('', 'a0')).toEqual(['b/4.bin', 'c']);
    expect(await after('a/', 'a/1.bin')).toEqual(['a/2.bin', 'a/deep/3.bin']);
    expect(await after('', 'z')).toEqual([]);
  });

  it('opens an artifact as a stream with its size and digest; never a directory, never through a link', async () => {
    await store.put('streamed/c.bin', sha('streamed bytes'), chunks('streamed ', 'bytes'));
    const opened = await store.open('streamed/c.bin');
    expect({ path: opened.path, size: opened.size, sha256: opened.sha256 }).toEqual({
      path: 'streamed/c.bin',
      size: 14,
      sha256: sha('streamed bytes'),
    });
    const read: Buffer[] = [];
    for await (const chunk of opened.content) read.push(chunk as Buffer);
    expect(Buffer.concat(read).toString()).toBe('streamed bytes');
    await expect(store.open('streamed')).rejects.toMatchObject({ code: 'not_found' });
    symlinkSync(join(store.dataDir, 'streamed', 'c.bin'), join(store.dataDir, 'streamed', 'link.bin'));
    // Never followed: a link in the data directory (not something a client can make) is no
    // artifact, as a listing has it.
    await expect(store.open('streamed/link.bin')).rejects.toMatchObject({ code: 'not_found' });
    await expect(store.get('streamed/link.bin')).rejects.toMatchObject({ code: 'not_found' });
    await expect(store.open('streamed/missing.bin')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('lists the digest of each version of a file: one written beside the store, then replaced', async () => {
    mkdirSync(join(store.dataDir, 'beside'), { recursive: true });
    writeFileSync(join(store.dataDir, 'beside', 'd.txt'), 'first');
    const listed = async (): Promise<unknown[]> => {
      const items: unknown[] = [];
      for await (const item of store.list('beside/')) items.push(item);
      return items;
    };
    expect(await listed()).toEqual([{ path: 'beside/d.txt', sha256: sha('first'), size: 5 }]);
    await store.put('beside/d.txt', sha('second!'), chunks('second!'));
    expect(await listed()).toEqual([{ path: 'beside/d.txt', sha256: sha('second!'), size: 7 }]);
    expect((await store.get('beside/d.txt')).sha256).toBe(sha('second!'));
  });

  it('removes the upload temporaries a crashed process left, not those of uploads in progress, never through a link', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxguard-leftovers-'));
    const outside = mkdtempSync(join(tmpdir(), 'fluxguard-outside-'));
    try {
      const crashed = new ArtifactStore({ dataDir: dir });
      mkdirSync(join(dir, 'models', 'v1'), { recursive: true });
      const left = [join(dir, '.upload-aa'), join(dir, 'models', 'v1', '.upload-bb')];
      const live = join(dir, 'models', '.upload-cc');
      for (const file of [...left, live, join(outside, '.upload-dd')]) writeFileSync(file, 'partial');
      writeFileSync(join(dir, 'models', 'v1', 'kept.bin'), 'stored');
      symlinkSync(outside, join(dir, 'models', 'link'));
      const hourAgo = Date.now() / 1000 - 3_600;
      for (const file of [...left, join(outside, '.upload-dd')]) utimesSync(file, hourAgo, hourAgo);

      expect(await crashed.removeLeftoverUploads()).toBe(2);
      expect(left.filter((file) => existsSync(file))).toEqual([]);
      // Written a moment ago: an upload in progress, perhaps on another replica.
      expect(existsSync(live)).toBe(true);
      expect(existsSync(join(dir, 'models', 'v1', 'kept.bin'))).toBe(true);
      expect(existsSync(join(outside, '.upload-dd'))).toBe(true);
      expect(await crashed.removeLeftoverUploads()).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('gives the new digest of a file rewritten in place with its old size and modification time', async () => {
    // A restore with `cp -p` or `rsync -t --inplace`: inode, size and mtime as they were.
    mkdirSync(join(store.dataDir, 'restored'), { recursive: true });
    const file = join(store.dataDir, 'restored', 'r.txt');
    const restoredAt = 1_700_000_000; // whole seconds: set again to the nanosecond
    writeFileSync(file, 'version one');
    utimesSync(file, restoredAt, restoredAt);
    expect((await store.get('restored/r.txt')).sha256).toBe(sha('version one'));
    writeFileSync(file, 'version TWO');
    utimesSync(file, restoredAt, restoredAt);
    expect((await store.get('restored/r.txt')).sha256).toBe(sha('version TWO'));
  });

  it('gives concurrent listings and opens of files not hashed yet the same, right digests', async () => {
    const fresh = new ArtifactStore({ dataDir: join(base, 'fresh') });
    mkdirSync(join(fresh.dataDir, 'cold'), { recursive: true });
    for (let i = 0; i < 4; i++) writeFileSync(join(fresh.dataDir, 'cold', `f${String(i)}.bin`), `content ${String(i)}`);
    const listing = async (): Promise<unknown[]> => {
      const items: unknown[] = [];
      for await (const item of fresh.list('cold/')) items.push(item);
      return items;
    };
    const expected = [0, 1, 2, 3].map((i) => ({
      path: `cold/f${String(i)}.bin`,
      sha256: sha(`content ${String(i)}`),
      size: 9,
    }));
    const [lists, opened] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, listing)),
      Promise.all(Array.from({ length: 10 }, () => fresh.open('cold/f2.bin'))),
    ]);
    for (const list of lists) expect(list).toEqual(expected);
    for (const artifact of opened) {
      expect(artifact.sha256).toBe(sha('content 2'));
      artifact.content.destroy();
    }
  });

  it('writes many small chunks together, not one write each', async () => {
    // 100,000 one-byte upload messages cost seconds of CPU when each was a write of its own.
    const big = new ArtifactStore({ dataDir: join(base, 'batched') });
    const content = Buffer.alloc(20_000, 0x61);
    function* oneByteAtATime(): Iterable<Uint8Array> {
      for (let i = 0; i < content.length; i++) yield content.subarray(i, i + 1);
    }
    let size = 0;
    const writes = await fileWritesDuring(async () => {
      ({ size } = await big.put('tiny/a.txt', sha(content), oneByteAtATime()));
    });
    expect(writes).toBeGreaterThan(0);
    expect(writes).toBeLessThan(10);
    expect(size).toBe(content.length);
    expect((await big.get('tiny/a.txt')).content.equals(content)).toBe(true);
  });

  it('checks a large chunk in slices, and a cancelled call stops between them, before the check is through', async () => {
    // One gRPC message may carry 8 MiB, and a gzipped one is inflated as it is checked.
    const sliced = new ArtifactStore({ dataDir: join(base, 'sliced'), maxArtifactBytes: 8 * 1024 * 1024 });
    // A ZIP entry named as a pickle at the end of 4 MiB: refused once the check reaches it.
    const name = Buffer.from('archive/data.pkl');
    const entry = Buffer.alloc(30);
    entry.writeUInt32LE(0x04034b50, 0);
    entry.writeUInt16LE(20, 4);
    entry.writeUInt16LE(name.length, 26);
    const content = Buffer.concat([randomBytes(4 * 1024 * 1024), entry, name, Buffer.alloc(64)]);
    await expect(sliced.put('big/refused.bin', sha(content), [content])).rejects.toMatchObject({
      reason: 'content_refused',
    });
    // Cancelled two turns of the event loop after the chunk is handed over: a check made in one
    // piece, or one that does not heed the signal, would reach the entry and refuse it.
    let handed = false;
    async function* handOver(): AsyncIterable<Uint8Array> {
      await Promise.resolve();
      handed = true;
      yield content;
    }
    const cancel = new AbortController();
    const reason = new Error('cancelled');
    let turns = 0;
    const put = sliced.put('big/cancelled.bin', sha(content), handOver(), cancel.signal);
    await expect(
      loopTurnsWhile(put, () => {
        if (handed && ++turns === 2) cancel.abort(reason);
      }),
    ).rejects.toBe(reason);
    expect(existsSync(join(sliced.dataDir, 'big/cancelled.bin'))).toBe(false);
  });

  it('refuses a digest mismatch and keeps none of the bytes', async () => {
    await expect(store.put('mismatch.bin', sha('expected'), chunks('something else'))).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: 'sha256' },
      reason: 'digest_mismatch',
    });
    expect(existsSync(join(store.dataDir, 'mismatch.bin'))).toBe(false);
    expect(filesUnder(store.dataDir).filter((n) => n.startsWith('.upload-'))).toEqual([]);
  });

  it('never replaces a good artifact with a failed upload', async () => {
    await store.put('keep.txt', sha('v1'), chunks('v1'));
    await expect(store.put('keep.txt', sha('v2'), chunks('tampered'))).rejects.toMatchObject({
      code: 'invalid_argument',
    });
    expect((await store.get('keep.txt')).content.toString()).toBe('v1');
  });

  it('refuses an artifact over the size limit and keeps nothing', async () => {
    await expect(store.put('big.bin', sha('x'), chunks('x'.repeat(600), 'x'.repeat(600)))).rejects.toMatchObject({
      code: 'payload_too_large',
    });
    expect(existsSync(join(store.dataDir, 'big.bin'))).toBe(false);
    expect(filesUnder(store.dataDir).filter((n) => n.startsWith('.upload-'))).toEqual([]);
  });

  it('leaves no directory behind for a refused upload, and keeps the ones that were there', async () => {
    mkdirSync(join(store.dataDir, 'existing'), { recursive: true });
    for (const [path, parts] of [
      ['existing/new-1/new-2/mismatch.bin', ['something else']],
      ['existing/new-3/big.bin', ['x'.repeat(600), 'x'.repeat(600)]],
      ['existing/new-4/model.pkl', ['x']],
    ] as const) {
      await expect(store.put(path, sha('expected'), chunks(...parts))).rejects.toBeInstanceOf(Error);
    }
    expect(readdirSync(join(store.dataDir, 'existing'))).toEqual([]);
  });

  it('leaves no directory behind when refused uploads overlap in new directories, whichever ends first', async () => {
    for (const order of ['outer ends first', 'inner ends first'] as const) {
      const base = `overlap-${order.split(' ')[0] ?? ''}`;
      const gates = { outer: gate(), inner: gate() };
      async function* held(gate: Promise<void>): AsyncIterable<Uint8Array> {
        await gate;
        yield Buffer.from('not what was declared');
      }
      // The outer upload makes base/a/b/c; the inner one arrives inside it and makes c/sub.
      const outer = store.put(`${base}/a/b/c/outer.bin`, sha('expected'), held(gates.outer.promise));
      while (!existsSync(join(store.dataDir, base, 'a/b/c'))) await new Promise((r) => setTimeout(r, 5));
      const inner = store.put(`${base}/a/b/c/sub/inner.bin`, sha('expected'), held(gates.inner.promise));
      while (!existsSync(join(store.dataDir, base, 'a/b/c/sub'))) await new Promise((r) => setTimeout(r, 5));
      const [first, second] =
        order === 'outer ends first' ? (['outer', 'inner'] as const) : (['inner', 'outer'] as const);
      gates[first].resolve();
      await expect(first === 'outer' ? outer : inner).rejects.toMatchObject({ reason: 'digest_mismatch' });
      gates[second].resolve();
      await expect(second === 'outer' ? outer : inner).rejects.toMatchObject({ reason: 'digest_mismatch' });
      expect(existsSync(join(store.dataDir, base)), order).toBe(false);
    }
  });

  it('stores every good upload while many refused ones churn the same new deep directory', async () => {
    // 8 refused uploads at a time into one new 12-deep directory, each removing what it can as
    // it fails, and 4 good ones arriving meanwhile: no walk may lose a directory under it.
    const deep = Array.from({ length: 12 }, (_, i) => `d${String(i)}`).join('/');
    for (let round = 0; round < 10; round++) {
      const dir = `churn/r${String(round)}/${deep}`;
      const outcomes = await Promise.allSettled([
        ...Array.from({ length: 8 }, (_, i) =>
          store.put(`${dir}/bad-${String(i)}.bin`, sha('expected'), chunks('something else')),
        ),
        ...Array.from({ length: 4 }, (_, i) =>
          store.put(`${dir}/good-${String(i)}.txt`, sha(`good ${String(i)}`), chunks(`good ${String(i)}`)),
        ),
      ]);
      const refusals = outcomes
        .slice(0, 8)
        .map((o) => (o.status === 'rejected' ? (o.reason as { reason?: unknown }).reason : 'kept'));
      expect(refusals).toEqual(Array(8).fill('digest_mismatch'));
      expect(outcomes.slice(8).map((o) => o.status)).toEqual(Array(4).fill('fulfilled'));
    }
  });

  it('stores every good upload while refused uploads race it into the same new directories', async () => {
    // Each refused upload removes the directories it made; a good one arriving in such a
    // directory at that moment must make it again, not fail.
    // The good upload starts a little later in each round, so that some round has it arrive
    // in the directory just as the refused one removes it.
    const rounds = 60;
    const results = await Promise.all(
      Array.from({ length: rounds }, async (_, i) => {
        const dir = `race/r${String(i)}/deep`;
        const bad = store.put(`${dir}/bad.txt`, sha('expected'), chunks('something else'));
        // Its refusal may come during the turns below, before allSettled takes it.
        bad.catch(() => undefined);
        for (let turn = 0; turn < i; turn++) await new Promise((resolve) => setImmediate(resolve));
        const [good] = await Promise.allSettled([
          store.put(`${dir}/good.txt`, sha(`good ${String(i)}`), chunks(`good ${String(i)}`)),
          bad,
        ]);
        return good;
      }),
    );
    for (const [i, good] of results.entries()) {
      expect(good).toMatchObject({ status: 'fulfilled', value: { path: `race/r${String(i)}/deep/good.txt` } });
    }
    expect(filesUnder(join(store.dataDir, 'race')).sort()).toEqual(Array(rounds).fill('good.txt'));
  });

  it('lists what is stored while refused uploads make and remove deep directories beside it', async () => {
    // A refused upload removes the directories it made; a listing walking the tree at that
    // moment must pass over a directory that is gone, not fail.
    const listed = new ArtifactStore({ dataDir: join(base, 'listed') });
    await listed.put('kept/a.txt', sha('kept'), chunks('kept'));
    const deep = Array.from({ length: 6 }, (_, i) => `d${String(i)}`).join('/');
    const stop = new AbortController();
    const churn = (async () => {
      for (let round = 0; !stop.signal.aborted; round++) {
        await Promise.allSettled(
          Array.from({ length: 4 }, (_, i) =>
            listed.put(`gone/r${String(round)}/${deep}/bad-${String(i)}.bin`, sha('expected'), chunks('else')),
          ),
        );
      }
    })();
    const listings: string[][] = [];
    try {
      for (let n = 0; n < 300; n++) {
        const paths: string[] = [];
        for await (const item of listed.list('')) paths.push(item.path);
        listings.push(paths);
      }
    } finally {
      stop.abort();
      await churn;
    }
    expect(listings).toEqual(Array(300).fill(['kept/a.txt']));
  });

  it('never lists a file outside the data directory while a directory is swapped for a link to it', async () => {
    const raced = new ArtifactStore({ dataDir: join(base, 'raced') });
    await raced.put('swp/inside.txt', sha('inside'), chunks('inside'));
    const outside = join(base, 'raced-outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret.txt'), 'secret');
    // Another process (a local user of the data directory) swaps the directory for a link and
    // back as fast as it can, so that it is a link at some moment of most listings.
    const swapper = spawn(process.execPath, ['-e', SWAPPER, raced.dataDir, outside], { stdio: 'ignore' });
    const seen = new Set<string>();
    try {
      for (const until = Date.now() + 4000; Date.now() < until;) {
        for (const prefix of ['', 'swp', 'swp/']) for await (const item of raced.list(prefix)) seen.add(item.path);
      }
    } finally {
      swapper.kill();
      await once(swapper, 'exit');
    }
    expect([...seen].filter((path) => path.includes('secret'))).toEqual([]);
    // The listings did run through the directory while it was one.
    expect(seen).toContain('swp/inside.txt');
  });

  it('refuses a FIFO in the data directory at once, without waiting for a writer', async () => {
    const piped = new ArtifactStore({ dataDir: join(base, 'piped') });
    await piped.put('ok.txt', sha('ok'), chunks('ok'));
    execFileSync('mkfifo', [join(piped.dataDir, 'pipe.bin')]);
    // An open that waits for a writer holds one of the four threads of libuv's pool: four of
    // them stopped every file operation of the server.
    const gets = await Promise.allSettled(Array.from({ length: 6 }, () => piped.get('pipe.bin')));
    for (const get of gets) expect(get).toMatchObject({ status: 'rejected', reason: { code: 'not_found' } });
    expect((await piped.get('ok.txt')).content.toString()).toBe('ok');
    const listed: string[] = [];
    for await (const item of piped.list('')) listed.push(item.path);
    expect(listed).toEqual(['ok.txt']);
  });

  it('stores an artifact whose name is as long as the path resolver allows (255 bytes)', async () => {
    const path = `long/${'a'.repeat(255)}`;
    await store.put(path, sha('long'), chunks('long'));
    expect((await store.get(path)).content.toString()).toBe('long');
    await store.delete(path);
  });

  it('fetches an import only once its path, name and digest have passed, and stores what came', async () => {
    let fetches = 0;
    const fetchBody = (): Promise<Uint8Array> => {
      fetches += 1;
      return Promise.resolve(Buffer.from('imported'));
    };
    await expect(store.putFetched('imports/../../x.bin', sha('imported'), fetchBody)).rejects.toMatchObject({
      code: 'invalid_argument',
    });
    await expect(store.putFetched('imports/model.pt', sha('imported'), fetchBody)).rejects.toMatchObject({
      reason: 'extension_refused',
    });
    await expect(store.putFetched('imports/model.bin', 'nope', fetchBody)).rejects.toMatchObject({
      reason: 'app.bad_digest',
    });
    expect(fetches).toBe(0);
    expect(await store.putFetched('imports/model.bin', sha('imported'), fetchBody)).toMatchObject({ size: 8 });
    expect(fetches).toBe(1);
    expect((await store.get('imports/model.bin')).content.toString()).toBe('imported');
  });

  it('leaves no empty directories behind a delete: deep uploads and deletes cannot pile them up for listings', async () => {
    const dirs = new ArtifactStore({ dataDir: join(base, 'emptied') });
    const deep = (i: number) =>
      `ed/${String(i)}/${Array.from({ length: 12 }, (_, d) => `d${String(d)}`).join('/')}/f.bin`;
    await dirs.put('ed/kept.bin', sha('k'), chunks('k'));
    for (let i = 0; i < 100; i++) {
      await dirs.put(deep(i), sha('x'), chunks('x'));
      await dirs.delete(deep(i));
    }
    expect(readdirSync(join(dirs.dataDir, 'ed'))).toEqual(['kept.bin']);
    // A directory that holds another artifact stays.
    await dirs.put('ed/a/b/one.bin', sha('1'), chunks('1'));
    await dirs.put('ed/a/two.bin', sha('2'), chunks('2'));
    await dirs.delete('ed/a/b/one.bin');
    expect(readdirSync(join(dirs.dataDir, 'ed', 'a'))).toEqual(['two.bin']);
    await dirs.delete('ed/a/two.bin');
    expect(readdirSync(join(dirs.dataDir, 'ed'))).toEqual(['kept.bin']);
    // The data directory itself stays, emptied.
    await dirs.delete('ed/kept.bin');
    expect(readdirSync(dirs.dataDir)).toEqual([]);
  });

  it('answers a link at an artifact’s name as not found, and lists past a socket', async () => {
    const odd = new ArtifactStore({ dataDir: join(base, 'odd') });
    await odd.put('real.bin', sha('r'), chunks('r'));
    symlinkSync(join(odd.dataDir, 'real.bin'), join(odd.dataDir, 'link.bin'));
    await expect(odd.get('link.bin')).rejects.toMatchObject({ code: 'not_found' });
    const socket = createServer().listen(join(odd.dataDir, 'socket.bin'));
    await once(socket, 'listening');
    try {
      const listed: string[] = [];
      for await (const item of odd.list('')) listed.push(item.path);
      expect(listed).toEqual(['real.bin']);
    } finally {
      socket.close();
    }
  });

  it('refuses a malformed declared digest', async () => {
    await expect(store.put('x.txt', 'not-hex', chunks('x'))).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: 'sha256' },
    });
  });

  it.each(['../escape.txt', '/etc/passwd', 'a/../../x', '.upload-secret'])('refuses the path %s', async (path) => {
    await expect(store.get(path)).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'path' } });
    await expect(store.put(path, sha('x'), chunks('x'))).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(store.delete(path)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('refuses to write through a symbolic link out of the data directory', async () => {
    const outside = join(base, 'outside');
    mkdirSync(outside);
    symlinkSync(outside, join(store.dataDir, 'evil'));
    await expect(store.put('evil/planted.txt', sha('x'), chunks('x'))).rejects.toMatchObject({
      reason: 'path_symlink_escape',
    });
    expect(readdirSync(outside)).toEqual([]);
  });

  it('lets a file-system failure through as it is, for the transport to hide', async () => {
    // A socket file: opening it fails (ENXIO), which no client can cause through the API.
    const socket = createServer().listen(join(store.dataDir, 'a-socket'));
    await once(socket, 'listening');
    await expect(store.get('a-socket')).rejects.toMatchObject({ code: 'ENXIO' });
    socket.close();
  });

  it('answers what the client’s own paths cause as the client’s: a directory is not found, a collision is a conflict', async () => {
    mkdirSync(join(store.dataDir, 'a-directory'));
    await expect(store.get('a-directory')).rejects.toMatchObject({ code: 'not_found' });
    await expect(store.delete('a-directory')).rejects.toMatchObject({ code: 'not_found' });
    await store.put('plain.txt', sha('x'), chunks('x'));
    await expect(store.put('plain.txt/below.txt', sha('x'), chunks('x'))).rejects.toMatchObject({ code: 'conflict' });
    await expect(store.put('a-directory', sha('x'), chunks('x'))).rejects.toMatchObject({ code: 'conflict' });
    expect(readdirSync(join(store.dataDir, 'a-directory'))).toEqual([]);
    expect(readdirSync(store.dataDir).filter((f) => f.startsWith('.upload-'))).toEqual([]);
  });
});

describe('Repr-Digest', () => {
  const empty = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
  it('round-trips a SHA-256', () => {
    expect(reprDigestOf(empty)).toBe('sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:');
    expect(parseReprDigest(reprDigestOf(empty))).toBe(empty);
  });
  it('finds sha-256 among other algorithms', () => {
    expect(parseReprDigest(`sha-512=:AAAA:, ${reprDigestOf(empty)}`)).toBe(empty);
  });
  it('refuses two sha-256 digests (two headers joined), even when they agree, rather than pick one', () => {
    const other = 'a'.repeat(64);
    for (const value of [
      `${reprDigestOf(empty)}, ${reprDigestOf(other)}`,
      `${reprDigestOf(empty)}, ${reprDigestOf(empty)}`,
    ]) {
      expect(() => parseReprDigest(value)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
  });
  it.each([undefined, '', 'sha-256=abc', 'md5=:AAAA:', 'sha-256=:AAAA:', 'x'.repeat(2000)])('refuses %s', (value) => {
    expect(() => parseReprDigest(value)).toThrow(
      expect.objectContaining({ code: 'invalid_argument', details: { field: 'Repr-Digest' } }),
    );
  });
});

describe('loadServerConfig', () => {
  it('has the documented defaults', () => {
    expect(loadServerConfig({})).toMatchObject({ host: '127.0.0.1', grpcPort: 9000, httpPort: 8443 });
  });
  it('reads the environment and refuses a bad port', () => {
    expect(loadServerConfig({ FLUXGUARD_GRPC_PORT: '0' }).grpcPort).toBe(0);
    expect(() => loadServerConfig({ FLUXGUARD_HTTP_PORT: '80a' })).toThrow(/FLUXGUARD_HTTP_PORT/);
    expect(() => loadServerConfig({ FLUXGUARD_HTTP_PORT: '70000' })).toThrow(/FLUXGUARD_HTTP_PORT/);
  });
  it('refuses a misspelt variable, which would be ignored, and leaves other FLUXGUARD_ names alone', () => {
    // Ignored, it left client certificates per operation while the operator asked for strict.
    expect(() => loadServerConfig({ FLUXGUARD_CLIENT_CERT: 'strict' })).toThrow(
      /^FLUXGUARD_CLIENT_CERT is not read by the reference servers: did you mean FLUXGUARD_CLIENT_CERTS\?$/,
    );
    expect(() => loadServerConfig({ FLUXGUARD_REDIS_ULR: 'redis://r' })).toThrow(/did you mean FLUXGUARD_REDIS_URL\?/);
    expect(() => loadServerConfig({ FLUXGUARD_TLS_CERTS: 'c.pem' })).toThrow(/did you mean FLUXGUARD_TLS_CERT\?/);
    const others = { FLUXGUARD_BENCH_ONLY: 'http', FLUXGUARD_RACE_MS: '1000', FLUXGUARD_VITEST_JSON: 'x' };
    expect(loadServerConfig(others).host).toBe('127.0.0.1');
  });
  it('takes an IP address or a host name, and refuses anything else naming the variable', () => {
    for (const host of ['0.0.0.0', '::', '::1', 'localhost', 'artifacts.internal', 'a-b.example.', 'artifact_store']) {
      expect(loadServerConfig({ FLUXGUARD_HOST: host }).host).toBe(host);
    }
    for (const host of ['127.0.0.1 ', '[::1]', 'host:9000', 'http://x', '-a.example', 'a b']) {
      expect(() => loadServerConfig({ FLUXGUARD_HOST: host }), host).toThrow(
        /^FLUXGUARD_HOST must be an IP address \(IPv6 without brackets\) or a host name/,
      );
    }
  });
});
