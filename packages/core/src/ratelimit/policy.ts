import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { frozenCopy, isPolicyObject } from '../policy/fields.js';
import { compileBruteForce, type BruteForceOptions } from './brute-force.js';
import { compileRateLimit, type RateLimitRule } from './rate-limit.js';
import { createMemoryRateLimitStore, type RateLimitStore } from './store.js';
import type { Control } from '../pipeline/control.js';

/**
 * The `rateLimits` section of a policy: rules, brute-force protection, and where client
 * addresses come from. Rule keys are the strings of `RateLimitKey` (functions exist in code
 * only). Where counts live (memory or Redis) is chosen in code: `createGuardFromPolicy`'s
 * `rateLimitStore`.
 *
 * @example
 * ```ts
 * import type { RateLimitsPolicy } from '@fluxguard/core';
 * const rateLimits: RateLimitsPolicy = {
 *   rules: [{ name: 'per-peer', key: 'peer', points: 100, durationSeconds: 1 }],
 *   bruteForce: { peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 } },
 * };
 * ```
 */
export interface RateLimitsPolicy {
  /**
   * The rate-limit rules; a `key` is one of the string forms (`peer`, `subject`, `certificate`,
   * `header:<name>`), never a function.
   */
  readonly rules?: readonly (RateLimitRule & {
    readonly key: Exclude<RateLimitRule['key'], (...args: never[]) => unknown>;
  })[];
  /** Brute-force protection per client address (and per claimed subject). Absent: off. */
  readonly bruteForce?: Omit<BruteForceOptions, 'store' | 'trustedProxies' | 'ipv6PrefixLength' | 'forwardedHeader'>;
  /**
   * Addresses or CIDR ranges of the proxies whose forwarded header names the client, for the rules
   * and brute-force protection. Default: none.
   */
  readonly trustedProxies?: readonly string[];
  /** Leading bits of an IPv6 address that name one client. Default 64. */
  readonly ipv6PrefixLength?: number;
  /** The one header the trusted proxies write. Default `x-forwarded-for`. */
  readonly forwardedHeader?: 'x-forwarded-for' | 'forwarded';
}

const SECTION_KEYS = ['rules', 'bruteForce', 'trustedProxies', 'ipv6PrefixLength', 'forwardedHeader'] as const;

/**
 * Checks the `rateLimits` section (by compiling it, which names the bad field) and returns a
 * frozen copy.
 *
 * @throws ConfigurationError naming the bad field, e.g. `policy.rateLimits.rules[0].points ...`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseRateLimitsPolicy
 * const rateLimits = parseRateLimitsPolicy({ rules: [...] }, 'policy.rateLimits');
 * ```
 */
export function parseRateLimitsPolicy(value: unknown, where: string): RateLimitsPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(value, SECTION_KEYS, where, 'field');
  if (Array.isArray(value.rules)) {
    (value.rules as unknown[]).forEach((rule, i) => {
      if (isPolicyObject(rule) && typeof rule.key !== 'string') {
        throw new ConfigurationError(
          `${where}.rules[${String(i)}].key must be "peer", "subject", "certificate" or "header:<name>"`,
        );
      }
    });
  }
  if (isPolicyObject(value.bruteForce)) {
    // The section's own fields only: where counts live and client addresses are set elsewhere.
    checkKnownKeys(value.bruteForce, ['peer', 'subject', 'storeFailure'], `${where}.bruteForce`, 'field');
  }
  // Checked as copied: the caller's object, changed later, changes nothing.
  const policy = frozenCopy(value) as RateLimitsPolicy;
  rateLimitControls(policy, createMemoryRateLimitStore(), where);
  return policy;
}

/**
 * The controls a `rateLimits` section describes, counting in `store`.
 *
 * @internal
 */
export function rateLimitControls(policy: RateLimitsPolicy, store: RateLimitStore, where: string): readonly Control[] {
  const address = {
    ...(policy.trustedProxies === undefined ? {} : { trustedProxies: policy.trustedProxies }),
    ...(policy.ipv6PrefixLength === undefined ? {} : { ipv6PrefixLength: policy.ipv6PrefixLength }),
    ...(policy.forwardedHeader === undefined ? {} : { forwardedHeader: policy.forwardedHeader }),
  };
  if (policy.rules === undefined && policy.bruteForce === undefined) {
    // Client addresses alone limit nothing: a section without a control is refused.
    throw new ConfigurationError(`${where} has neither "rules" nor "bruteForce", so it would limit nothing`);
  }
  const controls: Control[] = [];
  if (policy.rules !== undefined) {
    controls.push(...compileRateLimit({ rules: policy.rules, store, ...address }, where).controls);
  }
  if (policy.bruteForce !== undefined) {
    if (!isPolicyObject(policy.bruteForce)) throw new ConfigurationError(`${where}.bruteForce must be an object`);
    controls.push(compileBruteForce({ ...policy.bruteForce, store, ...address }, `${where}.bruteForce`));
  }
  return controls;
}
