import { fork } from 'node:child_process';
import { once } from 'node:events';
import type { MemoryResult } from './ratelimit-memory-child.js';
import { formatCount, table } from './stats.js';

/** Distinct keys per measurement; each runs in a fresh process. */
const KEY_COUNTS = [100_000, 1_000_000] as const;

const MB = 1024 * 1024;

async function measureIn(keys: number): Promise<MemoryResult> {
  const child = fork(new URL('./ratelimit-memory-child.js', import.meta.url), [String(keys)], {
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let result: MemoryResult | undefined;
  child.on('message', (message) => {
    result = message as MemoryResult;
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0 || result === undefined) {
    throw new Error(`the ratelimit-memory child for ${String(keys)} keys exited with ${String(code)}`);
  }
  return result;
}

/**
 * Which keys the store held after the fill, checked by its first and last key: `all` up to the
 * bound, `last <maxKeys>` beyond it; anything else (`NO: ...`) is a store that lost the wrong keys.
 */
function heldColumn(r: MemoryResult): string {
  const expected = r.keys <= r.maxKeys;
  if (r.lastHeld && r.firstHeld === expected) return expected ? 'all' : `last ${formatCount(r.maxKeys)}`;
  return `NO: first ${r.firstHeld ? 'held' : 'gone'}, last ${r.lastHeld ? 'held' : 'gone'}`;
}

/** Megabytes with one decimal (`-0.0` shown as `0.0`). */
function mb(bytes: number): string {
  const text = (bytes / MB).toFixed(1);
  return text === '-0.0' ? '0.0' : text;
}

/**
 * The memory of the default (memory) rate-limit store: one rule's limiter, one point consumed
 * for N distinct keys (up to its bound, then ten times as many), heap and RSS after a full GC
 * against a baseline read before, and again once every key's window has ended (the keys must
 * be dropped).
 */
export async function runRateLimitMemory(): Promise<void> {
  const results: MemoryResult[] = [];
  for (const keys of KEY_COUNTS) results.push(await measureIn(keys));
  const first = results[0];
  console.log('\n## rate-limit memory store: one rule (per-peer), one point for each of N distinct keys');
  console.log(
    `   fresh process per N (node --expose-gc); the memory store via createMemoryRateLimitStore({ maxKeys: ${formatCount(first?.maxKeys ?? 0)} }).limiter, keys "ip:10.x.y.z", window ${String(first?.durationSeconds ?? '-')} s;`,
  );
  console.log(
    '   heap = process.memoryUsage().heapUsed after global.gc(), minus the baseline read before the limiter existed',
  );
  console.log('   B/key is per key held: the last min(N, maxKeys) keys counted');
  const rows = results.map((r) => [
    formatCount(r.keys),
    (r.fillMs / 1000).toFixed(2),
    ((r.fillMs * 1000) / r.keys).toFixed(2),
    mb(r.baseline.heapUsed),
    mb(r.filled.heapUsed - r.baseline.heapUsed),
    formatCount((r.filled.heapUsed - r.baseline.heapUsed) / Math.min(r.keys, r.maxKeys)),
    mb(r.filled.rss - r.baseline.rss),
    heldColumn(r),
    mb(r.expired.heapUsed - r.baseline.heapUsed),
    mb(r.expired.rss - r.baseline.rss),
    r.allDropped ? 'yes' : 'NO',
  ]);
  console.log(
    table(
      [
        'keys',
        'fill s',
        'µs/key',
        'base heap MB',
        '+heap MB',
        'B/key',
        '+rss MB',
        'held',
        'expired: +heap MB',
        '+rss MB',
        'dropped',
      ],
      rows,
    ),
  );
  for (const r of results) {
    console.log(
      `   ${formatCount(r.keys)} keys: heap ${mb(r.baseline.heapUsed)} → ${mb(r.filled.heapUsed)} MB after the fill → ${mb(r.expired.heapUsed)} MB ${(r.waitedMs / 1000).toFixed(1)} s after it (rss ${mb(r.baseline.rss)} → ${mb(r.filled.rss)} → ${mb(r.expired.rss)} MB)`,
    );
  }
}
