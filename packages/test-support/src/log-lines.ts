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
