// Test support: a real redis-server on a free 127.0.0.1 port. A test that needs Redis fails
// (never skips) when redis-server cannot start: a mocked Redis would not show how ioredis and
// the Lua scripts behave when the server stalls or dies.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

export interface RedisServer {
  readonly proc: ChildProcess;
  readonly port: number;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => {
        resolve(port);
      });
    });
  });
}

/** Starts redis-server on `port` (default: a free one) and resolves once it answers PING. */
export async function startRedis(port?: number): Promise<RedisServer> {
  const listenOn = port ?? (await freePort());
  const proc = spawn(
    'redis-server',
    ['--port', String(listenOn), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  const spawnError = new Promise<never>((_, reject) => {
    proc.once('error', (err) => {
      reject(new Error(`cannot start redis-server (is it installed and on PATH?): ${err.message}`));
    });
  });
  const ready = (async () => {
    for (let i = 0; i < 100; i++) {
      const probe = new Redis({
        port: listenOn,
        host: '127.0.0.1',
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        await probe.ping();
        return;
      } catch {
        // not yet listening
      } finally {
        probe.disconnect();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not become ready on port ${String(listenOn)}`);
  })();
  try {
    await Promise.race([ready, spawnError]);
  } catch (error) {
    proc.kill('SIGKILL');
    throw error;
  }
  return { proc, port: listenOn };
}

/** Kills the server (SIGKILL: no clean shutdown, as a crash) and waits until it has exited. */
export async function stopRedis(server: RedisServer): Promise<void> {
  if (server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  const exited = new Promise((r) => server.proc.once('exit', r));
  server.proc.kill('SIGKILL');
  await exited;
}
