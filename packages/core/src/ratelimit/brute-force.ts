import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError, isSecurityError } from '../errors/security-error.js';
import { extractBearerToken } from '../jwt/bearer.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import type { CallContext } from '../pipeline/call-context.js';
import type { Control, StartResult } from '../pipeline/control.js';
import { clientAddressFrom, peerStoreKeys, type ClientAddressOptions } from './client-address.js';
import {
  askStore,
  createMemoryRateLimitStore,
  type LimiterResult,
  type RateLimitStore,
  type StoreLimiter,
} from './store.js';
import { wholeNumber } from '../options/whole-number.js';
import { PendingVerdicts } from './pending-verdicts.js';
import { boundedKey } from './store-key.js';

/**
 * How many failed authentications one key may have within a window before it is blocked.
 *
 * @example
 * ```ts
 * import type { FailureLimit } from '@fluxguard/core';
 * const tenPerTenMinutes: FailureLimit = { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 };
 * ```
 */
export interface FailureLimit {
  /** Failed authentications a key may have in a window; the failure that reaches it starts the block. */
  readonly maxFailures: number;
  /** Length of the window the failures are counted in, in seconds, from the first failure. */
  readonly windowSeconds: number;
  /** How long a key that reached `maxFailures` is refused, in seconds. */
  readonly blockSeconds: number;
}

/**
 * Options of {@link createBruteForceProtection}.
 *
 * @example
 * ```ts
 * import type { BruteForceOptions } from '@fluxguard/core';
 * const options: BruteForceOptions = { peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 } };
 * ```
 */
export interface BruteForceOptions extends ClientAddressOptions {
  /** Failed authentications from one client address (IPv6 by prefix). */
  readonly peer: FailureLimit;
  /**
   * Failed authentications with tokens that claim one subject (read from the token without
   * verifying it). It stops guessing aimed at one account from many addresses, at a price: an
   * attacker can lock that subject out for `blockSeconds`. Default: off.
   */
  readonly subject?: FailureLimit | undefined;
  /** Where failures and blocks are counted; a Redis store shares blocks between replicas. Default: memory. */
  readonly store?: RateLimitStore | undefined;
  /** While a shared store is down: `open` (count in this process) or `closed` (refuse, 503). Default `open`. */
  readonly storeFailure?: 'open' | 'closed' | undefined;
}

const OPTION_KEYS = [
  'peer',
  'subject',
  'store',
  'storeFailure',
  'trustedProxies',
  'ipv6PrefixLength',
  'forwardedHeader',
] as const;
const LIMIT_KEYS = ['maxFailures', 'windowSeconds', 'blockSeconds'] as const;
/** A token longer than this is not decoded for its subject (the verifier refuses it anyway). */
const MAX_TOKEN_LENGTH = 16 * 1024;

/**
 * Brute-force protection (stage `pre-authentication`): after `maxFailures` failed
 * authentications from one client address within `windowSeconds` (and, if configured, for one
 * claimed token subject), that address is refused for `blockSeconds` with `rate_limited`
 * (reason `brute_force_blocked`, 429 / `RESOURCE_EXHAUSTED` with a retry hint), before any token
 * is verified. A valid token from a blocked address is refused too until the block ends. A call
 * that presents no credential (no `authorization`, no client certificate: a health check, a
 * public route) guesses nothing and is not held by a block, so that a block of a shared address
 * (a load balancer's, without `trustedProxies`) cannot fail the health checks.
 *
 * A failure is a call refused with `unauthenticated` by a later control (a bad, expired or
 * forged token, a certificate that does not verify), except a call that sent no credential at
 * all or a token signed with a key the key set does not hold yet (`unknown_kid`). With a Redis
 * store the counts and blocks hold across replicas; a burst of guesses sent to N replicas at once
 * can have up to N × `maxFailures` verified before the shared count blocks the address on every
 * replica (each knows only its own guesses on their way to a verdict).
 *
 * @throws ConfigurationError for unknown options or limits that are not positive whole numbers.
 *
 * @example
 * ```ts
 * import { createBruteForceProtection } from '@fluxguard/core';
 * const bruteForce = createBruteForceProtection({ peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 } });
 * // fluxguard({ audit, guard, controls: [bruteForce] })
 * ```
 */
export function createBruteForceProtection(options: BruteForceOptions): Control {
  return compileBruteForce(options, 'createBruteForceProtection');
}

/**
 * {@link createBruteForceProtection} with the name errors give the options.
 *
 * @internal
 */
export function compileBruteForce(options: BruteForceOptions, where: string): Control {
  if (typeof options !== 'object' || (options as unknown) === null)
    throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(options, OPTION_KEYS, where, 'option');
  const store = options.store ?? createMemoryRateLimitStore();
  if (typeof (store as Partial<RateLimitStore>).limiter !== 'function') {
    throw new ConfigurationError(`${where}.store must be a rate-limit store`);
  }
  const storeFailure: unknown = options.storeFailure ?? 'open';
  if (storeFailure !== 'open' && storeFailure !== 'closed')
    throw new ConfigurationError(`${where}.storeFailure must be "open" or "closed"`);
  const address = clientAddressFrom(options, where);
  const peerKeyOf = peerStoreKeys(address);
  const peerLimiter = failureLimiter(options.peer, `${where}.peer`, 'brute-force.peer', store, storeFailure);
  const subjectLimiter =
    options.subject === undefined
      ? undefined
      : failureLimiter(options.subject, `${where}.subject`, 'brute-force.subject', store, storeFailure);
  // A shared store answers a round trip later, while the failures of this replica are known at
  // once: they are counted here too (a bounded memory store), and checked before and after the
  // store is asked. A blocked address then costs no round trip, and a block this replica counted
  // holds while the store is slow or down, when its rules fall back to a limiter without blocks.
  const local = store.kind === 'memory' ? undefined : localStoreOf(store);
  const localPeer =
    local === undefined ? undefined : failureLimiter(options.peer, `${where}.peer`, 'brute-force.peer', local, 'open');
  const localSubject =
    local === undefined || options.subject === undefined
      ? undefined
      : failureLimiter(options.subject, `${where}.subject`, 'brute-force.subject', local, 'open');
  // What this process knows at once: the local counts, or the memory store itself.
  const knownPeer = localPeer ?? peerLimiter;
  const knownSubject = local === undefined ? subjectLimiter : localSubject;
  const maxPeerFailures = options.peer.maxFailures;
  const verdicts = pendingVerdictsOf(knownPeer);

  // With the memory store the check is synchronous; a remote store's answers are awaited.
  const onStart = (call: CallInfo, context: CallContext): StartResult | Promise<StartResult> => {
    // A call without a credential guesses nothing, and a block does not hold it: a health check
    // or a public route from a blocked address (a load balancer's, shared by every client
    // behind it) is served. What it fails with is no failed authentication either.
    if (!presentsCredential(call)) return undefined;
    const peerKey = peerKeyOf(call);
    const subject = subjectLimiter === undefined ? undefined : claimedSubject(call);
    const subjectKey = subject === undefined ? undefined : `sub:${boundedKey(subject)}`;
    const countFailure = (refusal: unknown): void => {
      if (!isFailedAuthentication(refusal)) return;
      // Counted the moment authentication fails, before the next call is checked.
      // A store failure here is already logged by the store, and the next check fails open or
      // closed as configured.
      count(peerLimiter, peerKey);
      if (localPeer !== undefined) count(localPeer, peerKey);
      if (subjectKey !== undefined && subjectLimiter !== undefined) {
        count(subjectLimiter, subjectKey);
        if (localSubject !== undefined) count(localSubject, subjectKey);
      }
    };
    const refuseIfKnownBlocked = (): void => {
      refuseIfBlocked(
        peekNow(knownPeer, peerKey),
        knownSubject === undefined ? undefined : peekNow(knownSubject, subjectKey),
      );
    };
    /** Failures of the address this process knows of. */
    const failures = (key: string): number => {
      const state = peekNow(knownPeer, key);
      if (state === undefined) return 0;
      return state.allowed ? maxPeerFailures - 1 - state.remaining : maxPeerFailures;
    };
    const enter = (key: string): StartResult => {
      const settle = verdicts.enter(key);
      context.whenRefused((refusal) => {
        countFailure(refusal);
        settle();
      });
      context.whenAllowed(settle);
      // A call that ends before its verdict (cancelled in a later check) settles on its release.
      return settle;
    };
    // A call that tries a credential may fail: while the failures known plus the calls still
    // waiting for their verdict could reach the limit, it waits for one of those verdicts.
    const admit = (): StartResult | Promise<StartResult> => {
      if (failures(peerKey) + verdicts.count(peerKey) < maxPeerFailures) return enter(peerKey);
      return (async () => {
        for (;;) {
          await verdicts.next(peerKey, call.signal);
          if (call.signal.aborted) return undefined;
          refuseIfKnownBlocked();
          if (failures(peerKey) + verdicts.count(peerKey) < maxPeerFailures) return enter(peerKey);
        }
      })();
    };
    // Before a shared store is asked: a flood from a blocked address costs no round trip.
    if (local !== undefined) refuseIfKnownBlocked();
    const peerState = peek(peerLimiter, peerKey);
    const subjectState = subjectLimiter === undefined ? undefined : peek(subjectLimiter, subjectKey);
    if (peerState instanceof Promise || subjectState instanceof Promise) {
      return Promise.all([peerState, subjectState]).then(([p, s]) => {
        // Failures this replica counted while the store answered.
        refuseIfKnownBlocked();
        refuseIfBlocked(p, s);
        return admit();
      });
    }
    refuseIfBlocked(peerState, subjectState);
    return admit();
  };

  return Object.freeze({
    name: 'brute-force',
    stage: 'pre-authentication',
    countsSocketAddress: Object.freeze(address.behindProxies ? [] : ['brute-force.peer']),
    onStart,
  });
}

function refuseIfBlocked(peer: LimiterResult | undefined, subject: LimiterResult | undefined): void {
  const peerBlocked = peer !== undefined && !peer.allowed;
  const subjectBlocked = subject !== undefined && !subject.allowed;
  // The longer wait when both are blocked: a client told the address's wait was refused again.
  const blocked =
    subjectBlocked && (!peerBlocked || subject.resetMs > peer.resetMs)
      ? { kind: 'subject', state: subject }
      : peerBlocked
        ? { kind: 'peer', state: peer }
        : undefined;
  if (blocked === undefined) return;
  throw new SecurityError('rate_limited', {
    reason: 'brute_force_blocked',
    details: { retryAfterSeconds: Math.max(1, Math.ceil(blocked.state.resetMs / 1000)) },
    auditFields: { rule: `brute-force.${blocked.kind}`, keyKind: blocked.kind },
  });
}

function count(limiter: StoreLimiter, key: string): void {
  try {
    const counted = limiter.consume(key, 1);
    if (counted instanceof Promise) counted.catch(ignore);
  } catch {
    // See `countFailure`: already logged by the store.
  }
}

function ignore(): void {
  // A failed count of a remote store: already logged by the store.
}

function peek(
  limiter: StoreLimiter,
  key: string | undefined,
): LimiterResult | undefined | Promise<LimiterResult | undefined> {
  if (key === undefined) return undefined;
  return askStore(() => limiter.peek(key), { rule: 'brute-force' });
}

/** A memory limiter's answer, which is synchronous. */
function peekNow(limiter: StoreLimiter, key: string | undefined): LimiterResult | undefined {
  if (key === undefined) return undefined;
  const result = limiter.peek(key);
  return result instanceof Promise ? undefined : result;
}

function failureLimiter(
  limit: unknown,
  where: string,
  name: string,
  store: RateLimitStore,
  storeFailure: 'open' | 'closed',
): StoreLimiter {
  if (typeof limit !== 'object' || limit === null || Array.isArray(limit)) {
    throw new ConfigurationError(`${where} must be an object with maxFailures, windowSeconds and blockSeconds`);
  }
  checkKnownKeys(limit, LIMIT_KEYS, where, 'field');
  const value = limit as Partial<Record<(typeof LIMIT_KEYS)[number], unknown>>;
  const n = (key: (typeof LIMIT_KEYS)[number]): number => wholeNumber(value[key], `${where}.${key}`);
  // The store blocks a key once its count goes over `points`: the Nth failure must do that.
  return store.limiter({
    name,
    points: n('maxFailures') - 1,
    durationSeconds: n('windowSeconds'),
    blockSeconds: n('blockSeconds'),
    storeFailure,
  });
}

// Guards given one store (one per transport) count failures together, as the store keeps them
// by name: the counts this process keeps beside a shared store, and the guesses still waiting
// for their verdict, are kept per store and per limiter too. Per control, two guards let
// `maxFailures` guesses through each.
const localStores = new WeakMap<RateLimitStore, RateLimitStore>();
const pendingVerdicts = new WeakMap<StoreLimiter, PendingVerdicts>();

function localStoreOf(store: RateLimitStore): RateLimitStore {
  let local = localStores.get(store);
  if (local === undefined) {
    local = createMemoryRateLimitStore();
    localStores.set(store, local);
  }
  return local;
}

function pendingVerdictsOf(limiter: StoreLimiter): PendingVerdicts {
  let verdicts = pendingVerdicts.get(limiter);
  if (verdicts === undefined) {
    verdicts = new PendingVerdicts();
    pendingVerdicts.set(limiter, verdicts);
  }
  return verdicts;
}

/** Whether a call carries something authentication may refuse: a bearer token or a client certificate. */
function presentsCredential(call: CallInfo): boolean {
  return call.headers.get('authorization') !== undefined || call.peerCertificate !== undefined;
}

/**
 * A refusal that tried a credential and failed. A call that sent none is not guessing; nor is a
 * token signed with a key the server has not fetched yet (`unknown_kid`): after an identity
 * provider starts signing with a new key, the key set catches up within the fetch cooldown, and
 * counting those refusals blocked every busy caller for `blockSeconds`. Such a token is refused
 * before any signature is checked, so it guesses nothing.
 */
function isFailedAuthentication(refusal: unknown): boolean {
  return (
    isSecurityError(refusal) &&
    refusal.code === 'unauthenticated' &&
    refusal.reason !== 'missing_token' &&
    refusal.reason !== 'unknown_kid'
  );
}

/** The `sub` a bearer token claims, read without verifying it (bounded; anything odd: none). */
function claimedSubject(call: CallInfo): string | undefined {
  let token: string;
  try {
    token = extractBearerToken(call.headers);
  } catch {
    return undefined;
  }
  if (token.length > MAX_TOKEN_LENGTH) return undefined;
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    const sub = (claims as { sub?: unknown } | null)?.sub;
    return typeof sub === 'string' && sub !== '' && sub.length <= 256 ? sub : undefined;
  } catch {
    return undefined;
  }
}
