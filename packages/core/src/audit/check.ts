import { ConfigurationError } from '../errors/fluxguard-error.js';
import type { AuditLogger } from './audit-logger.js';

/**
 * Refuses, at start-up, anything that is not an audit logger of `createAuditLogger`: the one
 * check every factory that takes `audit` makes, with one message.
 *
 * @throws ConfigurationError naming `owner`.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * assertAuditLogger(options.audit, 'safeErrors');
 * ```
 */
export function assertAuditLogger(value: unknown, owner: string): asserts value is AuditLogger {
  const candidate = value as Partial<AuditLogger> | null | undefined;
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    typeof candidate.record !== 'function' ||
    typeof candidate.recordFailure !== 'function' ||
    typeof candidate.logger !== 'object'
  ) {
    throw new ConfigurationError(
      `${owner}: "audit" is required: an AuditLogger (createAuditLogger of @fluxguard/core)`,
    );
  }
}
