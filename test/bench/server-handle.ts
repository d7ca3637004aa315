import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pinned, processCpuSeconds, residentMemory } from './processes.js';
import type { ServerSpec } from './servers.js';

const ENTRY = fileURLToPath(new URL('./server-process.js', import.meta.url));
const START_TIMEOUT_MS = 30_000;

/**
 * The `server-process.js` of another checkout (`--other`, `bench:compare`), which must have
 * been built there.
 */
export function otherBuildEntry(checkout: string): string {
  const entry = join(resolve(checkout), 'test', 'dist', 'bench', 'server-process.js');
  if (!existsSync(entry)) {
    throw new Error(`${entry} does not exist: build that checkout first (pnpm build && pnpm exec tsc -b test)`);
  }
  return entry;
}

/** How {@link startServerProcess} starts the server, beyond its spec and CPU. */
export interface ServerProcessOptions {
  /** Added to the process's environment (`FLUXGUARD_BENCH_CPU_PROFILE` for `pnpm bench:profile`). */
  readonly env?: Readonly<Record<string, string>>;
  /** Another build's `server-process.js` (`pnpm bench:compare`); this one's by default. */
  readonly entry?: string;
  /** A program and its arguments that run Node (valgrind for `pnpm bench:instructions`). */
  readonly wrapper?: readonly string[];
  /** Node's own flags, before the entry. */
  readonly nodeArgs?: readonly string[];
  /** How long the server may take to listen (ms): a wrapper such as valgrind starts slowly. */
  readonly startTimeoutMs?: number;
}

export interface RunningServer {
  readonly spec: ServerSpec;
  readonly port: number;
  readonly pid: number;
  /** CPU seconds the server has used so far (undefined without /proc). */
  cpuSeconds(): number | undefined;
  memory(): ReturnType<typeof residentMemory>;
  stop(): Promise<void>;
}

function waitForPort(child: ChildProcess, what: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      reject(new Error(`${what} printed no port within ${String(timeoutMs / 1000)} s`));
    }, timeoutMs);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${String(code)}) before it listened`));
    };
    child.once('exit', onExit);
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const match = /^port=(\d+)$/m.exec(out);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(Number(match[1]));
      }
    });
  });
}

/**
 * Starts one server in its own process on the server CPU; resolves once it listens.
 *
 * @example
 * ```ts
 * const server = await startServerProcess(spec, where.server, { env: { FLUXGUARD_BENCH_CPU_PROFILE: path } });
 * ```
 */
export async function startServerProcess(
  spec: ServerSpec,
  serverCpu: readonly string[],
  options: ServerProcessOptions = {},
): Promise<RunningServer> {
  const { env = {}, entry = ENTRY, wrapper = [], nodeArgs = [], startTimeoutMs = START_TIMEOUT_MS } = options;
  const what = `the ${spec.variant} ${spec.transport} server`;
  // stdin stays open for the server's life: it ends when the bench does, however it ends.
  const child = pinned([...serverCpu, ...wrapper], process.execPath, [...nodeArgs, entry], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env, FLUXGUARD_BENCH_SERVER: JSON.stringify(spec) },
  });
  const exited = once(child, 'exit');
  let port: number;
  try {
    port = await waitForPort(child, what, startTimeoutMs);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${what} has no pid`);
  // A server that dies mid-run is seen by the generator as refused connections: a failed variant.
  return {
    spec,
    port,
    pid,
    cpuSeconds: () => processCpuSeconds(pid),
    memory: () => residentMemory(pid),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    },
  };
}
