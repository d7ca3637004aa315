import type { BenchConfig } from './config.js';
import type { TokenMinter } from './fixtures.js';
import { runRound, type RoundResult } from './load.js';
import type { TokenSender } from './clients.js';
import { formatCount, formatMs, formatRatio, median, table } from './stats.js';

/**
 * Which token each request carries:
 * - `cached`: the same valid token on every request, so the guard takes the verified-token
 *   cache path (SHA-256 of the token, LRU hit, expiry re-check) — the steady state of a client;
 * - `cold`: a token never seen before on every request, so every request pays a full ES256
 *   verification — the worst case (many short-lived clients, or a cache too small).
 */
export type TokenMode = 'cached' | 'cold';

/** The variants of a server scenario, in the order their rows are printed. */
export const VARIANTS = ['bare', 'fluxguard', 'fluxguard+ratelimit'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface ServerScenario {
  readonly title: string;
  readonly tokens: TokenMode;
  readonly senders: Readonly<Record<Variant, TokenSender>>;
}

export interface ScenarioSummary {
  readonly title: string;
  /** Median over rounds of each variant's round results. */
  readonly results: Readonly<Record<Variant, RoundResult>>;
  /** Median over rounds of (variant req/s ÷ bare req/s) of the same round. */
  readonly ratios: Readonly<Record<Variant, number>>;
  /** Every round's ratio to bare, in order: their spread shows how noisy the machine was. */
  readonly perRound: Readonly<Record<Variant, readonly number[]>>;
  /**
   * What rate limiting costs: median over rounds of (fluxguard ratio − fluxguard+ratelimit
   * ratio) of the same round. 0.00 means free; 0.05 means five points of bare throughput.
   */
  readonly rateLimitCost: number;
  readonly rateLimitCostPerRound: readonly number[];
}

function medianResult(rounds: readonly RoundResult[]): RoundResult {
  return {
    requestsPerSecond: median(rounds.map((r) => r.requestsPerSecond)),
    p50Ms: median(rounds.map((r) => r.p50Ms)),
    p99Ms: median(rounds.map((r) => r.p99Ms)),
    errors: rounds.reduce((sum, r) => sum + r.errors, 0),
  };
}

/**
 * The order of the variants in round `round`: rotated by one every round, and reversed in every
 * other cycle — `bare, fluxguard, +ratelimit` / `fluxguard, +ratelimit, bare` / `+ratelimit,
 * bare, fluxguard`, then the same three backwards. Over six rounds each variant runs twice in
 * each position and follows each other variant equally often, so that drift of the machine
 * (thermal, other load, GC) falls on all of them alike. With two variants it is AB BA BA AB.
 */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  const n = items.length;
  const rotated = items.map((_, i) => items[(i + round) % n] as T);
  return Math.floor(round / n) % 2 === 0 ? rotated : rotated.reverse();
}

/**
 * Runs the variants in turn (order rotated per round, see {@link roundOrder}) after a warm-up
 * of each. Tokens of a `cold` round are minted before its clock starts.
 */
export async function runServerScenario(
  config: BenchConfig,
  minter: TokenMinter,
  scenario: ServerScenario,
): Promise<ScenarioSummary> {
  const cachedToken = minter.next();
  const tokensFor = (count: number): readonly string[] =>
    scenario.tokens === 'cached' ? Array.from({ length: count }, () => cachedToken) : minter.many(count);
  const round = async (sender: TokenSender, count: number): Promise<RoundResult> => {
    const tokens = tokensFor(count);
    return runRound(count, config.concurrency, (i) => sender(tokens[i] ?? cachedToken));
  };

  for (const variant of VARIANTS) await round(scenario.senders[variant], config.warmup);
  const rounds: Record<Variant, RoundResult[]> = { bare: [], fluxguard: [], 'fluxguard+ratelimit': [] };
  const perRound: Record<Variant, number[]> = { bare: [], fluxguard: [], 'fluxguard+ratelimit': [] };
  const costPerRound: number[] = [];
  for (let r = 0; r < config.rounds; r++) {
    const results = {} as Record<Variant, RoundResult>;
    for (const variant of roundOrder(VARIANTS, r)) {
      results[variant] = await round(scenario.senders[variant], config.requests);
    }
    for (const variant of VARIANTS) {
      rounds[variant].push(results[variant]);
      perRound[variant].push(results[variant].requestsPerSecond / results.bare.requestsPerSecond);
    }
    costPerRound.push(
      (results.fluxguard.requestsPerSecond - results['fluxguard+ratelimit'].requestsPerSecond) /
        results.bare.requestsPerSecond,
    );
  }
  const summary: ScenarioSummary = {
    title: scenario.title,
    results: {
      bare: medianResult(rounds.bare),
      fluxguard: medianResult(rounds.fluxguard),
      'fluxguard+ratelimit': medianResult(rounds['fluxguard+ratelimit']),
    },
    ratios: {
      bare: 1,
      fluxguard: median(perRound.fluxguard),
      'fluxguard+ratelimit': median(perRound['fluxguard+ratelimit']),
    },
    perRound,
    rateLimitCost: median(costPerRound),
    rateLimitCostPerRound: costPerRound,
  };
  printServerScenario(config, summary);
  return summary;
}

/** `0.03`, `-0.01`: a difference of two ratios. */
export function formatDelta(value: number): string {
  if (!Number.isFinite(value)) return '-';
  const text = value.toFixed(2);
  return text === '-0.00' ? '0.00' : text;
}

function printServerScenario(config: BenchConfig, s: ScenarioSummary): void {
  const row = (name: Variant): string[] => [
    name,
    formatCount(s.results[name].requestsPerSecond),
    formatMs(s.results[name].p50Ms),
    formatMs(s.results[name].p99Ms),
    formatRatio(s.ratios[name]),
    String(s.results[name].errors),
  ];
  console.log(`\n## ${s.title}`);
  console.log(
    `   ${config.concurrency} concurrent, ${config.rounds} rounds x ${config.requests} requests per variant, order rotated per round, median of rounds`,
  );
  console.log(table(['variant', 'req/s', 'p50 ms', 'p99 ms', 'x bare', 'errors'], VARIANTS.map(row)));
  console.log(`ratio guarded/bare: ${formatRatio(s.ratios.fluxguard)}`);
  console.log(`   per round: ${s.perRound.fluxguard.map(formatRatio).join(' ')}`);
  console.log(`ratio guarded+ratelimit/bare: ${formatRatio(s.ratios['fluxguard+ratelimit'])}`);
  console.log(`   per round: ${s.perRound['fluxguard+ratelimit'].map(formatRatio).join(' ')}`);
  console.log(`rate limiting costs ${formatDelta(s.rateLimitCost)} of the guarded ratio`);
  console.log(`   per round: ${s.rateLimitCostPerRound.map((d) => formatDelta(d)).join(' ')}`);
}
