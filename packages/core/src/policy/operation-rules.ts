import type { Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { compareSpecificity, compilePattern, refuseSameOperations, type OperationPattern } from '../rbac/pattern.js';
import { checkPatternsServed, type NamedPattern } from './served.js';

/** Operations are bounded by what a server serves, HTTP paths are not: the cache is emptied when full. */
const CACHE_LIMIT = 1024;

/**
 * Settings per operation, compiled once: rules naming operations with RBAC patterns (gRPC
 * `/pkg.Service/Method` or `/pkg.Service/*`, HTTP `METHOD /path` with `:param` and a final
 * `*splat`), the most specific rule winning, else the defaults. The answer for an operation is
 * cached (bounded), so a call costs one `Map` lookup.
 *
 * @internal
 */
export interface OperationRules<T> {
  readonly hasRules: boolean;
  /** The rules' operation patterns, as written. */
  readonly patterns: readonly string[];
  settingsFor(operation: string): T;
}

/**
 * Compiles `rules` (each `{ operation, ...settings }`, checked by `compile` against the
 * defaults) for one transport, or both when `transport` is undefined.
 *
 * @throws ConfigurationError naming the bad rule: not an object, an unknown key, a bad or
 *   repeated pattern, what `compile` refuses, or (with `servedOperations`) a pattern that names
 *   nothing served.
 *
 * @internal
 */
export function compileOperationRules<T>(
  rules: unknown,
  options: {
    readonly where: string;
    readonly keys: readonly string[];
    readonly defaults: T;
    readonly transport?: Transport | undefined;
    readonly compile: (rule: Record<string, unknown>, defaults: T, where: string) => T;
    /** How an unknown key is named in the error: `field` (a policy) or `option` (code). Default `field`. */
    readonly noun?: 'field' | 'option' | undefined;
    /** The operations the server serves: a rule (of `transport`) that names none of them is refused. */
    readonly servedOperations?: unknown;
  },
): OperationRules<T> {
  const { where, defaults, transport } = options;
  if (rules === undefined) {
    if (options.servedOperations !== undefined) checkPatternsServed([], options.servedOperations, transport, where);
    return { hasRules: false, patterns: [], settingsFor: () => defaults };
  }
  if (!Array.isArray(rules)) throw new ConfigurationError(`${where}.rules must be an array`);
  const written: OperationPattern[] = [];
  const named: NamedPattern[] = [];
  const compiled: { readonly pattern: OperationPattern; readonly settings: T }[] = [];
  (rules as unknown[]).forEach((rule, i) => {
    const at = `${where}.rules[${String(i)}]`;
    if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) {
      throw new ConfigurationError(`${at} must be an object`);
    }
    const record = rule as Record<string, unknown>;
    checkKnownKeys(record, ['operation', ...options.keys], at, options.noun ?? 'field');
    const pattern = compilePattern(record.operation, `${at}.operation`);
    written.push(pattern);
    named.push({ at: `${at}.operation`, pattern: String(record.operation) });
    const settings = options.compile(record, defaults, at);
    if (transport !== undefined && pattern.key.startsWith('/') !== (transport === 'grpc')) return;
    compiled.push({ pattern, settings });
  });
  refuseSameOperations(written, (i) => `${where}.rules[${String(i)}].operation`);
  if (options.servedOperations !== undefined) {
    checkPatternsServed(named, options.servedOperations, transport, where);
  }
  compiled.sort((a, b) =>
    a.pattern.exact === b.pattern.exact ? compareSpecificity(a.pattern, b.pattern) : a.pattern.exact ? -1 : 1,
  );
  const patterns = Object.freeze(named.map(({ pattern }) => pattern));
  if (compiled.length === 0) return { hasRules: false, patterns, settingsFor: () => defaults };
  const cache = new Map<string, T>();
  return {
    hasRules: true,
    patterns,
    settingsFor(operation) {
      let settings = cache.get(operation);
      if (settings === undefined) {
        // `matches` drops a trailing slash itself, as RBAC's look-up does.
        settings = compiled.find((rule) => rule.pattern.matches(operation))?.settings ?? defaults;
        if (cache.size >= CACHE_LIMIT) cache.clear();
        cache.set(operation, settings);
      }
      return settings;
    },
  };
}
