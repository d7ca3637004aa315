/**
 * The one base class of every error fluxguard throws, in the manner of jose's errors:
 * a stable string `code` to branch on, a neutral `message`, details kept in `cause`.
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
}

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
}
