// `pnpm bench:compare <other-checkout> <transport> <variant> <tokens> [rounds] [seconds]`: the
// same variant built from this checkout and from another (a git worktree of the commit to
// compare with, built there with `pnpm build && pnpm exec tsc -b test`), or, with
// `variant:<name>` in place of the checkout, another variant of this build; both servers alive
// at once on the server CPU, loaded in turn for `rounds` short runs each. Prints the server CPU
// per request of each run and the median of this ÷ other over the rounds: on a shared VM the
// machine drifts by more than a small change costs, and runs close together in alternation
// see the same machine.
import { resolve } from 'node:path';
import { roundOrder } from './measure.js';
import { prepareScenario, variantOf } from './one-scenario.js';
import { otherBuildEntry, startServerProcess, type RunningServer } from './server-handle.js';
import { median } from './stats.js';

const USAGE =
  'pnpm bench:compare <other-checkout | variant:<other-variant>> <transport> <variant> <tokens> [rounds, default 8] [seconds, default 4]';
const OTHER_VARIANT = 'variant:';

function positive(value: string | undefined, fallback: number, what: string): number {
  const n = value === undefined ? fallback : Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`usage: ${USAGE}\n  ${what} must be a positive integer`);
  return n;
}

async function main(): Promise<void> {
  const [otherArg, transportArg, variantArg, tokensArg, roundsArg, secondsArg] = process.argv.slice(2);
  if (otherArg === undefined) throw new Error(`usage: ${USAGE}`);
  const otherVariantArg = otherArg.startsWith(OTHER_VARIANT) ? otherArg.slice(OTHER_VARIANT.length) : undefined;
  const otherEntry = otherVariantArg === undefined ? otherBuildEntry(otherArg) : undefined;
  const rounds = positive(roundsArg, 8, 'rounds');
  const seconds = positive(secondsArg, 4, 'seconds');
  const one = await prepareScenario(transportArg, variantArg, tokensArg, USAGE);
  const { variant } = one;
  const { transport, tokens, generator } = one.scenario;
  const servers: { name: string; server: RunningServer; cpu: number[] }[] = [];
  try {
    const otherVariant = otherVariantArg === undefined ? variant : variantOf(transport, otherVariantArg, USAGE);
    const spec = { transport, variant, jwks: one.jwks, tls: one.pki.server };
    servers.push({ name: 'this', server: await startServerProcess(spec, one.where.server), cpu: [] });
    servers.push({
      name: 'other',
      server: await startServerProcess(
        { ...spec, variant: otherVariant },
        one.where.server,
        otherEntry === undefined ? {} : { entry: otherEntry },
      ),
      cpu: [],
    });
    console.log(`# ${transport} ${variant}, ${tokens} tokens, ${generator}, ${one.where.description}`);
    const other = otherEntry === undefined ? `${otherVariant} of this build` : resolve(otherArg);
    console.log(`# this: ${process.cwd()}; other: ${other}; ${String(rounds)} rounds of ${String(seconds)} s`);
    for (const { server } of servers) await one.run(server, one.config.warmupSeconds);
    const ratios: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const line: string[] = [];
      for (const entry of roundOrder(servers, round)) {
        const { result: run, cpuPerRequest: us } = await one.run(entry.server, seconds);
        if (us === undefined) throw new Error('the server CPU cannot be read (/proc)');
        if (run.other > run.requests / 100) throw new Error(`${entry.name}: ${String(run.other)} errors in a run`);
        entry.cpu.push(us);
        line.push(`${entry.name} ${us.toFixed(1)} µs (${String(Math.round(run.requests / run.seconds))} req/s)`);
      }
      const [mine, theirs] = servers;
      const ratio = (mine?.cpu[round] ?? NaN) / (theirs?.cpu[round] ?? NaN);
      ratios.push(ratio);
      console.log(`round ${String(round + 1)}: ${line.join(', ')}; this ÷ other ${ratio.toFixed(3)}`);
    }
    const [mine, theirs] = servers;
    console.log(
      `median server CPU per request: this ${median(mine?.cpu ?? []).toFixed(1)} µs, other ${median(theirs?.cpu ?? []).toFixed(1)} µs;` +
        ` this ÷ other, median of rounds: ${median(ratios).toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
    );
  } finally {
    await Promise.all(servers.map(({ server }) => server.stop()));
    one.close();
  }
}

await main();
