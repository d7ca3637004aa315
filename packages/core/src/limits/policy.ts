import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { isPolicyObject } from '../policy/fields.js';
import { compileInputLimits, type SizeLimitRule, type SizeLimits } from './input-limits.js';

/**
 * The `limits` section of a policy: size limits for every operation and rules for some, for
 * both transports (see `createInputLimits`); limits left out keep their secure defaults.
 *
 * @example
 * ```ts
 * import type { LimitsPolicy } from '@fluxguard/core';
 * const limits: LimitsPolicy = {
 *   maxBodyBytes: 1_048_576,
 *   rules: [{ operation: 'PUT /v1/artifacts/*path', maxBodyBytes: 67_108_864 }],
 * };
 * ```
 */
export interface LimitsPolicy extends SizeLimits {
  /** Limits for some operations, one rule per pattern; gRPC and HTTP rules may share the list. */
  readonly rules?: readonly SizeLimitRule[];
  /** HTTP: the content codings a request body may have (see `InputLimitsOptions.contentEncodings`). Default: none. */
  readonly contentEncodings?: readonly string[];
}

/**
 * Checks the `limits` section (by compiling it, which names the bad field) and returns a frozen
 * copy.
 *
 * @throws ConfigurationError naming the bad field, e.g. `policy.limits.rules[0].maxBodyBytes ...`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseLimitsPolicy
 * const limits = parseLimitsPolicy({ maxBodyBytes: 1_048_576 }, 'policy.limits');
 * ```
 */
export function parseLimitsPolicy(value: unknown, where: string): LimitsPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(
    value,
    ['maxBodyBytes', 'maxMessageBytes', 'maxMessages', 'rules', 'contentEncodings'],
    where,
    'field',
  );
  compileInputLimits(value, where);
  const rules = Array.isArray(value.rules)
    ? Object.freeze((value.rules as SizeLimitRule[]).map((rule) => Object.freeze({ ...rule })))
    : undefined;
  return Object.freeze({ ...(value as LimitsPolicy), ...(rules === undefined ? {} : { rules }) });
}
