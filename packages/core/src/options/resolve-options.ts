import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from './unknown-keys.js';

/**
 * Merges a caller's options over frozen defaults into a new frozen object without a prototype,
 * after refusing any key the factory does not know (with a "did you mean" hint for a
 * misspelling) and any it knows but inherits. The caller's object is never mutated. Validation
 * of values stays with each factory.
 *
 * @example
 * ```ts
 * import { resolveOptions } from '@fluxguard/core/adapter';
 * const DEFAULTS = Object.freeze({ level: 'info', name: 'fluxguard' });
 * const opts = resolveOptions('createAuditLogger', DEFAULTS, { levl: 'debug' });
 * // throws ConfigurationError: createAuditLogger: unknown option "levl" (did you mean "level"?)
 * ```
 */
export function resolveOptions<T extends object>(
  factory: string,
  defaults: Readonly<T>,
  options: { readonly [K in keyof T]?: T[K] | undefined } | undefined,
  extraKeys: readonly string[] = [],
): Readonly<T> {
  // Without a prototype, a key neither given nor defaulted reads undefined even when something in
  // the process set it on Object.prototype (see `checkKnownKeys` for the caller's object).
  if (options === undefined) return Object.freeze(Object.assign(Object.create(null) as T, defaults));
  // Options also arrive from plain JavaScript and parsed JSON: check the shape at run time.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigurationError(`${factory}: options must be an object`);
  }
  checkKnownKeys(options, [...Object.keys(defaults), ...extraKeys], factory, 'option');
  const merged: Record<string, unknown> = Object.assign(Object.create(null) as Record<string, unknown>, defaults);
  for (const [key, value] of Object.entries(options)) {
    // An explicit undefined means "use the default", as with spread-based config elsewhere.
    if (value !== undefined) merged[key] = value;
  }
  return Object.freeze(merged) as Readonly<T>;
}
