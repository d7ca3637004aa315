import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * True for a mapping (a JSON object): not null, not an array. Every policy section starts
 * with this check, since a policy arrives as parsed JSON or YAML, not as typed values.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): isPolicyObject
 * if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
 * ```
 */
export function isPolicyObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Refuses anything but a string with a non-blank character, naming the field.
 *
 * @throws ConfigurationError `<where> must be a non-empty string`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): checkNonEmptyString
 * checkNonEmptyString(section.typ, 'policy.jwt.typ');
 * ```
 */
export function checkNonEmptyString(value: unknown, where: string): void {
  if (typeof value !== 'string' || value.trim() === '')
    throw new ConfigurationError(`${where} must be a non-empty string`);
}

/**
 * Refuses anything but a non-empty string or a non-empty list of them (issuer, audience and
 * the like, where one value or several are both natural), naming the bad item.
 *
 * @throws ConfigurationError `<where> must not be empty` or `<where>[i] must be a non-empty string`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): checkStringOrList
 * checkStringOrList(section.audience, 'policy.jwt.audience');
 * ```
 */
export function checkStringOrList(value: unknown, where: string): void {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new ConfigurationError(`${where} must not be empty`);
    (value as unknown[]).forEach((v, i) => {
      checkNonEmptyString(v, `${where}[${i}]`);
    });
  } else {
    checkNonEmptyString(value, where);
  }
}

/**
 * A frozen copy of a checked section, arrays and mappings copied at every level: the caller's
 * objects, changed after the check, change nothing (a `clientCertificates` turned to `'Strict'`
 * after parsing left every call without a certificate check).
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): frozenCopy
 * const mtls = frozenCopy(parseMtlsPolicy(section, 'policy.mtls'));
 * ```
 */
export function frozenCopy<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return Object.freeze(value.map((item: unknown) => frozenCopy(item))) as T;
  const copy: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) copy[key] = frozenCopy(item);
  return Object.freeze(copy) as T;
}
