import type { CallInfo, Transport } from '../call/call-info.js';
import { declaresBody } from '../call/declared-body.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { createContextKey, type CallContext } from '../pipeline/call-context.js';
import type { Control, StartResult } from '../pipeline/control.js';
import { compileOperationRules } from '../policy/operation-rules.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Why the input limits refused a call: an HTTP body or a gRPC client stream over its total
 * (`body_too_large`, as the Express body parsers say it), a `Content-Length` that declares more
 * (`declared_too_large`), one gRPC message over its limit (`message_too_large`), a stream with
 * too many messages (`too_many_messages`), or a gRPC message whose size the adapter could not
 * tell (`message_size_unknown`: the service was not registered through fluxguard's `addService`).
 *
 * @example
 * ```ts
 * import type { LimitsReason } from '@fluxguard/core';
 * const reason: LimitsReason = 'message_too_large';
 * ```
 */
export type LimitsReason = 'declared_too_large' | 'message_too_large' | 'too_many_messages' | 'message_size_unknown';

/**
 * The size limits of one operation (or of every operation, as the defaults).
 *
 * @example
 * ```ts
 * import type { SizeLimits } from '@fluxguard/core';
 * const uploads: SizeLimits = { maxBodyBytes: 10 * 1024 * 1024, maxMessageBytes: 1024 * 1024, maxMessages: 10_000 };
 * ```
 */
export interface SizeLimits {
  /** HTTP: the request body; gRPC: all the messages of a call together. */
  readonly maxBodyBytes?: number | undefined;
  /** gRPC: one request message, as it arrived on the wire. */
  readonly maxMessageBytes?: number | undefined;
  /** gRPC: the request messages of a call (a client stream). */
  readonly maxMessages?: number | undefined;
}

/**
 * One rule of {@link InputLimitsOptions.rules}: the limits of the operations a pattern names, with
 * the same patterns as RBAC rules. Limits a rule leaves out are the defaults.
 *
 * @example
 * ```ts
 * import type { SizeLimitRule } from '@fluxguard/core';
 * const uploads: SizeLimitRule = { operation: 'PUT /v1/artifacts/*path', maxBodyBytes: 64 * 1024 * 1024 };
 * ```
 */
export interface SizeLimitRule extends SizeLimits {
  /** The operations the rule applies to, as RBAC patterns; the most specific rule wins. */
  readonly operation: string;
}

/**
 * Options of {@link createInputLimits}: the defaults for every operation and rules for some.
 *
 * @example
 * ```ts
 * import type { InputLimitsOptions } from '@fluxguard/core';
 * const options: InputLimitsOptions = { maxBodyBytes: 1_048_576, rules: [{ operation: '/pkg.Store/Upload', maxBodyBytes: 64 * 1_048_576 }] };
 * ```
 */
export interface InputLimitsOptions extends SizeLimits {
  /** Limits for some operations, one rule per pattern. Default: none (the defaults apply to every operation). */
  readonly rules?: readonly SizeLimitRule[] | undefined;
  /** Keep only this transport's rules (gRPC rules start with `/`). */
  readonly transport?: Transport | undefined;
  /**
   * HTTP: the content codings a request body may have, of `gzip`, `deflate` and `br` in lower
   * case (another, or `identity`, which is always accepted, is refused). Default: none,
   * so a body (a request that declares one) with any `Content-Encoding` but `identity` is refused with `400`
   * (`invalid_argument`, reason `body_encoding_unsupported`) before a byte of it is read. The
   * limits count a body's bytes as they arrive, and a body parser (`express.json`, `jsonBody`,
   * `express.raw`) inflates them: 50 gzip bytes became 5,000 past a 100-byte `maxBodyBytes`.
   * Allow a coding only where the parser's own `limit` bounds what it inflates. gRPC messages
   * are limited once decompressed, whatever this says.
   */
  readonly contentEncodings?: readonly string[] | undefined;
  /**
   * The operations this server serves (gRPC `/pkg.Service/Method`, HTTP `METHOD /path` as its
   * routes are written): a rule whose pattern names none of them is refused at start-up, so a
   * misspelt method or route cannot leave its limit silently off. Only the rules of `transport`
   * are checked; without one, those of the kinds the list holds.
   */
  readonly servedOperations?: readonly string[] | undefined;
}

/**
 * The secure defaults: a 1 MiB body or client stream, a 4 MiB message (grpc-js's own default),
 * 10,000 messages a call.
 *
 * @example
 * ```ts
 * import { SIZE_LIMIT_DEFAULTS } from '@fluxguard/core';
 * SIZE_LIMIT_DEFAULTS.maxBodyBytes; // 1048576
 * ```
 */
export const SIZE_LIMIT_DEFAULTS: Readonly<Required<{ [K in keyof SizeLimits]: number }>> = Object.freeze({
  maxBodyBytes: 1024 * 1024,
  maxMessageBytes: 4 * 1024 * 1024,
  maxMessages: 10_000,
});

type Limits = Readonly<Required<{ [K in keyof SizeLimits]: number }>>;

const LIMIT_KEYS = ['maxBodyBytes', 'maxMessageBytes', 'maxMessages'] as const;
const OPTION_KEYS = [...LIMIT_KEYS, 'rules', 'transport', 'servedOperations', 'contentEncodings'] as const;

/** The content codings the body parsers of Express (body-parser) inflate. */
const KNOWN_CODINGS: readonly string[] = ['gzip', 'deflate', 'br'];

/** What one call has received so far. */
interface Received {
  bytes: number;
  messages: number;
}
const RECEIVED = createContextKey<Received>('limits.received');

/**
 * Size limits on what a client sends, per operation, enforced while it streams, never by
 * buffering: an HTTP body (each chunk counted as it arrives, before any body parser or handler
 * reads it), each gRPC request message and the total and count of a client stream. Over a
 * limit the call is refused at once with `payload_too_large` (HTTP 413, gRPC
 * `RESOURCE_EXHAUSTED`) and the rest of the input is dropped; an HTTP request whose
 * `Content-Length` declares more than its limit is refused before a byte of its body is read.
 *
 * List it among an adapter's controls (stage `input`), or describe it in a policy's `limits`
 * section (`createGuardFromPolicy`). On gRPC, register services with fluxguard's `addService`,
 * which tells the limits each message's size on the wire.
 *
 * @throws ConfigurationError for an unknown option, a limit that is not a positive whole number,
 *   a bad or duplicate rule pattern, or (with `servedOperations`) a rule that names nothing
 *   served.
 *
 * @example
 * ```ts
 * import { createInputLimits } from '@fluxguard/core';
 * const limits = createInputLimits({
 *   maxBodyBytes: 1024 * 1024,
 *   rules: [{ operation: 'PUT /v1/artifacts/*path', maxBodyBytes: 64 * 1024 * 1024 }],
 * });
 * // fluxguard({ audit, guard, controls: [limits] }) or fluxguardInterceptors({ audit, guard, controls: [limits] })
 * ```
 */
export function createInputLimits(options: InputLimitsOptions = {}): Control {
  return compileInputLimits(options, 'createInputLimits');
}

/**
 * {@link createInputLimits} with the name errors give the options (`policy.limits` for a policy).
 *
 * @internal
 */
export function compileInputLimits(options: InputLimitsOptions, where: string): Control {
  if (typeof options !== 'object' || (options as unknown) === null)
    throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(options, OPTION_KEYS, where, 'option');
  const transport: unknown = options.transport;
  if (transport !== undefined && transport !== 'grpc' && transport !== 'http') {
    throw new ConfigurationError(`${where}: "transport" must be "grpc" or "http"`);
  }
  const defaults = checkLimits(options, SIZE_LIMIT_DEFAULTS, where);
  const rules = compileOperationRules<Limits>(options.rules, {
    where,
    keys: LIMIT_KEYS,
    defaults,
    transport,
    compile: (rule, fallback, at) => {
      // Read by nothing: an HTTP request has a body, not messages.
      const http = typeof rule.operation === 'string' && !rule.operation.startsWith('/');
      const messageKey = http
        ? (['maxMessageBytes', 'maxMessages'] as const).find((k) => rule[k] !== undefined)
        : undefined;
      if (messageKey !== undefined) {
        throw new ConfigurationError(
          `${at}.${messageKey} applies to gRPC messages, and "${String(rule.operation)}" is an HTTP route: limit its body with maxBodyBytes`,
        );
      }
      return checkLimits(rule, fallback, at);
    },
    servedOperations: options.servedOperations,
  });
  const encodings = checkEncodings(options.contentEncodings, `${where}.contentEncodings`);

  const onStart = (call: CallInfo): StartResult => {
    if (call.transport !== 'http') return;
    // Every value: Node joins repeated ones, and body-parser reads the joined value. A request
    // without a body has nothing to inflate.
    if (
      call.headers.get('content-encoding') !== undefined &&
      declaresBody(call.headers.get('transfer-encoding'), call.headers.get('content-length'))
    ) {
      for (const coding of call.headers.getAll('content-encoding')) {
        if (!encodedAs(coding, encodings)) {
          throw new SecurityError('invalid_argument', {
            reason: 'body_encoding_unsupported',
            details: { field: 'content-encoding' },
          });
        }
      }
    }
    const declared = call.headers.get('content-length');
    if (declared === undefined) return;
    // A declared size over the limit is refused before a byte of the body is read.
    const { maxBodyBytes } = rules.settingsFor(call.operation);
    if (/^\d+$/.test(declared) && Number(declared) > maxBodyBytes) {
      throw new SecurityError('payload_too_large', { reason: 'declared_too_large' });
    }
  };

  const onMessage = (_message: unknown, call: CallInfo, context: CallContext, bytes?: number): void => {
    const limits = rules.settingsFor(call.operation);
    let received = context.get(RECEIVED);
    if (received === undefined) {
      received = { bytes: 0, messages: 0 };
      context.set(RECEIVED, received);
    }
    if (bytes === undefined) {
      throw new SecurityError('internal', {
        reason: 'message_size_unknown',
        cause: new ConfigurationError(
          'input limits: the size of a message is unknown; register gRPC services with addService of @fluxguard/grpc',
        ),
      });
    }
    received.bytes += bytes;
    if (call.transport === 'grpc') {
      received.messages += 1;
      if (bytes > limits.maxMessageBytes) throw new SecurityError('payload_too_large', { reason: 'message_too_large' });
      if (received.messages > limits.maxMessages) {
        throw new SecurityError('payload_too_large', { reason: 'too_many_messages' });
      }
    }
    if (received.bytes > limits.maxBodyBytes)
      throw new SecurityError('payload_too_large', { reason: 'body_too_large' });
  };

  return Object.freeze({
    name: 'input-limits',
    stage: 'input',
    matchesOperation: rules.hasRules,
    operationPatterns: rules.patterns,
    maxMessageBytes: (operation: string) => rules.settingsFor(operation).maxMessageBytes,
    onStart,
    onMessage,
  });
}

function checkEncodings(value: unknown, where: string): ReadonlySet<string> {
  if (value === undefined) return new Set();
  if (!Array.isArray(value)) throw new ConfigurationError(`${where} must be a list of content codings, e.g. ["gzip"]`);
  return new Set(
    (value as unknown[]).map((coding, i) => {
      // Only the codings the body parsers inflate: another one (a typo, `identity`, which is
      // always accepted) would read as allowed and change nothing.
      if (typeof coding !== 'string' || !KNOWN_CODINGS.includes(coding)) {
        throw new ConfigurationError(
          `${where}[${String(i)}] must be a content coding of ${KNOWN_CODINGS.map((c) => `"${c}"`).join(', ')}, in lower case (identity is always accepted)`,
        );
      }
      return coding;
    }),
  );
}

/**
 * Whether every coding a `Content-Encoding` value lists is `identity` or allowed. An empty value
 * names none (body-parser reads it as `identity`).
 */
function encodedAs(header: string, allowed: ReadonlySet<string>): boolean {
  for (const part of header.split(',')) {
    const coding = part.trim().toLowerCase();
    if (coding !== '' && coding !== 'identity' && !allowed.has(coding)) return false;
  }
  return true;
}

function checkLimits(value: Record<string, unknown> | SizeLimits, fallback: Limits, where: string): Limits {
  const limits: Record<(typeof LIMIT_KEYS)[number], number> = { ...fallback };
  for (const key of LIMIT_KEYS) {
    const n: unknown = (value as Record<string, unknown>)[key];
    if (n === undefined) continue;
    limits[key] = wholeNumber(n, `${where}.${key}`);
  }
  return Object.freeze(limits);
}
