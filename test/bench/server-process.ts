// Entry of a server process: one server of one variant, alone in its process (and, with taskset,
// alone on its CPU). The spec comes as JSON in FLUXGUARD_BENCH_SERVER; the port goes to stdout
// as `port=<n>`, the only line this process prints there. With FLUXGUARD_BENCH_CPU_PROFILE,
// FLUXGUARD_BENCH_HEAP_PROFILE or FLUXGUARD_BENCH_GC_PROFILE set (`pnpm bench:profile`), the
// process records a CPU profile, a sampled allocation profile or every garbage collection, and
// writes it to that path on SIGTERM.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { GCProfiler } from 'node:v8';
import { startServer, type ServerSpec } from './servers.js';

// The bench holds this process's stdin open: when the bench is gone (killed included), stdin
// ends, and a server left behind would skew whatever runs on its CPU next.
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));

const raw = process.env.FLUXGUARD_BENCH_SERVER;
if (raw === undefined) throw new Error('server-process.js is started by the bench (FLUXGUARD_BENCH_SERVER is not set)');
const cpuProfile = process.env.FLUXGUARD_BENCH_CPU_PROFILE;
const heapProfile = process.env.FLUXGUARD_BENCH_HEAP_PROFILE;
const gcProfile = process.env.FLUXGUARD_BENCH_GC_PROFILE;
if (cpuProfile !== undefined && cpuProfile !== '') await recordCpuProfile(cpuProfile);
else if (heapProfile !== undefined && heapProfile !== '') await recordAllocations(heapProfile);
else if (gcProfile !== undefined && gcProfile !== '') recordCollections(gcProfile);
const port = await startServer(JSON.parse(raw) as ServerSpec);
process.stdout.write(`port=${String(port)}\n`);

type Post = (method: string, params?: object) => Promise<unknown>;

function inspectorSession(): Post {
  const session = new Session();
  session.connect();
  return (method, params) =>
    new Promise((resolve, reject) => {
      session.post(method, params, (error, result) => {
        if (error === null) resolve(result);
        else reject(error);
      });
    });
}

/** On SIGTERM: `stop()`'s result written to `path` as JSON, then exit. */
function writeOnTerm(path: string, stop: () => Promise<unknown>): void {
  process.once('SIGTERM', () => {
    void stop().then(
      (result) => {
        writeFileSync(path, JSON.stringify(result));
        process.exit(0);
      },
      () => process.exit(1),
    );
  });
}

/** Starts V8's CPU profiler now; on SIGTERM, writes the profile to `path` and exits. */
async function recordCpuProfile(path: string): Promise<void> {
  const post = inspectorSession();
  await post('Profiler.enable');
  await post('Profiler.start');
  writeOnTerm(path, async () => ((await post('Profiler.stop')) as { profile: unknown }).profile);
}

/**
 * Starts V8's sampling heap profiler now, counting the objects the collector has freed too (by
 * default it reports only those still alive: memory held, not garbage made); on SIGTERM, writes
 * the profile to `path` and exits.
 */
async function recordAllocations(path: string): Promise<void> {
  const post = inspectorSession();
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', {
    samplingInterval: 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  writeOnTerm(path, async () => ((await post('HeapProfiler.stopSampling')) as { profile: unknown }).profile);
}

/** Records every garbage collection from now (`v8.GCProfiler`); on SIGTERM, writes them to `path`. */
function recordCollections(path: string): void {
  const profiler = new GCProfiler();
  profiler.start();
  writeOnTerm(path, () => Promise.resolve(profiler.stop()));
}
