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
 * The resident memory of a fresh fluxguard server before and after `seconds` of unique tokens
 * at full speed: the verified-token cache and (with rate limiting) one counter per caller
 * must stay bounded. Returns the Markdown table, or throws when a run fails.
 */
export async function runServerMemory(ctx: MemoryContext): Promise<string> {
  const rows: string[][] = [];
  let failed = false;
  for (const { transport, generator: name } of TARGETS) {
    const generator = ctx.generators[name];
    for (const variant of VARIANTS) {
      if (generator === undefined) {
        rows.push([`${transport} ${variant}`, name, `NOT RUN: ${name} is missing`, '', '', '', '', '']);
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
        const result = await run(ctx.seconds, true);
        const after = server.memory();
        const repeated = result.requests > ctx.pool.size ? ` (pool of ${formatCount(ctx.pool.size)} repeated)` : '';
        rows.push([
          `${transport} ${variant}`,
          name,
          `${formatCount(result.requests)}${repeated}`,
          formatCount(result.requests / result.seconds),
          mb(started?.rss),
          mb(warm?.rss),
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
