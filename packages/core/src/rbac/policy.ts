import type { Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { isPolicyObject } from '../policy/fields.js';
import { checkRbacRules, type RbacMode, type RbacRule } from './rbac.js';

/**
 * The `rbac` section: a mode and a list of rules (see `compileRbac`).
 *
 * @example
 * ```ts
 * import type { RbacPolicy } from '@fluxguard/core';
 * const rbac: RbacPolicy = { mode: 'enforce', rules: [{ operation: 'GET /healthz', public: true }] };
 * ```
 */
export interface RbacPolicy {
  /** `enforce` (the default) denies; `shadow` allows every call and logs what it would deny (`rbac.shadow_denied`). */
  readonly mode?: RbacMode;
  /** The rules, gRPC and HTTP together; an operation no rule names is denied (`no_rule`). */
  readonly rules: readonly RbacRule[];
}

const RBAC_KEYS = ['mode', 'rules'] as const;

/**
 * Checks the `rbac` section of a policy and returns a frozen copy of it. The rules are compiled
 * here, which is their validation (errors name the rule and field,
 * `policy.rbac.rules[3].anyRoles[0] ...`); `compileRbac` given the returned rules reuses that
 * compiled form rather than compiling them again.
 *
 * @throws ConfigurationError naming the bad field.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseRbacPolicy
 * const rbac = parseRbacPolicy({ mode: 'shadow', rules: [{ operation: 'GET /healthz', public: true }] }, 'policy.rbac');
 * ```
 */
export function parseRbacPolicy(value: unknown, where: string): RbacPolicy {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(value, RBAC_KEYS, where, 'field');
  const mode = value.mode;
  if (mode !== undefined && mode !== 'enforce' && mode !== 'shadow') {
    throw new ConfigurationError(`${where}.mode must be "enforce" or "shadow"`);
  }
  if (!Array.isArray(value.rules)) {
    // `compileRbac` also takes an object keyed by pattern; a policy file takes a list, in order.
    throw new ConfigurationError(
      `${where}.rules must be an array of rules, each with its "operation": [{ "operation": "GET /v1/items/:id", "anyRoles": ["items.reader"] }]`,
    );
  }
  const rules = checkRbacRules(value.rules as readonly unknown[], `${where}.rules`);
  return Object.freeze(mode === undefined ? { rules } : { mode, rules });
}

/**
 * The rules of one transport from a policy that serves both: gRPC rules name
 * `/pkg.Service/Method` (they start with `/`), HTTP rules `METHOD /path`. Compile each
 * transport's rules apart, so that `servedOperations` checks compare like with like.
 *
 * @example
 * ```ts
 * import { compileRbac } from '@fluxguard/core';
 * // rbacRulesForTransport is internal to @fluxguard/core (createGuardFromPolicy calls it)
 * const rbac = compileRbac(rbacRulesForTransport(policy.rbac?.rules ?? [], 'grpc'), { mode: policy.rbac?.mode });
 * ```
 */
export function rbacRulesForTransport(rules: readonly RbacRule[], transport: Transport): readonly RbacRule[] {
  return Object.freeze(rules.filter((rule) => rule.operation.startsWith('/') === (transport === 'grpc')));
}
