import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CallContext } from '../pipeline/call-context.js';
import type { Control, StartResult } from '../pipeline/control.js';

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
 * Whom a per-caller limit counts: the verified subject (else the certificate identity, else
 * the peer's address), only the certificate identity, only the peer's address (its host,
 * without the port), or a function of your own (`undefined`: the call is counted overall only).
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
  /** Calls in flight now for one key (as `key` computes it). */
  inFlightFor(key: string): number;
}

const DEFAULTS: Readonly<ConcurrencyLimitOptions> = Object.freeze({
  maxInFlight: undefined,
  maxInFlightPerCaller: undefined,
  key: 'caller',
});

/**
 * Limits the calls in flight, overall and per caller, on both transports. A call counts from
 * the moment its start hooks allow it until it ends in any way (answered, failed, cancelled by
 * the client, deadline): a stream counts until it ends. Over a limit the call is refused at
 * once with `unavailable` (gRPC `UNAVAILABLE`, HTTP 503; reason `concurrency_limit`), never
 * queued: a client may retry, and a flood costs the server nothing while it waits.
 *
 * Runs after authentication (stage `caller-limit`), so `caller` counts the verified subject.
 *
 * @throws ConfigurationError for unknown options, a limit that is not a positive whole number,
 *   no limit at all, or a `key` that is none of the choices.
 *
 * @example
 * ```ts
 * import { createConcurrencyLimit } from '@fluxguard/core';
 * const concurrency = createConcurrencyLimit({ maxInFlight: 512, maxInFlightPerCaller: 16 });
 * // fluxguardInterceptors({ audit, guard, controls: [concurrency] }) or fluxguard({ ..., controls: [concurrency] })
 * ```
 */
export function createConcurrencyLimit(options: ConcurrencyLimitOptions): ConcurrencyLimit {
  const opts = resolveOptions('createConcurrencyLimit', DEFAULTS, options);
  const maxInFlight = limit(opts.maxInFlight, 'maxInFlight');
  const maxPerCaller = limit(opts.maxInFlightPerCaller, 'maxInFlightPerCaller');
  if (maxInFlight === undefined && maxPerCaller === undefined) {
    throw new ConfigurationError('createConcurrencyLimit: give "maxInFlight", "maxInFlightPerCaller" or both');
  }
  const keyOf = keyFunction(opts.key);
  // Entries exist only while their key has calls in flight: bounded by the calls in flight.
  const perKey = new Map<string, number>();
  let total = 0;

  const onStart = (call: CallInfo, context: CallContext): StartResult => {
    const key = maxPerCaller === undefined ? undefined : keyOf(call, context);
    const forKey = key === undefined ? 0 : (perKey.get(key) ?? 0);
    if ((maxInFlight !== undefined && total >= maxInFlight) || (maxPerCaller !== undefined && forKey >= maxPerCaller)) {
      throw new SecurityError('unavailable', { reason: 'concurrency_limit', subject: context.principal?.subject });
    }
    total += 1;
    if (key !== undefined) perKey.set(key, forKey + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      total -= 1;
      if (key === undefined) return;
      const left = (perKey.get(key) ?? 1) - 1;
      if (left <= 0) perKey.delete(key);
      else perKey.set(key, left);
    };
  };

  return Object.freeze({
    name: 'concurrency',
    stage: 'caller-limit',
    onStart,
    inFlight: () => total,
    inFlightFor: (key: string) => perKey.get(key) ?? 0,
  });
}

function limit(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigurationError(`createConcurrencyLimit: "${name}" must be a positive whole number`);
  }
  return value;
}

function keyFunction(key: unknown): (call: CallInfo, context: CallContext) => string | undefined {
  if (typeof key === 'function') return key as (call: CallInfo, context: CallContext) => string | undefined;
  switch (key) {
    case 'caller':
      return (call, context) =>
        context.principal === undefined
          ? call.peerCertificate !== undefined
            ? certificateKey(call)
            : peerKey(call)
          : `subject:${context.principal.subject}`;
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

/** The peer's host without its port: one client's connections share one count. */
function peerKey(call: CallInfo): string | undefined {
  const address = call.peerAddress;
  if (address === undefined) return undefined;
  const host = address.startsWith('[') ? address.slice(0, address.indexOf(']') + 1) : address.replace(/:\d+$/, '');
  return `peer:${host}`;
}
