import type { Expect, Generator, LoadRequest, LoadResult, LoadShape, TokenPlan } from './load.js';
import { checkResult } from './load.js';
import { openTarget } from './node-target.js';
import {
  byColumn,
  columnsOf,
  hasFloor,
  variantOf,
  type ByColumn,
  type Column,
  type GeneratorName,
  type Scenario,
  type TokenKind,
} from './scenarios.js';
import type { RunningServer } from './server-handle.js';
import type { BenchTls, Variant } from './servers.js';
import { median } from './stats.js';
import type { TokenMinter } from './fixtures.js';
import { TokenPool } from './tokens.js';

/** Where the tokens of a scenario come from, and one token like them to probe with. */
export interface TokenSource {
  plan(): TokenPlan;
  /** After a run: how many tokens it used, so that a pool's next run starts on fresh ones. */
  used(count: number): void;
  readonly probe: string | undefined;
}

export function fixedTokens(token: string | undefined): TokenSource {
  return {
    plan: () => (token === undefined ? { kind: 'none' } : { kind: 'repeated', token }),
    used: () => undefined,
    probe: token,
  };
}

export function pooledTokens(pool: TokenPool, probe: string): TokenSource {
  return {
    plan: () => pool.plan(),
    used: (count) => {
      pool.advance(count);
    },
    probe,
  };
}

/**
 * The token source of each kind for one bench run: `minter` signs valid tokens, `forger` the
 * forged ones (the same key id, another key). Each pool is minted on its first use, into
 * `scratch`, and shared by the scenarios that use it.
 *
 * @example
 * ```ts
 * const tokensFor = tokenSources(scratch, minter, forger, config);
 * const source = tokensFor('clients');
 * ```
 */
export function tokenSources(
  scratch: string,
  minter: TokenMinter,
  forger: TokenMinter,
  sizes: { readonly poolTokens: number; readonly clientTokens: number },
): (kind: TokenKind) => TokenSource {
  const repeated = minter.next();
  const pools = new Map<TokenKind, TokenPool>();
  const pool = (kind: TokenKind, by: TokenMinter, count: number): TokenPool => {
    let minted = pools.get(kind);
    if (minted === undefined) {
      minted = TokenPool.mint(scratch, kind, by, count);
      pools.set(kind, minted);
    }
    return minted;
  };
  return (kind) => {
    switch (kind) {
      case 'repeated':
        return fixedTokens(repeated);
      case 'none':
        return fixedTokens(undefined);
      case 'clients':
        return pooledTokens(pool(kind, minter, sizes.clientTokens), minter.next());
      case 'new':
        return pooledTokens(pool(kind, minter, sizes.poolTokens), minter.next());
      case 'forged':
        return pooledTokens(pool(kind, forger, sizes.poolTokens), forger.next());
    }
  };
}

export interface MeasureContext {
  readonly rounds: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly shape: LoadShape;
  readonly clientTls: BenchTls;
  readonly generators: Readonly<Partial<Record<GeneratorName, Generator>>>;
}

export interface RoundSample {
  readonly result: LoadResult;
  readonly requestsPerSecond: number;
  /** Server CPU over the run, as a share of one CPU. */
  readonly serverCpu: number | undefined;
  /**
   * Server CPU time per request, in µs: steadier than req/s on a shared VM, because time the
   * hypervisor gives to another guest is not the server's CPU time.
   */
  readonly serverCpuPerRequest: number | undefined;
}

export interface ColumnOutcome {
  readonly variant: Variant;
  readonly rounds: readonly RoundSample[];
  /** Why the variant has no number: a wrong answer, more than 1 % errors, a crash. */
  readonly failure: string | undefined;
}

export interface ScenarioOutcome {
  readonly scenario: Scenario;
  /** Why the scenario did not run (its generator is missing); the columns are then empty. */
  readonly notRun: string | undefined;
  /** The scenario's columns; `floor` only in the new-token and forged-token rows. */
  readonly columns: Readonly<ByColumn<ColumnOutcome>>;
  /** Median over rounds of fluxguard ÷ bare, ÷ peer and ÷ floor req/s of the same round (NaN without a floor). */
  readonly perBare: number;
  readonly perPeer: number;
  readonly perFloor: number;
  /**
   * Median over rounds of bare's server CPU per request ÷ fluxguard's in the same round: the
   * share of bare's throughput fluxguard would reach on a CPU of its own (NaN without CPU figures).
   */
  readonly perBareByCpu: number;
}

/**
 * The order of the variants in round `round`: rotated by one every round, and reversed in every
 * other cycle (with three: bare, peer, fluxguard / peer, fluxguard, bare / fluxguard, bare, peer,
 * then the same backwards; with floor as a fourth, cycles of four), so that drift of the machine
 * falls on all variants alike.
 */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  const n = items.length;
  const rotated = items.map((_, i) => items[(i + round) % n] as T);
  return Math.floor(round / n) % 2 === 0 ? rotated : rotated.reverse();
}

function inFlight(request: LoadRequest): number {
  const h2 = request.transport === 'grpc' || request.transport === 'grpc-tls';
  return h2 ? request.shape.h2Connections * request.shape.h2Streams : request.shape.connections;
}

/** One call checked for its exact answer (200 / 401, gRPC OK / UNAUTHENTICATED) before any load. */
async function probe(server: RunningServer, ctx: MeasureContext, token: string | undefined, expect: Expect) {
  const target = openTarget(server.spec.transport, server.port, 1, ctx.clientTls);
  try {
    const outcome = await target.send(token === undefined ? undefined : `Bearer ${token}`);
    if (outcome !== expect) throw new Error(`a probe call was answered "${outcome}", expected "${expect}"`);
  } finally {
    target.close();
  }
}

async function loadOnce(
  server: RunningServer,
  ctx: MeasureContext,
  generator: Generator,
  tokens: TokenSource,
  seconds: number,
  expect: Expect,
): Promise<RoundSample> {
  const request: LoadRequest = {
    transport: server.spec.transport,
    port: server.port,
    seconds,
    tokens: tokens.plan(),
    shape: ctx.shape,
    clientTls: ctx.clientTls,
  };
  const cpuBefore = server.cpuSeconds();
  const result = await generator(request);
  const cpuAfter = server.cpuSeconds();
  tokens.used(result.requests + inFlight(request));
  checkResult(result, expect);
  const cpuSeconds = cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore;
  return {
    result,
    requestsPerSecond: result.requests / result.seconds,
    serverCpu: cpuSeconds === undefined ? undefined : cpuSeconds / result.seconds,
    serverCpuPerRequest:
      cpuSeconds === undefined || result.requests === 0 ? undefined : (cpuSeconds * 1e6) / result.requests,
  };
}

type Pairs = readonly (readonly [RoundSample | undefined, RoundSample | undefined])[];

/** Median over rounds of `a`'s rate ÷ `b`'s rate in the same round (NaN when no round has both). */
function ratio(rounds: Pairs, rate: (sample: RoundSample) => number | undefined): number {
  return median(
    rounds.flatMap(([a, b]) => {
      const ra = a === undefined ? undefined : rate(a);
      const rb = b === undefined ? undefined : rate(b);
      return ra === undefined || rb === undefined ? [] : [ra / rb];
    }),
  );
}

const served = (sample: RoundSample): number => sample.requestsPerSecond;
/** Requests per second of server CPU: the rate the server would reach on a CPU of its own. */
const servedPerCpu = (sample: RoundSample): number | undefined =>
  sample.serverCpuPerRequest === undefined ? undefined : 1e6 / sample.serverCpuPerRequest;

const empty = (variant: Variant, failure: string | undefined): ColumnOutcome => ({ variant, rounds: [], failure });

/**
 * A scenario: for each variant a probe and a warm-up, then the rounds in rotated order. A
 * variant that fails is reported as failed and left out of the later rounds; the others go on.
 */
export async function measureScenario(
  scenario: Scenario,
  servers: ReadonlyMap<Variant, RunningServer>,
  tokens: TokenSource,
  ctx: MeasureContext,
): Promise<ScenarioOutcome> {
  const generator = ctx.generators[scenario.generator];
  const columnList = columnsOf(scenario);
  if (generator === undefined) {
    const why = `not run: ${scenario.generator} is missing`;
    const columns = byColumn(scenario, (c) => empty(variantOf(scenario, c), why));
    return { scenario, notRun: why, columns, perBare: NaN, perPeer: NaN, perFloor: NaN, perBareByCpu: NaN };
  }
  const expectOf = (column: Column): Expect => (column === 'bare' ? 'ok' : scenario.expect);
  const serverOf = (column: Column): RunningServer => {
    const server = servers.get(variantOf(scenario, column));
    if (server === undefined) throw new Error(`no ${variantOf(scenario, column)} server was started`);
    return server;
  };
  const failures: Partial<Record<Column, string>> = {};
  const fail = (column: Column, err: unknown): void => {
    failures[column] = err instanceof Error ? err.message : String(err);
    console.error(`   FAILED ${variantOf(scenario, column)}: ${failures[column]}`);
  };
  const samples: Record<Column, (RoundSample | undefined)[]> = { bare: [], peer: [], fluxguard: [], floor: [] };
  const attempt = async (column: Column, seconds: number): Promise<RoundSample | undefined> => {
    if (failures[column] !== undefined) return undefined;
    try {
      return await loadOnce(serverOf(column), ctx, generator, tokens, seconds, expectOf(column));
    } catch (err) {
      fail(column, err);
      return undefined;
    }
  };

  for (const column of columnList) {
    try {
      await probe(serverOf(column), ctx, tokens.probe, expectOf(column));
    } catch (err) {
      fail(column, err);
    }
    await attempt(column, ctx.warmupSeconds);
  }
  for (let r = 0; r < ctx.rounds; r++) {
    for (const column of roundOrder(columnList, r)) samples[column][r] = await attempt(column, ctx.seconds);
  }

  const columns = byColumn(scenario, (c): ColumnOutcome => ({
    variant: variantOf(scenario, c),
    rounds: samples[c].filter((s) => s !== undefined),
    failure: failures[c],
  }));
  const pairs = (other: Column) =>
    Array.from({ length: ctx.rounds }, (_, r) => [samples.fluxguard[r], samples[other][r]] as const);
  return {
    scenario,
    notRun: undefined,
    columns,
    perBare: ratio(pairs('bare'), served),
    perPeer: ratio(pairs('peer'), served),
    perFloor: hasFloor(scenario) ? ratio(pairs('floor'), served) : NaN,
    perBareByCpu: ratio(pairs('bare'), servedPerCpu),
  };
}
