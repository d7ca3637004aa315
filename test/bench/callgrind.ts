// Reading what valgrind's callgrind wrote for `pnpm bench:instructions`: the instructions of a
// dump, and its functions by instructions, with V8's machine code named from the perf map
// that `node --perf-basic-prof` writes (callgrind sees JavaScript only as addresses).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The files of the newest dump of `pid` in `dir`: the main thread's, and every thread's. */
export interface ThreadDumps {
  /** `callgrind.<pid>.<dump>-01`: the thread that runs JavaScript and serves requests. */
  readonly main: string;
  /**
   * Every thread's file of that dump (callgrind run with `--separate-threads=yes` writes one
   * per thread, `-01`, `-02`, …). The other threads compile optimized code and help the garbage
   * collector: work that comes in bursts, not per request.
   */
  readonly all: readonly string[];
}

/** The newest dump of `pid` in `dir`, thread by thread. */
export function newestDump(dir: string, pid: number): ThreadDumps {
  const pattern = new RegExp(`^callgrind\\.${String(pid)}\\.(\\d+)-(\\d+)$`);
  const byDump = new Map<number, string[]>();
  for (const file of readdirSync(dir)) {
    const match = pattern.exec(file);
    if (match?.[1] === undefined) continue;
    const dump = Number(match[1]);
    const files = byDump.get(dump);
    if (files === undefined) byDump.set(dump, [file]);
    else files.push(file);
  }
  const newest = Math.max(...byDump.keys());
  const files = byDump.get(newest)?.sort();
  const main = files?.find((file) => file.endsWith('-01'));
  if (files === undefined || main === undefined) throw new Error(`callgrind wrote no dump for ${String(pid)}`);
  return { main: join(dir, main), all: files.map((file) => join(dir, file)) };
}

/** The instructions a dump counted (its `totals:` line; instructions are the only event). */
export function dumpTotal(file: string): number {
  const match = /^totals: (\d+)/m.exec(readFileSync(file, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`no totals in ${file}`);
  return Number(match[1]);
}

interface CodeRange {
  readonly start: number;
  readonly end: number;
  readonly name: string;
}

/** The code ranges of `/tmp/perf-<pid>.map`, sorted by start. */
function readPerfMap(pid: number): CodeRange[] {
  const path = `/tmp/perf-${String(pid)}.map`;
  if (!existsSync(path)) return [];
  const ranges: CodeRange[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [start, size, ...name] = line.split(' ');
    if (start === undefined || size === undefined || name.length === 0) continue;
    const from = parseInt(start, 16);
    ranges.push({ start: from, end: from + parseInt(size, 16), name: tidy(name.join(' ')) });
  }
  return ranges.sort((a, b) => a.start - b.start);
}

/** V8's `JS:*name file:line:column` without its tier marks and the checkout's paths. */
function tidy(name: string): string {
  return name
    .replace(/^JS:[*~^+]?/, '')
    .replace(/(?:file:\/\/)?\/\S*?node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?/g, '')
    .replace(/(?:file:\/\/)?\/\S*?\/(packages|test)\//g, '$1/');
}

function nameAt(ranges: readonly CodeRange[], address: number): string | undefined {
  let low = 0;
  let high = ranges.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const range = ranges[middle];
    if (range === undefined) break;
    if (address < range.start) high = middle - 1;
    else if (address >= range.end) low = middle + 1;
    else return range.name;
  }
  return undefined;
}

/**
 * The instructions of each function in `file` (its own, not those of what it calls), read with
 * `callgrind_annotate` at the path `annotate`, with JavaScript named from the perf map of `pid`:
 * one function compiled at several tiers is one entry.
 */
export function instructionsByFunction(annotate: string, file: string, pid: number): Map<string, number> {
  const annotated = spawnSync(annotate, ['--inclusive=no', '--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (annotated.status !== 0) throw new Error(`callgrind_annotate failed: ${annotated.stderr.trim()}`);
  const ranges = readPerfMap(pid);
  const functions = new Map<string, number>();
  for (const line of annotated.stdout.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined || match[2].includes('PROGRAM TOTALS')) continue;
    const where = match[2];
    const address = /^\?\?\?:0x([0-9a-f]+)/.exec(where)?.[1];
    const name =
      address === undefined
        ? where
            .replace(/^\?\?\?:/, '')
            .replace(/'\d+/, '')
            .replace(/ \[[^\]]*\]$/, '')
        : (nameAt(ranges, parseInt(address, 16)) ?? 'JIT code not in the perf map');
    functions.set(name, (functions.get(name) ?? 0) + Number(match[1].replace(/,/g, '')));
  }
  return functions;
}
