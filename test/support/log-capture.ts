import { Writable } from 'node:stream';
import { createAuditLogger, type AuditLogger } from '@fluxguard/core';

/** One parsed pino line. */
export type LogLine = Record<string, unknown>;

/** An audit logger whose lines the test can read back. */
export interface CapturedLog {
  readonly audit: AuditLogger;
  readonly lines: LogLine[];
  /** Every line that carries this request id, as raw JSON text. */
  textFor(requestId: string): string;
}

/** Creates an audit logger writing into memory. */
export function captureLog(): CapturedLog {
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        raw.push(line);
        lines.push(JSON.parse(line) as LogLine);
      }
      done();
    },
  });
  const audit = createAuditLogger({ destination, level: 'debug' });
  return {
    audit,
    lines,
    textFor: (requestId) => raw.filter((line) => line.includes(`"requestId":"${requestId}"`)).join('\n'),
  };
}
