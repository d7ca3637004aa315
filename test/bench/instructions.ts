// `pnpm bench:instructions <transport> <variant[,variant…]> <tokens> [seconds] [--other <checkout>] [--functions]`:
// the machine instructions each server's main thread executes per request, counted by
// valgrind's callgrind. A count does not drift with the machine's speed or with what else runs
// on it, so two builds or two variants can be told apart by a percent where the CPU time of a
// shared VM drifts by ten; `--functions` names where the instructions go, exactly, where V8's
// sampling profiler overstates small native calls several times. It is not a throughput: it
// leaves out the kernel's share (the sockets) and what a cache miss costs. See the bench README,
// "Counting instructions".
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dumpTotal, instructionsByFunction, newestDump } from './callgrind.js';
import { prepareScenario, variantOf } from './one-scenario.js';
import { otherBuildEntry, startServerProcess } from './server-handle.js';
import type { Variant } from './servers.js';
import { formatCount, table } from './stats.js';
import { ensureTools } from './tools.js';

const USAGE =
  'pnpm bench:instructions <transport> <variant[,variant…]> <tokens> [seconds per run, default 5] [--other <checkout>] [--functions]';
// Under valgrind Node starts in tens of seconds.
const START_TIMEOUT_MS = 300_000;
// V8 keeps optimizing a server's code for about its first 50 000 requests (node --trace-opt):
// counted before then, the compiler's work would be most of a request's.
const WARM_UP_REQUESTS = 60_000;
const RUNS = 6;
const TOP_FUNCTIONS = 30;

/** One server to count: a variant of this build or of the other checkout's. */
interface Subject {
  readonly label: string;
  readonly variant: Variant;
  readonly entry: string | undefined;
}

interface Count {
  readonly subject: Subject;
  /** Instructions per request of each run, main thread. */
  readonly perRequest: readonly number[];
  /**
   * Instructions per request of every thread over all the runs together: the main thread's, and
   * the helpers' (optimizing compiler, garbage collector), whose work comes in bursts.
   */
  readonly allThreads: number;
  /** The functions of the run with the fewest instructions per request, per request. */
  readonly functions: Map<string, number> | undefined;
}

function parseArgs(argv: readonly string[]) {
  const args = [...argv];
  const flag = (name: string): boolean => {
    const at = args.indexOf(name);
    if (at !== -1) args.splice(at, 1);
    return at !== -1;
  };
  const functions = flag('--functions');
  let other: string | undefined;
  const at = args.indexOf('--other');
  if (at !== -1) {
    other = args[at + 1];
    if (other === undefined) throw new Error(`usage: ${USAGE}\n  --other needs a checkout`);
    args.splice(at, 2);
  }
  const [transport, variantList, tokens, secondsArg] = args;
  const seconds = secondsArg === undefined ? 5 : Number(secondsArg);
  if (!Number.isSafeInteger(seconds) || seconds < 1) {
    throw new Error(`usage: ${USAGE}\n  seconds must be a positive integer`);
  }
  const variants = (variantList ?? '').split(',').filter((v) => v !== '');
  if (variants.length === 0) throw new Error(`usage: ${USAGE}\n  name at least one variant`);
  return { transport, variants, tokens, seconds, other, functions };
}

function callgrindControl(path: string, pid: number, command: string): void {
  const done = spawnSync(path, [command, String(pid)], { encoding: 'utf8' });
  if (done.status !== 0) throw new Error(`callgrind_control ${command} failed: ${done.stderr.trim()}`);
}

const fewest = (values: readonly number[]): number => Math.min(...values);

// C++ names with their whole signature would make every row of a table as wide as the longest.
const shorten = (name: string): string => (name.length > 110 ? `${name.slice(0, 109)}…` : name);

async function main(): Promise<void> {
  const { transport, variants, tokens, seconds, other, functions } = parseArgs(process.argv.slice(2));
  const otherEntry = other === undefined ? undefined : otherBuildEntry(other);
  const tools = ensureTools(['valgrind', 'callgrind_control', 'callgrind_annotate']);
  const { valgrind, callgrind_control: control, callgrind_annotate: annotate } = tools;
  if (valgrind === undefined || control === undefined || annotate === undefined) {
    throw new Error('valgrind (with callgrind_control and callgrind_annotate) is needed to count instructions');
  }
  // The first variant is checked with the scenario, the others against its transport.
  const one = await prepareScenario(transport, variants[0], tokens, USAGE, { nodeClient: true });
  const dumps = mkdtempSync(join(tmpdir(), 'fluxguard-callgrind-'));
  const counts: Count[] = [];
  const { scenario, config } = one;
  try {
    const subjects: Subject[] = variants.flatMap((name) => {
      const variant = variantOf(scenario.transport, name, USAGE);
      return [
        { label: otherEntry === undefined ? variant : `${variant} (this)`, variant, entry: undefined },
        ...(otherEntry === undefined ? [] : [{ label: `${variant} (other)`, variant, entry: otherEntry }]),
      ];
    });
    console.log(
      `# ${scenario.transport}, ${scenario.tokens} tokens, Node client (${String(config.connections)} connections, or ` +
        `${String(config.h2Connections)} × ${String(config.h2Streams)} HTTP/2 streams), server under callgrind: ` +
        `${String(WARM_UP_REQUESTS)} requests of warm-up, then ${String(RUNS)} counted runs of ${String(seconds)} s`,
    );
    for (const subject of subjects) {
      const server = await startServerProcess(
        { transport: scenario.transport, variant: subject.variant, jwks: one.jwks, tls: one.pki.server },
        one.where.server,
        {
          ...(subject.entry === undefined ? {} : { entry: subject.entry }),
          wrapper: [
            valgrind,
            '--tool=callgrind',
            // Instrumented from the first counted run on: start-up and warm-up run faster.
            '--instr-atstart=no',
            // V8 writes machine code into memory it reuses: valgrind must see the new code.
            '--smc-check=all-non-file',
            '--separate-threads=yes',
            `--callgrind-out-file=${join(dumps, 'callgrind.%p')}`,
          ],
          // The perf map names V8's machine code for --functions; V8's own log, which the flag
          // also starts, goes with the dumps instead of into the working directory.
          nodeArgs: functions
            ? ['--perf-basic-prof', '--no-logfile-per-isolate', `--logfile=${join(dumps, 'v8.log')}`]
            : [],
          startTimeoutMs: START_TIMEOUT_MS,
        },
      );
      try {
        let warm = 0;
        while (warm < WARM_UP_REQUESTS) warm += (await one.run(server, 10)).result.requests;
        callgrindControl(control, server.pid, '--instr=on');
        await one.run(server, 1);
        const perRequest: number[] = [];
        let best: { perRequest: number; file: string; requests: number } | undefined;
        let allThreads = 0;
        let requests = 0;
        for (let run = 0; run < RUNS; run++) {
          callgrindControl(control, server.pid, '--zero');
          const { result } = await one.run(server, seconds);
          callgrindControl(control, server.pid, '--dump');
          if (result.other > 0) throw new Error(`${subject.label}: ${String(result.other)} calls failed`);
          const dump = newestDump(dumps, server.pid);
          const count = dumpTotal(dump.main) / result.requests;
          perRequest.push(count);
          allThreads += dump.all.reduce((sum, file) => sum + dumpTotal(file), 0);
          requests += result.requests;
          if (best === undefined || count < best.perRequest) {
            best = { perRequest: count, file: dump.main, requests: result.requests };
          }
        }
        const steadiest = best;
        if (steadiest === undefined) throw new Error(`${subject.label}: no run was counted`);
        const byFunction = functions ? instructionsByFunction(annotate, steadiest.file, server.pid) : undefined;
        counts.push({
          subject,
          perRequest,
          allThreads: allThreads / requests,
          functions:
            byFunction === undefined
              ? undefined
              : new Map([...byFunction].map(([name, n]) => [name, n / steadiest.requests])),
        });
        console.log(`${subject.label}: ${perRequest.map((n) => formatCount(Math.round(n))).join(' / ')} per request`);
      } finally {
        await server.stop();
        rmSync(`/tmp/perf-${String(server.pid)}.map`, { force: true });
      }
    }
    report(counts);
  } finally {
    rmSync(dumps, { recursive: true, force: true });
    one.close();
  }
}

/**
 * The fewest instructions per request of each server over its runs: a garbage collection or a
 * late optimization only ever adds to a run, so the fewest is the steady state. Then, with
 * `--functions`, where they go, and what the second server does more than the first.
 */
function report(counts: readonly Count[]): void {
  const [first] = counts;
  if (first === undefined) return;
  const reference = fewest(first.perRequest);
  console.log(
    `\n${table(
      [
        'server',
        'instructions per request (fewest of the runs)',
        `÷ ${first.subject.label}`,
        'spread of the runs',
        'all threads, all runs',
        `÷ ${first.subject.label}`,
      ],
      counts.map((c) => {
        const least = fewest(c.perRequest);
        return [
          c.subject.label,
          formatCount(Math.round(least)),
          (reference / least).toFixed(3),
          `${(((Math.max(...c.perRequest) - least) / least) * 100).toFixed(0)} %`,
          formatCount(Math.round(c.allThreads)),
          (first.allThreads / c.allThreads).toFixed(3),
        ];
      }),
    )}`,
  );
  for (const c of counts) {
    if (c.functions === undefined) continue;
    console.log(
      `\n## ${c.subject.label}: the ${String(TOP_FUNCTIONS)} functions with the most instructions per request`,
    );
    const top = [...c.functions].sort((a, b) => b[1] - a[1]).slice(0, TOP_FUNCTIONS);
    console.log(
      table(
        ['function', 'instructions'],
        top.map(([name, n]) => [shorten(name), formatCount(Math.round(n))]),
      ),
    );
  }
  const second = counts[1];
  if (first.functions !== undefined && second?.functions !== undefined) {
    const names = new Set([...first.functions.keys(), ...second.functions.keys()]);
    const more = [...names]
      .map((name): [string, number] => [name, (second.functions?.get(name) ?? 0) - (first.functions?.get(name) ?? 0)])
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP_FUNCTIONS);
    console.log(`\n## what ${second.subject.label} does more than ${first.subject.label}, per request`);
    console.log(
      table(
        ['function', 'instructions'],
        more.map(([name, n]) => [shorten(name), formatCount(Math.round(n))]),
      ),
    );
  }
}

await main();
