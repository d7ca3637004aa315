import { describe, expect, it } from 'vitest';
import { eachTurnWhile } from '@fluxguard/test-support/loop-turns';
import { CheckTurns } from './check-turns.js';

/**
 * Runs `work` and writes `|` into `log` at every turn of the event loop meanwhile, so that the
 * log shows which pieces ran in the same turn.
 */
async function withTurnMarks(log: string[], work: Promise<unknown>): Promise<string[][]> {
  await eachTurnWhile(work, () => log.push('|'));
  const turns: string[][] = [[]];
  for (const entry of log) {
    if (entry === '|') turns.push([]);
    else turns[turns.length - 1]?.push(entry);
  }
  return turns.filter((turn) => turn.length > 0);
}

describe('CheckTurns', () => {
  it('runs work in a later turn, settling as the work returns or throws', async () => {
    const turns = new CheckTurns();
    let ran = false;
    const result = turns.run(() => {
      ran = true;
      return 42;
    });
    expect(ran).toBe(false);
    expect(turns.waiting).toBe(1);
    await expect(result).resolves.toBe(42);
    const refusal = new Error('refused');
    await expect(
      turns.run(() => {
        throw refusal;
      }),
    ).rejects.toBe(refusal);
    expect(turns.waiting).toBe(0);
  });

  it('runs pieces back to back until the budget is spent, the rest in later turns', async () => {
    // Each piece takes 6 ms of a clock that moves only when a piece runs: two fit a 10 ms budget.
    let clock = 0;
    const turns = new CheckTurns(10, () => clock);
    const log: string[] = [];
    const piece = (name: string) => () => {
      clock += 6;
      log.push(name);
    };
    const all = Promise.all(['a1', 'a2', 'a3', 'a4', 'a5'].map((name) => turns.run(piece(name))));
    expect(await withTurnMarks(log, all)).toEqual([['a1', 'a2'], ['a3', 'a4'], ['a5']]);
    // A piece that alone takes more than the budget still runs whole, alone in its turn.
    const long = Promise.all(['b1', 'b2'].map((name) => turns.run(() => ((clock += 50), log.push(name)))));
    log.length = 0;
    expect(await withTurnMarks(log, long)).toEqual([['b1'], ['b2']]);
  });

  it('lets callers that queue one piece at a time take turns with each other, in order', async () => {
    const turns = new CheckTurns(1_000);
    const log: string[] = [];
    const caller = async (name: string, pieces: number): Promise<void> => {
      for (let i = 1; i <= pieces; i++) await turns.run(() => log.push(`${name}${String(i)}`));
    };
    const both = Promise.all([caller('a', 3), caller('b', 3)]);
    // Each caller's next piece is queued after the turn that ran its last: one piece each per turn.
    expect(await withTurnMarks(log, both)).toEqual([
      ['a1', 'b1'],
      ['a2', 'b2'],
      ['a3', 'b3'],
    ]);
  });

  it('leaves work queued while a turn runs for a later turn', async () => {
    const turns = new CheckTurns(1_000);
    const log: string[] = [];
    let inner: Promise<unknown> | undefined;
    const outer = turns.run(() => {
      log.push('outer');
      inner = turns.run(() => log.push('inner'));
    });
    const both = outer.then(() => inner ?? Promise.reject(new Error('not queued')));
    expect(await withTurnMarks(log, both)).toEqual([['outer'], ['inner']]);
  });
});
