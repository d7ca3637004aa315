// Turns of the event loop counted or marked while some work runs: how a test sees that work
// let other work run between its pieces, without timing anything.

/**
 * Calls `onTurn` at every turn of the event loop (a `setImmediate` that schedules itself) until
 * `work` settles; resolves or rejects as `work` does.
 *
 * @example
 * ```ts
 * const log: string[] = [];
 * await eachTurnWhile(checking, () => log.push('|'));
 * ```
 */
export async function eachTurnWhile(work: Promise<unknown>, onTurn: () => void): Promise<void> {
  let pending = true;
  const turn = (): void => {
    if (!pending) return;
    onTurn();
    setImmediate(turn);
  };
  setImmediate(turn);
  try {
    await work;
  } finally {
    pending = false;
  }
}

/**
 * The turns of the event loop that passed while `work` ran.
 *
 * @example
 * ```ts
 * expect(await loopTurnsWhile(upload.updateInSlices(chunk))).toBeGreaterThanOrEqual(8);
 * ```
 */
export async function loopTurnsWhile(work: Promise<unknown>): Promise<number> {
  let turns = 0;
  await eachTurnWhile(work, () => {
    turns++;
  });
  return turns;
}
