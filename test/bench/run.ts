// `pnpm bench`: servers in their own processes under outside load (wrk, h2load, a Node client
// process), fluxguard against a bare server and a peer stack in the same run. Not a test: it
// asserts nothing about speed and never runs under vitest (vitest.config.ts excludes test/bench/**).
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readConfig, type BenchConfig } from './config.js';
import { createSigningKey, TokenMinter } from './fixtures.js';
import { h2loadGenerator } from './h2load.js';
import type { Generator } from './load.js';
import {
  measureScenario,
  tokenSources,
  type MeasureContext,
  type ScenarioOutcome,
  type TokenSource,
} from './measure.js';
import { MEMORY_TOKENS_PER_SECOND, runServerMemory } from './memory.js';
import { runMicro } from './micro.js';
import { nodeGenerator } from './node-load.js';
import { NO_TLS, makePki } from './pki.js';
import { placement } from './processes.js';
import { runRateLimitMemory } from './ratelimit-memory.js';
import { markdownTable, printScenario, writeResults } from './report.js';
import { columnsOf, SCENARIOS, variantOf, type GeneratorName, type Scenario } from './scenarios.js';
import { startServerProcess, type RunningServer } from './server-handle.js';
import { TRANSPORTS, type ServerSpec, type Variant } from './servers.js';
import { TokenPool } from './tokens.js';
import { ensureTools, type Tool } from './tools.js';
import { wrkGenerator } from './wrk.js';

function toolsFor(config: BenchConfig, scenarios: readonly Scenario[]): Tool[] {
  const tools = new Set<Tool>();
  for (const s of scenarios) if (s.generator !== 'node') tools.add(s.generator);
  if (config.groups.includes('memory')) tools.add('wrk');
  if (scenarios.length > 0 || config.groups.includes('memory')) tools.add('taskset');
  return [...tools];
}

async function runServerGroup(
  scenarios: readonly Scenario[],
  base: Omit<ServerSpec, 'transport' | 'variant'>,
  serverCpu: readonly string[],
  tokensFor: (s: Scenario) => TokenSource,
  ctx: MeasureContext,
): Promise<ScenarioOutcome[]> {
  const first = scenarios[0];
  if (first === undefined) return [];
  const needed = new Set<Variant>(scenarios.flatMap((s) => columnsOf(s).map((c) => variantOf(s, c))));
  const servers = new Map<Variant, RunningServer>();
  try {
    // All variants of a transport live for the whole group: idle, they cost the others nothing,
    // and each keeps its JIT and caches warm from one scenario to the next.
    for (const variant of needed) {
      servers.set(variant, await startServerProcess({ ...base, transport: first.transport, variant }, serverCpu));
    }
    const outcomes: ScenarioOutcome[] = [];
    for (const scenario of scenarios) {
      const outcome = await measureScenario(scenario, servers, tokensFor(scenario), ctx);
      printScenario(outcome);
      outcomes.push(outcome);
    }
    return outcomes;
  } finally {
    for (const server of servers.values()) await server.stop();
  }
}

async function main(): Promise<void> {
  const config = readConfig();
  const started = new Date();
  const scenarios = SCENARIOS.filter((s) => config.groups.includes(s.transport));
  const tools = ensureTools(toolsFor(config, scenarios));
  const where = placement(tools.taskset);
  const heading = [
    `# fluxguard bench, ${started.toISOString()}`,
    '',
    `- node ${process.version}, ${String(availableParallelism())} CPUs (${cpus()[0]?.model ?? 'unknown CPU'}); ${where.description}`,
    `- load average at start: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `- rounds=${String(config.rounds)} seconds=${String(config.seconds)} warmup=${String(config.warmupSeconds)}s ` +
      `connections=${String(config.connections)} h2=${String(config.h2Connections)}x${String(config.h2Streams)} ` +
      `pool=${String(config.poolTokens)} memory=${String(config.memorySeconds)}s groups=${config.groups.join(',')}`,
  ];
  console.log(heading.join('\n'));

  const scratch = mkdtempSync(join(tmpdir(), 'fluxguard-bench-'));
  try {
    const key = createSigningKey();
    const minter = new TokenMinter(key);
    // Same key id, another private key: right shape, wrong signature.
    const forger = new TokenMinter(createSigningKey());
    const needsPki = config.groups.some((g) => g === 'https' || g === 'grpc-tls');
    const pki = needsPki ? await makePki() : { server: NO_TLS, client: NO_TLS };
    const base = { jwks: key.jwks, tls: pki.server };
    const generators: Partial<Record<GeneratorName, Generator>> = { node: nodeGenerator(where.load) };
    if (tools.wrk !== undefined) generators.wrk = wrkGenerator(tools.wrk, where.load, scratch);
    if (tools.h2load !== undefined) generators.h2load = h2loadGenerator(tools.h2load, where.load, scratch);
    const ctx: MeasureContext = {
      rounds: config.rounds,
      seconds: config.seconds,
      warmupSeconds: config.warmupSeconds,
      shape: { connections: config.connections, h2Connections: config.h2Connections, h2Streams: config.h2Streams },
      clientTls: pki.client,
      generators,
    };

    const sources = tokenSources(scratch, minter, forger, config);
    const tokensFor = (s: Scenario): TokenSource => sources(s.tokens);

    const outcomes: ScenarioOutcome[] = [];
    for (const transport of TRANSPORTS) {
      const group = scenarios.filter((s) => s.transport === transport);
      outcomes.push(...(await runServerGroup(group, base, where.server, tokensFor, ctx)));
    }

    let memory: string | undefined;
    if (config.groups.includes('memory')) {
      const count = config.memorySeconds * MEMORY_TOKENS_PER_SECOND;
      console.log(`\nminting ${String(count)} unique tokens for the memory run`);
      memory = await runServerMemory({
        seconds: config.memorySeconds,
        warmupSeconds: config.warmupSeconds,
        shape: ctx.shape,
        placement: where,
        base,
        generators,
        repeatedToken: minter.next(),
        pool: TokenPool.mint(scratch, 'memory', minter, count),
      });
    }
    if (config.groups.includes('micro')) await runMicro(config, key);
    if (config.groups.includes('ratelimit-memory')) await runRateLimitMemory();

    if (outcomes.length > 0 || memory !== undefined) {
      const sections = [
        ...(outcomes.length > 0 ? ['## Throughput', '', markdownTable(outcomes)] : []),
        ...(memory === undefined
          ? []
          : [
              '',
              `## Memory after ${String(config.memorySeconds)} s of a flood (unique tokens, made-up API keys)`,
              '',
              memory,
            ]),
      ].join('\n');
      console.log(`\n${sections}`);
      console.log(`\nwritten to ${writeResults(heading, sections, started)}`);
    }
    const broken = outcomes.filter(
      (o) => o.notRun !== undefined || columnsOf(o.scenario).some((c) => o.columns[c]?.failure !== undefined),
    );
    if (broken.length > 0) {
      console.error(`\n${String(broken.length)} scenario(s) failed or did not run: see FAILED / not run above`);
      process.exitCode = 1;
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  console.log(
    `\ndone in ${((Date.now() - started.getTime()) / 1000).toFixed(1)} s; load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
}

await main();
