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

export interface ServerScenario {
  readonly title: string;
  readonly tokens: TokenMode;
  readonly bare: TokenSender;
  readonly guarded: TokenSender;
}

export interface ScenarioSummary {
  readonly title: string;
  readonly bare: RoundResult;
  readonly guarded: RoundResult;
  /** Median over rounds of (guarded req/s ÷ bare req/s) of the same round. */
  readonly ratio: number;
  /** Every round's ratio, in order: their spread shows how noisy the machine was. */
  readonly ratios: readonly number[];
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
 * Runs bare and guarded alternately (ABBA: bare first in even rounds, guarded first in odd
 * ones), so that drift of the machine (thermal, other load, GC) falls on both equally, after
 * a warm-up of each. Tokens of a `cold` round are minted before its clock starts.
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

  await round(scenario.bare, config.warmup);
  await round(scenario.guarded, config.warmup);
  const bare: RoundResult[] = [];
  const guarded: RoundResult[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < config.rounds; r++) {
    let b: RoundResult;
    let g: RoundResult;
    if (r % 2 === 0) {
      b = await round(scenario.bare, config.requests);
      g = await round(scenario.guarded, config.requests);
    } else {
      g = await round(scenario.guarded, config.requests);
      b = await round(scenario.bare, config.requests);
    }
    bare.push(b);
    guarded.push(g);
    ratios.push(g.requestsPerSecond / b.requestsPerSecond);
  }
  const summary: ScenarioSummary = {
    title: scenario.title,
    bare: medianResult(bare),
    guarded: medianResult(guarded),
    ratio: median(ratios),
    ratios,
  };
  printServerScenario(config, summary);
  return summary;
}

function printServerScenario(config: BenchConfig, s: ScenarioSummary): void {
  const row = (name: string, r: RoundResult, ratio: number): string[] => [
    name,
    formatCount(r.requestsPerSecond),
    formatMs(r.p50Ms),
    formatMs(r.p99Ms),
    formatRatio(ratio),
    String(r.errors),
  ];
  console.log(`\n## ${s.title}`);
  console.log(
    `   ${config.concurrency} concurrent, ${config.rounds} rounds x ${config.requests} requests per variant, median of rounds`,
  );
  console.log(
    table(
      ['variant', 'req/s', 'p50 ms', 'p99 ms', 'x bare', 'errors'],
      [row('bare', s.bare, 1), row('fluxguard', s.guarded, s.ratio)],
    ),
  );
  console.log(`ratio guarded/bare: ${formatRatio(s.ratio)}`);
  console.log(`   per round: ${s.ratios.map(formatRatio).join(' ')}`);
}
