import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * Where the servers and the load generators run. With taskset and two CPUs or more, the server
 * under test gets CPU 0 to itself and every generator runs on CPU 1, so that a generator never
 * steals the server's time and its own CPU share says whether it was the bottleneck.
 */
export interface Placement {
  readonly server: readonly string[];
  readonly load: readonly string[];
  readonly description: string;
}

export function placement(taskset: string | undefined): Placement {
  if (taskset !== undefined && availableParallelism() >= 2) {
    return {
      server: [taskset, '-c', '0'],
      load: [taskset, '-c', '1'],
      description: 'servers pinned to CPU 0, load generators to CPU 1 (taskset)',
    };
  }
  const why = taskset === undefined ? 'taskset is missing' : 'fewer than 2 CPUs';
  return { server: [], load: [], description: `NOT pinned (${why}): servers and load share the CPUs` };
}

/** `prefix` (taskset and its CPU) in front of a command. */
export function pinned(prefix: readonly string[], command: string, args: readonly string[], options: SpawnOptions) {
  const [head = command, ...rest] = [...prefix, command, ...args];
  return spawn(head, rest, options);
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const value = Number(out.stdout.trim());
    ticksPerSecond = out.status === 0 && value > 0 ? value : 100;
  }
  return ticksPerSecond;
}

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces): field 3 is [0]. */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined; // not Linux, or the process is gone
  }
}

/** CPU seconds (user + system) a live process has used so far. */
export function processCpuSeconds(pid: number): number | undefined {
  const f = statFields(pid);
  if (f === undefined) return undefined;
  return (Number(f[11]) + Number(f[12])) / clockTicks();
}

/**
 * CPU seconds of this process's children that have ended and been reaped (cutime + cstime).
 * Generators run one at a time and the servers live until the end of their group, so the
 * difference across one generator run is that generator's CPU, to its last tick.
 */
export function reapedChildrenCpuSeconds(): number | undefined {
  const f = statFields('self');
  if (f === undefined) return undefined;
  return (Number(f[13]) + Number(f[14])) / clockTicks();
}

/** Resident memory of a live process: now and its peak, in bytes. */
export function residentMemory(pid: number): { rss: number; peak: number } | undefined {
  try {
    const status = readFileSync(`/proc/${String(pid)}/status`, 'utf8');
    const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rss: kb('VmRSS') * 1024, peak: kb('VmHWM') * 1024 };
  } catch {
    return undefined;
  }
}

export interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly wallSeconds: number;
  /** CPU the process used, in seconds, or undefined where /proc is not available. */
  readonly cpuSeconds: number | undefined;
}

/** Runs a generator to its end on the load CPU, with its output and CPU time. */
export async function runToEnd(
  prefix: readonly string[],
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Finished> {
  const cpuBefore = reapedChildrenCpuSeconds();
  const started = process.hrtime.bigint();
  const child: ChildProcess = pinned(prefix, command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuAfter = reapedChildrenCpuSeconds();
  const cpuSeconds = cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore;
  return { code, stdout, stderr, wallSeconds, cpuSeconds };
}
