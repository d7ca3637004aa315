// One scenario of one transport, set up the way `pnpm bench` runs it (the same generator,
// tokens, pinning and knobs), for the tools that load one or two servers by hand:
// `pnpm bench:profile`, `pnpm bench:compare` and `pnpm bench:instructions`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { readConfig, type BenchConfig } from './config.js';
import { createSigningKey, TokenMinter } from './fixtures.js';
import { h2loadGenerator } from './h2load.js';
import type { Generator, LoadResult } from './load.js';
import { tokenSources, type TokenSource } from './measure.js';
import { nodeGenerator } from './node-load.js';
import { NO_TLS, makePki, type Pki } from './pki.js';
import { placement, type Placement } from './processes.js';
import { SCENARIOS, type Scenario, type TokenKind } from './scenarios.js';
import { TRANSPORTS, VARIANTS, type Transport, type Variant } from './servers.js';
import type { RunningServer } from './server-handle.js';
import { ensureTools, type Tool } from './tools.js';
import { wrkGenerator } from './wrk.js';

const TOKEN_KINDS: readonly TokenKind[] = ['repeated', 'clients', 'new', 'none', 'forged'];

/** `value` if it is one of `allowed`; else the usage line of `tool` and what was wrong. */
function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], what: string, usage: string): T {
  if (value !== undefined && (allowed as readonly string[]).includes(value)) return value as T;
  throw new Error(`usage: ${usage}\n  ${what} must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`);
}

/** A load run and what the server spent on it. */
export interface MeasuredRun {
  readonly result: LoadResult;
  readonly cpuPerRequest: number | undefined;
}

export interface OneScenario {
  readonly scenario: Scenario;
  readonly variant: Variant;
  readonly config: BenchConfig;
  readonly where: Placement;
  /** The key set the servers trust. */
  readonly jwks: JSONWebKeySet;
  readonly pki: Pki;
  /**
   * One load run of `seconds` against `server`, with the scenario's next tokens, and the
   * server's CPU time per request over it (µs; undefined without /proc).
   */
  run(server: RunningServer, seconds: number): Promise<MeasuredRun>;
  /** Removes the token files. */
  close(): void;
}

/**
 * `variantArg` if it is a variant the bench runs over `transport`; else the usage line of the
 * tool and what was wrong.
 */
export function variantOf(transport: Transport, variantArg: string | undefined, usage: string): Variant {
  const variant: Variant = oneOf(variantArg, VARIANTS, 'variant', usage);
  if (variant === 'floor' && transport !== 'http' && transport !== 'grpc') {
    throw new Error('the floor variant exists for http and grpc only');
  }
  if (variant === 'bare+options' && transport !== 'grpc' && transport !== 'grpc-tls') {
    throw new Error('the bare+options variant exists for grpc and grpc-tls only');
  }
  return variant;
}

/** What a tool may change in how the scenario is run. */
export interface ScenarioOptions {
  /**
   * Load from the Node client whatever the scenario's generator: it is a closed loop that ends
   * with every answer in, so a run's request count is exactly what the server did
   * (`pnpm bench:instructions`), where wrk and h2load leave requests in flight at their end.
   */
  readonly nodeClient?: boolean;
}

/**
 * Sets up the scenario of `transport` that sends `tokens` for `variant` (installing its
 * generator if needed), after checking all three against what the bench has.
 */
export async function prepareScenario(
  transportArg: string | undefined,
  variantArg: string | undefined,
  tokensArg: string | undefined,
  usage: string,
  options: ScenarioOptions = {},
) {
  const transport: Transport = oneOf(transportArg, TRANSPORTS, 'transport', usage);
  const variant = variantOf(transport, variantArg, usage);
  const tokens: TokenKind = oneOf(tokensArg, TOKEN_KINDS, 'tokens', usage);
  const found = SCENARIOS.find((s) => s.transport === transport && s.tokens === tokens);
  if (found === undefined) throw new Error(`no scenario sends ${tokens} tokens over ${transport}`);
  const scenario: Scenario = options.nodeClient === true ? { ...found, generator: 'node' } : found;
  const config = readConfig();
  const needed: Tool[] = ['taskset'];
  if (scenario.generator !== 'node') needed.push(scenario.generator);
  const tools = ensureTools(needed);
  const where = placement(tools.taskset);
  const scratch = mkdtempSync(join(tmpdir(), 'fluxguard-one-scenario-'));
  const generators: Partial<Record<string, Generator>> = { node: nodeGenerator(where.load) };
  if (tools.wrk !== undefined) generators.wrk = wrkGenerator(tools.wrk, where.load, scratch);
  if (tools.h2load !== undefined) generators.h2load = h2loadGenerator(tools.h2load, where.load, scratch);
  const generator = generators[scenario.generator];
  if (generator === undefined) throw new Error(`${scenario.generator} is not installed`);

  const key = createSigningKey();
  const minter = new TokenMinter(key);
  const source: TokenSource = tokenSources(scratch, minter, new TokenMinter(createSigningKey()), config)(tokens);
  const pki = transport === 'https' || transport === 'grpc-tls' ? await makePki() : { server: NO_TLS, client: NO_TLS };
  const prepared: OneScenario = {
    scenario,
    variant,
    config,
    where,
    jwks: key.jwks,
    pki,
    run: async (server, seconds) => {
      const before = server.cpuSeconds();
      const result = await generator({
        transport,
        port: server.port,
        seconds,
        tokens: source.plan(),
        shape: { connections: config.connections, h2Connections: config.h2Connections, h2Streams: config.h2Streams },
        clientTls: pki.client,
      });
      const after = server.cpuSeconds();
      source.used(result.requests);
      const cpuPerRequest =
        before === undefined || after === undefined ? undefined : ((after - before) * 1e6) / result.requests;
      return { result, cpuPerRequest };
    },
    close: () => {
      rmSync(scratch, { recursive: true, force: true });
    },
  };
  return prepared;
}
