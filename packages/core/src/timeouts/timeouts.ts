import type { CallInfo, Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CallContext } from '../pipeline/call-context.js';
import type { Control, StartResult } from '../pipeline/control.js';
import { compileOperationRules } from '../policy/operation-rules.js';
import { wholeNumber } from '../options/whole-number.js';
import { declaresBody } from '../call/declared-body.js';
import { restartIdleTimer, startIdleTimer, stopIdleTimer } from './idle-timer.js';

/**
 * Why the timeouts control ended a call: the deadline it set or capped passed
 * (`deadline_exceeded`, the pipeline's own reason), or the client stopped sending in the middle
 * of its inbound stream (`inbound_idle`).
 *
 * @example
 * ```ts
 * import type { TimeoutReason } from '@fluxguard/core';
 * const reason: TimeoutReason = 'inbound_idle';
 * ```
 */
export type TimeoutReason = 'inbound_idle';

/**
 * The limits of one operation (or of every operation, as the defaults).
 *
 * @example
 * ```ts
 * import type { TimeoutLimits } from '@fluxguard/core';
 * const uploads: TimeoutLimits = { defaultMs: 300_000, idleMs: 10_000 };
 * ```
 */
export interface TimeoutLimits {
  /**
   * The deadline of a call whose client set none, in ms from the start of the call. HTTP has no
   * client deadline: this is the request timeout of every request (504 when it passes; 408 when
   * the client was still sending its body).
   */
  readonly defaultMs?: number | undefined;
  /** The longest deadline a call may have: a client's later deadline is brought down to it. */
  readonly maxMs?: number | undefined;
  /**
   * The longest pause in what a call sends after its head: before its first inbound message
   * (gRPC) or body chunk (HTTP), between two, and before its end; `0` turns the idle limit off.
   * A call that sends its head and then nothing, or part of a message, is ended with
   * `deadline_exceeded` (reason `inbound_idle`). When what the client sent waited unread
   * through the pause (the handler stopped reading, so the client could not send), the reason
   * is `request_unread`, the server's failure. An HTTP request without a body has nothing to
   * wait for.
   */
  readonly idleMs?: number | undefined;
}

/**
 * One rule of {@link TimeoutsOptions.rules}: the limits of the operations a pattern names, with
 * the same patterns as RBAC rules (gRPC `/pkg.Service/Method` or `/pkg.Service/*`, HTTP
 * `METHOD /path` with `:param` and a final `*splat`). Limits a rule leaves out are the defaults.
 *
 * @example
 * ```ts
 * import type { TimeoutRule } from '@fluxguard/core';
 * const uploads: TimeoutRule = { operation: 'PUT /v1/artifacts/*path', defaultMs: 300_000, idleMs: 15_000 };
 * ```
 */
export interface TimeoutRule extends TimeoutLimits {
  /** The operations the rule applies to, as RBAC patterns; the most specific rule wins. */
  readonly operation: string;
}

/**
 * Options of {@link createTimeouts}: the defaults for every operation, and rules for some.
 *
 * @example
 * ```ts
 * import type { TimeoutsOptions } from '@fluxguard/core';
 * const options: TimeoutsOptions = { defaultMs: 30_000, maxMs: 300_000, rules: [{ operation: '/pkg.Store/Upload', idleMs: 10_000 }] };
 * ```
 */
export interface TimeoutsOptions extends TimeoutLimits {
  /** Limits for some operations, one rule per pattern. Default: none (the defaults apply to every operation). */
  readonly rules?: readonly TimeoutRule[] | undefined;
  /** Keep only this transport's rules (gRPC rules start with `/`), for rules that serve both. */
  readonly transport?: Transport | undefined;
  /**
   * The operations this server serves (gRPC `/pkg.Service/Method`, HTTP `METHOD /path` as its
   * routes are written): a rule whose pattern names none of them is refused at start-up, so a
   * misspelt method or route cannot leave its limit silently off. Only the rules of `transport`
   * are checked; without one, those of the kinds the list holds.
   */
  readonly servedOperations?: readonly string[] | undefined;
}

/**
 * The secure defaults: a call no client deadline bounds ends after 60 s, no deadline is longer
 * than 15 minutes, and an inbound stream may pause 30 s at most.
 *
 * @example
 * ```ts
 * import { TIMEOUT_DEFAULTS } from '@fluxguard/core';
 * TIMEOUT_DEFAULTS.defaultMs; // 60000
 * ```
 */
export const TIMEOUT_DEFAULTS: Readonly<Required<{ [K in keyof TimeoutLimits]: number }>> = Object.freeze({
  defaultMs: 60_000,
  maxMs: 15 * 60_000,
  idleMs: 30_000,
});

/** The resolved limits of one operation. */
interface Limits {
  readonly defaultMs: number;
  readonly maxMs: number;
  readonly idleMs: number;
}

/**
 * The timeouts control (stage `deadline`), as returned by {@link createTimeouts}.
 *
 * @example
 * ```ts
 * import type { Timeouts } from '@fluxguard/core';
 * function longest(timeouts: Timeouts): number { return timeouts.limitsFor('/pkg.Store/Upload').maxMs; }
 * ```
 */
export interface Timeouts extends Control {
  /** The limits that apply to `operation` (its most specific rule, else the defaults). */
  limitsFor(operation: string): Readonly<Required<{ [K in keyof TimeoutLimits]: number }>>;
}

const LIMIT_KEYS = ['defaultMs', 'maxMs', 'idleMs'] as const;

const OPTION_DEFAULTS: Readonly<TimeoutsOptions> = Object.freeze({
  ...TIMEOUT_DEFAULTS,
  rules: undefined,
  transport: undefined,
  servedOperations: undefined,
});

/** Whether inbound data is to come after the head: a gRPC request's messages, an HTTP body. */
function expectsInbound(call: CallInfo): boolean {
  return (
    call.transport === 'grpc' || declaresBody(call.headers.get('transfer-encoding'), call.headers.get('content-length'))
  );
}

/**
 * Deadlines and idle limits per operation, the same on both transports: a call whose client set
 * no deadline gets `defaultMs` (every HTTP request does), a client deadline later than `maxMs`
 * is brought down to it, and an inbound stream that pauses longer than `idleMs` before its end
 * is ended. At the deadline the client gets `DEADLINE_EXCEEDED` / 504 (HTTP 408 when it was still
 * sending its request) whatever the handler does,
 * the handler's signal aborts with a `TimeoutError`, and the audit log has one line.
 *
 * List it among an adapter's controls (`fluxguardInterceptors({ controls })`, `fluxguard({
 * controls })`), or describe it in a policy's `timeouts` section (`createGuardFromPolicy`).
 *
 * @throws ConfigurationError for an unknown option, a limit that is not a whole number of ms in
 *   range, `maxMs` below `defaultMs`, a bad or duplicate rule pattern, or (with
 *   `servedOperations`) a rule that names nothing served.
 *
 * @example
 * ```ts
 * import { createTimeouts } from '@fluxguard/core';
 * const timeouts = createTimeouts({
 *   defaultMs: 30_000,
 *   rules: [{ operation: 'PUT /v1/artifacts/*path', defaultMs: 300_000, idleMs: 15_000 }],
 * });
 * // fluxguard({ audit, guard, controls: [timeouts] })
 * ```
 */
export function createTimeouts(options: TimeoutsOptions = {}): Timeouts {
  return compileTimeouts(options, 'createTimeouts');
}

/**
 * {@link createTimeouts} with the name errors give the options (`policy.timeouts` for a policy).
 *
 * @internal
 */
export function compileTimeouts(options: TimeoutsOptions, where: string): Timeouts {
  const opts = resolveOptions<TimeoutsOptions>(where, OPTION_DEFAULTS, options);
  const defaults = checkLimits(opts, TIMEOUT_DEFAULTS, where);
  const transport: unknown = opts.transport;
  if (transport !== undefined && transport !== 'grpc' && transport !== 'http') {
    throw new ConfigurationError(`${where}: "transport" must be "grpc" or "http"`);
  }
  const rules = compileOperationRules<Limits>(opts.rules, {
    where,
    keys: LIMIT_KEYS,
    defaults,
    transport,
    noun: 'option',
    compile: (rule, fallback, at) => checkLimits(rule, fallback, at),
    servedOperations: opts.servedOperations,
  });
  const limitsFor = (operation: string): Limits => rules.settingsFor(operation);

  const onStart = (call: CallInfo, context: CallContext): StartResult => {
    const limits = limitsFor(call.operation);
    const now = Date.now();
    const deadline = call.deadline === undefined ? now + limits.defaultMs : Math.min(call.deadline, now + limits.maxMs);
    context.limitDeadline(deadline);
    if (limits.idleMs === 0) return undefined;
    // The wait for the first message is a pause too: started at the first message only, a call
    // whose client sent its head and nothing more (or part of a first gRPC message) was held to
    // its deadline, fifteen minutes with a long client deadline.
    if (expectsInbound(call)) startIdleTimer(context, limits.idleMs);
    return () => {
      stopIdleTimer(context);
    };
  };

  // The idle timer starts when the call starts, for a call with inbound data to come (every
  // gRPC call, an HTTP request with a body), and restarts with each message or chunk: a request
  // without a body never needs one.
  const onMessage = (_message: unknown, call: CallInfo, context: CallContext): void => {
    if (restartIdleTimer(context)) return;
    const { idleMs } = limitsFor(call.operation);
    if (idleMs !== 0) startIdleTimer(context, idleMs);
  };

  return Object.freeze({
    name: 'timeouts',
    stage: 'deadline',
    matchesOperation: rules.hasRules,
    operationPatterns: rules.patterns,
    limitsFor,
    onStart,
    onMessage,
    onInboundEnd: (_call: CallInfo, context: CallContext): void => {
      stopIdleTimer(context);
    },
  });
}

function checkLimits(value: TimeoutLimits, fallback: Limits, where: string): Limits {
  const limits: Record<(typeof LIMIT_KEYS)[number], number> = { ...fallback };
  for (const key of LIMIT_KEYS) {
    const n: unknown = value[key];
    if (n === undefined) continue;
    limits[key] = wholeNumber(n, `${where}.${key}`, { min: key === 'idleMs' ? 0 : 1, unit: 'ms' });
  }
  if (limits.maxMs < limits.defaultMs) {
    throw new ConfigurationError(
      `${where}: maxMs (${String(limits.maxMs)}) must not be below defaultMs (${String(limits.defaultMs)})`,
    );
  }
  return Object.freeze(limits);
}
