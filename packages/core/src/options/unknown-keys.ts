import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * Refuses the first key of `value` that is not in `known`, naming it and, when one known key
 * is close enough to be a misspelling of it, that key. Factory options and policy sections
 * share this check so that a typo reads the same wherever it is made.
 *
 * @param where - what holds the keys, the start of the message (`createAuditLogger`, `policy.jwt`).
 * @param noun - what a key is called there: `option` for factory options, `field` for a policy.
 * @throws ConfigurationError `<where>: must be a plain object ...` for an object with another
 *   prototype than `Object.prototype` or `null` (a class instance, a Map, `Object.create(base)`).
 * @throws ConfigurationError `<where>: unknown <noun> "<key>"`, then ` (did you mean "<known>"?)`
 *   when there is a close match, else the known keys when there are at most 16.
 * @throws ConfigurationError `<where>: the <noun> "<key>" is not given here but inherited ...` for
 *   a known key that `value` inherits with a value (`Object.prototype` polluted).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): checkKnownKeys
 * checkKnownKeys({ levl: 'debug' }, ['level', 'name'], 'createAuditLogger', 'option');
 * // throws ConfigurationError: createAuditLogger: unknown option "levl" (did you mean "level"?)
 * ```
 */
export function checkKnownKeys(value: object, known: readonly string[], where: string, noun: 'option' | 'field'): void {
  checkPlainObject(value, where);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const hint = closestKey(key, known);
      // Without a near miss, the list of what is known (when it is short enough to read).
      const help =
        hint !== undefined
          ? ` (did you mean "${hint}"?)`
          : known.length > 0 && known.length <= 16
            ? ` (expected ${known.map((k) => `"${k}"`).join(', ')})`
            : '';
      throw new ConfigurationError(`${where}: unknown ${noun} "${key}"${help}`);
    }
  }
  // A known key read through the prototype was set on Object.prototype by something else in the
  // process (a polluting merge or query parser): it would configure this object, RBAC's shadow
  // mode or a denylist that revokes nothing, without anyone having written it here.
  for (const key of known) {
    if (!Object.hasOwn(value, key) && (value as Record<string, unknown>)[key] !== undefined) {
      throw new ConfigurationError(
        `${where}: the ${noun} "${key}" is not given here but inherited: something in this process set Object.prototype.${key} (prototype pollution); find and remove what sets it`,
      );
    }
  }
}

/**
 * Refuses an object whose prototype is not `Object.prototype` or `null`. Own keys are what the
 * checks read and what the merge copies: an inherited one (a class's getter, `Object.create(base)`)
 * was read by some checks and not by others, and a Map's entries by none.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): checkPlainObject
 * checkPlainObject(new Map(), 'rbac.rules');
 * // throws ConfigurationError: rbac.rules: must be a plain object (an object literal or parsed JSON), not an instance of Map
 * ```
 */
export function checkPlainObject(value: object, where: string): void {
  const prototype: unknown = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null && !isObjectPrototypeOfAnotherRealm(prototype)) {
    throw new ConfigurationError(
      `${where}: must be a plain object (an object literal or parsed JSON), not ${describeObject(value)}`,
    );
  }
}

/**
 * Refuses arguments given to a factory that takes none: from plain JavaScript, options passed
 * to it (`requestId({ trustClientIds: false })`) would be ignored without a word.
 *
 * @throws ConfigurationError `<name>: takes no options` when `given` is not empty.
 *
 * @example
 * ```ts
 * import { refuseOptions } from '@fluxguard/core/adapter';
 * export function notFound(...none: readonly never[]) {
 *   refuseOptions('notFound', none);
 *   // ...
 * }
 * ```
 */
export function refuseOptions(name: string, given: readonly unknown[]): void {
  if (given.length > 0) throw new ConfigurationError(`${name}: takes no options`);
}

/**
 * `Object.prototype` of another realm (a `vm` context, a test runner's sandbox): the root of
 * its chain, whose constructor is that realm's `Object`. Objects made there are plain too.
 */
function isObjectPrototypeOfAnotherRealm(prototype: unknown): boolean {
  if (typeof prototype !== 'object' || prototype === null || Object.getPrototypeOf(prototype) !== null) return false;
  const constructor: unknown = Object.getOwnPropertyDescriptor(prototype, 'constructor')?.value;
  return typeof constructor === 'function' && constructor.name === 'Object' && constructor.prototype === prototype;
}

/** What an object that is not plain is, for the message: its class, else "an object that inherits". */
function describeObject(value: object): string {
  const name: unknown = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' && name !== 'Object'
    ? `an instance of ${name}`
    : 'an object that inherits its keys from another';
}

/**
 * The known key `key` is most likely a misspelling of, compared without case: the nearest by
 * {@link editDistance}, if it is within a third of the key's length (at least two edits).
 * Farther matches are left out: a far-fetched hint misleads more than none.
 *
 * @example
 * ```ts
 * import { closestKey } from '@fluxguard/core/adapter';
 * closestKey('timeoutMS', ['level', 'timeoutMs']); // 'timeoutMs'
 * closestKey('clockTolerance', ['clockToleranceSeconds']); // 'clockToleranceSeconds'
 * closestKey('completelyDifferent', ['level', 'timeoutMs']); // undefined
 * ```
 */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  if (best !== undefined) return best;
  // The same name with another unit, or none: `clockTolerance` for `clockToleranceSeconds`,
  // `maxBodySize` for `maxBodyBytes`.
  const stem = withoutUnit(key);
  return stem === '' ? undefined : known.find((candidate) => withoutUnit(candidate) === stem);
}

const UNIT_SUFFIX = /(?:ms|millis|milliseconds|seconds|secs|sec|bytes|size|length|count)$/;

function withoutUnit(key: string): string {
  return key.toLowerCase().replace(UNIT_SUFFIX, '');
}

/**
 * Optimal string alignment distance: insertions, deletions, substitutions and a swap of two
 * adjacent characters each count as one edit, since a swapped pair is the commonest typo.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): editDistance
 * editDistance('rbac', 'rabc'); // 1
 * editDistance('level', 'levl'); // 1
 * ```
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 0; j <= b.length; j++) (d[0] ?? [])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((d[i - 1]?.[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (d[i - 1]?.[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j] ?? 0, (d[i - 2]?.[j - 2] ?? 0) + 1);
      }
    }
  }
  return d[a.length]?.[b.length] ?? 0;
}
