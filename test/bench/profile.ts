// `pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler]`: one server of
// one variant under the scenario's outside generator, with V8's CPU profiler on. Prints the
// server's CPU time per request (robust to other processes taking the machine, unlike req/s) and
// the functions with the most self time per request, and keeps the .cpuprofile for Chrome
// DevTools. For finding where the time goes, not for numbers to publish: the profiler itself
// costs the server time. `--no-profiler` prints the CPU time per request only, without that cost:
// the reading to compare two commits by.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readConfig } from './config.js';
import { createSigningKey, TokenMinter } from './fixtures.js';
import { h2loadGenerator } from './h2load.js';
import type { Generator, LoadRequest } from './load.js';
import { fixedTokens, pooledTokens, type TokenSource } from './measure.js';
import { nodeGenerator } from './node-load.js';
import { NO_TLS, makePki } from './pki.js';
import { placement } from './processes.js';
import { SCENARIOS, type TokenKind } from './scenarios.js';
import { startServerProcess } from './server-handle.js';
import { TRANSPORTS, VARIANTS, type Transport, type Variant } from './servers.js';
import { TokenPool } from './tokens.js';
import { ensureTools, type Tool } from './tools.js';
import { wrkGenerator } from './wrk.js';

const TOKEN_KINDS: readonly TokenKind[] = ['repeated', 'new', 'none', 'forged'];
const PROFILES = fileURLToPath(new URL('../../bench/results/profiles/', import.meta.url));

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], what: string): T {
  if (value !== undefined && (allowed as readonly string[]).includes(value)) return value as T;
  throw new Error(
    `usage: pnpm bench:profile <transport> <variant> <tokens> [seconds] [--no-profiler]\n` +
      `  ${what} must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`,
  );
}

/** A V8 CPU profile, as the inspector's `Profiler.stop` returns it. */
interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Self time per request of the `top` most expensive functions (idle time left out), in µs. */
function selfTimePerRequest(profile: CpuProfile, requests: number, top: number): [string, number][] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const totals = new Map<string, number>();
  profile.samples.forEach((id, index) => {
    const frame = frames.get(id);
    if (frame === undefined || frame.functionName === '(idle)') return;
    // Packages by name, the repository's own files by path; node: internals as they are.
    const where = frame.url
      .replace(/^.*node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?/, '')
      .replace(/^file:\/\/.*?\/(packages|test)\//, '$1/');
    const label = `${frame.functionName || '(anonymous)'} ${where}:${String(frame.lineNumber + 1)}`;
    totals.set(label, (totals.get(label) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  return [...totals]
    .map(([label, us]): [string, number] => [label, us / requests])
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profiling = !args.includes('--no-profiler');
  const [transportArg, variantArg, tokensArg, secondsArg] = args.filter((arg) => arg !== '--no-profiler');
  const transport: Transport = oneOf(transportArg, TRANSPORTS, 'transport');
  const variant: Variant = oneOf(variantArg, VARIANTS, 'variant');
  const tokens: TokenKind = oneOf(tokensArg, TOKEN_KINDS, 'tokens');
  const seconds = secondsArg === undefined ? 8 : Number(secondsArg);
  if (!Number.isSafeInteger(seconds) || seconds < 1) throw new Error('seconds must be a positive integer');
  const scenario = SCENARIOS.find((s) => s.transport === transport && s.tokens === tokens);
  if (scenario === undefined) throw new Error(`no scenario sends ${tokens} tokens over ${transport}`);
  if (variant === 'floor' && transport !== 'http' && transport !== 'grpc') {
    throw new Error('the floor variant exists for http and grpc only');
  }
  const config = readConfig();

  const needed: Tool[] = ['taskset'];
  if (scenario.generator !== 'node') needed.push(scenario.generator);
  const tools = ensureTools(needed);
  const where = placement(tools.taskset);
  const scratch = mkdtempSync(join(tmpdir(), 'fluxguard-profile-'));
  try {
    const generators: Partial<Record<string, Generator>> = { node: nodeGenerator(where.load) };
    if (tools.wrk !== undefined) generators.wrk = wrkGenerator(tools.wrk, where.load, scratch);
    if (tools.h2load !== undefined) generators.h2load = h2loadGenerator(tools.h2load, where.load, scratch);
    const generator = generators[scenario.generator];
    if (generator === undefined) throw new Error(`${scenario.generator} is not installed`);

    const key = createSigningKey();
    const minter = new TokenMinter(key);
    const source: TokenSource =
      tokens === 'repeated'
        ? fixedTokens(minter.next())
        : tokens === 'none'
          ? fixedTokens(undefined)
          : tokens === 'new'
            ? pooledTokens(TokenPool.mint(scratch, 'valid', minter, config.poolTokens), minter.next())
            : pooledTokens(
                TokenPool.mint(scratch, 'forged', new TokenMinter(createSigningKey()), config.poolTokens),
                minter.next(),
              );
    const pki =
      transport === 'https' || transport === 'grpc-tls' ? await makePki() : { server: NO_TLS, client: NO_TLS };

    if (profiling) mkdirSync(PROFILES, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const profilePath = join(PROFILES, `${stamp}-${transport}-${variant}-${tokens}.cpuprofile`);
    const server = await startServerProcess(
      { transport, variant, jwks: key.jwks, tls: pki.server },
      where.server,
      profiling ? { FLUXGUARD_BENCH_CPU_PROFILE: profilePath } : {},
    );
    let requests = 0;
    try {
      const request = (runSeconds: number): LoadRequest => ({
        transport,
        port: server.port,
        seconds: runSeconds,
        tokens: source.plan(),
        shape: { connections: config.connections, h2Connections: config.h2Connections, h2Streams: config.h2Streams },
        clientTls: pki.client,
      });
      const warm = await generator(request(config.warmupSeconds));
      source.used(warm.requests);
      const before = server.cpuSeconds();
      const run = await generator(request(seconds));
      const after = server.cpuSeconds();
      source.used(run.requests);
      requests = warm.requests + run.requests;
      const cpu = before === undefined || after === undefined ? undefined : ((after - before) * 1e6) / run.requests;
      console.log(
        `# ${transport} ${variant}, ${tokens} tokens, ${scenario.generator}, ${where.description}${profiling ? ', profiler on' : ''}`,
      );
      console.log(
        `${String(Math.round(run.requests / run.seconds))} req/s; server CPU ${cpu === undefined ? 'unknown' : cpu.toFixed(1)} µs per request` +
          ` (ok ${String(run.ok)}, refused ${String(run.refused)}, errors ${String(run.other)})`,
      );
    } finally {
      await server.stop();
    }
    if (!profiling) return;
    const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile;
    console.log(`\nself time per request (warm-up and run, profiler on), µs:`);
    for (const [label, us] of selfTimePerRequest(profile, requests, 30))
      console.log(`${us.toFixed(1).padStart(7)}  ${label}`);
    console.log(`\nprofile: ${profilePath} (open in Chrome DevTools, Performance tab)`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
