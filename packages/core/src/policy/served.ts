import type { Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkServedList, compilePattern, namesServed, overlapWitness } from '../rbac/pattern.js';
import type { SecurityPolicy } from './policy.js';

/** One operation pattern, with where it stands in the options or the policy. @internal */
export interface NamedPattern {
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
  checkPatternsServed(patternsOf(policy), served, transport, where);
}

/**
 * Refuses, at start-up, the patterns (each named by its place in the options) that match none
 * of the `served` operations: the `servedOperations` check of the factories with rules per
 * operation (`createRateLimit`, `createInputLimits`, `createTimeouts`) and of a policy. Only the
 * patterns of `transport` are checked; without one, those of the kinds (gRPC, HTTP) that
 * `served` holds.
 *
 * @throws ConfigurationError for a `served` that is not an array of operations, or naming each
 *   stray pattern.
 *
 * @internal
 */
export function checkPatternsServed(
  patterns: readonly NamedPattern[],
  served: unknown,
  transport: Transport | undefined,
  where: string,
): void {
  const operations = checkServedList(served, where, 'servedOperations');
  // Read as "checked" while nothing was: no kind of operation to hold the patterns against.
  if (operations.length === 0) {
    throw new ConfigurationError(`${where}: "servedOperations" is empty, so no pattern could be checked against it`);
  }
  const checksGrpc = transport === undefined ? operations.some((op) => op.startsWith('/')) : transport === 'grpc';
  const checksHttp = transport === undefined ? operations.some((op) => !op.startsWith('/')) : transport === 'http';
  const stray = patterns.filter(
    ({ at, pattern }) =>
      (pattern.startsWith('/') ? checksGrpc : checksHttp) && !namesServed(compilePattern(pattern, at), operations),
  );
  if (stray.length > 0) {
    throw new ConfigurationError(
      `${where}: ${stray.length === 1 ? 'a pattern names' : 'patterns name'} operations this server does not serve: ${stray
        .map(({ at, pattern }) => `${at} "${pattern}"`)
        .join(', ')}`,
    );
  }
}

/**
 * Refuses, at start-up, a pattern that names none of the `served` operations but one of them in
 * other letter case (`/inventory.v1.Items/deleteItem` for `DeleteItem`, `GET /v1/Admin/users`
 * for `/v1/admin/users`): rules match letter for letter, so the operation would fall under a
 * broader rule (a reader's) instead of the one written for it (an admin's). The gRPC adapter
 * holds the patterns against the methods of each service it registers, the Express adapter
 * against the app's routes.
 *
 * @throws ConfigurationError naming the pattern and the operation it was surely meant for.
 *
 * @internal
 */
export function checkLetterCase(patterns: readonly string[], served: readonly string[], where: string): void {
  if (patterns.length === 0 || served.length === 0) return;
  const folded = served.map(foldCase);
  for (const pattern of patterns) {
    const compiled = compilePattern(pattern, where);
    if (namesServed(compiled, served)) continue;
    const loose = compilePattern(foldCase(pattern), where);
    const near = folded.findIndex((op) => loose.key === op || loose.matches(op));
    if (near === -1) continue;
    throw new ConfigurationError(
      `${where}: the rule pattern "${pattern}" names no operation this server serves, only "${served[near] ?? ''}" in other letter case: rules match letter for letter, so that operation would fall under another rule`,
    );
  }
}

/**
 * The patterns of `transport` (gRPC names start with `/`) that name none of the `served`
 * operations: what the adapters warn about once a server's operations are all known.
 *
 * @internal
 */
export function unservedPatterns(
  patterns: readonly string[],
  served: readonly string[],
  transport: Transport,
  where: string,
): string[] {
  return [...new Set(patterns)].filter(
    (pattern) =>
      pattern.startsWith('/') === (transport === 'grpc') &&
      !namesServed(compilePattern(pattern, where), served) &&
      !(transport === 'http' && overlapsServed(pattern, served)),
  );
}

/**
 * Whether an HTTP pattern names a request some route serves: a literal rule below a `:param`
 * route (`GET /v1/items/special` for `/v1/items/:id`) applies, as does an `OPTIONS` rule on any
 * route's path, which Express (or `cors`) answers whatever the route's method.
 */
function overlapsServed(pattern: string, served: readonly string[]): boolean {
  const anyMethod = pattern.startsWith('OPTIONS ') ? `* ${pattern.slice('OPTIONS '.length)}` : pattern;
  return served.some((route) => overlapWitness(anyMethod, route) !== undefined);
}

const warnedUnserved = new Set<string>();
const scheduled = new WeakSet<object>();
/** How long after a server's first call its patterns are held against what it serves. */
const UNSERVED_CHECK_DELAY_MS = 1_000;

/**
 * Runs `check` once per `key` (a pipeline), a second after it is first asked: by then a
 * process's servers have usually all registered their services and routes (a guard shared by
 * two servers, the second started after the first took a call), so fewer rules are reported
 * that another server serves.
 *
 * @internal
 */
export function checkUnservedLater(key: object, check: () => void): void {
  if (scheduled.has(key)) return;
  scheduled.add(key);
  setTimeout(() => {
    try {
      check();
    } catch {
      // Only a warning: nothing it could fail on may stop serving.
    }
  }, UNSERVED_CHECK_DELAY_MS).unref();
}

/**
 * Warns once per process and pattern (`FLUXGUARD_UNSERVED_RULE`) about rule patterns that name
 * nothing the server serves. A misspelt pattern never applies: a rate limit that never counts,
 * a route left to a broader rule. Only a warning, as the adapters cannot see everything that
 * serves requests (a middleware, another server sharing the policy); `servedOperations` makes it
 * an error at start-up.
 *
 * @internal
 */
export function warnUnservedPatterns(patterns: readonly string[], served: string): void {
  for (const pattern of patterns) {
    if (warnedUnserved.has(pattern)) continue;
    warnedUnserved.add(pattern);
    process.emitWarning(
      `fluxguard: the rule pattern "${pattern}" names no ${served}, so it may never apply (a misspelt rule: a rate limit that never counts, a route left to a broader rule). Correct it; if something fluxguard cannot see serves it (a middleware at the top, another server), start Node with --disable-warning=FLUXGUARD_UNSERVED_RULE`,
      { code: 'FLUXGUARD_UNSERVED_RULE' },
    );
  }
}

/** An operation or pattern in lower case, its HTTP method left as it is (a pattern's is in capitals). */
function foldCase(operation: string): string {
  if (operation.startsWith('/')) return operation.toLowerCase();
  const space = operation.indexOf(' ');
  return space === -1 ? operation : operation.slice(0, space) + operation.slice(space).toLowerCase();
}

function patternsOf(policy: SecurityPolicy): readonly NamedPattern[] {
  const found: NamedPattern[] = [...rateLimitPatterns(policy.rateLimits?.rules ?? [], 'rateLimits')];
  for (const section of ['timeouts', 'limits'] as const) {
    policy[section]?.rules?.forEach((rule, i) => {
      found.push({ at: `${section}.rules[${String(i)}].operation`, pattern: rule.operation });
    });
  }
  return found;
}

/**
 * The operation patterns of rate-limit rules (`operations` and `operationCosts`), each named by
 * its place below `where`.
 *
 * @internal
 */
export function rateLimitPatterns(
  rules: readonly {
    readonly operations?: readonly string[] | undefined;
    readonly operationCosts?: Readonly<Record<string, number>> | undefined;
  }[],
  where: string,
): NamedPattern[] {
  return rules.flatMap((rule, i) => {
    const at = `${where}.rules[${String(i)}]`;
    return [
      ...(rule.operations ?? []).map((pattern, j) => ({ at: `${at}.operations[${String(j)}]`, pattern })),
      ...Object.keys(rule.operationCosts ?? {}).map((pattern) => ({ at: `${at}.operationCosts`, pattern })),
    ];
  });
}
