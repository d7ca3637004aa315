// `pnpm bench:compare <other-checkout> <transport> <variant> <tokens> [rounds] [seconds] [--together]`:
// the same variant built from this checkout and from another (a git worktree of the commit to
// compare with, built there with `pnpm build && pnpm exec tsc -b test`), or, with
// `variant:<name>` in place of the checkout, another variant of this build. Prints the server
// CPU per request of each run and the median of this ÷ other over the rounds.
//
// By default both servers stay alive on the server CPU and are loaded in turn, for `rounds`
// short runs each: runs close together see nearly the same machine. With `--together`, each
// round starts both servers afresh and loads them at the same time on the same CPU, so that
// both see exactly the same machine: on a VM whose speed swings by a third within seconds,
// this is the reading that resolves a few percent (see the README).
import { resolve } from 'node:path';
import { roundOrder } from './measure.js';
import { prepareScenario, variantOf, type MeasuredRun, type OneScenario } from './one-scenario.js';
import { otherBuildEntry, startServerProcess, type RunningServer } from './server-handle.js';
import type { ServerSpec } from './servers.js';
import { median } from './stats.js';

const USAGE =
  'pnpm bench:compare <other-checkout | variant:<other-variant>> <transport> <variant> <tokens> [rounds, default 8] [seconds, default 4] [--together]';
const OTHER_VARIANT = 'variant:';
const TOGETHER = '--together';
// A new pair warms up on half the CPU each, and V8 keeps optimizing a server for about its first
// 50 000 requests: after the usual warm-up alone, the first run read fluxguard ÷ bare 1.78
// where the following ones read 1.33–1.43.
const TOGETHER_WARMUP_FACTOR = 4;

function positive(value: string | undefined, fallback: number, what: string): number {
  const n = value === undefined ? fallback : Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`usage: ${USAGE}\n  ${what} must be a positive integer`);
  return n;
}

/** One of the two servers compared: how to start it, and its CPU per request in each round. */
interface Side {
  readonly name: 'this' | 'other';
  readonly spec: ServerSpec;
  readonly entry: string | undefined;
  readonly cpu: number[];
}

/** The server CPU per request of `measured`, after checking the run had next to no errors. */
function cpuOf(side: Side, measured: MeasuredRun): number {
  const { result: run, cpuPerRequest: us } = measured;
  if (us === undefined) throw new Error('the server CPU cannot be read (/proc)');
  if (run.other > run.requests / 100) throw new Error(`${side.name}: ${String(run.other)} errors in a run`);
  side.cpu.push(us);
  return us;
}

function describe(side: Side, measured: MeasuredRun, us: number): string {
  const { result: run } = measured;
  return `${side.name} ${us.toFixed(1)} µs (${String(Math.round(run.requests / run.seconds))} req/s)`;
}

function start(one: OneScenario, side: Side): Promise<RunningServer> {
  return startServerProcess(side.spec, one.where.server, side.entry === undefined ? {} : { entry: side.entry });
}

/** Both servers alive for the whole comparison, loaded in turn; returns this ÷ other per round. */
async function inTurn(one: OneScenario, sides: readonly [Side, Side], rounds: number, seconds: number) {
  const servers: { side: Side; server: RunningServer }[] = [];
  const ratios: number[] = [];
  try {
    for (const side of sides) servers.push({ side, server: await start(one, side) });
    for (const { server } of servers) await one.run(server, one.config.warmupSeconds);
    for (let round = 0; round < rounds; round++) {
      const line: string[] = [];
      for (const { side, server } of roundOrder(servers, round)) {
        const measured = await one.run(server, seconds);
        line.push(describe(side, measured, cpuOf(side, measured)));
      }
      ratios.push(report(sides, round, line));
    }
  } finally {
    await Promise.all(servers.map(({ server }) => server.stop()));
  }
  return ratios;
}

/**
 * Each round: both servers started afresh, warmed up and then measured at the same time on the
 * server CPU, each by its own generator. A new pair every round, because a process keeps its
 * own small bias (where its code and heap landed) for its whole life.
 */
async function together(one: OneScenario, sides: readonly [Side, Side], rounds: number, seconds: number) {
  const ratios: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const servers: { side: Side; server: RunningServer }[] = [];
    try {
      // Which side starts, and has its generator started, first changes from round to round.
      for (const side of roundOrder(sides, round)) servers.push({ side, server: await start(one, side) });
      const warmup = one.config.warmupSeconds * TOGETHER_WARMUP_FACTOR;
      await Promise.all(servers.map(({ server }) => one.run(server, warmup)));
      const measured = await Promise.all(servers.map(({ server }) => one.run(server, seconds)));
      const line = servers.map(({ side }, i) => {
        const run = measured[i];
        if (run === undefined) throw new Error(`${side.name}: no run`);
        return describe(side, run, cpuOf(side, run));
      });
      ratios.push(report(sides, round, line));
    } finally {
      await Promise.all(servers.map(({ server }) => server.stop()));
    }
  }
  return ratios;
}

/** Prints one round's line; returns its this ÷ other. */
function report(sides: readonly [Side, Side], round: number, line: readonly string[]): number {
  const [mine, theirs] = sides;
  const ratio = (mine.cpu[round] ?? NaN) / (theirs.cpu[round] ?? NaN);
  console.log(`round ${String(round + 1)}: ${line.join(', ')}; this ÷ other ${ratio.toFixed(3)}`);
  return ratio;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flags = args.filter((arg) => arg.startsWith('--'));
  if (flags.some((flag) => flag !== TOGETHER)) throw new Error(`usage: ${USAGE}`);
  const [otherArg, transportArg, variantArg, tokensArg, roundsArg, secondsArg] = args.filter(
    (arg) => !arg.startsWith('--'),
  );
  if (otherArg === undefined) throw new Error(`usage: ${USAGE}`);
  const otherVariantArg = otherArg.startsWith(OTHER_VARIANT) ? otherArg.slice(OTHER_VARIANT.length) : undefined;
  const otherEntry = otherVariantArg === undefined ? otherBuildEntry(otherArg) : undefined;
  const rounds = positive(roundsArg, 8, 'rounds');
  const seconds = positive(secondsArg, 4, 'seconds');
  const one = await prepareScenario(transportArg, variantArg, tokensArg, USAGE);
  try {
    const { variant } = one;
    const { transport, tokens, generator } = one.scenario;
    const otherVariant = otherVariantArg === undefined ? variant : variantOf(transport, otherVariantArg, USAGE);
    const spec: ServerSpec = { transport, variant, jwks: one.jwks, tls: one.pki.server };
    const sides: [Side, Side] = [
      { name: 'this', spec, entry: undefined, cpu: [] },
      { name: 'other', spec: { ...spec, variant: otherVariant }, entry: otherEntry, cpu: [] },
    ];
    const mode = flags.includes(TOGETHER) ? 'loaded together, a new pair each round' : 'loaded in turn';
    console.log(`# ${transport} ${variant}, ${tokens} tokens, ${generator}, ${one.where.description}`);
    const other = otherEntry === undefined ? `${otherVariant} of this build` : resolve(otherArg);
    console.log(`# this: ${process.cwd()}; other: ${other}; ${String(rounds)} rounds of ${String(seconds)} s, ${mode}`);
    const ratios = flags.includes(TOGETHER)
      ? await together(one, sides, rounds, seconds)
      : await inTurn(one, sides, rounds, seconds);
    const [mine, theirs] = sides;
    console.log(
      `median server CPU per request: this ${median(mine.cpu).toFixed(1)} µs, other ${median(theirs.cpu).toFixed(1)} µs;` +
        ` this ÷ other, median of rounds: ${median(ratios).toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
    );
  } finally {
    one.close();
  }
}

await main();
