// Entry of the Node load generator process (started by node-load.ts, pinned to the load CPU):
// a closed loop of calls for a fixed time, then one line of JSON on stdout. It exists for what
// wrk and h2load cannot send: a new token per gRPC call, and client certificates.
import { readFileSync } from 'node:fs';
import type { LoadRequest } from './load.js';
import { openTarget, type Outcome } from './node-target.js';

export interface NodeLoadReport {
  readonly requests: number;
  readonly ok: number;
  readonly refused: number;
  readonly other: number;
  readonly seconds: number;
  /** CPU of this process over the measured window only (start-up and token loading excluded). */
  readonly cpuSeconds: number;
}

const raw = process.env.FLUXGUARD_BENCH_LOAD;
if (raw === undefined)
  throw new Error('node-load-process.js is started by the bench (FLUXGUARD_BENCH_LOAD is not set)');
const request = JSON.parse(raw) as LoadRequest;
const { shape, tokens } = request;

const h2 = request.transport === 'grpc' || request.transport === 'grpc-tls';
const connections = h2 ? shape.h2Connections : shape.connections;
const inFlight = h2 ? shape.h2Connections * shape.h2Streams : shape.connections;
const target = openTarget(request.transport, request.port, connections, request.clientTls);

let authorization: () => string | undefined;
switch (tokens.kind) {
  case 'none':
    authorization = () => undefined;
    break;
  case 'repeated': {
    const header = `Bearer ${tokens.token}`;
    authorization = () => header;
    break;
  }
  case 'pool': {
    const pool = readFileSync(tokens.file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((t) => `Bearer ${t}`);
    let next = tokens.start % pool.length;
    authorization = () => {
      const header = pool[next];
      next = (next + 1) % pool.length;
      return header;
    };
    break;
  }
  case 'made-up-api-keys':
    throw new Error('the Node client sends no API keys: the flood of made-up keys runs on wrk');
}

const counts: Record<Outcome, number> = { ok: 0, refused: 0, other: 0 };
const cpuBefore = process.cpuUsage();
const started = process.hrtime.bigint();
const deadline = started + BigInt(Math.round(request.seconds * 1e9));
const worker = async (): Promise<void> => {
  while (process.hrtime.bigint() < deadline) counts[await target.send(authorization())]++;
};
await Promise.all(Array.from({ length: inFlight }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const cpu = process.cpuUsage(cpuBefore);
target.close();

const report: NodeLoadReport = {
  requests: counts.ok + counts.refused + counts.other,
  ...counts,
  seconds,
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
};
process.stdout.write(`${JSON.stringify(report)}\n`);
