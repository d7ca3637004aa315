// A real redis-server on a free loopback port, for the tests that need one: they fail (never
// skip) when it cannot start, since a mocked Redis would not show how ioredis and the Lua scripts
// behave when the server stalls or dies.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** A real redis-server on a free loopback port, started by the test (which fails, never skips, without one). */
export interface RedisUnderTest {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
  /** Starts the server again on the same port (after `stop`), empty. */
  restart(): Promise<void>;
  /** Stops the process (SIGSTOP): connections stay open and nothing is answered, as in a hang. */
  pause(): void;
  /** Lets a paused process go on (SIGCONT). */
  resume(): void;
}

/** A port on 127.0.0.1 that nothing listened on a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => {
        resolve(typeof address === 'object' && address !== null ? address.port : 0);
      });
    });
  });
}

export async function startRedis(): Promise<RedisUnderTest> {
  const port = await freePort();
  let proc = await spawnRedis(port, []);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop: () => kill(proc),
    restart: async () => {
      await kill(proc);
      proc = await spawnRedis(port, []);
    },
    pause: () => proc.kill('SIGSTOP'),
    resume: () => proc.kill('SIGCONT'),
  };
}

/** A Redis Cluster of three primaries on loopback, made by the test with `redis-cli --cluster create`. */
export interface RedisClusterUnderTest {
  readonly nodes: readonly { readonly host: string; readonly port: number }[];
  stop(): Promise<void>;
}

export async function startRedisCluster(size = 3): Promise<RedisClusterUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), 'fluxguard-redis-cluster-'));
  const ports: number[] = [];
  const procs: ChildProcess[] = [];
  try {
    for (let i = 0; i < size; i++) {
      const port = await freePort();
      ports.push(port);
      procs.push(
        await spawnRedis(port, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--dir',
          dir,
        ]),
      );
    }
    const created = spawnSync(
      'redis-cli',
      ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (created.status !== 0) {
      throw new Error(
        `redis-cli --cluster create failed (is redis-cli installed?): ${created.error?.message ?? created.stdout + created.stderr}`,
      );
    }
    // The slots are assigned; wait until every node agrees the cluster is up.
    for (const port of ports)
      await waitFor(port, async (probe) => (await probe.cluster('INFO')).includes('cluster_state:ok'));
  } catch (error) {
    await Promise.all(procs.map(kill));
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    stop: async () => {
      await Promise.all(procs.map(kill));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function spawnRedis(port: number, extra: readonly string[]): Promise<ChildProcess> {
  const proc: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra],
    { stdio: 'ignore' },
  );
  const spawnError = new Promise<never>((_, reject) => {
    proc.on('error', (err) => {
      reject(new Error(`cannot start redis-server (install it: apt-get install redis-server): ${err.message}`));
    });
  });
  await Promise.race([
    waitFor(port, async (probe) => {
      await probe.ping();
      return true;
    }),
    spawnError,
  ]);
  return proc;
}

async function waitFor(port: number, ready: (probe: Redis) => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const probe = new Redis(`redis://127.0.0.1:${port}`, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      if (await ready(probe)) return;
    } catch {
      // not up yet
    } finally {
      probe.disconnect();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server on port ${port} did not become ready`);
}

function kill(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      resolve();
      return;
    }
    proc.once('exit', () => {
      resolve();
    });
    proc.kill('SIGKILL');
  });
}
