import { errorLine, type AuditLogger } from '../audit/audit-logger.js';
import type { CallInfo, Transport } from '../call/call-info.js';
import type { Denylist } from '../denylist/denylist.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createJwtVerifier, type JwtVerifier } from '../jwt/verifier.js';
import { jwtVerifierOptionsFromPolicy } from '../jwt/policy.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { SecurityPolicy } from '../policy/policy.js';
import { checkPolicyServed } from '../policy/served.js';
import { rbacRulesForTransport } from '../rbac/policy.js';
import { compileRbac } from '../rbac/rbac.js';
import { compileTimeouts } from '../timeouts/timeouts.js';
import { compileInputLimits } from '../limits/input-limits.js';
import { createCertificateCheck } from '../mtls/certificate-check.js';
import { rateLimitControls } from '../ratelimit/policy.js';
import { createMemoryRateLimitStore, type RateLimitStore } from '../ratelimit/store.js';
import { createGuard, type ComposedGuard } from './guard.js';

/**
 * Options of {@link createGuardFromPolicy}: the run-time parts a policy file cannot hold.
 *
 * @example
 * ```ts
 * import { createAuditLogger, createMemoryDenylist, type GuardFromPolicyOptions } from '@fluxguard/core';
 * const options: GuardFromPolicyOptions = { audit: createAuditLogger(), transport: 'http', denylist: createMemoryDenylist() };
 * ```
 */
export interface GuardFromPolicyOptions {
  /** Where would-be denials of shadow mode are written. */
  readonly audit: AuditLogger;
  /**
   * Keep only this transport's rules (gRPC `/pkg.Service/Method`, HTTP `METHOD /path`), for a
   * policy that serves both. Omitted: every rule.
   */
  readonly transport?: Transport | undefined;
  /**
   * The operations the server serves: an RBAC rule that names none of them is refused at
   * start-up (see `compileRbac`), and so is an operation pattern of `rateLimits`, `timeouts`
   * or `limits` (of this `transport`) that matches none, so that a misspelt route cannot leave
   * its limit off. Omitted: not checked.
   */
  readonly servedOperations?: readonly string[] | undefined;
  /** The revocation list the verifier built from `policy.jwt` consults; refused next to `jwt` (give it to that verifier). */
  readonly denylist?: Denylist | undefined;
  /** A verifier to use instead of the one `policy.jwt` describes. */
  readonly jwt?: JwtVerifier | undefined;
  /**
   * Directory of relative `jwt.jwksFile` / `jwt.publicKeyFile`: a non-empty string. Default: the
   * working directory.
   */
  readonly baseDir?: string | undefined;
  /**
   * Where the limits of `policy.rateLimits` count: `createRedisRateLimitStore(...)` to share
   * them between replicas. Default: a memory store of this guard. Refused when the policy has
   * no `rateLimits`, since nothing would count in it.
   */
  readonly rateLimitStore?: RateLimitStore | undefined;
}

const DEFAULTS: Readonly<{ [K in keyof GuardFromPolicyOptions]-?: GuardFromPolicyOptions[K] | undefined }> =
  Object.freeze({
    audit: undefined,
    transport: undefined,
    servedOperations: undefined,
    denylist: undefined,
    jwt: undefined,
    baseDir: undefined,
    rateLimitStore: undefined,
  });

/**
 * The guard one policy describes, in one call: the JWT verifier of `policy.jwt` (unless `jwt`
 * is given), the RBAC rules and mode of `policy.rbac` (only the `transport`'s rules when it is
 * given), `policy.mtls.certificateRoles` (and, with `policy.mtls.clientCertificates: 'strict'`, a
 * verified client certificate on every call, whatever the TLS settings ask for), and the deadlines and idle limits of
 * `policy.timeouts` (their secure defaults when the section is absent), and the rate limits and
 * brute-force protection of `policy.rateLimits` (counted in `rateLimitStore`), and the size limits
 * of `policy.limits`: its `controls` are all
 * of these, for `fluxguardInterceptors({ guard })` / `fluxguard({ guard })`. The policy should come from
 * `parseSecurityPolicy` / `loadSecurityPolicy`. Without `policy.jwt` nor `jwt`, no token is
 * accepted, so rules that ask for roles, scopes or an authenticated caller need
 * `policy.mtls.certificateRoles` (else they are refused, see `createGuard`); without
 * `policy.rbac`, every operation is denied (no rule).
 *
 * @throws ConfigurationError for unknown options, an unreadable key file, bad rules, a rule
 *   naming no served operation, rules asking for a principal that nothing can give, or a
 *   `rateLimitStore` without `policy.rateLimits`.
 *
 * @example
 * ```ts
 * import { createAuditLogger, createGuardFromPolicy, loadSecurityPolicy } from '@fluxguard/core';
 * const audit = createAuditLogger();
 * const policy = await loadSecurityPolicy('policy.json');
 * const guard = createGuardFromPolicy(policy, { audit, transport: 'grpc' });
 * // fluxguardInterceptors({ audit, guard }) or fluxguard({ audit, guard })
 * ```
 */
export function createGuardFromPolicy(policy: SecurityPolicy, options: GuardFromPolicyOptions): ComposedGuard {
  const opts = resolveOptions('createGuardFromPolicy', DEFAULTS, options);
  const raw: unknown = policy;
  if (typeof raw !== 'object' || raw === null) {
    throw new ConfigurationError('createGuardFromPolicy: "policy" must be a policy object (parseSecurityPolicy())');
  }
  const { audit, transport } = opts;
  if (audit === undefined) throw new ConfigurationError('createGuardFromPolicy: "audit" is required');
  // Options also arrive from plain JavaScript: check the value at run time.
  const transportValue: unknown = transport;
  if (transportValue !== undefined && transportValue !== 'grpc' && transportValue !== 'http') {
    throw new ConfigurationError('createGuardFromPolicy: "transport" must be "grpc" or "http"');
  }
  // Another value failed inside path.resolve, and the key file's error then blamed its JSON.
  const baseDir: unknown = opts.baseDir;
  if (baseDir !== undefined && (typeof baseDir !== 'string' || baseDir.trim() === '')) {
    throw new ConfigurationError('createGuardFromPolicy: "baseDir" must be a non-empty string (a directory)');
  }
  if (opts.jwt !== undefined && opts.denylist !== undefined) {
    // It was ignored: revocation would be off while the options read as on.
    throw new ConfigurationError(
      'createGuardFromPolicy: "denylist" is consulted by the verifier built from policy.jwt, and "jwt" replaces that verifier: give the denylist to createJwtVerifier instead',
    );
  }
  if (opts.rateLimitStore !== undefined && policy.rateLimits === undefined) {
    // Nothing would count there: limits would be off while the options read as shared.
    throw new ConfigurationError(
      'createGuardFromPolicy: "rateLimitStore" is where the limits of policy.rateLimits count, and the policy has no "rateLimits": add the section, or leave the store out',
    );
  }
  if (opts.servedOperations !== undefined) {
    checkPolicyServed(policy, opts.servedOperations, transport, 'createGuardFromPolicy');
  }
  const allRules = policy.rbac?.rules ?? [];
  const rules = transport === undefined ? allRules : rbacRulesForTransport(allRules, transport);
  const rbac = compileRbac(rules, {
    mode: policy.rbac?.mode,
    servedOperations: opts.servedOperations,
    // Indices of a filtered list are not those of the file: say which list they count in.
    where: transport === undefined ? 'policy.rbac.rules' : `policy.rbac.rules (${transport} rules only)`,
  });
  const jwt =
    opts.jwt ??
    (policy.jwt === undefined
      ? undefined
      : createJwtVerifier(
          jwtVerifierOptionsFromPolicy(policy.jwt, {
            ...(opts.denylist === undefined ? {} : { denylist: opts.denylist }),
            ...(opts.baseDir === undefined ? {} : { baseDir: opts.baseDir }),
            // One line per failed fetch, so at most one per cooldown: a stale set in service
            // is otherwise invisible until it no longer has a key someone needs.
            onJwksRefreshError: (error) => {
              audit.logger.warn(
                { event: 'jwt.jwks_refresh_failed', error: errorLine(error) },
                'jwt.jwks_refresh_failed',
              );
            },
          }),
        ));
  const certificateRoles = policy.mtls?.certificateRoles;
  const guard = createGuard({
    audit,
    rbac,
    jwt,
    // An empty list maps no certificate: the same as none.
    certificateRoles: certificateRoles === undefined || certificateRoles.length === 0 ? undefined : certificateRoles,
  });
  // Always: without a section, the timeouts control keeps its secure defaults.
  const timeouts = compileTimeouts({ ...policy.timeouts, transport }, 'policy.timeouts');
  const limits =
    policy.rateLimits === undefined
      ? []
      : rateLimitControls(policy.rateLimits, opts.rateLimitStore ?? createMemoryRateLimitStore(), 'policy.rateLimits');
  const sizes =
    policy.limits === undefined ? [] : [compileInputLimits({ ...policy.limits, transport }, 'policy.limits')];
  const controls = Object.freeze([...guard.controls, ...limits, ...sizes, timeouts]);
  // The TLS settings are built apart from the guard, and may ask for a certificate per
  // operation only: the guard itself holds every call to the policy's `strict`.
  if (policy.mtls?.clientCertificates !== 'strict') return Object.freeze({ ...guard, controls });
  const certificate = createCertificateCheck();
  return Object.freeze({
    ...guard,
    check: async (call: CallInfo) => {
      certificate.checkCall(call);
      return guard.check(call);
    },
    controls: Object.freeze([certificate, ...controls]),
  });
}
