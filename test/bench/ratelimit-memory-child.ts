// Child-process entry of the `ratelimit-memory` group, started by ratelimit-memory.ts with
// `--expose-gc` so that every heap reading follows a full collection, in a process of its own
// so that nothing else lives on its heap. Argument: the number of distinct keys.
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryRateLimitStore } from '@fluxguard/core';
import { RATE_LIMIT_POINTS } from './fixtures.js';

/** A heap reading after full collections, in bytes. */
export interface MemoryReading {
  readonly heapUsed: number;
  readonly rss: number;
}

/** What the child sends its parent. */
export interface MemoryResult {
  readonly keys: number;
  readonly durationSeconds: number;
  readonly fillMs: number;
  /** The store's bound: the keys held are the last `min(keys, maxKeys)` counted. */
  readonly maxKeys: number;
  readonly baseline: MemoryReading;
  readonly filled: MemoryReading;
  /** Whether the first key was still stored when `filled` was read (only up to `maxKeys` keys). */
  readonly firstHeld: boolean;
  /** Whether the last key was still stored then (always, unless a window ended during the fill). */
  readonly lastHeld: boolean;
  readonly expired: MemoryReading;
  readonly waitedMs: number;
  /** First and last key gone once their window ended. */
  readonly allDropped: boolean;
}

/** The window of the rule: short, so that the keys expire within the run. */
const DURATION_SECONDS = 2;
/** The memory store's default bound, given explicitly so that the report can say it. */
const MAX_KEYS = 100_000;

function read(): MemoryReading {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error('ratelimit-memory-child.js needs node --expose-gc');
  // Twice: the first collection may leave garbage that only finalizers released.
  gc();
  gc();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}

/** The key the `peer` rule makes for IPv4 client number `i` (`ip:10.0.0.0`, `ip:10.0.0.1`, ...). */
function peerKey(i: number): string {
  return `ip:10.${String((i >>> 16) & 255)}.${String((i >>> 8) & 255)}.${String(i & 255)}`;
}

async function measure(keys: number): Promise<MemoryResult> {
  if (!Number.isSafeInteger(keys) || keys < 1 || keys > 16_777_216) throw new Error(`bad key count ${String(keys)}`);
  const baseline = read();
  // The limiter `createRateLimit` makes for `{ name: 'per-peer', key: 'peer', points, durationSeconds }`
  // with the default memory store: one fixed-window record per key, at most MAX_KEYS of them,
  // swept once per window (no timer per key).
  const limiter = createMemoryRateLimitStore({ maxKeys: MAX_KEYS }).limiter({
    name: 'per-peer',
    points: RATE_LIMIT_POINTS,
    durationSeconds: DURATION_SECONDS,
    storeFailure: 'open',
  });
  const started = performance.now();
  // One call after the other, as requests would come. The memory store answers synchronously,
  // so the loop never yields to the event loop: no sweep runs before the reading below, even
  // when the fill takes longer than the window (checked by `lastHeld`).
  for (let i = 0; i < keys; i++) await limiter.consume(peerKey(i), 1);
  const fillMs = performance.now() - started;
  const filled = read();
  const held = [await limiter.peek(peerKey(0)), await limiter.peek(peerKey(keys - 1))];
  const ended = performance.now();
  await sleep(DURATION_SECONDS * 1000 + 1000);
  const waitedMs = performance.now() - ended;
  const expired = read();
  const dropped = [await limiter.peek(peerKey(0)), await limiter.peek(peerKey(keys - 1))];
  return {
    keys,
    durationSeconds: DURATION_SECONDS,
    fillMs,
    maxKeys: MAX_KEYS,
    baseline,
    filled,
    firstHeld: held[0] !== undefined,
    lastHeld: held[1] !== undefined,
    expired,
    waitedMs,
    allDropped: dropped.every((r) => r === undefined),
  };
}

if (process.send === undefined) throw new Error('ratelimit-memory-child.js runs as a child of run.js (fork)');
const result = await measure(Number(process.argv[2]));
process.send(result);
