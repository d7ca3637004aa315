import type { CallInfo } from '../call/call-info.js';
import { LruCache } from '../cache/lru.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CallContext } from '../pipeline/call-context.js';
import type { Control, StartResult } from '../pipeline/control.js';
import { checkPatternsServed } from '../policy/served.js';
import {
  compareSpecificity,
  compilePattern,
  normalizeOperation,
  refuseSameOperations,
  type OperationPattern,
} from '../rbac/pattern.js';
import { compileClientAddress } from './client-address.js';
import { principalKey } from './store-key.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Why a concurrency limit refused a call: too many calls in flight overall, or for its caller.
 *
 * @example
 * ```ts
 * import type { ConcurrencyReason } from '@fluxguard/core';
 * const reason: ConcurrencyReason = 'concurrency_limit';
 * ```
 */
export type ConcurrencyReason = 'concurrency_limit';

/**
 * Whom a per-caller limit counts: the verified subject (else the certificate identity at the
 * peer's address, else the peer's address), only the certificate identity, only the peer's
 * address (as a rate limit's `peer` key: its host without the port, IPv4-mapped IPv6 as IPv4,
 * IPv6 by its /64), or a function of your own (`undefined`: the call is counted overall only).
 *
 * @example
 * ```ts
 * import type { ConcurrencyKey } from '@fluxguard/core';
 * const perTenant: ConcurrencyKey = (call) => call.headers.get('x-tenant-id');
 * ```
 */
export type ConcurrencyKey =
  'caller' | 'certificate' | 'peer' | ((call: CallInfo, context: CallContext) => string | undefined);

/**
 * Options of {@link createConcurrencyLimit}. At least one limit is required.
 *
 * @example
 * ```ts
 * import type { ConcurrencyLimitOptions } from '@fluxguard/core';
 * const options: ConcurrencyLimitOptions = { maxInFlight: 512, maxInFlightPerCaller: 16 };
 * ```
 */
export interface ConcurrencyLimitOptions {
  /** Calls in flight at once, all callers together. */
  readonly maxInFlight?: number | undefined;
  /** Calls in flight at once for one caller (see `key`). */
  readonly maxInFlightPerCaller?: number | undefined;
  /** Whom `maxInFlightPerCaller` counts. Default `caller`. */
  readonly key?: ConcurrencyKey | undefined;
  /**
   * Calls in flight at once with no principal (a public operation, or a caller the
   * authentication step left anonymous), all of them together. Such a caller is counted by its
   * address, so a client with many addresses, each within `maxInFlightPerCaller`, could
   * otherwise hold the whole budget, and every caller who authenticates would be refused.
   */
  readonly maxInFlightAnonymous?: number | undefined;
  /**
   * Calls in flight at once on the operations a pattern names (patterns as in rate-limit rules:
   * `/pkg.Service/Method`, `/pkg.Service/*`, `PUT /v1/artifacts/*path`), all callers together
   * (a number), and for each caller (an {@link OperationShare} with `perCaller`). An operation
   * counts under its most specific pattern. Give a slow operation (an upload a client can hold
   * open) a share of `maxInFlight`, and the other operations keep the rest: callers holding
   * that operation open cannot take the whole budget. Give it `perCaller` too, and one caller
   * cannot take the whole share from the others.
   */
  readonly maxInFlightPerOperation?: Readonly<Record<string, number | OperationShare>> | undefined;
  /**
   * How long, at most, a call keeps its slot after it ended while its handler has not stopped
   * (see `CallContext.afterHandler`). A client that cancels a call (an HTTP/2 reset, a closed
   * connection) or lets its deadline pass ends the call, but a handler that does not stop on
   * its signal goes on working: without the wait, a client could cancel calls as fast as it
   * opens them and keep any number of handlers at work, whatever the limits say. A handler
   * still working after the wait goes on uncounted. `0`: the slot is given back when the call
   * ends. Default 5 000.
   */
  readonly holdForHandlerMs?: number | undefined;
  /**
   * The operations this server serves (gRPC `/pkg.Service/Method`, HTTP `METHOD /path` as its
   * routes are written): a pattern of `maxInFlightPerOperation` that names none of them is
   * refused at start-up, so a misspelt method or route cannot leave its share silently off.
   */
  readonly servedOperations?: readonly string[] | undefined;
}

/**
 * One entry of {@link ConcurrencyLimitOptions.maxInFlightPerOperation} in its long form: the
 * operations' calls in flight, all callers together (`max`) and for each caller as `key` counts
 * them (`perCaller`; a call the key gives no value counts in `max` only). At least one.
 *
 * @example
 * ```ts
 * import type { OperationShare } from '@fluxguard/core';
 * // A health watch stays open for minutes: 128 at once, at most 2 of them for one caller.
 * const watches: OperationShare = { max: 128, perCaller: 2 };
 * ```
 */
export interface OperationShare {
  /** Calls in flight on the operations, all callers together; at most `maxInFlight`. Omitted: no such cap. */
  readonly max?: number | undefined;
  /** Calls in flight on the operations for one caller, as `key` counts them; at most `max`. */
  readonly perCaller?: number | undefined;
}

/**
 * The concurrency-limit control (stage `caller-limit`), as returned by
 * {@link createConcurrencyLimit}, with its counts for metrics and tests.
 *
 * @example
 * ```ts
 * import type { ConcurrencyLimit } from '@fluxguard/core';
 * function busy(limit: ConcurrencyLimit): boolean { return limit.inFlight() > 100; }
 * ```
 */
export interface ConcurrencyLimit extends Control {
  /** Calls in flight now, all callers together. */
  inFlight(): number;
  /**
   * Calls in flight now for one key (as `key` computes it; for `caller`, a token's principal is
   * `subject:tok:<issuer length>:<issuer>:<subject>`, a certificate's `subject:crt:<subject>`).
   */
  inFlightFor(key: string): number;
  /** Calls in flight now under one `maxInFlightPerOperation` pattern (0 for a pattern not given). */
  inFlightOn(pattern: string): number;
}

const DEFAULTS: Readonly<ConcurrencyLimitOptions> = Object.freeze({
  maxInFlight: undefined,
  maxInFlightPerCaller: undefined,
  key: 'caller',
  maxInFlightAnonymous: undefined,
  maxInFlightPerOperation: undefined,
  holdForHandlerMs: 5_000,
  servedOperations: undefined,
});

// Operations are bounded by what a server serves, HTTP paths are not: a bounded cache.
const OPERATION_CACHE_ENTRIES = 1024;

/** One `maxInFlightPerOperation` entry, with its counts. */
interface OperationBudget {
  readonly pattern: OperationPattern;
  readonly max: number;
  readonly perCaller: number | undefined;
  inFlight: number;
  /** Calls in flight on these operations by key, only while a key has some (with `perCaller`). */
  readonly perKey: Map<string, number>;
}

/**
 * Limits the calls in flight, overall, per caller and per operation, on both transports. A call counts from
 * the moment its start hooks allow it until it ends in any way (answered, failed, cancelled by
 * the client, deadline) and its handler has stopped (at most `holdForHandlerMs` longer): a
 * stream counts until it ends. Over a limit the call is refused at
 * once with `unavailable` (gRPC `UNAVAILABLE`, HTTP 503; reason `concurrency_limit`), never
 * queued: a client may retry, and a flood costs the server nothing while it waits.
 *
 * Runs after authentication (stage `caller-limit`), so `caller` counts the verified subject.
 *
 * @throws ConfigurationError for unknown options, a limit that is not a positive whole number,
 *   no limit at all, a `key` that is none of the choices, a bad operation pattern, or an
 *   operation's limit above `maxInFlight`, or (with `servedOperations`) a pattern that names
 *   nothing served.
 *
 * @example
 * ```ts
 * import { createConcurrencyLimit } from '@fluxguard/core';
 * const concurrency = createConcurrencyLimit({
 *   maxInFlight: 512,
 *   maxInFlightPerCaller: 16,
 *   // Uploads a client can hold open take at most half: the other calls keep 256.
 *   maxInFlightPerOperation: { 'PUT /v1/artifacts/*path': 256 },
 * });
 * // fluxguardInterceptors({ audit, guard, controls: [concurrency] }) or fluxguard({ ..., controls: [concurrency] })
 * ```
 */
export function createConcurrencyLimit(options: ConcurrencyLimitOptions): ConcurrencyLimit {
  const opts = resolveOptions('createConcurrencyLimit', DEFAULTS, options);
  const maxInFlight = limit(opts.maxInFlight, 'maxInFlight');
  const maxPerCaller = limit(opts.maxInFlightPerCaller, 'maxInFlightPerCaller');
  const maxAnonymous = limit(opts.maxInFlightAnonymous, 'maxInFlightAnonymous');
  const budgets = operationBudgets(opts.maxInFlightPerOperation, maxInFlight);
  if (opts.servedOperations !== undefined) {
    const where = 'createConcurrencyLimit.maxInFlightPerOperation';
    const patterns = Object.keys(opts.maxInFlightPerOperation ?? {}).map((pattern) => ({ at: where, pattern }));
    checkPatternsServed(patterns, opts.servedOperations, undefined, 'createConcurrencyLimit');
  }
  if (maxInFlight === undefined && maxPerCaller === undefined && maxAnonymous === undefined && budgets.length === 0) {
    throw new ConfigurationError(
      'createConcurrencyLimit: give "maxInFlight", "maxInFlightPerCaller", "maxInFlightAnonymous", "maxInFlightPerOperation" or several',
    );
  }
  for (const [name, value] of [
    ['maxInFlightAnonymous', maxAnonymous],
    ['maxInFlightPerCaller', maxPerCaller],
  ] as const) {
    if (value !== undefined && maxInFlight !== undefined && value > maxInFlight) {
      throw new ConfigurationError(
        `createConcurrencyLimit: "${name}" is above "maxInFlight" (${String(maxInFlight)}) and could never be reached`,
      );
    }
  }
  // The key says who a caller is, for a per-caller limit: without one nothing reads it.
  if (options.key !== undefined && maxPerCaller === undefined && !budgets.some((b) => b.perCaller !== undefined)) {
    throw new ConfigurationError(
      'createConcurrencyLimit: "key" names the caller of a per-caller limit, and none is given ("maxInFlightPerCaller", or a "perCaller" of maxInFlightPerOperation)',
    );
  }
  const holdForHandlerMs = wholeNumber(opts.holdForHandlerMs, 'createConcurrencyLimit: "holdForHandlerMs"', {
    min: 0,
    max: 600_000,
    unit: 'ms',
  });
  const keyOf = keyFunction(opts.key);
  // Entries exist only while their key has calls in flight: bounded by the calls in flight.
  const perKey = new Map<string, number>();
  let total = 0;
  let anonymousInFlight = 0;
  const budgetCache = new LruCache<string, OperationBudget | null>(OPERATION_CACHE_ENTRIES);
  const budgetOf = (operation: string): OperationBudget | undefined => {
    let budget = budgetCache.get(operation);
    if (budget === undefined) {
      // `matches` drops a trailing slash itself, as RBAC's look-up does.
      budget = budgets.find((b) => b.pattern.matches(operation)) ?? null;
      budgetCache.set(operation, budget);
    }
    return budget ?? undefined;
  };

  const onStart = (call: CallInfo, context: CallContext): StartResult => {
    const budget = budgets.length === 0 ? undefined : budgetOf(call.operation);
    const sharePerCaller = budget?.perCaller;
    const key = maxPerCaller === undefined && sharePerCaller === undefined ? undefined : keyOf(call, context);
    const forKey = key === undefined || maxPerCaller === undefined ? 0 : (perKey.get(key) ?? 0);
    const onShare = key === undefined || sharePerCaller === undefined ? 0 : (budget?.perKey.get(key) ?? 0);
    const anonymous = maxAnonymous !== undefined && context.principal === undefined;
    if (
      (maxInFlight !== undefined && total >= maxInFlight) ||
      (anonymous && anonymousInFlight >= maxAnonymous) ||
      (maxPerCaller !== undefined && forKey >= maxPerCaller) ||
      (budget !== undefined && budget.inFlight >= budget.max) ||
      (sharePerCaller !== undefined && onShare >= sharePerCaller)
    ) {
      throw new SecurityError('unavailable', { reason: 'concurrency_limit', subject: context.principal?.subject });
    }
    total += 1;
    if (anonymous) anonymousInFlight += 1;
    if (budget !== undefined) budget.inFlight += 1;
    if (key !== undefined && maxPerCaller !== undefined) perKey.set(key, forKey + 1);
    if (key !== undefined && sharePerCaller !== undefined) budget?.perKey.set(key, onShare + 1);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      total -= 1;
      if (anonymous) anonymousInFlight -= 1;
      if (budget !== undefined) budget.inFlight -= 1;
      if (key === undefined) return;
      if (maxPerCaller !== undefined) decrement(perKey, key);
      if (sharePerCaller !== undefined && budget !== undefined) decrement(budget.perKey, key);
    };
    return holdForHandlerMs === 0
      ? release
      : () => {
          context.afterHandler(release, holdForHandlerMs);
        };
  };

  return Object.freeze({
    name: 'concurrency',
    stage: 'caller-limit',
    operationPatterns: Object.freeze(budgets.map((b) => b.pattern.key)),
    onStart,
    inFlight: () => total,
    inFlightFor: (key: string) => perKey.get(key) ?? 0,
    inFlightOn: (pattern: string) => budgets.find((b) => b.pattern.key === normalizeOperation(pattern))?.inFlight ?? 0,
  });
}

/** One count less for `key`; its entry goes with its last call, so a map holds only keys with calls in flight. */
function decrement(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 1) - 1;
  if (left <= 0) counts.delete(key);
  else counts.set(key, left);
}

const SHARE_DEFAULTS: Readonly<OperationShare> = Object.freeze({ max: undefined, perCaller: undefined });

function operationBudgets(value: unknown, maxInFlight: number | undefined): OperationBudget[] {
  if (value === undefined) return [];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigurationError(
      'createConcurrencyLimit: "maxInFlightPerOperation" must be an object of operation pattern to limit',
    );
  }
  const budgets = Object.entries(value).map(([pattern, entry]): OperationBudget => {
    const label = `createConcurrencyLimit: "maxInFlightPerOperation"["${pattern}"]`;
    const share =
      typeof entry === 'object' && entry !== null
        ? resolveOptions(label, SHARE_DEFAULTS, entry as OperationShare)
        : { max: wholeNumber(entry, label), perCaller: undefined };
    if (share.max === undefined && share.perCaller === undefined) {
      throw new ConfigurationError(`${label} must give "max", "perCaller" or both`);
    }
    const max = share.max === undefined ? undefined : wholeNumber(share.max, `${label}.max`);
    const perCaller = share.perCaller === undefined ? undefined : wholeNumber(share.perCaller, `${label}.perCaller`);
    if (max !== undefined && maxInFlight !== undefined && max > maxInFlight) {
      throw new ConfigurationError(
        `${label} is above "maxInFlight" (${String(maxInFlight)}) and could never be reached`,
      );
    }
    if (perCaller !== undefined && max === undefined && maxInFlight !== undefined && perCaller > maxInFlight) {
      throw new ConfigurationError(
        `${label}.perCaller is above "maxInFlight" (${String(maxInFlight)}) and could never be reached`,
      );
    }
    if (perCaller !== undefined && max !== undefined && perCaller > max) {
      throw new ConfigurationError(`${label}.perCaller is above its "max" (${String(max)}) and could never be reached`);
    }
    return {
      pattern: compilePattern(pattern, label),
      max: max ?? Number.POSITIVE_INFINITY,
      perCaller,
      inFlight: 0,
      perKey: new Map(),
    };
  });
  if (budgets.length === 0) {
    throw new ConfigurationError('createConcurrencyLimit: "maxInFlightPerOperation" names no operation');
  }
  refuseSameOperations(
    budgets.map((b) => b.pattern),
    () => 'createConcurrencyLimit: "maxInFlightPerOperation" key',
  );
  return budgets.sort((a, b) => compareSpecificity(a.pattern, b.pattern));
}

function limit(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  return wholeNumber(value, `createConcurrencyLimit: "${name}"`);
}

function keyFunction(key: unknown): (call: CallInfo, context: CallContext) => string | undefined {
  if (typeof key === 'function') return key as (call: CallInfo, context: CallContext) => string | undefined;
  const peerKey = peerKeyFunction();
  switch (key) {
    case 'caller':
      // Without a principal, a certificate counts per address: a public operation skips
      // authentication, and the replicas that share one workload certificate would otherwise
      // share one count there, so that one of them could hold every other's health checks.
      return (call, context) => {
        if (context.principal !== undefined) return `subject:${principalKey(context.principal)}`;
        const peer = peerKey(call);
        return call.peerCertificate === undefined ? peer : `${certificateKey(call)}|${peer}`;
      };
    case 'certificate':
      return (call) => (call.peerCertificate === undefined ? undefined : certificateKey(call));
    case 'peer':
      return peerKey;
    default:
      throw new ConfigurationError(
        'createConcurrencyLimit: "key" must be "caller", "certificate", "peer" or a function',
      );
  }
}

function certificateKey(call: CallInfo): string {
  const certificate = call.peerCertificate;
  return `certificate:${certificate?.spiffeId ?? certificate?.fingerprint256 ?? ''}`;
}

/**
 * The peer's address as a rate limit's `peer` key counts it (`compileClientAddress` with no
 * trusted proxy): its host without the port, an IPv4-mapped IPv6 address as IPv4, an IPv6
 * address by its /64. One client's connections, and the addresses of one host's prefix, share
 * one count.
 */
function peerKeyFunction(): (call: CallInfo) => string {
  const address = compileClientAddress({}, 'createConcurrencyLimit');
  return (call) => `peer:${address.keyOf(call)}`;
}
