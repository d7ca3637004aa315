import { spawnSync } from 'node:child_process';

/**
 * The outside programs the bench drives. On a fresh machine the bench installs what is missing
 * when it can (apt-get as root or through password-less sudo, or Homebrew), as
 * `scripts/ensure-tools.mjs` does for the tests; otherwise it says what to install, and the
 * scenarios that need the program are reported as not run (and the run exits non-zero).
 */
export const TOOLS = {
  wrk: { apt: 'wrk', brew: 'wrk', why: 'HTTP/1.1 load' },
  h2load: { apt: 'nghttp2-client', brew: 'nghttp2', why: 'gRPC (HTTP/2) load' },
  // Pins the servers and the load to different CPUs; without it both share all CPUs.
  taskset: { apt: 'util-linux', brew: undefined, why: 'CPU pinning' },
  // Counts a server's instructions per request (`pnpm bench:instructions`); Linux only.
  valgrind: { apt: 'valgrind', brew: undefined, why: 'instruction counts' },
  callgrind_control: { apt: 'valgrind', brew: undefined, why: 'instruction counts' },
  callgrind_annotate: { apt: 'valgrind', brew: undefined, why: 'instruction counts' },
} as const;

export type Tool = keyof typeof TOOLS;
export type ToolPaths = Readonly<Partial<Record<Tool, string>>>;

function locate(command: string): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path !== '' ? path : undefined;
}

function run(command: string, args: readonly string[]): boolean {
  return (
    spawnSync(command, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
      .status === 0
  );
}

function privilege(): 'root' | 'sudo' | undefined {
  if (typeof process.getuid === 'function' && process.getuid() === 0) return 'root';
  if (locate('sudo') === undefined) return undefined;
  return spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0 ? 'sudo' : undefined;
}

function tryInstall(missing: readonly Tool[]): void {
  const as = privilege();
  if (locate('apt-get') !== undefined && as !== undefined) {
    const packages = [...new Set(missing.map((t) => TOOLS[t].apt))];
    console.log(`bench: installing ${packages.join(' ')} with apt-get`);
    const aptGet = (args: readonly string[]): boolean =>
      as === 'root' ? run('apt-get', args) : run('sudo', ['-n', 'apt-get', ...args]);
    if (aptGet(['update', '-qq'])) aptGet(['install', '-y', '-qq', ...packages]);
  } else if (locate('brew') !== undefined) {
    const packages = missing.flatMap((t) => TOOLS[t].brew ?? []);
    if (packages.length > 0) {
      console.log(`bench: installing ${packages.join(' ')} with brew`);
      run('brew', ['install', ...packages]);
    }
  }
}

/** Finds the tools the selected groups need, installing the missing ones when the machine allows it. */
export function ensureTools(wanted: readonly Tool[]): ToolPaths {
  const missing = wanted.filter((t) => locate(t) === undefined);
  if (missing.length > 0) tryInstall(missing);
  const paths: Partial<Record<Tool, string>> = {};
  for (const tool of wanted) {
    const path = locate(tool);
    if (path !== undefined) paths[tool] = path;
    else {
      console.error(
        `bench: ${tool} (${TOOLS[tool].why}) is not installed and could not be installed here; ` +
          `install it (Debian/Ubuntu: sudo apt-get install ${TOOLS[tool].apt}) — its scenarios will be reported as not run`,
      );
    }
  }
  return paths;
}
