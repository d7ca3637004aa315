import type { CallInfo, Principal } from '../call/call-info.js';
import { isFrozenThrough } from '../call/sound-principal.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { addResponseHeadersLater, type CallContext } from '../pipeline/call-context.js';
import type { Control, ControlStage, StartResult } from '../pipeline/control.js';
import {
  compareSpecificity,
  compilePattern,
  overlapWitness,
  refuseSameOperations,
  type OperationPattern,
} from '../rbac/pattern.js';
import { clientAddressFrom, peerStoreKeys, type ClientAddress, type ClientAddressOptions } from './client-address.js';
import {
  consumeFromStore,
  createMemoryRateLimitStore,
  type LimiterResult,
  type RateLimitStore,
  type StoreLimiter,
} from './store.js';
import { wholeNumber } from '../options/whole-number.js';
import { checkPatternsServed, rateLimitPatterns } from '../policy/served.js';
import { boundedKey, keyDigest, principalKey } from './store-key.js';

/**
 * Why a rate limit refused a call: a rule's points are spent (`rate_limited`), the peer or
 * token subject is blocked after failed authentications (`brute_force_blocked`), or a rule that
 * fails closed could not reach its store (`ratelimit_store_unavailable`).
 *
 * @example
 * ```ts
 * import type { RateLimitReason } from '@fluxguard/core';
 * const pageOn: RateLimitReason = 'ratelimit_store_unavailable';
 * ```
 */
export type RateLimitReason = 'rate_limited' | 'brute_force_blocked' | 'ratelimit_store_unavailable';

/**
 * A key of your own: `undefined` leaves the call out of the rule.
 *
 * @example
 * ```ts
 * import type { RateLimitKeyFunction } from '@fluxguard/core';
 * // Admins are left out of the rule; everyone else is counted by subject.
 * const key: RateLimitKeyFunction = (_call, context) =>
 *   context.principal?.roles.includes('artifacts.admin') ? undefined : context.principal?.subject;
 * ```
 */
export type RateLimitKeyFunction = (call: CallInfo, context: CallContext) => string | undefined;

/**
 * Whom a rule counts:
 * - `peer`: the client's address (see `trustedProxies`; IPv6 by its /64 prefix);
 * - `subject`: the verified principal's subject (else the certificate, else the peer);
 * - `certificate`: the client certificate's SPIFFE ID or fingerprint (else the peer);
 * - `header:<name>`: a header such as an API key (stored as a hash; absent: the peer);
 * - a function of your own.
 *
 * @example
 * ```ts
 * import type { RateLimitKey } from '@fluxguard/core';
 * const byApiKey: RateLimitKey = 'header:x-api-key';
 * ```
 */
export type RateLimitKey = 'peer' | 'subject' | 'certificate' | `header:${string}` | RateLimitKeyFunction;

/**
 * One rate-limit rule: `points` per `durationSeconds` for each key, on the operations its
 * patterns name (every operation when `operations` is left out).
 *
 * @example
 * ```ts
 * import type { RateLimitRule } from '@fluxguard/core';
 * const uploads: RateLimitRule = {
 *   name: 'uploads', key: 'subject', points: 20, durationSeconds: 60,
 *   operations: ['/fluxguard.example.v1.ArtifactStore/UploadArtifact', 'PUT /v1/artifacts/*path'],
 * };
 * ```
 */
export interface RateLimitRule {
  /** Shown in the `RateLimit` headers and the audit line; letters, digits, `.`, `_`, `-`. */
  readonly name: string;
  /** Whom the rule counts (see {@link RateLimitKey}); a call the key gives no value is left out. */
  readonly key: RateLimitKey;
  /** Points each key may spend per window (a whole number, at least 1); each call costs `cost`. */
  readonly points: number;
  /** Length of the window, in seconds: a key's window starts with its first count. */
  readonly durationSeconds: number;
  /** Operation patterns as RBAC writes them (gRPC `/pkg.Service/*`, HTTP `PUT /v1/items/:id`). Default: all. */
  readonly operations?: readonly string[] | undefined;
  /** Extra points a key may spend in short bursts once `points` are used up. */
  readonly burst?: { readonly points: number; readonly durationSeconds: number } | undefined;
  /** Points one call costs. Default 1. */
  readonly cost?: number | undefined;
  /** Costs of some operations (patterns as in `operations`), e.g. an upload that costs 5. */
  readonly operationCosts?: Readonly<Record<string, number>> | undefined;
  /**
   * Where the rule runs: `pre-authentication` (before any token is verified, so a flood of bad
   * tokens buys no signature checks) or `caller-limit` (after authentication). Default:
   * `caller-limit` for `subject` and functions, `pre-authentication` for the others. `subject`
   * is refused with `pre-authentication`: no principal is known before authentication (a
   * function run there sees none either).
   */
  readonly stage?: 'pre-authentication' | 'caller-limit' | undefined;
  /** While a shared store is down: `open` (count in this process) or `closed` (refuse, 503). Default `open`. */
  readonly storeFailure?: 'open' | 'closed' | undefined;
}

/**
 * Options of {@link createRateLimit}.
 *
 * @example
 * ```ts
 * import type { RateLimitOptions } from '@fluxguard/core';
 * const options: RateLimitOptions = { rules: [{ name: 'per-peer', key: 'peer', points: 100, durationSeconds: 1 }] };
 * ```
 */
export interface RateLimitOptions extends ClientAddressOptions {
  /** The rules, at least one; names must be unique. */
  readonly rules: readonly RateLimitRule[];
  /** Where counts live. Default: a new memory store (this process only). */
  readonly store?: RateLimitStore | undefined;
  /** Send `RateLimit-Policy` and `RateLimit` headers (HTTP) / metadata (gRPC). Default true. */
  readonly headers?: boolean | undefined;
  /**
   * The operations this server serves (gRPC `/pkg.Service/Method`, HTTP `METHOD /path` as its
   * routes are written): a pattern of `operations` or `operationCosts` that names none of them
   * is refused at start-up, so a misspelt method or route cannot leave its limit silently off.
   * Only the patterns of the kinds (gRPC, HTTP) the list holds are checked.
   */
  readonly servedOperations?: readonly string[] | undefined;
}

/**
 * The rate-limit controls of {@link createRateLimit}: one per stage its rules run in.
 *
 * @example
 * ```ts
 * import type { RateLimit } from '@fluxguard/core';
 * const stages = (limits: RateLimit) => limits.controls.map((c) => c.stage);
 * ```
 */
export interface RateLimit {
  /**
   * One control per stage the rules run in (`pre-authentication`, `caller-limit`); add them all to
   * the adapter's controls.
   */
  readonly controls: readonly Control[];
}

interface CompiledRule {
  readonly name: string;
  readonly stage: 'pre-authentication' | 'caller-limit';
  readonly keyKind: string;
  readonly keyOf: (call: CallInfo, context: CallContext) => string | undefined;
  readonly patterns: readonly OperationPattern[] | undefined;
  readonly cost: number;
  readonly costs: readonly { readonly pattern: OperationPattern; readonly cost: number }[];
  readonly limiter: StoreLimiter;
  readonly storeFailure: 'open' | 'closed';
  /** `"name";q=points;w=seconds`, the rule's `RateLimit-Policy` item (and its burst's, `"name/burst";…`). */
  readonly policyItem: string;
  /** The audit fields of a store failure: made once, not per call. */
  readonly storeFields: Readonly<Record<string, string>>;
}

interface Applied {
  readonly rule: CompiledRule;
  readonly cost: number;
}

/** The rules that apply to one operation, with their `RateLimit-Policy` field when every rule keys the call. */
interface AppliedRules {
  readonly list: readonly Applied[];
  readonly policy: string;
}

const NO_RULES: AppliedRules = Object.freeze({ list: Object.freeze([]), policy: '' });

const OPTION_KEYS = [
  'rules',
  'store',
  'headers',
  'trustedProxies',
  'ipv6PrefixLength',
  'forwardedHeader',
  'servedOperations',
] as const;
const RULE_KEYS = [
  'name',
  'key',
  'points',
  'durationSeconds',
  'operations',
  'burst',
  'cost',
  'operationCosts',
  'stage',
  'storeFailure',
] as const;
const RULE_NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** The names of the brute-force protection's counters (`brute-force.peer`, `brute-force.subject`). */
const RESERVED_RULE_PREFIX = 'brute-force.';
const CACHE_LIMIT = 1024;

/**
 * Rate limits per operation and per caller, on both transports: in memory by default (counted
 * synchronously), shared through Redis with `createRedisRateLimitStore` (rate-limiter-flexible's
 * `RateLimiterRedis`). Each rule counts
 * `cost` points per call for its key; over the limit the call is refused at once with
 * `rate_limited` (HTTP 429 with `Retry-After`; gRPC `RESOURCE_EXHAUSTED` with `retry-after`
 * and a `google.rpc.RetryInfo` in `grpc-status-details-bin`). Counted HTTP requests carry the
 * `RateLimit-Policy` and `RateLimit` fields of the IETF draft (`"uploads";q=20;w=60`,
 * `"uploads";r=3;t=41`; on gRPC, refusals carry them); a rule's `burst` is an item of its own,
 * `"uploads/burst";q=5;w=10`, whose state comes once a call reached it. The audit line names
 * the rule and the key kind, never the key.
 *
 * A store failure is never reported as "rate limited": the rule fails open (counts in this
 * process) or closed (`unavailable`, 503), as its `storeFailure` says.
 *
 * @throws ConfigurationError for unknown options, a bad rule (names the field), a `subject`
 *   rule at stage `pre-authentication`, two rules with one name, or (with `servedOperations`) a
 *   pattern that names nothing served.
 *
 * @example
 * ```ts
 * import { createRateLimit } from '@fluxguard/core';
 * const limits = createRateLimit({
 *   rules: [
 *     { name: 'per-peer', key: 'peer', points: 50, durationSeconds: 1 },
 *     { name: 'uploads', key: 'subject', points: 20, durationSeconds: 60, operations: ['PUT /v1/artifacts/*path'] },
 *   ],
 * });
 * // fluxguard({ audit, guard, controls: [...limits.controls] })
 * ```
 */
export function createRateLimit(options: RateLimitOptions): RateLimit {
  return compileRateLimit(options, 'createRateLimit');
}

/**
 * {@link createRateLimit} with the name errors give the options (`policy.rateLimits` for a policy).
 *
 * @internal
 */
export function compileRateLimit(options: RateLimitOptions, where: string): RateLimit {
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw new ConfigurationError(`${where} must be an object`);
  }
  checkKnownKeys(options, OPTION_KEYS, where, 'option');
  const store = options.store ?? createMemoryRateLimitStore();
  if (typeof (store as Partial<RateLimitStore>).limiter !== 'function') {
    throw new ConfigurationError(
      `${where}.store must be a rate-limit store (createMemoryRateLimitStore, createRedisRateLimitStore)`,
    );
  }
  const headers: unknown = options.headers ?? true;
  if (typeof headers !== 'boolean') throw new ConfigurationError(`${where}.headers must be true or false`);
  const address = clientAddressFrom(options, where);
  const rulesIn: unknown = options.rules;
  if (!Array.isArray(rulesIn) || rulesIn.length === 0)
    throw new ConfigurationError(`${where}.rules must be a non-empty array`);
  const names = new Set<string>();
  const rules = (rulesIn as unknown[]).map((rule, i) => {
    const compiled = compileRule(rule, `${where}.rules[${String(i)}]`, store, address);
    if (names.has(compiled.name))
      throw new ConfigurationError(`${where}.rules[${String(i)}].name "${compiled.name}" is used by an earlier rule`);
    names.add(compiled.name);
    return compiled;
  });
  if (options.servedOperations !== undefined) {
    checkPatternsServed(
      rateLimitPatterns(rulesIn as RateLimitRule[], where),
      options.servedOperations,
      undefined,
      where,
    );
  }
  const controls: Control[] = [];
  const patterns = rateLimitPatterns(rulesIn as RateLimitRule[], where).map(({ pattern }) => pattern);
  for (const stage of ['pre-authentication', 'caller-limit'] as const) {
    const own = rules.filter((rule) => rule.stage === stage);
    // The patterns go with the first control: one check of each is enough.
    if (own.length > 0) {
      const bySocket = address.behindProxies
        ? []
        : own.filter((rule) => rule.keyKind === 'peer').map((rule) => rule.name);
      controls.push(rateLimitControl(stage, own, headers, controls.length === 0 ? patterns : [], bySocket));
    }
  }
  return Object.freeze({ controls: Object.freeze(controls) });
}

function rateLimitControl(
  stage: ControlStage,
  rules: readonly CompiledRule[],
  headers: boolean,
  operationPatterns: readonly string[],
  countsSocketAddress: readonly string[],
): Control {
  // Operations are bounded by what a server serves, HTTP paths are not: bounded, emptied when full.
  const cache = new Map<string, AppliedRules>();
  const appliedTo = (operation: string): AppliedRules => {
    let applied = cache.get(operation);
    if (applied === undefined) {
      // `matches` drops a trailing slash itself, as RBAC's look-up does: dropped here too, a
      // second one went, and `GET /v1/x//` counted under the rule of `GET /v1/x`.
      const list = rules.flatMap((rule) =>
        rule.patterns === undefined || rule.patterns.some((p) => p.matches(operation))
          ? [{ rule, cost: rule.costs.find((c) => c.pattern.matches(operation))?.cost ?? rule.cost }]
          : [],
      );
      applied = list.length === 0 ? NO_RULES : { list, policy: list.map((one) => one.rule.policyItem).join(', ') };
      if (cache.size >= CACHE_LIMIT) cache.clear();
      cache.set(operation, applied);
    }
    return applied;
  };

  // The memory store answers at once: then the whole check is synchronous (no promise, no
  // asynchronous step in the pipeline); a remote store's answers are awaited together.
  const onStart = (call: CallInfo, context: CallContext): StartResult | Promise<StartResult> => {
    const applied = appliedTo(call.operation);
    const { list } = applied;
    if (list.length === 0) return undefined;
    const results: (LimiterResult | undefined)[] = new Array<LimiterResult | undefined>(list.length);
    let pending: Promise<void>[] | undefined;
    for (let i = 0; i < list.length; i++) {
      const one = list[i];
      if (one === undefined) continue;
      const counted = count(one, call, context);
      if (counted instanceof Promise) {
        (pending ??= []).push(
          counted.then((result) => {
            results[i] = result;
          }),
        );
      } else {
        results[i] = counted;
      }
    }
    if (pending === undefined) {
      decide(applied, results, context, headers);
      return undefined;
    }
    return Promise.all(pending).then(() => {
      decide(applied, results, context, headers);
    });
  };

  return Object.freeze({
    name: 'rate-limit',
    stage,
    matchesOperation: rules.some((r) => r.patterns !== undefined),
    operationPatterns,
    countsSocketAddress: Object.freeze(countsSocketAddress),
    onStart,
  });
}

/** Adds the RateLimit fields and refuses when a rule is over; the longest wait wins. */
function decide(
  applied: AppliedRules,
  results: readonly (LimiterResult | undefined)[],
  context: CallContext,
  headers: boolean,
): void {
  const { list } = applied;
  let refused: { readonly rule: CompiledRule; readonly result: LimiterResult } | undefined;
  let keyed = false;
  for (let i = 0; i < list.length; i++) {
    const result = results[i];
    const rule = list[i]?.rule;
    if (result === undefined || rule === undefined) continue;
    keyed = true;
    if (!result.allowed && (refused === undefined || result.resetMs > refused.result.resetMs))
      refused = { rule, result };
  }
  // Written when the adapter reads them: a gRPC call that is served sends none.
  if (headers && keyed) addResponseHeadersLater(context, () => rateLimitFields(applied, results));
  if (refused !== undefined) {
    throw new SecurityError('rate_limited', {
      reason: 'rate_limited',
      details: { retryAfterSeconds: Math.max(1, Math.ceil(refused.result.resetMs / 1000)) },
      subject: context.principal?.subject,
      auditFields: {
        rule: refused.rule.name,
        keyKind: refused.rule.keyKind,
        ...(refused.result.local === true ? { store: 'local' } : {}),
      },
    });
  }
}

/** The `RateLimit-Policy` and `RateLimit` fields of the rules that counted the call. */
function rateLimitFields(
  applied: AppliedRules,
  results: readonly (LimiterResult | undefined)[],
): readonly (readonly [string, string])[] {
  const { list } = applied;
  let state = '';
  for (let i = 0; i < list.length; i++) {
    const result = results[i];
    const rule = list[i]?.rule;
    if (result === undefined || rule === undefined) continue;
    state += `${state === '' ? '' : ', '}"${rule.name}";r=${String(result.remaining)};t=${String(Math.ceil(result.resetMs / 1000))}`;
    // Known only once a count reached the burst (see LimiterResult.burst).
    if (result.burst !== undefined) {
      state += `, "${rule.name}/burst";r=${String(result.burst.remaining)};t=${String(Math.ceil(result.burst.resetMs / 1000))}`;
    }
  }
  // Every rule keyed the call (the common case): the field made once for the operation.
  const policy = results.includes(undefined)
    ? list
        .filter((_, i) => results[i] !== undefined)
        .map((one) => one.rule.policyItem)
        .join(', ')
    : applied.policy;
  return [
    ['ratelimit-policy', policy],
    ['ratelimit', state],
  ];
}

/** Counts one rule for the call's key: a value from a store that answers at once, else a promise. */
function count(
  applied: Applied,
  call: CallInfo,
  context: CallContext,
): LimiterResult | undefined | Promise<LimiterResult | undefined> {
  const { rule } = applied;
  const key = rule.keyOf(call, context);
  if (key === undefined) return undefined;
  return consumeFromStore(rule.limiter, key, applied.cost, rule.storeFields);
}

function compileRule(raw: unknown, at: string, store: RateLimitStore, address: ClientAddress): CompiledRule {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigurationError(`${at} must be an object`);
  checkKnownKeys(raw, RULE_KEYS, at, 'field');
  const rule = raw as RateLimitRule;
  if (typeof rule.name !== 'string' || !RULE_NAME.test(rule.name)) {
    throw new ConfigurationError(`${at}.name must be 1 to 64 letters, digits, ".", "_" or "-"`);
  }
  // The brute-force protection's counters are named so in the same store: a rule of that name
  // would count into them, and its calls would block callers who never failed to authenticate.
  if (rule.name.toLowerCase().startsWith(RESERVED_RULE_PREFIX)) {
    throw new ConfigurationError(
      `${at}.name "${rule.name}": names starting "${RESERVED_RULE_PREFIX}" are the brute-force protection's`,
    );
  }
  const points = wholeNumber(rule.points, `${at}.points`);
  const durationSeconds = wholeNumber(rule.durationSeconds, `${at}.durationSeconds`);
  const cost = rule.cost === undefined ? 1 : wholeNumber(rule.cost, `${at}.cost`);
  let burst: { points: number; durationSeconds: number } | undefined;
  if (rule.burst !== undefined) {
    if (typeof rule.burst !== 'object' || (rule.burst as unknown) === null)
      throw new ConfigurationError(`${at}.burst must be an object`);
    checkKnownKeys(rule.burst, ['points', 'durationSeconds'], `${at}.burst`, 'field');
    burst = {
      points: wholeNumber(rule.burst.points, `${at}.burst.points`),
      durationSeconds: wholeNumber(rule.burst.durationSeconds, `${at}.burst.durationSeconds`),
    };
  }
  const storeFailure: unknown = rule.storeFailure ?? 'open';
  if (storeFailure !== 'open' && storeFailure !== 'closed')
    throw new ConfigurationError(`${at}.storeFailure must be "open" or "closed"`);
  const { keyKind, keyOf } = compileKey(rule.key, `${at}.key`, address);
  const stage: unknown =
    rule.stage ?? (keyKind === 'subject' || keyKind === 'function' ? 'caller-limit' : 'pre-authentication');
  if (stage !== 'pre-authentication' && stage !== 'caller-limit') {
    throw new ConfigurationError(`${at}.stage must be "pre-authentication" or "caller-limit"`);
  }
  // Before authentication no principal is known: such a rule counted every call by its
  // certificate or address instead, a limit per peer under the name of a limit per caller.
  if (stage === 'pre-authentication' && keyKind === 'subject') {
    throw new ConfigurationError(
      `${at}: key "subject" cannot run at stage "pre-authentication", where no principal is known yet (it would count certificates or peer addresses): leave out "stage" (the default is "caller-limit"), or key the rule by "peer" or "certificate"`,
    );
  }
  const patterns = compilePatterns(rule.operations, `${at}.operations`);
  const costs = Object.entries(checkCosts(rule.operationCosts, `${at}.operationCosts`)).map(([pattern, c]) => ({
    pattern: compilePattern(pattern, `${at}.operationCosts key`),
    cost: wholeNumber(c, `${at}.operationCosts["${pattern}"]`),
  }));
  refuseSameOperations(
    costs.map((c) => c.pattern),
    () => `${at}.operationCosts key`,
  );
  costs.sort((a, b) => compareSpecificity(a.pattern, b.pattern));
  // Read by nothing: the rule never counts a call its operations do not name.
  const stray = patterns === undefined ? undefined : costs.find((c) => !patterns.some((p) => overlaps(p, c.pattern)));
  if (stray !== undefined) {
    throw new ConfigurationError(
      `${at}.operationCosts["${stray.pattern.written}"] names no operation of the rule's "operations", so its cost would never apply`,
    );
  }
  // No window would ever let such a call through: every one refused, read as a limit.
  const dearest = Math.max(cost, ...costs.map((c) => c.cost));
  const capacity = Math.max(points, burst?.points ?? 0);
  if (dearest > capacity) {
    throw new ConfigurationError(
      `${at}: a call costs ${String(dearest)} points, more than the rule ever has (${String(capacity)}), so every such call would be refused`,
    );
  }
  return Object.freeze({
    name: rule.name,
    stage,
    keyKind,
    keyOf,
    patterns,
    cost,
    costs,
    storeFailure,
    storeFields: Object.freeze({ rule: rule.name, keyKind }),
    limiter: store.limiter({ name: rule.name, points, durationSeconds, burst, storeFailure }),
    policyItem:
      `"${rule.name}";q=${String(points)};w=${String(durationSeconds)}` +
      (burst === undefined
        ? ''
        : `, "${rule.name}/burst";q=${String(burst.points)};w=${String(burst.durationSeconds)}`),
  });
}

/** Whether some operation could match both patterns. */
function overlaps(a: OperationPattern, b: OperationPattern): boolean {
  const http = !a.key.startsWith('/') && !b.key.startsWith('/');
  return http ? overlapWitness(a.key, b.key) !== undefined : a.matches(b.key) || b.matches(a.key);
}

function compilePatterns(value: unknown, where: string): readonly OperationPattern[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0)
    throw new ConfigurationError(`${where} must be a non-empty array of operation patterns`);
  const patterns = (value as unknown[]).map((p, i) => compilePattern(p, `${where}[${String(i)}]`));
  refuseSameOperations(patterns, (i) => `${where}[${String(i)}]`);
  return Object.freeze(patterns);
}

function checkCosts(value: unknown, where: string): Readonly<Record<string, unknown>> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigurationError(`${where} must be an object of operation pattern to cost`);
  }
  return value as Record<string, unknown>;
}

/** Principals seen lately, by identity, and their `subject` keys. */
const subjectKeys = new Map<Principal, string>();

/**
 * The store key of a principal. A principal in a call context is frozen (`setPrincipal`), and a
 * cached token's is the same object on every call: its key is made once, not joined, checked
 * and hashed again per call. Bounded, emptied when full.
 */
function subjectKey(principal: Principal): string {
  let key = subjectKeys.get(principal);
  if (key === undefined) {
    key = `sub:${boundedKey(principalKey(principal))}`;
    if (!isFrozenThrough(principal)) return key;
    if (subjectKeys.size >= CACHE_LIMIT) subjectKeys.clear();
    subjectKeys.set(principal, key);
  }
  return key;
}

/**
 * A key function for a {@link RateLimitKey}. Keys are prefixed by their kind, so a subject can
 * never collide with an address; long or secret values are hashed.
 */
function compileKey(
  key: unknown,
  where: string,
  address: ClientAddress,
): { keyKind: string; keyOf: (call: CallInfo, context: CallContext) => string | undefined } {
  const peer = peerStoreKeys(address);
  const certificate = (call: CallInfo): string | undefined => {
    const cert = call.peerCertificate;
    if (cert === undefined) return undefined;
    return cert.spiffeId === undefined ? `cert:${cert.fingerprint256}` : `spiffe:${boundedKey(cert.spiffeId)}`;
  };
  if (typeof key === 'function') {
    const fn = key as RateLimitKeyFunction;
    return {
      keyKind: 'function',
      keyOf: (call, context) => {
        const value = fn(call, context);
        if (value === undefined) return undefined;
        if (typeof value !== 'string')
          throw new TypeError('a rate-limit key function must return a string or undefined');
        return `fn:${boundedKey(value)}`;
      },
    };
  }
  switch (key) {
    case 'peer':
      return { keyKind: 'peer', keyOf: peer };
    case 'certificate':
      return { keyKind: 'certificate', keyOf: (call) => certificate(call) ?? peer(call) };
    case 'subject':
      return {
        keyKind: 'subject',
        keyOf: (call, context) => {
          const { principal } = context;
          return principal === undefined ? (certificate(call) ?? peer(call)) : subjectKey(principal);
        },
      };
    default:
      break;
  }
  if (typeof key === 'string' && /^header:[a-z0-9][a-z0-9-]*$/i.test(key)) {
    const name = key.slice('header:'.length).toLowerCase();
    return {
      keyKind: key.toLowerCase(),
      keyOf: (call) => {
        const value = call.headers.get(name);
        // The value may be a credential (an API key): only its hash is stored.
        return value === undefined || value === '' ? peer(call) : `hdr:${name}:${keyDigest(value)}`;
      },
    };
  }
  throw new ConfigurationError(`${where} must be "peer", "subject", "certificate", "header:<name>" or a function`);
}
