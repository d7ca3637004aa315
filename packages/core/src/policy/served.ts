import type { Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { compilePattern, namesServed } from '../rbac/pattern.js';
import type { SecurityPolicy } from './policy.js';

/** One operation pattern of a policy section, with where it stands in the policy. */
interface NamedPattern {
  readonly at: string;
  readonly pattern: string;
}

/**
 * Refuses, at start-up, an operation pattern of the `rateLimits`, `timeouts` or `limits` section
 * that matches none of the operations the server serves, as `compileRbac` does for RBAC rules:
 * a misspelt method or route would otherwise leave its limit silently off (a rate limit on
 * `GET /v1/artifact` that never counts a list). Only the patterns of `transport` are checked;
 * without one, those of the kinds (gRPC, HTTP) that `served` holds.
 *
 * @throws ConfigurationError naming each stray pattern by its place in the policy.
 *
 * @internal
 */
export function checkPolicyServed(
  policy: SecurityPolicy,
  served: readonly string[],
  transport: Transport | undefined,
  where: string,
): void {
  if (!Array.isArray(served) || !served.every((o) => typeof o === 'string')) {
    throw new ConfigurationError(`${where}: "servedOperations" must be an array of strings`);
  }
  const checksGrpc = transport === undefined ? served.some((op) => op.startsWith('/')) : transport === 'grpc';
  const checksHttp = transport === undefined ? served.some((op) => !op.startsWith('/')) : transport === 'http';
  const stray = patternsOf(policy)
    .filter(({ pattern }) => (pattern.startsWith('/') ? checksGrpc : checksHttp))
    .filter(({ at, pattern }) => !namesServed(compilePattern(pattern, at), served));
  if (stray.length > 0) {
    throw new ConfigurationError(
      `${where}: ${stray.length === 1 ? 'a pattern names' : 'patterns name'} operations this server does not serve: ${stray
        .map(({ at, pattern }) => `${at} "${pattern}"`)
        .join(', ')}`,
    );
  }
}

function patternsOf(policy: SecurityPolicy): readonly NamedPattern[] {
  const found: NamedPattern[] = [];
  policy.rateLimits?.rules?.forEach((rule, i) => {
    const at = `rateLimits.rules[${String(i)}]`;
    rule.operations?.forEach((pattern, j) => found.push({ at: `${at}.operations[${String(j)}]`, pattern }));
    for (const pattern of Object.keys(rule.operationCosts ?? {})) found.push({ at: `${at}.operationCosts`, pattern });
  });
  for (const section of ['timeouts', 'limits'] as const) {
    policy[section]?.rules?.forEach((rule, i) => {
      found.push({ at: `${section}.rules[${String(i)}].operation`, pattern: rule.operation });
    });
  }
  return found;
}
