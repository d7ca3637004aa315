import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { Control } from '../pipeline/control.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Why the header limits refused a call: too many headers or metadata entries, too many bytes in
 * all or in one value, or a control character (CR, LF, NUL, ...) in a value that could reach a
 * log line or a response.
 *
 * @example
 * ```ts
 * import type { HeaderLimitsReason } from '@fluxguard/core';
 * const reason: HeaderLimitsReason = 'too_many_headers';
 * ```
 */
export type HeaderLimitsReason =
  'too_many_headers' | 'headers_too_large' | 'header_value_too_large' | 'header_bad_character';

/**
 * Options of {@link createHeaderLimits}.
 *
 * @example
 * ```ts
 * import type { HeaderLimitsOptions } from '@fluxguard/core';
 * const options: HeaderLimitsOptions = { maxCount: 64, maxTotalBytes: 8192 };
 * ```
 */
export interface HeaderLimitsOptions {
  /** Headers (HTTP) or metadata entries (gRPC), repeated ones counted each. Default 100. */
  readonly maxCount?: number | undefined;
  /** Names and values together, in bytes. Default 32 KiB. */
  readonly maxTotalBytes?: number | undefined;
  /** One text value, in bytes. Default 16 KiB (a JWT's own length limit is 8 KiB by default). */
  readonly maxValueBytes?: number | undefined;
  /** One binary (`-bin`) metadata value, in bytes. Default 8 KiB. */
  readonly maxBinaryValueBytes?: number | undefined;
}

const DEFAULTS: Readonly<Required<{ [K in keyof HeaderLimitsOptions]: number }>> = Object.freeze({
  maxCount: 100,
  maxTotalBytes: 32 * 1024,
  maxValueBytes: 16 * 1024,
  maxBinaryValueBytes: 8 * 1024,
});

// Tab is the only control character a header value may hold (RFC 9110 field-vchar and SP/HTAB).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

/**
 * Limits on what a request carries in its headers (HTTP) or metadata (gRPC), checked before any
 * token is verified (stage `pre-authentication`): how many, how many bytes in all and in one
 * value (binary `-bin` metadata apart), and no control character in a text value, so nothing a
 * client sends can split a log line or a response. Over a limit: `payload_too_large` (HTTP 413,
 * gRPC `RESOURCE_EXHAUSTED`); a control character: `invalid_argument` naming `headers`.
 *
 * @throws ConfigurationError for unknown options or a limit that is not a positive whole number.
 *
 * @example
 * ```ts
 * import { createHeaderLimits } from '@fluxguard/core';
 * const headers = createHeaderLimits({ maxCount: 64 });
 * // fluxguard({ audit, guard, controls: [headers] }) or fluxguardInterceptors({ audit, guard, controls: [headers] })
 * ```
 */
export function createHeaderLimits(options: HeaderLimitsOptions = {}): Control {
  const opts = resolveOptions('createHeaderLimits', DEFAULTS, options);
  for (const [key, value] of Object.entries(opts)) wholeNumber(value, `createHeaderLimits: "${key}"`);
  const { maxCount, maxTotalBytes, maxValueBytes, maxBinaryValueBytes } = opts;
  for (const [name, value] of [
    ['maxValueBytes', maxValueBytes],
    ['maxBinaryValueBytes', maxBinaryValueBytes],
  ] as const) {
    // One value over the whole total is refused by the total first: a limit given so would never
    // be met (a default above a lowered total just gives way to it).
    if (options[name] !== undefined && value > maxTotalBytes) {
      throw new ConfigurationError(
        `createHeaderLimits: "${name}" is above "maxTotalBytes" (${String(maxTotalBytes)}) and could never be reached`,
      );
    }
  }
  const tooLarge = (reason: HeaderLimitsReason): never => {
    throw new SecurityError('payload_too_large', { details: { field: 'headers' }, reason });
  };

  const onStart = (call: CallInfo): void => {
    const { headers } = call;
    if (headers.entries === undefined) {
      throw new SecurityError('internal', {
        cause: new ConfigurationError('header limits: this adapter does not list the headers of a call'),
      });
    }
    let count = 0;
    let total = 0;
    for (const [name, value] of headers.entries()) {
      count += 1;
      if (count > maxCount) tooLarge('too_many_headers');
      const bytes = typeof value === 'string' ? Buffer.byteLength(value) : value.byteLength;
      total += name.length + bytes;
      if (total > maxTotalBytes) tooLarge('headers_too_large');
      if (typeof value === 'string') {
        if (bytes > maxValueBytes) tooLarge('header_value_too_large');
        if (CONTROL.test(value)) {
          throw new SecurityError('invalid_argument', {
            details: { field: 'headers' },
            reason: 'header_bad_character',
          });
        }
      } else if (bytes > maxBinaryValueBytes) {
        tooLarge('header_value_too_large');
      }
    }
  };

  return Object.freeze({ name: 'header-limits', stage: 'pre-authentication', onStart });
}
