import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDevMaterial } from '@fluxguard/example-artifact-store';

/**
 * The reference servers started as a user starts them (`node examples/<transport>-server/dist/main.js`)
 * with a setting to correct: each stops at once with one line that names the setting, on
 * stderr, and a fatal audit line without a stack trace on stdout.
 */
const MAIN = {
  grpc: fileURLToPath(new URL('../examples/grpc-server/dist/main.js', import.meta.url)),
  http: fileURLToPath(new URL('../examples/http-server/dist/main.js', import.meta.url)),
} as const;

let dir: string;
let devDir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fluxguard-start-up-'));
  devDir = join(dir, 'dev');
  await ensureDevMaterial(devDir);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Exit {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function start(transport: keyof typeof MAIN, env: Record<string, string>): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN[transport]], {
      env: {
        PATH: process.env.PATH ?? '',
        FLUXGUARD_GRPC_PORT: '0',
        FLUXGUARD_HTTP_PORT: '0',
        FLUXGUARD_DEV_DIR: devDir,
        FLUXGUARD_DATA_DIR: join(dir, `data-${transport}`),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

describe.each(['grpc', 'http'] as const)('the %s reference server refuses to start', (transport) => {
  it.each([
    ['a host with a trailing space', { FLUXGUARD_HOST: '127.0.0.1 ' }, /FLUXGUARD_HOST must be an IP address/],
    [
      "a client's certificate as the CA bundle",
      {
        FLUXGUARD_TLS_CERT: join('DEV', 'server.crt'),
        FLUXGUARD_TLS_KEY: join('DEV', 'server.key'),
        FLUXGUARD_TLS_CA: join('DEV', 'client.crt'),
      },
      /certificate 1 in .*client\.crt.* is not a CA certificate/,
    ],
  ])('with %s: one line naming it, exit code 1, no stack trace', async (_label, env, reason) => {
    const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v.replace(/^DEV/, devDir)]));
    const exit = await start(transport, resolved);
    expect(exit.code).toBe(1);
    const lines = exit.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${transport} server failed to start: `));
    expect(lines[0]).toMatch(reason);
    const fatal = exit.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => line.level === 60);
    expect(fatal).toMatchObject({ event: 'server.start_refused' });
    expect(String(fatal?.reason)).toMatch(reason);
    expect(exit.stdout).not.toMatch(/"stack"|\n\s+at /);
  });
});

describe.each(['grpc', 'http'] as const)('the %s reference server that cannot listen', (transport) => {
  it('stops with exit code 1 and one line on stderr; the log keeps the cause', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      const exit = await start(transport, {
        FLUXGUARD_HOST: '127.0.0.1',
        [transport === 'grpc' ? 'FLUXGUARD_GRPC_PORT' : 'FLUXGUARD_HTTP_PORT']: String(port),
      });
      expect(exit.code).toBe(1);
      const lines = exit.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^${transport} server failed to start: \\S`));
      expect(exit.stdout).toContain('"event":"server.start_failed"');
    } finally {
      taken.close();
    }
  });
});

describe('pnpm start', () => {
  it('stops both reference servers when the command that started them is killed', async () => {
    const startScript = fileURLToPath(new URL('../examples/start.mjs', import.meta.url));
    // Stands in for pnpm: starts the runner and is then killed, with no signal passed on.
    const launcher = spawn(
      process.execPath,
      [
        '-e',
        `require('node:child_process').spawn(process.execPath, [${JSON.stringify(startScript)}], { stdio: 'inherit' });` +
          ' setInterval(() => {}, 1000);',
      ],
      {
        env: {
          PATH: process.env.PATH ?? '',
          FLUXGUARD_GRPC_PORT: '0',
          FLUXGUARD_HTTP_PORT: '0',
          FLUXGUARD_DEV_DIR: devDir,
          FLUXGUARD_DATA_DIR: join(dir, 'data-start'),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const serverPids = new Map<string, number>();
    let output = '';
    const listening = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`the servers did not start: ${output.slice(-2000)}`));
      }, 20_000);
      launcher.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        for (const line of output.split('\n')) {
          const match = /^\{.*"pid":(\d+).*"msg":"(grpc|http) server listening"/.exec(line);
          if (match?.[1] !== undefined && match[2] !== undefined) serverPids.set(match[2], Number(match[1]));
        }
        if (serverPids.size === 2) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    try {
      await listening;
      expect([...serverPids.values()].every(alive)).toBe(true);
      launcher.kill('SIGKILL');
      // The runner looks for its parent every 500 ms; the servers then close and exit.
      for (let waited = 0; waited < 10_000 && [...serverPids.values()].some(alive); waited += 100) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect([...serverPids.values()].filter(alive)).toEqual([]);
    } finally {
      launcher.kill('SIGKILL');
      for (const pid of serverPids.values()) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
