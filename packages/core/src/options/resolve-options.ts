import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * Merges a caller's options over frozen defaults into a new frozen object, after refusing any
 * key the factory does not know (with a "did you mean" hint for a misspelling). The caller's
 * object is never mutated. Validation of values stays with each factory.
 *
 * @example
 * ```ts
 * import { resolveOptions } from '@fluxguard/core';
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
  if (options === undefined) return Object.freeze({ ...defaults });
  // Options also arrive from plain JavaScript and parsed JSON: check the shape at run time.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigurationError(`${factory}: options must be an object`);
  }
  const known = [...Object.keys(defaults), ...extraKeys];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      const hint = closest(key, known);
      throw new ConfigurationError(
        `${factory}: unknown option "${key}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      );
    }
  }
  const merged: Record<string, unknown> = { ...defaults };
  for (const [key, value] of Object.entries(options)) {
    // An explicit undefined means "use the default", as with spread-based config elsewhere.
    if (value !== undefined) merged[key] = value;
  }
  return Object.freeze(merged) as Readonly<T>;
}

function closest(key: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
