// A destination for a pino logger (fluxguard's audit logger) whose lines a test reads back.
import { Writable } from 'node:stream';

/** What {@link captureLines} gives: the stream to write to and what came through it. */
export interface CapturedLines {
  /** Give it to `createAuditLogger({ destination })` (or pino). */
  readonly destination: Writable;
  /** Every line written so far, parsed; the same array grows as lines come. */
  readonly lines: Record<string, unknown>[];
  /** Every line written so far, as its raw JSON text. */
  readonly raw: string[];
}

/**
 * A writable that keeps each JSON line written to it, parsed and as text. A write may hold
 * several lines, or end without a line break; a line is read once it is whole.
 *
 * @example
 * ```ts
 * const { destination, lines } = captureLines();
 * const audit = createAuditLogger({ destination });
 * audit.record({ event: 'app.note', outcome: 'allowed', operation: 'x', requestId: 'r-1' });
 * lines[0]?.event; // 'app.note'
 * ```
 */
export function captureLines(): CapturedLines {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  let partial = '';
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        if (line.trim() === '') continue;
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { destination, lines, raw };
}

/** What {@link brokenDestination} gives: the destination and how many lines it was given. */
export interface BrokenDestination {
  /** A plain `{ write }` object (`'throw'`) or a Node stream (`'later'`). */
  readonly destination: { write(line: string): unknown };
  /** Lines given to it so far. */
  readonly writes: () => number;
  /** The destination as the stream it is (`'later'`), for its listeners; `undefined` for `'throw'`. */
  readonly stream: Writable | undefined;
}

/**
 * An audit destination that cannot write, as a log collector that went away: `'throw'` is a
 * plain object whose `write` throws (with the line in its message, as a careless destination's
 * error might), `'later'` a stream that calls back with an error after `write` returned, so that
 * it emits `'error'` and is destroyed. The error's `code` is `ECONNRESET`.
 *
 * @example
 * ```ts
 * const { destination, writes } = brokenDestination('later');
 * const audit = createAuditLogger({ destination });
 * ```
 */
export function brokenDestination(fails: 'throw' | 'later'): BrokenDestination {
  let writes = 0;
  const failure = (line: string): Error =>
    Object.assign(new Error(`the log collector went away while writing ${line}`), { code: 'ECONNRESET' });
  if (fails === 'throw') {
    return {
      destination: {
        write(line: string) {
          writes += 1;
          throw failure(line);
        },
      },
      writes: () => writes,
      stream: undefined,
    };
  }
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      writes += 1;
      setImmediate(() => {
        done(failure(chunk.toString('utf8')));
      });
    },
  });
  return { destination, writes: () => writes, stream: destination };
}

/**
 * Whether `line` is the error line of a call whose handler stopped reading what its client
 * sent (reason `request_unread`, with the bytes left unread), and, with `before`, whether it
 * was written before that time (ms since the epoch).
 *
 * @example
 * ```ts
 * await expect.poll(() => lines.filter((l) => isRequestUnreadLine(l))).toHaveLength(1);
 * ```
 */
export function isRequestUnreadLine(line: Record<string, unknown> | undefined, before = Infinity): boolean {
  const detail = line?.detail as Record<string, unknown> | undefined;
  return (
    line?.event === 'request.failed' &&
    line.level === 50 &&
    line.reason === 'request_unread' &&
    typeof detail?.bytesUnread === 'number' &&
    Date.parse(String(line.time)) < before
  );
}

/**
 * Whether `line` is the refusal line of a call whose deadline came less than `withinMs` after
 * its client finished sending (reason `request_late`, with how long before).
 *
 * @example
 * ```ts
 * await expect.poll(() => lines.map((l) => isRequestLateLine(l, 1_000))).toEqual([true]);
 * ```
 */
export function isRequestLateLine(line: Record<string, unknown> | undefined, withinMs: number): boolean {
  const detail = line?.detail as Record<string, unknown> | undefined;
  return (
    line?.event === 'request.denied' &&
    line.level === 40 &&
    line.reason === 'request_late' &&
    typeof detail?.msSinceRequestEnd === 'number' &&
    detail.msSinceRequestEnd < withinMs
  );
}
