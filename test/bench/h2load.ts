import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GRPC_METHOD } from './fixtures.js';
import { ITEM_NAME, ITEM_REQUEST, grpcFrame, serializeJson } from './grpc-service.js';
import type { Generator, LoadRequest, LoadResult } from './load.js';
import { runToEnd } from './processes.js';

/**
 * Bytes of DATA an answer carries when the call is served: the 5-byte prefix and the JSON item.
 * h2load sees gRPC statuses only as trailers, which it does not read; a refusal is a
 * trailers-only answer with no DATA at all, so the DATA bytes count the calls served.
 */
const OK_DATA_BYTES = grpcFrame(serializeJson({ id: ITEM_REQUEST.id, name: ITEM_NAME })).length;

function count(output: string, pattern: RegExp, what: string): number {
  const match = pattern.exec(output);
  if (match?.[1] === undefined) throw new Error(`h2load output has no ${what}:\n${output}`);
  return Number(match[1]);
}

/** gRPC unary load from h2load (one thread, on the load CPU); insecure only (h2load has no client certificates). */
export function h2loadGenerator(h2load: string, loadCpu: readonly string[], scratch: string): Generator {
  const body = join(scratch, 'grpc-request.bin');
  writeFileSync(body, grpcFrame(serializeJson(ITEM_REQUEST)));

  return async (request: LoadRequest): Promise<LoadResult> => {
    if (request.transport !== 'grpc') throw new Error(`h2load cannot load ${request.transport}`);
    const { tokens, shape } = request;
    if (tokens.kind === 'pool' || tokens.kind === 'made-up-api-keys') {
      throw new Error('h2load sends one fixed header set: no token pool, no made-up keys');
    }
    const args = [
      '-t1',
      `-c${String(shape.h2Connections)}`,
      `-m${String(shape.h2Streams)}`,
      `-D${String(request.seconds)}`,
      '-d',
      body,
      '-H',
      'content-type: application/grpc',
      '-H',
      'te: trailers',
    ];
    if (tokens.kind === 'repeated') args.push('-H', `authorization: Bearer ${tokens.token}`);
    args.push(`http://127.0.0.1:${String(request.port)}${GRPC_METHOD}`);

    const run = await runToEnd(loadCpu, h2load, args);
    const out = run.stdout;
    if (run.code !== 0) throw new Error(`h2load failed (exit ${String(run.code)}): ${run.stderr.trim() || out.trim()}`);
    const seconds = count(out, /^finished in ([\d.]+)s/m, 'duration');
    const succeeded = count(out, /^requests: .* (\d+) succeeded/m, 'succeeded count');
    const failed = count(out, /^requests: .* (\d+) failed/m, 'failed count');
    const dataBytes = count(out, /^traffic: .*\((\d+)\) data/m, 'data bytes');
    const ok = Math.min(succeeded, Math.round(dataBytes / OK_DATA_BYTES));
    return {
      // h2load's "failed" holds non-2xx answers, stream errors and timeouts alike.
      requests: succeeded + failed,
      ok,
      refused: succeeded - ok,
      other: failed,
      seconds,
      generatorCpu: run.cpuSeconds === undefined ? undefined : run.cpuSeconds / run.wallSeconds,
    };
  };
}
