import type { LoadShape } from './load.js';
import { checkResult, type Generator, type TokenPlan } from './load.js';
import type { Placement } from './processes.js';
import type { GeneratorName } from './scenarios.js';
import { startServerProcess } from './server-handle.js';
import type { ServerSpec, Transport, Variant } from './servers.js';
import { formatCount, table } from './stats.js';
import type { TokenPool } from './tokens.js';

/** Tokens minted per second of the memory run: above what one core verifies, so none repeats. */
export const MEMORY_TOKENS_PER_SECOND = 8000;

/** What the run sends: tokens never seen before, or no token and an API key nobody sent before. */
type Flood = 'unique tokens' | 'made-up API keys';

/** One row: a fresh server, warmed with a repeated token, then flooded. */
interface MemoryRow {
  readonly transport: Transport;
  readonly generator: GeneratorName;
  readonly variant: Variant;
  readonly flood: Flood;
}

const ROWS: readonly MemoryRow[] = [
  { transport: 'http', generator: 'wrk', variant: 'fluxguard', flood: 'unique tokens' },
  { transport: 'http', generator: 'wrk', variant: 'fluxguard+ratelimit', flood: 'unique tokens' },
  { transport: 'grpc', generator: 'node', variant: 'fluxguard', flood: 'unique tokens' },
  { transport: 'grpc', generator: 'node', variant: 'fluxguard+ratelimit', flood: 'unique tokens' },
  // A rule keyed by a header counts values the client chooses, before any token is checked.
  { transport: 'http', generator: 'wrk', variant: 'fluxguard+apikeys', flood: 'made-up API keys' },
];

const mb = (bytes: number | undefined): string =>
  bytes === undefined || !Number.isFinite(bytes) ? '-' : (bytes / 1024 / 1024).toFixed(1);

const HEADER = [
  'server',
  'generator',
  'sent in the run',
  'req/s',
  'RSS start MB',
  'after warm-up MB',
  'highest by third of the run MB',
  'after run MB',
  'peak MB',
] as const;

/** A row that says why a server has no figures: its text in the third column, the rest empty. */
function noticeRow(server: string, generator: string, text: string): string[] {
  return [server, generator, text, ...Array.from({ length: HEADER.length - 3 }, () => '')];
}

/** How often the resident memory is read during the run. */
const SAMPLE_MS = 1000;

/**
 * The highest resident memory of each third of a run's samples, as `a / b / c` MB: memory that
 * stays flat has its last two alike, one that grows with the run climbs through all three. The
 * highest, not the median: the garbage collector saws memory up and down within seconds.
 */
function byThird(samples: readonly number[]): string {
  if (samples.length < 3) return '-';
  const third = samples.length / 3;
  return [0, 1, 2]
    .map((i) => mb(Math.max(...samples.slice(Math.round(i * third), Math.round((i + 1) * third)))))
    .join(' / ');
}

export interface MemoryContext {
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly shape: LoadShape;
  readonly placement: Placement;
  readonly base: Omit<ServerSpec, 'transport' | 'variant'>;
  readonly generators: Readonly<Partial<Record<GeneratorName, Generator>>>;
  readonly repeatedToken: string;
  readonly pool: TokenPool;
}

/**
 * The resident memory of a fresh fluxguard server before, during (read every second, the
 * highest of each third of the run) and after `seconds` of unique tokens at full speed (or,
 * for a rule keyed by an API key, of made-up keys): the verified-token cache and the rate-limit
 * counters must stay bounded. Returns the Markdown table, or throws when a run fails.
 */
export async function runServerMemory(ctx: MemoryContext): Promise<string> {
  const rows: string[][] = [];
  let failed = false;
  for (const { transport, generator: name, variant, flood } of ROWS) {
    const generator = ctx.generators[name];
    if (generator === undefined) {
      rows.push(noticeRow(`${transport} ${variant}`, name, `NOT RUN: ${name} is missing`));
      failed = true;
      continue;
    }
    const server = await startServerProcess({ ...ctx.base, transport, variant }, ctx.placement.server);
    try {
      const started = server.memory();
      const run = async (seconds: number, plan: TokenPlan) => {
        ctx.pool.rewind();
        const result = await generator({
          transport,
          port: server.port,
          seconds,
          tokens: plan,
          shape: ctx.shape,
          clientTls: ctx.base.tls,
        });
        // Without a token, every made-up key is counted and then refused as unauthenticated.
        checkResult(result, plan.kind === 'made-up-api-keys' ? 'refused' : 'ok');
        return result;
      };
      await run(ctx.warmupSeconds, { kind: 'repeated', token: ctx.repeatedToken });
      const warm = server.memory();
      const samples: number[] = [];
      const sampler = setInterval(() => {
        const rss = server.memory()?.rss;
        if (rss !== undefined) samples.push(rss);
      }, SAMPLE_MS);
      const plan: TokenPlan = flood === 'unique tokens' ? ctx.pool.plan() : { kind: 'made-up-api-keys' };
      const result = await run(ctx.seconds, plan).finally(() => {
        clearInterval(sampler);
      });
      const after = server.memory();
      const repeated =
        flood === 'unique tokens' && result.requests > ctx.pool.size
          ? ` (pool of ${formatCount(ctx.pool.size)} repeated)`
          : '';
      rows.push([
        `${transport} ${variant}`,
        name,
        `${formatCount(result.requests)} ${flood}${repeated}`,
        formatCount(result.requests / result.seconds),
        mb(started?.rss),
        mb(warm?.rss),
        byThird(samples),
        mb(after?.rss),
        mb(after?.peak),
      ]);
    } catch (err) {
      failed = true;
      rows.push(
        noticeRow(`${transport} ${variant}`, name, `FAILED: ${err instanceof Error ? err.message : String(err)}`),
      );
    } finally {
      await server.stop();
    }
  }
  console.log(`\n## memory: RSS of a fresh server after ${String(ctx.seconds)} s of a flood at full speed`);
  console.log(table(HEADER, rows));
  if (failed) process.exitCode = 1;
  return [
    `| ${HEADER.join(' | ')} |`,
    `| ${HEADER.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}
