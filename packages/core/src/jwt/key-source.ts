import { createPublicKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, errors as joseErrors, importSPKI, type CryptoKey, type JSONWebKeySet } from 'jose';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError, isSecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { MAX_TIMER_MS } from '../options/whole-number.js';
import type { AsymmetricAlgorithm } from './algorithms.js';

/**
 * A key a token signature is checked with.
 *
 * @example
 * ```ts
 * import type { VerificationKey } from '@fluxguard/core';
 * const keys: readonly VerificationKey[] = await keySource.getKeys({ alg: 'ES256', kid: 'artifacts-2025' });
 * ```
 */
export type VerificationKey = CryptoKey | Uint8Array;

/**
 * The parts of a token header a key source may look at; already checked by the verifier.
 *
 * @example
 * ```ts
 * import type { TokenHeader } from '@fluxguard/core';
 * const header: TokenHeader = { alg: 'ES256', kid: 'artifacts-2025' };
 * const candidates = await keySource.getKeys(header);
 * ```
 */
export interface TokenHeader {
  /** The token's `alg`, already checked against the verifier's allowlist. */
  readonly alg: string;
  /** The token's `kid`; `undefined` when the header names none. */
  readonly kid: string | undefined;
}

/**
 * Where a verifier gets its keys: a narrow seam so that a local set, a PEM key, a remote JWKS
 * or an application's own store look the same to the verifier.
 *
 * `getKeys` resolves the candidate keys for a token (usually one), or throws a
 * {@link SecurityError}: `unauthenticated` (reason `unknown_kid`) when no key matches,
 * `unavailable` (reason `jwks_unavailable`) when the keys cannot be had at all.
 *
 * `version` changes whenever the set of keys in service changes; the verifier's cache
 * verifies again a token it verified under an older version, so that a token signed with a
 * key that has since been removed stops being accepted.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, createLocalJwksSource } from '@fluxguard/core';
 * const keySource = createLocalJwksSource(JSON.parse(jwksText));
 * const verifier = createJwtVerifier({ keySource, issuer: 'https://id.example.com', audience: 'artifacts' });
 * ```
 */
export interface JwksSource {
  /**
   * Changes whenever the set of keys in service changes; the verifier's cache verifies again a
   * token verified under an older version.
   */
  readonly version: number;
  /**
   * The candidate keys for a token (usually one); rejects with a `SecurityError`: `unknown_kid`
   * when no key matches, `jwks_unavailable` when no keys can be had.
   */
  getKeys(header: TokenHeader): Promise<readonly VerificationKey[]>;
  /**
   * Optional: the keys for `header` when the source already has them in hand, or `undefined`
   * to go through `getKeys`. Spares a promise per new token; a source answers here only what
   * `getKeys` would answer now (the built-in remote source, for instance, not once its set is
   * due for a refresh).
   */
  keysNow?(header: TokenHeader): readonly VerificationKey[] | undefined;
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'] as const;

/** Checks a key set's shape: public, asymmetric keys only. Returns a message or undefined. */
function keySetProblem(jwks: unknown): string | undefined {
  if (typeof jwks !== 'object' || jwks === null || Array.isArray(jwks)) return 'must be an object with a "keys" array';
  const keys: unknown = (jwks as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) return 'must be an object with a "keys" array';
  for (const [index, key] of (keys as unknown[]).entries()) {
    if (typeof key !== 'object' || key === null || Array.isArray(key)) return `keys[${index}] must be a JWK object`;
    const kty: unknown = (key as { kty?: unknown }).kty;
    if (typeof kty !== 'string') return `keys[${index}].kty must be a string`;
    // A symmetric key in a trusted set would let anyone holding the public set sign HS* tokens.
    if (kty === 'oct') return `keys[${index}] is a symmetric ("oct") key; a key set holds public keys only`;
    for (const member of PRIVATE_MEMBERS) {
      if (Object.hasOwn(key, member))
        return `keys[${index}] holds private key material ("${member}"); publish public keys only`;
    }
  }
  return undefined;
}

type LocalSet = ReturnType<typeof createLocalJWKSet>;

async function keysFromSet(set: LocalSet, header: TokenHeader): Promise<readonly VerificationKey[]> {
  try {
    return [await set({ alg: header.alg, ...(header.kid === undefined ? {} : { kid: header.kid }) })];
  } catch (err) {
    if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
      // No kid and several keys of the right type: each is a candidate; the signature decides.
      const keys: VerificationKey[] = [];
      for await (const key of err) keys.push(key);
      if (keys.length > 0) return keys;
    }
    if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) {
      throw new SecurityError('unauthenticated', { reason: 'unknown_kid', cause: safeCause(err) });
    }
    if (err instanceof joseErrors.JOSENotSupported) {
      throw new SecurityError('unauthenticated', { reason: 'alg_not_allowed', cause: safeCause(err) });
    }
    throw new SecurityError('unauthenticated', { reason: 'key_unusable', cause: safeCause(err) });
  }
}

/** At most this many (algorithm, kid) lookups are remembered per key set: a set holds a handful. */
const MAX_RESOLVED = 64;

/**
 * The keys a fixed local set resolved, by algorithm and kid, so that a known key is had
 * without a promise next time. Only successful lookups are kept, so made-up kids cannot fill it.
 */
class ResolvedKeys {
  readonly #set: LocalSet;
  readonly #known = new Map<string, readonly VerificationKey[]>();

  constructor(set: LocalSet) {
    this.#set = set;
  }

  now(header: TokenHeader): readonly VerificationKey[] | undefined {
    return this.#known.get(lookupKey(header));
  }

  async get(header: TokenHeader): Promise<readonly VerificationKey[]> {
    const keys = await keysFromSet(this.#set, header);
    if (this.#known.size < MAX_RESOLVED) this.#known.set(lookupKey(header), keys);
    return keys;
  }
}

// The algorithm comes from the allowlist and holds no NUL, so no two (alg, kid) pairs share a key.
const lookupKey = (header: TokenHeader): string =>
  header.kid === undefined ? header.alg : `${header.alg}\u0000${header.kid}`;

/** A cause for the log that carries the library's message but none of its extra fields. */
export function safeCause(err: unknown): Error {
  if (err instanceof joseErrors.JOSEError) {
    const cause = new Error(err.message);
    cause.name = err.code;
    return cause;
  }
  return err instanceof Error ? err : new Error('non-error value thrown');
}

/**
 * A key source over a fixed JSON Web Key Set (e.g. the contents of a `jwks.json` file), with the
 * algorithms its keys can verify. Refuses at construction an empty set, a set holding private or
 * symmetric keys, and a key Node cannot import.
 *
 * @param jwks - the key set.
 * @param where - named in configuration errors. Default `jwks`.
 * @throws ConfigurationError for a malformed or empty set.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * import { createLocalJwksSource } from '@fluxguard/core';
 * const keySource = createLocalJwksSource(JSON.parse(readFileSync('.fluxguard/dev/jwks.json', 'utf8')));
 * ```
 */
export function createLocalJwksSource(jwks: JSONWebKeySet, where = 'jwks'): PublicKeySource {
  const problem = keySetProblem(jwks);
  if (problem !== undefined) throw new ConfigurationError(`${where}: ${problem}`);
  // A set fixed at start-up with no key in it refuses every token, each as an unknown key.
  if (jwks.keys.length === 0) {
    throw new ConfigurationError(
      `${where}: the key set holds no key, so every token would be refused: add the issuer's public keys`,
    );
  }
  // A key Node cannot import (an EC key without its curve or coordinates, an RSA key without
  // its modulus) verifies nothing: every token it was meant for would be refused at run time.
  const algorithms = new Set<AsymmetricAlgorithm>();
  jwks.keys.forEach((key, index) => {
    let imported: KeyObject;
    try {
      imported = createPublicKey({ key: key as JsonWebKeyInput['key'], format: 'jwk' });
    } catch (cause) {
      throw new ConfigurationError(
        `${where}: keys[${String(index)}] is not a usable public key (missing or malformed members for its "kty")`,
        { cause },
      );
    }
    // jose verifies with a key only for signatures, and only with its own `alg` when it names one.
    const { use, alg, key_ops: operations } = key as { use?: unknown; alg?: unknown; key_ops?: unknown };
    if (use !== undefined && use !== 'sig') return;
    if (Array.isArray(operations) && !operations.includes('verify')) return;
    for (const algorithm of algorithmsForKey(imported))
      if (alg === undefined || alg === algorithm) algorithms.add(algorithm);
  });
  let set: LocalSet;
  try {
    set = createLocalJWKSet(jwks);
  } catch (cause) {
    throw new ConfigurationError(`${where}: not a valid JSON Web Key Set`, { cause });
  }
  const resolved = new ResolvedKeys(set);
  return Object.freeze({
    version: 1,
    algorithms: Object.freeze([...algorithms]),
    getKeys: (header: TokenHeader) => resolved.get(header),
    keysNow: (header: TokenHeader) => resolved.now(header),
  });
}

/** The algorithms a public key can verify, from its type and curve. */
export function algorithmsForKey(key: KeyObject): readonly AsymmetricAlgorithm[] {
  const type = key.asymmetricKeyType ?? '';
  if (type === 'ec') return EC_ALGORITHMS[key.asymmetricKeyDetails?.namedCurve ?? ''] ?? [];
  return KEY_ALGORITHMS[type] ?? [];
}

const KEY_ALGORITHMS: Readonly<Partial<Record<string, readonly AsymmetricAlgorithm[]>>> = Object.freeze({
  rsa: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
  'rsa-pss': ['PS256', 'PS384', 'PS512'],
  ed25519: ['EdDSA', 'Ed25519'],
});

const EC_ALGORITHMS: Readonly<Partial<Record<string, readonly AsymmetricAlgorithm[]>>> = Object.freeze({
  prime256v1: ['ES256'],
  secp384r1: ['ES384'],
  secp521r1: ['ES512'],
});

/**
 * A PEM key source, with the algorithms the key can serve.
 *
 * @example
 * ```ts
 * import { createPublicKeySource, type PublicKeySource } from '@fluxguard/core';
 * const keySource: PublicKeySource = createPublicKeySource(readFileSync('jwt-public.pem', 'utf8'));
 * keySource.algorithms; // ['ES256'] for a P-256 key
 * ```
 */
export interface PublicKeySource extends JwksSource {
  /** The algorithms this key can verify; the verifier intersects its allowlist with them. */
  readonly algorithms: readonly AsymmetricAlgorithm[];
}

/**
 * A key source over one PEM public key (SPKI `BEGIN PUBLIC KEY`, or an X.509 certificate).
 * A private key is refused: the verifier never needs one.
 *
 * @throws ConfigurationError for a private, unparsable, unsupported or too short (< 2048-bit RSA) key.
 *
 * @example
 * ```ts
 * import { createPublicKeySource } from '@fluxguard/core';
 * const keySource = createPublicKeySource(process.env.JWT_PUBLIC_KEY_PEM ?? '');
 * ```
 */
export function createPublicKeySource(pem: string, where = 'publicKey'): PublicKeySource {
  if (typeof pem !== 'string' || pem.trim() === '') throw new ConfigurationError(`${where}: must be a PEM string`);
  if (pem.includes('PRIVATE KEY-----')) {
    throw new ConfigurationError(`${where}: is a private key; configure the public key (SPKI) only`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (cause) {
    throw new ConfigurationError(`${where}: not a PEM public key or certificate`, { cause });
  }
  const algorithms = algorithmsForKey(key);
  if (algorithms.length === 0) throw new ConfigurationError(`${where}: unsupported key type`);
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048) throw new ConfigurationError(`${where}: RSA keys must be 2048 bits or larger`);
  const spki = key.export({ type: 'spki', format: 'pem' }).toString();
  const imported = new Map<string, Promise<CryptoKey>>();
  const ready = new Map<string, readonly VerificationKey[]>();
  return Object.freeze({
    version: 1,
    algorithms,
    keysNow: (header: TokenHeader) => ready.get(header.alg),
    async getKeys(header: TokenHeader): Promise<readonly VerificationKey[]> {
      if (!(algorithms as readonly string[]).includes(header.alg)) {
        throw new SecurityError('unauthenticated', { reason: 'alg_not_allowed' });
      }
      let pending = imported.get(header.alg);
      if (pending === undefined) {
        pending = importSPKI(spki, header.alg);
        imported.set(header.alg, pending);
      }
      try {
        const keys = [await pending];
        // Keyed by an allowed algorithm only (checked above): a handful of entries at most.
        ready.set(header.alg, keys);
        return keys;
      } catch (err) {
        imported.delete(header.alg);
        throw new SecurityError('unauthenticated', { reason: 'key_unusable', cause: safeCause(err) });
      }
    },
  });
}

/**
 * Options of {@link createRemoteJwksSource}.
 *
 * @example
 * ```ts
 * import type { RemoteJwksOptions } from '@fluxguard/core';
 * const options: RemoteJwksOptions = { url: 'https://id.example.com/.well-known/jwks.json', timeoutMs: 2_000 };
 * ```
 */
export interface RemoteJwksOptions {
  /** The JWKS endpoint: `https:`, or `http:` on a loopback host (tests, a local sidecar). */
  readonly url: string | URL;
  /** Abort a fetch after this long. Default 5000 ms. */
  readonly timeoutMs?: number;
  /**
   * At most one fetch per this period, whatever triggers it (unknown kid, staleness, failure).
   * Default 30 000 ms. `0` fetches again for every token with an unknown kid (one fetch at a
   * time): for tests of key rotation, never in service, where anyone can send such tokens.
   */
  readonly cooldownMs?: number;
  /** A key set older than this is refreshed in the background (the old one serves meanwhile). Default 600 000 ms. */
  readonly maxAgeMs?: number;
  /** Largest response body accepted, at most 16 MiB (16 777 216). Default 512 KiB. */
  readonly maxBytes?: number;
  /** Allow `http:` to a non-loopback host (a trusted in-cluster network only). Default false. */
  readonly allowInsecureHttp?: boolean;
  /** Called with each failed fetch (timeout, HTTP status, bad JSON, bad set); the last good set stays in service. */
  readonly onRefreshError?: ((error: Error) => void) | undefined;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  readonly now?: () => number;
}

/**
 * A remote key source; {@link RemoteJwksSource.refresh} lets a server load keys before it listens.
 *
 * @example
 * ```ts
 * import { createRemoteJwksSource, type RemoteJwksSource } from '@fluxguard/core';
 * const keys: RemoteJwksSource = createRemoteJwksSource({ url: 'https://id.example.com/.well-known/jwks.json' });
 * if (!(await keys.refresh())) console.warn('no key set yet:', keys.lastError?.message);
 * ```
 */
export interface RemoteJwksSource extends JwksSource {
  /**
   * Fetches now unless a fetch is under way or the cooldown has not elapsed; resolves to
   * whether a key set is in service afterwards. Never rejects.
   */
  refresh(): Promise<boolean>;
  /** The error of the last failed fetch, cleared by a successful one. */
  readonly lastError: Error | undefined;
}

const REMOTE_DEFAULTS: Readonly<Required<Omit<RemoteJwksOptions, 'url' | 'onRefreshError'>>> = Object.freeze({
  timeoutMs: 5000,
  cooldownMs: 30_000,
  maxAgeMs: 600_000,
  maxBytes: 512 * 1024,
  allowInsecureHttp: false,
  now: Date.now,
});

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** The most `maxBytes` may be: 16 MiB, far above any key set. */
const MAX_JWKS_BYTES = 16 * 1024 * 1024;

/**
 * A key source over a remote JWKS endpoint, written around `fetch` rather than jose's
 * `createRemoteJWKSet`, which throws when a reload fails: here the last good key set stays in
 * service while the endpoint is down, slow (each fetch aborts after `timeoutMs`) or answers
 * garbage. An unknown `kid` triggers a refetch at most once per `cooldownMs`, so a flood of
 * tokens with made-up kids costs one request per cooldown. A set older than `maxAgeMs` is
 * refreshed in the background when a token is checked, one the verifier's cache answers for
 * too: a key the endpoint removed stops being accepted within about `maxAgeMs` plus one fetch,
 * however few new tokens arrive. With no key set ever loaded, a token cannot be checked:
 * `unavailable` (reason `jwks_unavailable`).
 *
 * @throws ConfigurationError for a bad URL or option.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, createRemoteJwksSource } from '@fluxguard/core';
 * const keySource = createRemoteJwksSource({ url: 'https://id.example.com/.well-known/jwks.json', timeoutMs: 2000 });
 * await keySource.refresh(); // optional warm-up before listening
 * const verifier = createJwtVerifier({ keySource, issuer: 'https://id.example.com', audience: 'artifacts' });
 * ```
 */
export function createRemoteJwksSource(options: RemoteJwksOptions): RemoteJwksSource {
  return remoteJwksSourceFrom(options, 'createRemoteJwksSource: "url"');
}

/**
 * {@link createRemoteJwksSource}, whose errors about the address name it `urlLabel`: the
 * verifier's `jwksUrl` is what its caller wrote.
 *
 * @internal
 */
export function remoteJwksSourceFrom(options: RemoteJwksOptions, urlLabel: string): RemoteJwksSource {
  const opts = resolveOptions('createRemoteJwksSource', REMOTE_DEFAULTS, options, ['url', 'onRefreshError']);
  const where = 'createRemoteJwksSource';
  let url: URL;
  try {
    url = new URL(options.url);
  } catch (cause) {
    throw new ConfigurationError(`${urlLabel} must be an absolute URL`, { cause });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigurationError(`${urlLabel} must use https:`);
  }
  // A string from the environment ("false") is truthy: only `true` may lift the https: rule.
  if (typeof opts.allowInsecureHttp !== 'boolean') {
    throw new ConfigurationError(`${where}: "allowInsecureHttp" must be a boolean`);
  }
  if (url.protocol === 'http:' && !LOOPBACK.has(url.hostname) && !opts.allowInsecureHttp) {
    throw new ConfigurationError(
      `${urlLabel} must use https: (http: is accepted for loopback hosts, or with allowInsecureHttp: true)`,
    );
  }
  if (url.username !== '' || url.password !== '')
    throw new ConfigurationError(`${urlLabel} must not carry credentials`);
  for (const name of ['timeoutMs', 'cooldownMs', 'maxAgeMs', 'maxBytes'] as const) {
    const value = opts[name];
    const ms = name !== 'maxBytes';
    if (
      typeof value !== 'number' ||
      // Whole numbers, as every other count of fluxguard: 0.5 ms is no timeout anyone meant.
      !Number.isSafeInteger(value) ||
      value < 0 ||
      (name !== 'cooldownMs' && value === 0) ||
      // Node runs a longer timer after 1 ms: every fetch would time out at once.
      (ms && value > MAX_TIMER_MS) ||
      // A key set is a few KiB: a larger bound reads as one and holds the whole body in memory.
      (!ms && value > MAX_JWKS_BYTES)
    ) {
      throw new ConfigurationError(
        `${where}: "${name}" must be a ${name === 'cooldownMs' ? 'non-negative' : 'positive'} whole number${ms ? ` of ms, at most ${String(MAX_TIMER_MS)}` : ` of bytes, at most ${String(MAX_JWKS_BYTES)}`}`,
      );
    }
  }
  if (typeof opts.now !== 'function') throw new ConfigurationError(`${where}: "now" must be a function`);
  const onRefreshError = options.onRefreshError;
  if (onRefreshError !== undefined && typeof onRefreshError !== 'function') {
    throw new ConfigurationError(`${where}: "onRefreshError" must be a function`);
  }
  const now = opts.now;

  let current: { set: ResolvedKeys; fingerprint: string; fetchedAt: number } | undefined;
  let version = 0;
  let lastAttempt = Number.NEGATIVE_INFINITY;
  let inflight: Promise<boolean> | undefined;
  let lastError: Error | undefined;

  // The timeout is a timer of our own that cancels the body's reader too: Node's fetch stops
  // passing its signal's abort on to a body being read once the garbage collector has run, and
  // a body that trickles in then held this fetch, and every refresh after it, for good.
  async function fetchSet(): Promise<{ jwks: JSONWebKeySet; fingerprint: string }> {
    const controller = new AbortController();
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`JWKS endpoint did not answer within ${opts.timeoutMs} ms`);
        error.name = 'TimeoutError';
        controller.abort(error);
        reader?.cancel(error).catch(() => undefined);
        reject(error);
      }, opts.timeoutMs);
    });
    try {
      return await Promise.race([
        exchange(controller.signal, (bodyReader) => {
          reader = bodyReader;
        }),
        timedOut,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async function exchange(
    signal: AbortSignal,
    onReader: (reader: ReadableStreamDefaultReader<Uint8Array>) => void,
  ): Promise<{ jwks: JSONWebKeySet; fingerprint: string }> {
    const response = await fetch(url, {
      signal,
      headers: { accept: 'application/json, application/jwk-set+json' },
      redirect: 'error',
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`JWKS endpoint answered HTTP ${response.status}`);
    }
    const text = await readLimited(response, opts.maxBytes, onReader);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (cause) {
      throw new Error('JWKS endpoint answered invalid JSON', { cause });
    }
    const problem = keySetProblem(parsed);
    if (problem !== undefined) throw new Error(`JWKS endpoint answered an unusable key set: ${problem}`);
    return { jwks: parsed as JSONWebKeySet, fingerprint: JSON.stringify((parsed as JSONWebKeySet).keys) };
  }

  function refresh(): Promise<boolean> {
    if (inflight !== undefined) return inflight;
    if (elapsed(now(), lastAttempt) < opts.cooldownMs) return Promise.resolve(current !== undefined);
    lastAttempt = now();
    inflight = fetchSet()
      .then(({ jwks, fingerprint }) => {
        const set = new ResolvedKeys(createLocalJWKSet(jwks));
        if (current?.fingerprint !== fingerprint) version += 1;
        current = { set, fingerprint, fetchedAt: now() };
        lastError = undefined;
        return true;
      })
      .catch((err: unknown) => {
        lastError = err instanceof Error ? err : new Error('JWKS fetch failed', { cause: err });
        try {
          onRefreshError?.(lastError);
        } catch {
          // A failing error hook must not turn into an unhandled rejection.
        }
        return current !== undefined;
      })
      .finally(() => {
        inflight = undefined;
      });
    return inflight;
  }

  async function getKeys(header: TokenHeader): Promise<readonly VerificationKey[]> {
    if (current === undefined) await refresh();
    const inService = current;
    if (inService === undefined) {
      throw new SecurityError('unavailable', { reason: 'jwks_unavailable', cause: lastError });
    }
    refreshIfDue();
    try {
      return await inService.set.get(header);
    } catch (err) {
      if (!isSecurityError(err) || err.reason !== 'unknown_kid') throw err;
      // Maybe the keys were rotated: one refetch per cooldown, then decide on the new set.
      const before = version;
      await refresh();
      if (version === before || current === undefined) throw err;
      return current.set.get(header);
    }
  }

  /** Starts a background refresh of a set in service past `maxAgeMs`, once per cooldown. */
  function refreshIfDue(): void {
    const inService = current;
    if (inService === undefined || inflight !== undefined) return;
    const t = now();
    if (elapsed(t, inService.fetchedAt) > opts.maxAgeMs && elapsed(t, lastAttempt) >= opts.cooldownMs) void refresh();
  }

  // Only a set that is not due for a refresh: a stale one goes through getKeys, which starts it.
  function keysNow(header: TokenHeader): readonly VerificationKey[] | undefined {
    const inService = current;
    if (inService === undefined || elapsed(now(), inService.fetchedAt) > opts.maxAgeMs) return undefined;
    return inService.set.now(header);
  }

  return Object.freeze({
    // A verifier reads the version on every token its cache answers for: a set past its max age
    // is refreshed from there too, so that a key the endpoint removed stops tokens that only
    // ever come from the cache.
    get version() {
      refreshIfDue();
      return version;
    },
    get lastError() {
      return lastError;
    },
    getKeys,
    keysNow,
    refresh,
  });
}

/**
 * The time from `since` to `t`. A clock that went back past `since` (an NTP step, a restored VM)
 * says nothing of how long it has been, and counts as long ago: taken as negative, it held off
 * every fetch, and so kept a removed key accepted and a rotated-in one refused, until the clock
 * had caught up again, an hour for an hour's step. One fetch then restarts the count.
 */
function elapsed(t: number, since: number): number {
  return t < since ? Number.POSITIVE_INFINITY : t - since;
}

async function readLimited(
  response: Response,
  maxBytes: number,
  onReader: (reader: ReadableStreamDefaultReader<Uint8Array>) => void,
): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel();
    throw new Error(`JWKS response larger than ${maxBytes} bytes`);
  }
  if (response.body === null) return '';
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  onReader(reader);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new Error(`JWKS response larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
}
