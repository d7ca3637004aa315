import type { LoadShape } from './load.js';
import { checkResult, type Generator } from './load.js';
import type { Placement } from './processes.js';
import type { GeneratorName } from './scenarios.js';
import { startServerProcess } from './server-handle.js';
import type { ServerSpec, Transport, Variant } from './servers.js';
import { formatCount, table } from './stats.js';
import type { TokenPool } from './tokens.js';

/** Tokens minted per second of the memory run: above what one core verifies, so none repeats. */
export const MEMORY_TOKENS_PER_SECOND = 8000;

const TARGETS: readonly { transport: Transport; generator: GeneratorName }[] = [
  { transport: 'http', generator: 'wrk' },
  { transport: 'grpc', generator: 'node' },
];
const VARIANTS: readonly Variant[] = ['fluxguard', 'fluxguard+ratelimit'];

const mb = (bytes: number | undefined): string =>
  bytes === undefined || !Number.isFinite(bytes) ? '-' : (bytes / 1024 / 1024).toFixed(1);

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
 * highest of each third of the run) and after `seconds` of unique tokens at full speed: the
 * verified-token cache and (with rate limiting) the counters per caller must stay bounded.
 * Returns the Markdown table, or throws when a run fails.
 */
export async function runServerMemory(ctx: MemoryContext): Promise<string> {
  const rows: string[][] = [];
  let failed = false;
  for (const { transport, generator: name } of TARGETS) {
    const generator = ctx.generators[name];
    for (const variant of VARIANTS) {
      if (generator === undefined) {
        rows.push([`${transport} ${variant}`, name, `NOT RUN: ${name} is missing`, '', '', '', '', '', '']);
        failed = true;
        continue;
      }
      const server = await startServerProcess({ ...ctx.base, transport, variant }, ctx.placement.server);
      try {
        const started = server.memory();
        const run = async (seconds: number, unique: boolean) => {
          ctx.pool.rewind();
          const result = await generator({
            transport,
            port: server.port,
            seconds,
            tokens: unique ? ctx.pool.plan() : { kind: 'repeated', token: ctx.repeatedToken },
            shape: ctx.shape,
            clientTls: ctx.base.tls,
          });
          checkResult(result, 'ok');
          return result;
        };
        await run(ctx.warmupSeconds, false);
        const warm = server.memory();
        const samples: number[] = [];
        const sampler = setInterval(() => {
          const rss = server.memory()?.rss;
          if (rss !== undefined) samples.push(rss);
        }, SAMPLE_MS);
        const result = await run(ctx.seconds, true).finally(() => {
          clearInterval(sampler);
        });
        const after = server.memory();
        const repeated = result.requests > ctx.pool.size ? ` (pool of ${formatCount(ctx.pool.size)} repeated)` : '';
        rows.push([
          `${transport} ${variant}`,
          name,
          `${formatCount(result.requests)}${repeated}`,
          formatCount(result.requests / result.seconds),
          mb(started?.rss),
          mb(warm?.rss),
          byThird(samples),
          mb(after?.rss),
          mb(after?.peak),
        ]);
      } catch (err) {
        failed = true;
        rows.push([
          `${transport} ${variant}`,
          name,
          `FAILED: ${err instanceof Error ? err.message : String(err)}`,
          '',
          '',
          '',
          '',
          '',
          '',
        ]);
      } finally {
        await server.stop();
      }
    }
  }
  const header = [
    'server',
    'generator',
    'unique tokens sent',
    'req/s',
    'RSS start MB',
    'after warm-up MB',
    'highest by third of the run MB',
    'after run MB',
    'peak MB',
  ];
  console.log(`\n## memory: RSS of a fresh server after ${String(ctx.seconds)} s of unique tokens at full speed`);
  console.log(table(header, rows));
  if (failed) process.exitCode = 1;
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}
