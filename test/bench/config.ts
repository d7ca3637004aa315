/**
 * Knobs of `pnpm bench`, read from the environment once. The defaults are the published
 * measurement (4 rounds of 10 s); lower them while developing.
 */

function positiveInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer (got ${JSON.stringify(raw)})`);
  }
  return value;
}

/** The groups, in the order they run. The first four are servers under outside load. */
export const GROUPS = ['http', 'https', 'grpc', 'grpc-tls', 'memory', 'micro', 'ratelimit-memory'] as const;
export type Group = (typeof GROUPS)[number];

function groups(): readonly Group[] {
  const raw = process.env.FLUXGUARD_BENCH_ONLY;
  if (raw === undefined || raw.trim() === '') return GROUPS;
  const wanted = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const name of wanted) {
    if (!(GROUPS as readonly string[]).includes(name)) {
      throw new Error(`FLUXGUARD_BENCH_ONLY: unknown group "${name}" (known: ${GROUPS.join(', ')})`);
    }
  }
  return GROUPS.filter((g) => wanted.includes(g));
}

// Knobs of the in-process client this bench had before: refused rather than silently ignored.
const RETIRED = ['FLUXGUARD_BENCH_REQUESTS', 'FLUXGUARD_BENCH_WARMUP', 'FLUXGUARD_BENCH_CONCURRENCY'];

export interface BenchConfig {
  /** Measured rounds per variant (and per micro-benchmark); the median is reported. */
  readonly rounds: number;
  /** Length of one measured load run. */
  readonly seconds: number;
  /** Load on each variant before its first round of a scenario (JIT, connections, caches), not measured. */
  readonly warmupSeconds: number;
  /** HTTP/1.1 keep-alive connections (wrk, and the Node client for HTTPS). */
  readonly connections: number;
  /** HTTP/2 connections and streams per connection (h2load, and the Node client for gRPC). */
  readonly h2Connections: number;
  readonly h2Streams: number;
  /** Tokens in the pools that "new token" and "forged token" runs cycle through. */
  readonly poolTokens: number;
  /** Clients, each with its own token, that "many clients" runs cycle through. */
  readonly clientTokens: number;
  /** Length of the unique-token run after which the `memory` group reads the server's RSS. */
  readonly memorySeconds: number;
  /** Duration of one round of a micro-benchmark, in milliseconds. */
  readonly microMs: number;
  readonly groups: readonly Group[];
}

export function readConfig(): BenchConfig {
  for (const name of RETIRED) {
    if (process.env[name] !== undefined) {
      throw new Error(`${name} is no longer used: runs last FLUXGUARD_BENCH_SECONDS (see test/bench/README.md)`);
    }
  }
  return Object.freeze({
    rounds: positiveInteger('FLUXGUARD_BENCH_ROUNDS', 4),
    seconds: positiveInteger('FLUXGUARD_BENCH_SECONDS', 10),
    warmupSeconds: positiveInteger('FLUXGUARD_BENCH_WARMUP_SECONDS', 3),
    connections: positiveInteger('FLUXGUARD_BENCH_CONNECTIONS', 50),
    h2Connections: positiveInteger('FLUXGUARD_BENCH_H2_CONNECTIONS', 4),
    h2Streams: positiveInteger('FLUXGUARD_BENCH_H2_STREAMS', 25),
    poolTokens: positiveInteger('FLUXGUARD_BENCH_POOL_TOKENS', 50_000),
    clientTokens: positiveInteger('FLUXGUARD_BENCH_CLIENTS', 1_000),
    memorySeconds: positiveInteger('FLUXGUARD_BENCH_MEMORY_SECONDS', 10),
    microMs: positiveInteger('FLUXGUARD_BENCH_MICRO_MS', 200),
    groups: groups(),
  });
}
