// Entry of a server process: one server of one variant, alone in its process (and, with taskset,
// alone on its CPU). The spec comes as JSON in FLUXGUARD_BENCH_SERVER; the port goes to stdout
// as `port=<n>`, the only line this process prints there. With FLUXGUARD_BENCH_CPU_PROFILE set
// (`pnpm bench:profile`), the process records a CPU profile and writes it there on SIGTERM.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { startServer, type ServerSpec } from './servers.js';

// The bench holds this process's stdin open: when the bench is gone (killed included), stdin
// ends, and a server left behind would skew whatever runs on its CPU next.
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));

const raw = process.env.FLUXGUARD_BENCH_SERVER;
if (raw === undefined) throw new Error('server-process.js is started by the bench (FLUXGUARD_BENCH_SERVER is not set)');
const profilePath = process.env.FLUXGUARD_BENCH_CPU_PROFILE;
if (profilePath !== undefined && profilePath !== '') await recordCpuProfile(profilePath);
const port = await startServer(JSON.parse(raw) as ServerSpec);
process.stdout.write(`port=${String(port)}\n`);

/** Starts V8's CPU profiler now; on SIGTERM, stops it, writes the profile to `path` and exits. */
async function recordCpuProfile(path: string): Promise<void> {
  const session = new Session();
  session.connect();
  const post = (method: string): Promise<unknown> =>
    new Promise((resolve, reject) => {
      session.post(method, (error, result) => {
        if (error === null) resolve(result);
        else reject(error);
      });
    });
  await post('Profiler.enable');
  await post('Profiler.start');
  process.once('SIGTERM', () => {
    void post('Profiler.stop').then(
      (result) => {
        writeFileSync(path, JSON.stringify((result as { profile: unknown }).profile));
        process.exit(0);
      },
      () => process.exit(1),
    );
  });
}
