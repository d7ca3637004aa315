import { setLogger } from '@grpc/grpc-js';
import type { AuditLogger } from '@fluxguard/core';
import { assertAuditLogger, resolveOptions, scrubSecrets, wholeNumber } from '@fluxguard/core/adapter';

/**
 * Options of {@link routeGrpcJsLogs}.
 *
 * @example
 * ```ts
 * const options: GrpcJsLogOptions = { audit, maxLinesPerInterval: 20, intervalMs: 10_000 };
 * ```
 */
export interface GrpcJsLogOptions {
  /** Where grpc-js's lines go (`createAuditLogger` of @fluxguard/core). */
  readonly audit: AuditLogger;
  /**
   * Lines written in full per interval, for each of two sources: lines a client causes (a
   * metadata entry grpc-js drops) and the others (the server's own: a secure context that
   * failed, a port not bound). The rest are counted. Default 20.
   */
  readonly maxLinesPerInterval?: number | undefined;
  /** The interval, in ms. Default 10 000. */
  readonly intervalMs?: number | undefined;
}

const DEFAULTS: Readonly<{ audit: AuditLogger | undefined; maxLinesPerInterval: number; intervalMs: number }> =
  Object.freeze({ audit: undefined, maxLinesPerInterval: 20, intervalMs: 10_000 });

/** The longest text kept of one grpc-js line: it may quote what a client sent, at any length. */
const MAX_TEXT = 300;

// grpc-js's line for a metadata entry it drops quotes the entry's values twice, whatever the key:
// a cookie, an API key or a password a client sent with one byte grpc-js refuses. The key is
// kept (an operator can tell which entry), the values never. Known by its start alone: a
// pattern of the key missed keys over 100 characters, and their lines were written whole, on the
// budget of the server's own lines.
const DROPPED_ENTRY = 'Failed to add metadata entry ';
/** The most of a dropped entry's key written: enough to tell which entry it was. */
const MAX_KEY = 100;
const PRINTABLE_KEY = /^[!-9;-~]+$/;

/** Lines written and lines only counted in the current interval. */
function newBudget(): { written: number; dropped: number } {
  return { written: 0, dropped: 0 };
}

function withoutClientValues(text: string): string {
  if (!text.startsWith(DROPPED_ENTRY)) return text;
  const end = text.indexOf(':', DROPPED_ENTRY.length);
  const key = text.slice(DROPPED_ENTRY.length, end === -1 ? DROPPED_ENTRY.length : end);
  const shown = !PRINTABLE_KEY.test(key)
    ? '(a key not shown)'
    : key.length > MAX_KEY
      ? `${key.slice(0, MAX_KEY)}...`
      : key;
  return `${DROPPED_ENTRY}${shown}: its value is withheld (bytes grpc-js does not accept)`;
}

/**
 * Sends the log lines of grpc-js itself to the audit logger, bounded, instead of to the
 * console. grpc-js writes a line at error level for every metadata entry it drops (a value with
 * bytes outside printable ASCII, say), quoting every value of the entry, before any interceptor
 * runs: an unauthenticated client sending 90 such entries per call makes it write about 140 KB
 * per call. Routed, each line is a `grpc-js.log` entry (grpc-js's errors at `warn`, the rest
 * at `debug`) with its text cut to 300 characters and tokens scrubbed, and the line for a
 * dropped metadata entry names the entry's key but never its values; past
 * `maxLinesPerInterval` lines in one interval they are only counted, and the count is written
 * (`grpc-js.log.folded`, with `source`) with the first line of a later interval. Lines clients
 * cause and the server's own lines are counted apart, so clients flooding the first cannot
 * hide the second.
 *
 * grpc-js has one logger per process (its `setLogger`), so this applies to every grpc-js client
 * and server of the process; call it once, at start-up.
 *
 * @example
 * ```ts
 * import { createAuditLogger } from '@fluxguard/core';
 * import { routeGrpcJsLogs } from '@fluxguard/grpc';
 * const audit = createAuditLogger();
 * routeGrpcJsLogs({ audit });
 * ```
 */
export function routeGrpcJsLogs(options: GrpcJsLogOptions): void {
  const opts = resolveOptions('routeGrpcJsLogs', DEFAULTS, options);
  assertAuditLogger(opts.audit, 'routeGrpcJsLogs');
  for (const key of ['maxLinesPerInterval', 'intervalMs'] as const) wholeNumber(opts[key], `routeGrpcJsLogs: "${key}"`);
  const { audit, maxLinesPerInterval, intervalMs } = opts;
  // Clients cause one kind of line (a metadata entry dropped), and have a budget of their own:
  // sharing one, a client sending such entries hid every other grpc-js line, a failed
  // certificate reload's included.
  const budgets = { client: newBudget(), server: newBudget() };
  let intervalStart = 0;
  const line =
    (severity: 'error' | 'info' | 'debug') =>
    (...parts: unknown[]) => {
      const now = Date.now();
      if (now - intervalStart >= intervalMs) {
        for (const [source, budget] of Object.entries(budgets)) {
          if (budget.dropped > 0) {
            audit.logger.warn(
              { event: 'grpc-js.log.folded', source, dropped: budget.dropped, intervalMs },
              'grpc-js.log.folded',
            );
          }
          budget.written = 0;
          budget.dropped = 0;
        }
        intervalStart = now;
      }
      // Which budget, from the first part alone: a line past its budget is only counted, and
      // joining the parts of every one (values of 16 KB each) cost more than the rest.
      const budget = String(parts[0]).startsWith(DROPPED_ENTRY) ? budgets.client : budgets.server;
      if (budget.written >= maxLinesPerInterval) {
        budget.dropped += 1;
        return;
      }
      budget.written += 1;
      const raw = parts.map(String).join(' ');
      const text = scrubSecrets(withoutClientValues(raw)).slice(0, MAX_TEXT);
      const entry = { event: 'grpc-js.log', severity, text };
      if (severity === 'error') audit.logger.warn(entry, 'grpc-js.log');
      else audit.logger.debug(entry, 'grpc-js.log');
    };
  setLogger({ error: line('error'), info: line('info'), debug: line('debug') });
}
