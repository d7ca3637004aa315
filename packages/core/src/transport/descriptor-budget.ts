import { readFileSync } from 'node:fs';
import { refuseOptions } from '../options/unknown-keys.js';

/**
 * How a server spends its open-file limit, so that a flood meets a refused connection or call
 * instead of a process that can no longer open a file, a socket or a log (EMFILE deep in a
 * handler). Of the soft limit: 70 % for client connections, 10 % (at most 512) for calls in
 * flight, each of which may hold two descriptors (an upload's file, an import's outbound
 * socket); the last 10 % stays free for listening sockets, logs, Redis and key-set fetches.
 *
 * @example
 * ```ts
 * import { createConcurrencyLimit, descriptorBudget } from '@fluxguard/core';
 * const budget = descriptorBudget();
 * // 20,000 open files: { openFiles: 20000, connections: 14000, inFlight: 512 }
 * const concurrency = createConcurrencyLimit({ maxInFlight: budget.inFlight, maxInFlightPerCaller: 32 });
 * ```
 */
export interface DescriptorBudget {
  /** The process's soft limit on open files; `undefined` where it cannot be read cheaply (not Linux). */
  readonly openFiles: number | undefined;
  /** Client connections held at once (the adapters' default `maxConnections`). */
  readonly connections: number;
  /** Calls in flight at once (`createConcurrencyLimit({ maxInFlight })`). */
  readonly inFlight: number;
}

/** Without a readable limit (not Linux): what a server with the usual 65,536 files could hold. */
const UNKNOWN_LIMIT_BUDGET: DescriptorBudget = Object.freeze({
  openFiles: undefined,
  connections: 10_000,
  inFlight: 512,
});

/**
 * The {@link DescriptorBudget} of this process, from its soft limit on open files (Linux,
 * `/proc/self/limits`), read once per call.
 *
 * @throws ConfigurationError when given an argument: it takes no options.
 *
 * @example
 * ```ts
 * import { descriptorBudget } from '@fluxguard/core';
 * console.log(descriptorBudget()); // with `ulimit -n 1024`: { openFiles: 1024, connections: 716, inFlight: 102 }
 * ```
 */
export function descriptorBudget(...none: readonly never[]): DescriptorBudget {
  refuseOptions('descriptorBudget', none);
  const openFiles = openFileLimit();
  if (openFiles === undefined) return UNKNOWN_LIMIT_BUDGET;
  return Object.freeze({
    openFiles,
    connections: Math.max(1, Math.floor(openFiles * 0.7)),
    inFlight: Math.max(1, Math.min(512, Math.floor(openFiles * 0.1))),
  });
}

/**
 * The connections a server should hold at once: {@link DescriptorBudget.connections}.
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
  return descriptorBudget().connections;
}

function openFileLimit(): number | undefined {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
    if (soft !== undefined) return Number(soft);
  } catch {
    // Not Linux: no cheap way to read the limit.
  }
  return undefined;
}
