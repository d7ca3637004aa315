import { readFileSync } from 'node:fs';

/**
 * The connections a server should hold at once: 80 % of the process's soft limit on open files
 * (Linux, `/proc/self/limits`), else 10,000. A flood of idle connections then meets a refused
 * connection instead of a process that can no longer open a file, a socket or a log.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { connectionBudget } from '@fluxguard/core/adapter';
 * server.maxConnections = connectionBudget();
 * ```
 */
export function connectionBudget(): number {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
    if (soft !== undefined) return Math.max(1, Math.floor(Number(soft) * 0.8));
  } catch {
    // Not Linux: no cheap way to read the limit.
  }
  return 10_000;
}
