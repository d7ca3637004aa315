import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { ServerPorts, ServerWorkerData } from './servers.js';
import { percentile } from './stats.js';

/** Sends request number `index` and settles when its whole response has arrived. */
export type Send = (index: number) => Promise<void>;

export interface RoundResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
}

/**
 * A closed-loop load generator: `concurrency` virtual clients, each sending its next request
 * as soon as the previous one is answered, until `count` requests were sent. Bounded by
 * count, not by time, so that both variants of a scenario do exactly the same work.
 */
export async function runRound(count: number, concurrency: number, send: Send): Promise<RoundResult> {
  const latencies = new Float64Array(count);
  let next = 0;
  let errors = 0;
  let firstError: unknown;
  const client = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const start = process.hrtime.bigint();
      try {
        await send(i);
      } catch (err) {
        errors++;
        firstError ??= err;
      }
      latencies[i] = Number(process.hrtime.bigint() - start) / 1e6;
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, client));
  const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
  // More than a stray reset means the variant is broken (a 401 on every request, say): its
  // numbers would measure the failure path, so stop rather than print them.
  if (errors > Math.max(1, count / 100)) {
    throw new Error(`${errors} of ${count} requests failed; first error: ${String(firstError)}`, { cause: firstError });
  }
  latencies.sort();
  return {
    requestsPerSecond: count / elapsedS,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    errors,
  };
}

export interface StartedWorker {
  readonly ports: ServerPorts;
  stop(): Promise<void>;
}

/** Starts the bare and guarded servers of one kind on a worker thread. */
export async function startServerWorker(data: ServerWorkerData): Promise<StartedWorker> {
  const worker = new Worker(new URL('./server-worker.js', import.meta.url), { workerData: data });
  const failed = once(worker, 'error').then(([err]: unknown[]) => {
    throw err instanceof Error ? err : new Error(String(err));
  });
  const [ports] = (await Promise.race([once(worker, 'message'), failed])) as [ServerPorts];
  failed.catch(() => undefined);
  return {
    ports,
    stop: async () => {
      await worker.terminate();
    },
  };
}
