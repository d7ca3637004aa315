// `pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler]`: one server of
// one variant under the scenario's outside generator, with V8's CPU profiler on. Prints the
// server's CPU time per request (robust to other processes taking the machine, unlike req/s) and
// the functions with the most self time per request, and keeps the .cpuprofile for Chrome
// DevTools. For finding where the time goes, not for numbers to publish: the profiler itself
// costs the server time. `--no-profiler` prints the CPU time per request only, without that cost:
// the reading to compare two commits by.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareScenario } from './one-scenario.js';
import { startServerProcess } from './server-handle.js';

const USAGE = 'pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler]';
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

/** Self time per request of the `top` most expensive functions (idle time left out), in µs. */
function selfTimePerRequest(profile: CpuProfile, requests: number, top: number): [string, number][] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const totals = new Map<string, number>();
  profile.samples.forEach((id, index) => {
    const frame = frames.get(id);
    if (frame === undefined || frame.functionName === '(idle)') return;
    // Packages by name, the repository's own files by path; node: internals as they are.
    const where = frame.url
      .replace(/^.*node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?/, '')
      .replace(/^file:\/\/.*?\/(packages|test)\//, '$1/');
    const label = `${frame.functionName || '(anonymous)'} ${where}:${String(frame.lineNumber + 1)}`;
    totals.set(label, (totals.get(label) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  return [...totals]
    .map(([label, us]): [string, number] => [label, us / requests])
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profiling = !args.includes('--no-profiler');
  const [transportArg, variantArg, tokensArg, secondsArg] = args.filter((arg) => arg !== '--no-profiler');
  const seconds = secondsArg === undefined ? 8 : Number(secondsArg);
  if (!Number.isSafeInteger(seconds) || seconds < 1) throw new Error('seconds must be a positive integer');
  const one = await prepareScenario(transportArg, variantArg, tokensArg, USAGE);
  const { variant } = one;
  const { transport, tokens, generator: generatorName } = one.scenario;
  try {
    if (profiling) mkdirSync(PROFILES, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const profilePath = join(PROFILES, `${stamp}-${transport}-${variant}-${tokens}.cpuprofile`);
    const server = await startServerProcess(
      { transport, variant, jwks: one.jwks, tls: one.pki.server },
      one.where.server,
      profiling ? { env: { FLUXGUARD_BENCH_CPU_PROFILE: profilePath } } : {},
    );
    let requests = 0;
    try {
      const warm = await one.run(server, one.config.warmupSeconds);
      const { result: run, cpuPerRequest: cpu } = await one.run(server, seconds);
      requests = warm.result.requests + run.requests;
      console.log(
        `# ${transport} ${variant}, ${tokens} tokens, ${generatorName}, ${one.where.description}${profiling ? ', profiler on' : ''}`,
      );
      console.log(
        `${String(Math.round(run.requests / run.seconds))} req/s; server CPU ${cpu === undefined ? 'unknown' : cpu.toFixed(1)} µs per request` +
          ` (ok ${String(run.ok)}, refused ${String(run.refused)}, errors ${String(run.other)})`,
      );
    } finally {
      await server.stop();
    }
    if (!profiling) return;
    const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile;
    console.log(`\nself time per request (warm-up and run, profiler on), µs:`);
    for (const [label, us] of selfTimePerRequest(profile, requests, 30))
      console.log(`${us.toFixed(1).padStart(7)}  ${label}`);
    console.log(`\nprofile: ${profilePath} (open in Chrome DevTools, Performance tab)`);
  } finally {
    one.close();
  }
}

await main();
