// `pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler | --gc | --allocations]`:
// one server of one variant under the scenario's outside generator, with V8's CPU profiler on.
// Prints the server's CPU time per request (robust to other processes taking the machine, unlike
// req/s) and the functions with the most self time per request, and keeps the .cpuprofile for
// Chrome DevTools. For finding where the time goes, not for numbers to publish: the profiler
// itself costs the server time. `--no-profiler` prints the CPU time per request only, without
// that cost: the reading to compare two commits by. `--gc` prints the garbage collections per
// request instead (how many, their main-thread time, the bytes each scavenge promoted to the old
// generation); `--allocations` the bytes allocated per request, by the function that allocated.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareScenario } from './one-scenario.js';
import { startServerProcess } from './server-handle.js';

const USAGE = 'pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler | --gc | --allocations]';
const MODES = ['--no-profiler', '--gc', '--allocations'] as const;
type Mode = (typeof MODES)[number] | 'cpu';
const PROFILES = fileURLToPath(new URL('../../bench/results/profiles/', import.meta.url));

/** A V8 CPU profile, as the inspector's `Profiler.stop` returns it. */
interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

/** A sampled allocation profile, as the inspector's `HeapProfiler.stopSampling` returns it. */
interface HeapProfileNode {
  readonly callFrame: CallFrame;
  readonly selfSize: number;
  readonly children: readonly HeapProfileNode[];
}

/** What `v8.GCProfiler#stop()` returns (the parts read here). */
interface GcProfile {
  readonly statistics: readonly {
    readonly gcType: string;
    readonly cost: number;
    readonly beforeGC: { readonly heapSpaceStatistics: readonly SpaceStatistics[] };
    readonly afterGC: { readonly heapSpaceStatistics: readonly SpaceStatistics[] };
  }[];
}

interface SpaceStatistics {
  readonly spaceName: string;
  readonly spaceUsedSize: number;
}

/** A function as `name file:line`: packages by name, the repository's own files by path. */
function labelOf(frame: CallFrame): string {
  const where = frame.url
    .replace(/^.*node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?/, '')
    .replace(/^file:\/\/.*?\/(packages|test)\//, '$1/');
  return `${frame.functionName || '(anonymous)'} ${where}:${String(frame.lineNumber + 1)}`;
}

/** The `top` largest totals, each ÷ `requests`. */
function topPerRequest(totals: Map<string, number>, requests: number, top: number): [string, number][] {
  return [...totals]
    .map(([label, total]): [string, number] => [label, total / requests])
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
}

/** Self time per request of the `top` most expensive functions (idle time left out), in µs. */
function selfTimePerRequest(profile: CpuProfile, requests: number, top: number): [string, number][] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const totals = new Map<string, number>();
  profile.samples.forEach((id, index) => {
    const frame = frames.get(id);
    if (frame === undefined || frame.functionName === '(idle)') return;
    const label = labelOf(frame);
    totals.set(label, (totals.get(label) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  return topPerRequest(totals, requests, top);
}

/** Bytes allocated per request by each of the `top` functions that allocated most, and in all. */
function bytesPerRequest(
  head: HeapProfileNode,
  requests: number,
  top: number,
): { all: number; top: [string, number][] } {
  const totals = new Map<string, number>();
  let all = 0;
  const visit = (node: HeapProfileNode): void => {
    if (node.selfSize > 0) {
      const label = labelOf(node.callFrame);
      totals.set(label, (totals.get(label) ?? 0) + node.selfSize);
      all += node.selfSize;
    }
    for (const child of node.children) visit(child);
  };
  visit(head);
  return { all: all / requests, top: topPerRequest(totals, requests, top) };
}

function usedOf(spaces: readonly SpaceStatistics[], name: string): number {
  return spaces.find((space) => space.spaceName === name)?.spaceUsedSize ?? 0;
}

/**
 * Per kind of collection: how many per 1 000 requests, and the main thread's time in them per
 * request. For scavenges also the bytes they promoted per request: what grew in the spaces
 * outside the young generation, which only the (concurrent, helper-thread) marking frees.
 */
function collectionsPerRequest(profile: GcProfile, requests: number): string[] {
  const kinds = new Map<string, { count: number; cost: number; promoted: number }>();
  for (const gc of profile.statistics) {
    const kind = kinds.get(gc.gcType) ?? { count: 0, cost: 0, promoted: 0 };
    kind.count += 1;
    kind.cost += gc.cost;
    if (gc.gcType === 'Scavenge') {
      const before = gc.beforeGC.heapSpaceStatistics;
      const after = gc.afterGC.heapSpaceStatistics;
      for (const space of ['old_space', 'large_object_space', 'code_space']) {
        kind.promoted += usedOf(after, space) - usedOf(before, space);
      }
    }
    kinds.set(gc.gcType, kind);
  }
  return [...kinds].map(
    ([name, kind]) =>
      `${name.padEnd(20)} ${(kind.count / (requests / 1000)).toFixed(2).padStart(7)} per 1000 requests, ` +
      `${(kind.cost / requests).toFixed(2).padStart(6)} µs per request` +
      (name === 'Scavenge' ? `, ${(kind.promoted / requests).toFixed(0)} bytes promoted per request` : ''),
  );
}

/** What each mode records in the server, and where. */
const RECORDINGS: Record<Mode, { suffix: string; variable?: string; what: string }> = {
  cpu: { suffix: '.cpuprofile', variable: 'FLUXGUARD_BENCH_CPU_PROFILE', what: 'CPU profiler' },
  '--allocations': { suffix: '.heapprofile', variable: 'FLUXGUARD_BENCH_HEAP_PROFILE', what: 'allocation sampling' },
  '--gc': { suffix: '.gc.json', variable: 'FLUXGUARD_BENCH_GC_PROFILE', what: 'GC profiler' },
  '--no-profiler': { suffix: '', what: 'no profiler' },
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const modes = args.filter((arg) => arg.startsWith('--'));
  const unknown = modes.find((arg) => !(MODES as readonly string[]).includes(arg));
  if (unknown !== undefined || modes.length > 1)
    throw new Error(`usage: ${USAGE}\n  at most one of ${MODES.join(', ')}`);
  const mode: Mode = (modes[0] as Mode | undefined) ?? 'cpu';
  const recording = RECORDINGS[mode];
  const profiling = recording.variable !== undefined;
  const [transportArg, variantArg, tokensArg, secondsArg] = args.filter((arg) => !arg.startsWith('--'));
  const seconds = secondsArg === undefined ? 8 : Number(secondsArg);
  if (!Number.isSafeInteger(seconds) || seconds < 1) throw new Error('seconds must be a positive integer');
  const one = await prepareScenario(transportArg, variantArg, tokensArg, USAGE);
  const { variant } = one;
  const { transport, tokens, generator: generatorName } = one.scenario;
  try {
    if (profiling) mkdirSync(PROFILES, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const { suffix, variable, what } = recording;
    const profilePath = join(PROFILES, `${stamp}-${transport}-${variant}-${tokens}${suffix}`);
    const server = await startServerProcess(
      { transport, variant, jwks: one.jwks, tls: one.pki.server },
      one.where.server,
      variable === undefined ? {} : { env: { [variable]: profilePath } },
    );
    let requests = 0;
    try {
      const warm = await one.run(server, one.config.warmupSeconds);
      const { result: run, cpuPerRequest: cpu } = await one.run(server, seconds);
      requests = warm.result.requests + run.requests;
      console.log(
        `# ${transport} ${variant}, ${tokens} tokens, ${generatorName}, ${one.where.description}${profiling ? `, ${what} on` : ''}`,
      );
      console.log(
        `${String(Math.round(run.requests / run.seconds))} req/s; server CPU ${cpu === undefined ? 'unknown' : cpu.toFixed(1)} µs per request` +
          ` (ok ${String(run.ok)}, refused ${String(run.refused)}, errors ${String(run.other)})`,
      );
    } finally {
      await server.stop();
    }
    if (!profiling) return;
    const recorded = JSON.parse(readFileSync(profilePath, 'utf8')) as unknown;
    if (mode === 'cpu') {
      console.log(`\nself time per request (warm-up and run, profiler on), µs:`);
      for (const [label, us] of selfTimePerRequest(recorded as CpuProfile, requests, 30))
        console.log(`${us.toFixed(1).padStart(7)}  ${label}`);
      console.log(`\nprofile: ${profilePath} (open in Chrome DevTools, Performance tab)`);
    } else if (mode === '--allocations') {
      const bytes = bytesPerRequest((recorded as { head: HeapProfileNode }).head, requests, 30);
      console.log(`\nbytes allocated per request (warm-up and run, sampled): ${bytes.all.toFixed(0)}; most by`);
      for (const [label, perRequest] of bytes.top) console.log(`${perRequest.toFixed(0).padStart(7)}  ${label}`);
      console.log(`\nprofile: ${profilePath} (open in Chrome DevTools, Memory tab)`);
    } else {
      console.log(`\ngarbage collections (warm-up and run):`);
      for (const line of collectionsPerRequest(recorded as GcProfile, requests)) console.log(line);
    }
  } finally {
    one.close();
  }
}

await main();
