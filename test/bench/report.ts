import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ColumnOutcome, ScenarioOutcome } from './measure.js';
import { columnsOf, hasFloor, scenarioTitle, variantOf, type Column } from './scenarios.js';
import { formatCount, formatRatio, median, table } from './stats.js';

/** The cell of a column the scenario does not have (floor outside the new and forged rows). */
const ABSENT = '–';

/** The columns whose CPU shares the table prints: floor's are in the per-scenario output only. */
const CPU_COLUMNS = ['bare', 'peer', 'fluxguard'] as const;

const percent = (share: number | undefined): string =>
  share === undefined || !Number.isFinite(share) ? '-' : String(Math.round(share * 100));

function requestsPerSecond(c: ColumnOutcome | undefined): string {
  if (c === undefined) return ABSENT;
  if (c.failure !== undefined) return 'FAILED';
  return formatCount(median(c.rounds.map((r) => r.requestsPerSecond)));
}

const generatorCpu = (c: ColumnOutcome): number => median(c.rounds.flatMap((r) => r.result.generatorCpu ?? []));
const serverCpu = (c: ColumnOutcome): number => median(c.rounds.flatMap((r) => r.serverCpu ?? []));
const cpuPerRequest = (c: ColumnOutcome): number => median(c.rounds.flatMap((r) => r.serverCpuPerRequest ?? []));
const micros = (value: number): string => (Number.isFinite(value) ? value.toFixed(1) : '-');
const triple = (o: ScenarioOutcome, f: (c: ColumnOutcome) => number): string =>
  CPU_COLUMNS.map((c) => percent(f(o.columns[c]))).join(' / ');

function ratioCell(o: ScenarioOutcome, value: number, other: Column): string {
  const against = o.columns[other];
  if (against === undefined) return ABSENT;
  if (o.columns.fluxguard.failure !== undefined || against.failure !== undefined) return '-';
  return formatRatio(value);
}

function label(o: ScenarioOutcome, column: Column): string {
  return variantOf(o.scenario, column);
}

/** The scenario as it finishes: every variant's rounds, CPU shares and failures. */
export function printScenario(o: ScenarioOutcome): void {
  const unit = o.scenario.expect === 'refused' ? 'refusals/s (bare: served/s)' : 'req/s';
  console.log(`\n## ${scenarioTitle(o.scenario)} — ${o.scenario.generator}, ${unit}`);
  if (o.scenario.note !== undefined) console.log(`   ${o.scenario.note}`);
  if (o.notRun !== undefined) {
    console.log(`   ${o.notRun.toUpperCase()}`);
    return;
  }
  const rows = columnsOf(o.scenario).flatMap((c) => {
    const col = o.columns[c];
    if (col === undefined) return [];
    return [
      [
        label(o, c),
        requestsPerSecond(col),
        col.rounds.map((r) => formatCount(r.requestsPerSecond)).join(' '),
        percent(generatorCpu(col)),
        percent(serverCpu(col)),
        micros(cpuPerRequest(col)),
      ],
    ];
  });
  console.log(
    table(['variant', 'median', 'per round', 'generator CPU %', 'server CPU %', 'server CPU µs/request'], rows),
  );
  const perFloor = hasFloor(o.scenario) ? `, fluxguard ÷ floor ${ratioCell(o, o.perFloor, 'floor')}` : '';
  console.log(
    `fluxguard ÷ bare ${ratioCell(o, o.perBare, 'bare')} (by server CPU per request ${ratioCell(o, o.perBareByCpu, 'bare')}), ` +
      `fluxguard ÷ peer ${ratioCell(o, o.perPeer, 'peer')}${perFloor} (median of per-round ratios)`,
  );
  for (const c of columnsOf(o.scenario)) {
    const failure = o.columns[c]?.failure;
    if (failure !== undefined) console.log(`   ${label(o, c)} FAILED: ${failure}`);
  }
}

/**
 * How fast fluxguard refuses, next to how fast it serves a repeated token with the same
 * generator: refusing should cost less than serving.
 */
function denialNotes(outcomes: readonly ScenarioOutcome[]): string[] {
  const notes: string[] = [];
  for (const o of outcomes) {
    if (o.scenario.expect !== 'refused' || o.notRun !== undefined) continue;
    const served = outcomes.find(
      (s) =>
        s.scenario.transport === o.scenario.transport &&
        s.scenario.generator === o.scenario.generator &&
        s.scenario.tokens === 'repeated' &&
        !s.scenario.rateLimit,
    );
    if (served === undefined || served.notRun !== undefined) continue;
    const refusals = median(o.columns.fluxguard.rounds.map((r) => r.requestsPerSecond));
    const serves = median(served.columns.fluxguard.rounds.map((r) => r.requestsPerSecond));
    notes.push(
      `- ${scenarioTitle(o.scenario)}: fluxguard refuses ${formatCount(refusals)}/s, serves ${formatCount(serves)}/s ` +
        `with a repeated token (${o.scenario.generator}): refusals ÷ served = ${formatRatio(refusals / serves)}`,
    );
  }
  return notes;
}

export function markdownTable(outcomes: readonly ScenarioOutcome[]): string {
  const header =
    '| scenario | generator | bare req/s | peer | fluxguard | floor | ÷ bare | ÷ bare by CPU | ÷ peer | ÷ floor | generator CPU % (bare / peer / fluxguard) | server CPU % (bare / peer / fluxguard) |';
  const rule = '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |';
  const rows = outcomes.map((o) => {
    const title = scenarioTitle(o.scenario) + (o.scenario.expect === 'refused' ? ' (refusals/s)' : '');
    if (o.notRun !== undefined) return `| ${title} | ${o.scenario.generator} | ${o.notRun} | | | | | | | | | |`;
    return [
      '',
      title,
      o.scenario.generator,
      requestsPerSecond(o.columns.bare),
      requestsPerSecond(o.columns.peer),
      requestsPerSecond(o.columns.fluxguard),
      requestsPerSecond(o.columns.floor),
      ratioCell(o, o.perBare, 'bare'),
      ratioCell(o, o.perBareByCpu, 'bare'),
      ratioCell(o, o.perPeer, 'peer'),
      ratioCell(o, o.perFloor, 'floor'),
      triple(o, generatorCpu),
      triple(o, serverCpu),
      '',
    ]
      .join(' | ')
      .trim();
  });
  const failures = outcomes.flatMap((o) =>
    columnsOf(o.scenario).flatMap((c) => {
      const failure = o.columns[c]?.failure;
      return failure === undefined || o.notRun !== undefined
        ? []
        : [`- FAILED ${scenarioTitle(o.scenario)}, ${label(o, c)}: ${failure}`];
    }),
  );
  const notes = denialNotes(outcomes);
  return [
    header,
    rule,
    ...rows,
    ...(notes.length > 0 ? ['', ...notes] : []),
    ...(failures.length > 0 ? ['', ...failures] : []),
  ].join('\n');
}

const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));

/** Writes the run's report to test/bench/results/<date>T<time>.md and returns its path. */
export function writeResults(heading: readonly string[], body: string, started: Date): string {
  mkdirSync(RESULTS, { recursive: true });
  const stamp = started.toISOString().slice(0, 19).replace(/:/g, '-');
  const file = `${RESULTS}${stamp}.md`;
  writeFileSync(file, `${heading.join('\n')}\n\n${body}\n`);
  return file;
}
