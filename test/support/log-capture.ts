import { createAuditLogger, type AuditLogger } from '@fluxguard/core';
import { captureLines } from '@fluxguard/test-support/log-lines';

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
  const { destination, lines, raw } = captureLines();
  const audit = createAuditLogger({ destination, level: 'debug' });
  return {
    audit,
    lines,
    textFor: (requestId) => raw.filter((line) => line.includes(`"requestId":"${requestId}"`)).join('\n'),
  };
}
