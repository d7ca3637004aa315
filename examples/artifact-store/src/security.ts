import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import {
  ConfigurationError,
  createConcurrencyLimit,
  createGuardFromPolicy,
  createMemoryDenylist,
  createMemoryRateLimitStore,
  createRedisDenylist,
  createRedisRateLimitStore,
  createUrlGuard,
  descriptorBudget,
  parseSecurityPolicy,
  readPolicyDocument,
  resolveConnectionLimits,
  type AuditLogger,
  type ClientCertificateMode,
  type ComposedGuard,
  type ConcurrencyLimit,
  type Denylist,
  type JwtVerifier,
  type RateLimitStore,
  type ResolvedConnectionLimits,
  type SecurityPolicy,
  type TlsSettingsOptions,
  type Transport,
  type UrlGuard,
} from '@fluxguard/core';
import { scrubSecrets } from '@fluxguard/core/adapter';
import { ensureDevMaterial } from './dev-material.js';

const IN_FLIGHT = descriptorBudget().inFlight;
const UPLOADS_IN_FLIGHT = Math.max(1, Math.floor(IN_FLIGHT / 2));
const ANONYMOUS_IN_FLIGHT = Math.max(1, Math.floor(IN_FLIGHT / 4));
const WATCHES_IN_FLIGHT = Math.max(1, Math.floor(IN_FLIGHT / 8));
const WATCHES_PER_CALLER = Math.min(4, WATCHES_IN_FLIGHT);
const CHECKS_PER_CALLER = Math.min(4, ANONYMOUS_IN_FLIGHT);
const IMPORTS_IN_FLIGHT = Math.max(1, Math.floor(IN_FLIGHT / 16));
const IMPORTS_PER_CALLER = Math.min(4, IMPORTS_IN_FLIGHT);

/**
 * Calls in flight at once in one reference server: 10 % of the open-file limit in all (at most
 * 512; `descriptorBudget()`), 32 per caller, and uploads at most half of the total. With the
 * connection cap (70 % of the limit), the handshake and idle limits, the message limits and the
 * deadlines of the policy, it bounds what a flood can make the server hold, and no call meets
 * EMFILE. An upload is the call a client can hold open longest (to its deadline, sending a
 * part within each idle limit): many callers, each within its own 32, could otherwise fill the whole budget with
 * stalled uploads, and every other call would be refused until they time out. Calls without
 * a principal (health, which is public, and anonymous callers) get a quarter of the budget
 * together (128 of 512): an anonymous caller is its address, so clients from a few addresses,
 * each within its own 32, would otherwise hold all of it, and every authenticated call would be
 * refused for as long as they liked. A health `Watch` stays open up to 15 minutes: watches get
 * half of that quarter, so that health checks keep the other half, and each caller at most 4 of
 * them, or one address would hold every watch and every client watching the server's health
 * would be refused. A health `Check` whose request never comes is held until its 10 s deadline:
 * each caller holds at most 4 of them, or four addresses would hold the whole quarter and
 * every other health check, a load balancer's included, would be refused. A service whose replicas share one identity (a SPIFFE ID, a token subject)
 * is one caller: raise `perCaller` for it. An import holds an outbound connection and a
 * temporary file for up to its 30 s fetch: a sixteenth of the budget, each caller at most 4.
 * A call a client cancels keeps its slot until its handler has stopped, at most 5 s: these
 * handlers stop on their signal, a handler of yours that does not still counts while it works.
 */
export const IN_FLIGHT_BUDGET = Object.freeze({
  maxInFlight: IN_FLIGHT,
  maxInFlightPerCaller: Math.min(32, IN_FLIGHT),
  maxInFlightAnonymous: ANONYMOUS_IN_FLIGHT,
  maxInFlightPerOperation: Object.freeze({
    '/fluxguard.example.v1.ArtifactStore/UploadArtifact': UPLOADS_IN_FLIGHT,
    'PUT /v1/artifacts/*path': UPLOADS_IN_FLIGHT,
    '/grpc.health.v1.Health/Watch': Object.freeze({ max: WATCHES_IN_FLIGHT, perCaller: WATCHES_PER_CALLER }),
    '/grpc.health.v1.Health/Check': Object.freeze({ max: ANONYMOUS_IN_FLIGHT, perCaller: CHECKS_PER_CALLER }),
    '/fluxguard.example.v1.ArtifactStore/ImportArtifact': Object.freeze({
      max: IMPORTS_IN_FLIGHT,
      perCaller: IMPORTS_PER_CALLER,
    }),
    'POST /v1/artifacts/*path': Object.freeze({ max: IMPORTS_IN_FLIGHT, perCaller: IMPORTS_PER_CALLER }),
  }),
  holdForHandlerMs: 5_000,
});

/** The policy file both reference servers load by default. */
export const DEFAULT_POLICY_FILE: string = fileURLToPath(
  new URL('../policy/artifact-store.policy.json', import.meta.url),
);

/** Everything security-related a reference server needs, from one policy and the environment. */
export interface ReferenceSecurity {
  /** The checked policy, its key source taken from the environment. */
  readonly policy: SecurityPolicy;
  /**
   * The guard of one transport, from the policy in one call (`createGuardFromPolicy`): its JWT
   * verifier (consulting {@link ReferenceSecurity.denylist}), its RBAC rules for that transport
   * (gRPC rules name `/pkg.Service/Method`, HTTP rules `METHOD /path`) and its certificate roles.
   * With `servedOperations`, a rule that names none of them is refused at start-up.
   */
  guard(transport: Transport, servedOperations?: readonly string[]): ComposedGuard;
  /**
   * The in-flight budget of one server (`createConcurrencyLimit`): {@link IN_FLIGHT_BUDGET}.
   * Over it a call is refused at once (`UNAVAILABLE` / 503) instead of queueing.
   */
  readonly concurrency: ConcurrencyLimit;
  /**
   * The policy's `connections` section with its defaults (`resolveConnectionLimits`): handshake
   * and idle times and the connection cap, which both servers apply to their port.
   */
  readonly connections: ResolvedConnectionLimits;
  /** Server TLS material (files, so that a renewal on disk is picked up) and client-certificate mode. */
  readonly tls: TlsSettingsOptions & { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
  /** The revocation list every verification consults. */
  readonly denylist: Denylist;
  /**
   * Where the policy's rate limits and brute-force blocks count: Redis when
   * `FLUXGUARD_REDIS_URL` is set (shared by every replica), else this process's memory. One
   * store for both transports, so a caller's limits are the same whichever it uses. None when
   * the policy has no `rateLimits`.
   */
  readonly rateLimitStore: RateLimitStore | undefined;
  /** Fetches the URLs clients give to import from (`createUrlGuard`: https, no private address). */
  readonly urlGuard: UrlGuard;
  /** Releases what was opened (the Redis connection). */
  close(): Promise<void>;
}

/** Options of {@link loadReferenceSecurity}. */
export interface ReferenceSecurityOptions {
  /** Where development material lives (created on first use). */
  readonly devDir: string;
  readonly audit: AuditLogger;
  /** Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** A revocation list to use instead of the one the environment selects. */
  readonly denylist?: Denylist;
  /** A verifier to use instead of the one the policy and environment describe. */
  readonly jwt?: JwtVerifier;
  /** A rate-limit store to use instead of the one the environment selects (a Redis Cluster's, say). */
  readonly rateLimitStore?: RateLimitStore;
  /** A URL guard to use instead of the default one (a test's, trusting its own CA). */
  readonly urlGuard?: UrlGuard;
}

/**
 * Loads the reference servers' security from the policy file and the environment:
 *
 * | variable | meaning | default |
 * | --- | --- | --- |
 * | `FLUXGUARD_POLICY` | the policy file | `examples/artifact-store/policy/artifact-store.policy.json` |
 * | `FLUXGUARD_JWKS_URL` | trust this identity provider's JWKS instead of the development key; needs the next two | (development key) |
 * | `FLUXGUARD_JWT_ISSUER`, `FLUXGUARD_JWT_AUDIENCE` | the expected `iss` and `aud`, with `FLUXGUARD_JWKS_URL` only | the policy's |
 * | `FLUXGUARD_TLS_CERT`, `FLUXGUARD_TLS_KEY`, `FLUXGUARD_TLS_CA`, `FLUXGUARD_TLS_CRL` | server certificate, key, client CA bundle, optional CRL (all three or none) | the development PKI |
 * | `FLUXGUARD_CLIENT_CERTS` | `strict` (the handshake requires a client certificate) or `per-operation` (refused under a strict policy, which it cannot loosen) | the policy's `mtls.clientCertificates` |
 * | `FLUXGUARD_REDIS_URL` | share the token denylist, rate limits and brute-force blocks between replicas through Redis | in memory |
 * | `FLUXGUARD_DENYLIST_REDIS_URL` | keep the token denylist in a Redis of its own, one with `maxmemory-policy noeviction` (the counts a flood writes fill a Redis, and one that evicts could drop a revocation) | `FLUXGUARD_REDIS_URL` |
 * | `FLUXGUARD_RATE_LIMIT_MAX_KEYS` | keys (callers, addresses, API keys) each rate-limit rule holds in memory; when full, the one used longest ago is forgotten (without `FLUXGUARD_REDIS_URL`) | 100000 |
 *
 * @example
 * ```ts
 * const security = await loadReferenceSecurity({ devDir: '.fluxguard/dev', audit });
 * ```
 */
export async function loadReferenceSecurity(options: ReferenceSecurityOptions): Promise<ReferenceSecurity> {
  const env = options.env ?? process.env;
  const { audit } = options;
  const policyFile = env.FLUXGUARD_POLICY ?? DEFAULT_POLICY_FILE;
  const raw = await readPolicyDocument(policyFile);

  const jwksUrl = env.FLUXGUARD_JWKS_URL;
  if (jwksUrl !== undefined && (env.FLUXGUARD_JWT_ISSUER === undefined || env.FLUXGUARD_JWT_AUDIENCE === undefined)) {
    // Trusting a real identity provider's keys with the development issuer and audience would
    // accept any token it issues, for any service.
    throw new ConfigurationError('FLUXGUARD_JWKS_URL needs FLUXGUARD_JWT_ISSUER and FLUXGUARD_JWT_AUDIENCE');
  }
  if (jwksUrl === undefined && (env.FLUXGUARD_JWT_ISSUER !== undefined || env.FLUXGUARD_JWT_AUDIENCE !== undefined)) {
    // Read by nothing without it: the development key set has its own issuer and audience.
    throw new ConfigurationError('FLUXGUARD_JWT_ISSUER and FLUXGUARD_JWT_AUDIENCE go with FLUXGUARD_JWKS_URL');
  }
  const tlsFromEnv = [env.FLUXGUARD_TLS_CERT, env.FLUXGUARD_TLS_KEY, env.FLUXGUARD_TLS_CA];
  if (tlsFromEnv.some((v) => v !== undefined) && !tlsFromEnv.every((v) => v !== undefined)) {
    throw new ConfigurationError(
      'FLUXGUARD_TLS_CERT, FLUXGUARD_TLS_KEY and FLUXGUARD_TLS_CA go together: set all three or none',
    );
  }
  const needsDevMaterial = tlsFromEnv[0] === undefined || jwksUrl === undefined;
  const dev = needsDevMaterial ? await ensureDevMaterial(options.devDir) : undefined;
  if (tlsFromEnv[0] !== undefined && jwksUrl === undefined) {
    // TLS of one's own reads as a deployment; the development signing key beside it, readable to
    // whoever can read the development directory, would still sign tokens this server trusts.
    audit.logger.warn(
      {
        event: 'config.development_tokens',
        devDir: options.devDir,
        hint: 'TLS comes from the environment, but tokens are verified with the development key set, whose private key is in the development directory: set FLUXGUARD_JWKS_URL (with FLUXGUARD_JWT_ISSUER and FLUXGUARD_JWT_AUDIENCE) to trust your identity provider',
      },
      'config.development_tokens',
    );
  }

  // The key source is the environment's, not the file's: the development key set, or a real
  // identity provider's JWKS with its own issuer and audience. The file's settings of a remote
  // key set (jwksTimeoutMs, ...) apply to the second only, and a policy refuses them next to a file.
  const rawJwt = typeof raw.jwt === 'object' && raw.jwt !== null ? (raw.jwt as Record<string, unknown>) : {};
  const fileSource = ['jwksUrl', 'jwksFile', 'publicKeyFile'].find((key) => rawJwt[key] !== undefined);
  if (fileSource !== undefined) {
    // It was replaced by the development key set without a word: a policy naming production
    // keys would have trusted keys whose private half sits in the development directory.
    throw new ConfigurationError(
      `${policyFile}: jwt.${fileSource} names a key source, and the reference servers take theirs from the environment: FLUXGUARD_JWKS_URL (with FLUXGUARD_JWT_ISSUER and FLUXGUARD_JWT_AUDIENCE), else the development key set`,
    );
  }
  const localJwt = Object.fromEntries(Object.entries(rawJwt).filter(([key]) => !REMOTE_JWKS_SETTINGS.has(key)));
  const policy = parseSecurityPolicy(
    {
      ...raw,
      jwt:
        jwksUrl === undefined
          ? { ...localJwt, jwksFile: dev?.jwksFile }
          : { ...rawJwt, jwksUrl, issuer: env.FLUXGUARD_JWT_ISSUER, audience: env.FLUXGUARD_JWT_AUDIENCE },
    },
    `policy (${policyFile})`,
  );
  if (policy.jwt === undefined || policy.rbac === undefined) {
    throw new ConfigurationError(`${policyFile}: the reference servers need a "jwt" and an "rbac" section`);
  }
  // The policy's mtls section is checked by parseSecurityPolicy; the environment may make its
  // mode strict, not loosen it: the guard holds every call to a strict policy whatever TLS asks.
  const clientCertificates = clientCertificateMode(
    env.FLUXGUARD_CLIENT_CERTS ?? policy.mtls?.clientCertificates ?? 'per-operation',
  );
  if (clientCertificates === 'per-operation' && policy.mtls?.clientCertificates === 'strict') {
    throw new ConfigurationError(
      `FLUXGUARD_CLIENT_CERTS=per-operation cannot loosen the policy's mtls.clientCertificates "strict" (${policyFile})`,
    );
  }

  // ioredis takes an empty URL for Redis on localhost: an unset value must not mean that.
  const redisUrl = nonEmpty(env, 'FLUXGUARD_REDIS_URL');
  // Revocations may live in a Redis of their own, one that never evicts keys: the counts a
  // flood writes fill a Redis, and one that evicts could drop a revocation.
  const denylistUrl = nonEmpty(env, 'FLUXGUARD_DENYLIST_REDIS_URL') ?? redisUrl;
  const connections = new Map<string, Redis>();
  // No commandTimeout: the denylist's and the store's own deadlines fail a call fast (closed or
  // open) and, unlike ioredis's timer, do not take a busy event loop for a slow Redis. The
  // revocations and the counts have a connection each, even to one Redis: Redis answers a
  // connection's commands in order, and in a failover's write pause (`CLIENT PAUSE ... WRITE`)
  // the revocation reads waited behind paused counts, and every token with a jti was refused.
  const connect = (url: string, use: 'revocations' | 'counts'): Redis => {
    let client = connections.get(`${use} ${url}`);
    if (client === undefined) {
      client = new Redis(url, { maxRetriesPerRequest: 1 });
      client.on('error', () => undefined);
      connections.set(`${use} ${url}`, client);
    }
    return client;
  };
  let denylist = options.denylist;
  if (denylist === undefined && denylistUrl !== undefined) {
    const client = connect(denylistUrl, 'revocations');
    // ioredis reports every failed reconnect; log each distinct failure once (calls fail closed meanwhile).
    let lastError = '';
    client.on('error', (err: Error) => {
      if (err.message === lastError) return;
      lastError = err.message;
      // Its name and message only: an ioredis error carries the failed command, whose
      // arguments are the password when AUTH fails.
      const cause = scrubSecrets(`${err.name}: ${err.message}`).slice(0, 300);
      audit.logger.error({ event: 'denylist.redis_error', cause }, 'denylist.redis_error');
    });
    client.on('ready', () => {
      lastError = '';
    });
    denylist = createRedisDenylist({ client });
  }
  denylist ??= createMemoryDenylist();
  // The store logs an outage itself (once, then every 10 s), and each rule fails open or closed as the policy says.
  // A policy without rate limits counts nowhere: no store, and no Redis connection for one.
  const rateLimitStore =
    policy.rateLimits === undefined
      ? undefined
      : (options.rateLimitStore ??
        (redisUrl === undefined
          ? createMemoryRateLimitStore({ maxKeys: maxKeysFrom(env.FLUXGUARD_RATE_LIMIT_MAX_KEYS) })
          : createRedisRateLimitStore({
              client: connect(redisUrl, 'counts'),
              audit,
              keyPrefix: 'fluxguard:artifact-store',
            })));

  const jwt = options.jwt;

  const tls = {
    certFile: env.FLUXGUARD_TLS_CERT ?? dev?.pki.serverCertFile ?? '',
    keyFile: env.FLUXGUARD_TLS_KEY ?? dev?.pki.serverKeyFile ?? '',
    caFile: env.FLUXGUARD_TLS_CA ?? dev?.pki.caFile ?? '',
    ...(env.FLUXGUARD_TLS_CRL === undefined ? {} : { crlFile: env.FLUXGUARD_TLS_CRL }),
    clientCertificates,
  };
  return Object.freeze({
    policy,
    guard: (transport: Transport, servedOperations?: readonly string[]) =>
      // A verifier given in code consults its own denylist, if any.
      createGuardFromPolicy(policy, {
        audit,
        transport,
        servedOperations,
        ...(rateLimitStore === undefined ? {} : { rateLimitStore }),
        ...(jwt === undefined ? { denylist } : { jwt }),
      }),
    concurrency: createConcurrencyLimit(IN_FLIGHT_BUDGET),
    connections: resolveConnectionLimits(policy.connections, 'policy.connections'),
    tls,
    denylist,
    rateLimitStore,
    urlGuard: options.urlGuard ?? createUrlGuard(),
    close: async () => {
      for (const client of connections.values()) {
        // quit() waits for an answer a dead server never sends.
        if (client.status === 'ready') await client.quit().catch(() => undefined);
        else client.disconnect();
      }
    },
  });
}

const REMOTE_JWKS_SETTINGS: ReadonlySet<string> = new Set(['jwksTimeoutMs', 'jwksCooldownMs', 'jwksMaxAgeMs']);

/** A variable's value; set but empty is refused (ioredis reads an empty URL as localhost). */
function nonEmpty(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  if (value?.trim() === '') throw new ConfigurationError(`${name} must not be empty`);
  return value;
}

function maxKeysFrom(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9][0-9]{0,14}$/.test(value)) {
    throw new ConfigurationError('FLUXGUARD_RATE_LIMIT_MAX_KEYS must be a whole number of at least 1');
  }
  return Number(value);
}

function clientCertificateMode(value: string): ClientCertificateMode {
  if (value !== 'strict' && value !== 'per-operation') {
    throw new ConfigurationError(
      'client certificates must be "strict" or "per-operation" (FLUXGUARD_CLIENT_CERTS or policy.mtls.clientCertificates)',
    );
  }
  return value;
}
