import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { isPolicyObject } from '../policy/fields.js';
import { compileTimeouts, type TimeoutRule, type TimeoutLimits } from './timeouts.js';

/**
 * The `timeouts` section of a policy: the defaults for every operation and rules for some, for
 * both transports (gRPC rules name `/pkg.Service/Method`, HTTP rules `METHOD /path`). See
 * `createTimeouts` for what each limit does; limits left out keep their secure defaults.
 *
 * @example
 * ```ts
 * import type { TimeoutsPolicy } from '@fluxguard/core';
 * const timeouts: TimeoutsPolicy = {
 *   defaultMs: 60_000,
 *   rules: [{ operation: '/fluxguard.example.v1.ArtifactStore/UploadArtifact', defaultMs: 300_000, idleMs: 15_000 }],
 * };
 * ```
 */
export interface TimeoutsPolicy extends TimeoutLimits {
  /** Limits for some operations, one rule per pattern; gRPC and HTTP rules may share the list. */
  readonly rules?: readonly TimeoutRule[];
}

const SECTION_KEYS = ['defaultMs', 'maxMs', 'idleMs', 'rules'] as const;
const RULE_KEYS = ['operation', 'defaultMs', 'maxMs', 'idleMs'] as const;

/**
 * Checks the `timeouts` section (by compiling it, which names the bad field) and returns a
 * frozen copy.
 *
 * @throws ConfigurationError naming the bad field, e.g. `policy.timeouts.rules[1].idleMs ...`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseTimeoutsPolicy
 * const timeouts = parseTimeoutsPolicy({ defaultMs: 30_000 }, 'policy.timeouts');
 * ```
 */
export function parseTimeoutsPolicy(value: unknown, where: string): TimeoutsPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(value, SECTION_KEYS, where, 'field');
  if (Array.isArray(value.rules)) {
    (value.rules as unknown[]).forEach((rule, i) => {
      if (isPolicyObject(rule)) checkKnownKeys(rule, RULE_KEYS, `${where}.rules[${String(i)}]`, 'field');
    });
  }
  compileTimeouts(value, where);
  const rules = Array.isArray(value.rules)
    ? Object.freeze((value.rules as TimeoutRule[]).map((rule) => Object.freeze({ ...rule })))
    : undefined;
  return Object.freeze({ ...(value as TimeoutsPolicy), ...(rules === undefined ? {} : { rules }) });
}
