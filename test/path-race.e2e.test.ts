// A directory of the data directory swapped for a link to an outside directory, and back, in a
// tight loop by another process, while clients read and upload through it on both transports:
// no byte is read from outside, no file is written outside, no temporary file is left behind.
// Before the files were opened through their directory as it was opened (no link followed),
// such a loop read an outside file and wrote outside within seconds.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/clients.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

const RACE_MS = Number(process.env.FLUXGUARD_RACE_MS ?? 15_000);
const SECRET = 'TOP-SECRET-outside-the-data-directory';

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

/**
 * Swaps `dir` for a link to `outside` and back, as fast as it can, for `ms`; resolves with the
 * number of swaps. Its own process: a tight synchronous loop, racing the server for real.
 */
function swapLoop(dataDir: string, outside: string, ms: number): Promise<number> {
  const script = `
    const fs = require('node:fs');
    const [dir, outside, ms] = process.argv.slice(1);
    const until = Date.now() + Number(ms);
    let swaps = 0;
    const attempt = (step) => { try { step(); return true; } catch { return false; } };
    while (Date.now() < until) {
      // The real directory aside, a link to the outside in its place...
      attempt(() => fs.renameSync(dir, dir + '.real'));
      attempt(() => fs.symlinkSync(outside, dir + '.link'));
      attempt(() => fs.renameSync(dir + '.link', dir));
      // ...then whatever is there now (the link, or a directory the server made meanwhile)
      // out of the way, never following a link, and the real directory back.
      attempt(() => fs.renameSync(dir, dir + '.gone'));
      attempt(() => fs.rmSync(dir + '.gone', { recursive: true, force: true }));
      if (attempt(() => fs.renameSync(dir + '.real', dir))) swaps += 1;
    }
    process.stdout.write(String(swaps));`;
  const child = spawn(process.execPath, ['-e', script, join(dataDir, 'swap'), outside, String(ms)], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => {
    child.once('exit', () => {
      resolve(Number(out));
    });
  });
}

describe.each(TRANSPORTS)('a directory swapped for a link during reads and uploads over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world);
  });
  afterAll(async () => {
    await t.close();
  });

  it(
    `reads and writes nothing outside in ${String(RACE_MS / 1000)} s of swapping`,
    async () => {
      const outside = join(world.base, `outside-${transport}`);
      mkdirSync(outside);
      writeFileSync(join(outside, 'secret.txt'), SECRET);
      expect((await t.client.upload('swap/secret.txt', sha256('inside'), [Buffer.from('inside')])).ok).toBe(true);

      const loop = swapLoop(t.dataDir, outside, RACE_MS);
      const until = Date.now() + RACE_MS;
      const leaked: string[] = [];
      let reads = 0;
      let uploads = 0;
      let served = 0;
      const worker = async (id: number) => {
        for (let i = 0; Date.now() < until; i++) {
          const got = await t.client.get('swap/secret.txt');
          reads += 1;
          const content = (got.value as { content?: Buffer } | undefined)?.content?.toString() ?? '';
          if (got.ok) served += 1;
          if (content.includes('TOP-SECRET') || got.exposed.includes('TOP-SECRET')) leaked.push(content);
          const body = Buffer.from(`planted ${String(id)} ${String(i)}`);
          await t.client.upload(`swap/planted-${String(id)}-${String(i)}.txt`, sha256(body), [body]);
          uploads += 1;
        }
      };
      await Promise.all([0, 1, 2, 3].map(worker));
      const swaps = await loop;

      expect(swaps).toBeGreaterThan(100);
      expect(reads).toBeGreaterThan(20);
      expect(uploads).toBeGreaterThan(20);
      // Some reads went through while the directory was in place: the loop did not just block them.
      expect(served).toBeGreaterThan(0);
      expect(leaked).toEqual([]);
      expect(readdirSync(outside)).toEqual(['secret.txt']);
      const temporary = readdirSync(t.dataDir, { recursive: true }).filter((f) => String(f).includes('.upload-'));
      expect(temporary).toEqual([]);
    },
    RACE_MS + 30_000,
  );
});
