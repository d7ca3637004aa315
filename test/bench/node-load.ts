import { fileURLToPath } from 'node:url';
import type { Generator, LoadRequest, LoadResult } from './load.js';
import type { NodeLoadReport } from './node-load-process.js';
import { runToEnd } from './processes.js';

const ENTRY = fileURLToPath(new URL('./node-load-process.js', import.meta.url));

/**
 * Load from a separate Node process on the load CPU (node:http2 streams over a few connections
 * for gRPC, keep-alive node:https for HTTPS). Its CPU share is its own `process.cpuUsage()`
 * over the measured window.
 */
export function nodeGenerator(loadCpu: readonly string[]): Generator {
  return async (request: LoadRequest): Promise<LoadResult> => {
    const run = await runToEnd(loadCpu, process.execPath, [ENTRY], {
      ...process.env,
      FLUXGUARD_BENCH_LOAD: JSON.stringify(request),
    });
    const line = run.stdout.trim().split('\n').pop() ?? '';
    if (run.code !== 0 || !line.startsWith('{')) {
      throw new Error(
        `the Node load client failed (exit ${String(run.code)}): ${run.stderr.trim() || run.stdout.trim()}`,
      );
    }
    const report = JSON.parse(line) as NodeLoadReport;
    return {
      requests: report.requests,
      ok: report.ok,
      refused: report.refused,
      other: report.other,
      seconds: report.seconds,
      generatorCpu: report.cpuSeconds / report.seconds,
    };
  };
}
