/**
 * Knobs of `pnpm bench`, read from the environment once. The defaults keep a full run under
 * about four minutes on a 2-core machine; raise them for steadier numbers.
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

/** The groups of scenarios, in the order they run. */
export const GROUPS = ['http', 'https', 'grpc', 'grpc-tls', 'micro', 'ratelimit-memory'] as const;
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

export interface BenchConfig {
  /**
   * Measured rounds per variant; the median is reported. The default, 6, is one full cycle of
   * the three variants' orders (see `scenario.ts`).
   */
  readonly rounds: number;
  /** Requests per variant per round. */
  readonly requests: number;
  /** Requests per variant before the first round (JIT, connections, caches), not measured. */
  readonly warmup: number;
  /** Requests in flight at once (keep-alive connections for HTTP; streams on one channel for gRPC). */
  readonly concurrency: number;
  /** Duration of one round of a micro-benchmark, in milliseconds. */
  readonly microMs: number;
  readonly groups: readonly Group[];
}

export function readConfig(): BenchConfig {
  return Object.freeze({
    rounds: positiveInteger('FLUXGUARD_BENCH_ROUNDS', 6),
    requests: positiveInteger('FLUXGUARD_BENCH_REQUESTS', 2000),
    warmup: positiveInteger('FLUXGUARD_BENCH_WARMUP', 600),
    concurrency: positiveInteger('FLUXGUARD_BENCH_CONCURRENCY', 16),
    microMs: positiveInteger('FLUXGUARD_BENCH_MICRO_MS', 200),
    groups: groups(),
  });
}
