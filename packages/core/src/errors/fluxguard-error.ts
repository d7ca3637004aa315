/**
 * The brand every fluxguard error carries, registered globally (`Symbol.for`) so that it is the
 * same symbol in every copy of `@fluxguard/core` a process loads. An install tree can hold two
 * copies (an adapter resolving one version, the application another); `instanceof` compares
 * prototypes, which differ between copies, so an error thrown by one copy would look foreign to
 * the other and a refusal would be answered as an internal error. The brand does not.
 *
 * Its value names the class family: `fluxguard` for the base class, `security` and
 * `configuration` for the two errors with a public meaning. It sits on the prototypes, not on
 * each instance, so that a refusal under a flood costs nothing more.
 *
 * @example
 * ```ts
 * import { FLUXGUARD_ERROR_BRAND, SecurityError } from '@fluxguard/core';
 * (new SecurityError('not_found') as unknown as Record<symbol, unknown>)[FLUXGUARD_ERROR_BRAND]; // 'security'
 * ```
 */
export const FLUXGUARD_ERROR_BRAND: unique symbol = Symbol.for('fluxguard.error') as never;

/** The class families of {@link FLUXGUARD_ERROR_BRAND}. */
type BrandKind = 'fluxguard' | 'security' | 'configuration';

/**
 * The brand of `value`, or `undefined` when it is not a fluxguard error of any copy of core.
 *
 * @internal
 */
export function brandOf(value: unknown): BrandKind | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const brand = (value as Record<symbol, unknown>)[FLUXGUARD_ERROR_BRAND];
  return brand === 'fluxguard' || brand === 'security' || brand === 'configuration' ? brand : undefined;
}

/**
 * Marks a class's prototype with its brand.
 *
 * @internal
 */
export function setBrand(prototype: object, kind: BrandKind): void {
  // Not enumerable: the brand must not show up in a log line or a JSON body.
  Object.defineProperty(prototype, FLUXGUARD_ERROR_BRAND, { value: kind, enumerable: false, writable: false });
}

const ordinaryHasInstance = Function.prototype[Symbol.hasInstance];

/**
 * The `instanceof` of fluxguard's own error classes: the prototype chain first, then the brand,
 * so that `err instanceof SecurityError` also holds for an error of another copy of core. Only
 * for the exact class that registered `check`: a subclass an application writes keeps the
 * ordinary prototype test, since the brand cannot tell its instances from its siblings'.
 *
 * @internal
 */
export function brandedHasInstance(
  owner: abstract new (...args: never[]) => unknown,
  self: unknown,
  value: unknown,
  check: (value: unknown) => boolean,
): boolean {
  return ordinaryHasInstance.call(self, value) || (self === owner && check(value));
}

/**
 * True when `value` is an error thrown by fluxguard, from this copy of `@fluxguard/core` or any
 * other in the process: it carries the fluxguard brand and a string `code`.
 *
 * @example
 * ```ts
 * import { isFluxguardError } from '@fluxguard/core';
 * try { start(); } catch (err) { if (isFluxguardError(err)) console.error(err.code); }
 * ```
 */
export function isFluxguardError(value: unknown): value is FluxguardError {
  return brandOf(value) !== undefined && typeof (value as { code?: unknown }).code === 'string';
}

/**
 * True when `value` is a {@link ConfigurationError} of any copy of `@fluxguard/core` (the brand
 * and the code `invalid_configuration`).
 *
 * @example
 * ```ts
 * import { isConfigurationError } from '@fluxguard/core';
 * try { createAuditLogger({ level: 'loud' as never }); } catch (err) { if (isConfigurationError(err)) process.exit(78); }
 * ```
 */
export function isConfigurationError(value: unknown): value is ConfigurationError {
  return brandOf(value) === 'configuration' && (value as { code?: unknown }).code === 'invalid_configuration';
}

/**
 * The one base class of every error fluxguard throws, in the manner of jose's errors:
 * a stable string `code` to branch on, a neutral `message`, details kept in `cause`.
 * `instanceof` also recognises the errors of another copy of `@fluxguard/core` (see
 * {@link FLUXGUARD_ERROR_BRAND}).
 *
 * @example
 * ```ts
 * import { FluxguardError } from '@fluxguard/core';
 * try { start(); } catch (err) { if (err instanceof FluxguardError) console.error(err.code); }
 * ```
 */
export class FluxguardError extends Error {
  /** A stable identifier; safe to branch on, unlike `message`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return brandedHasInstance(FluxguardError, this, value, isFluxguardError);
  }
}
setBrand(FluxguardError.prototype, 'fluxguard');

/**
 * Thrown at start-up when a factory receives options it cannot run with safely. Never thrown
 * while serving a request: options are validated once, at construction.
 *
 * @example
 * ```ts
 * import { ConfigurationError } from '@fluxguard/core';
 * throw new ConfigurationError('createAuditLogger: "level" must be one of fatal, error, warn, info, debug, trace');
 * ```
 */
export class ConfigurationError extends FluxguardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_configuration', message, options);
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return brandedHasInstance(ConfigurationError, this, value, isConfigurationError);
  }
}
setBrand(ConfigurationError.prototype, 'configuration');
