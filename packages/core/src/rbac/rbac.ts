import { LruCache } from '../cache/lru.js';
import type { CertificateIdentity, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys, checkPlainObject } from '../options/unknown-keys.js';
import { SecurityError } from '../errors/security-error.js';
import { compileIdentityRules, type IdentityMatcher, type IdentityRule } from '../mtls/identity-rules.js';
import {
  checkServedList,
  compareSpecificity,
  compilePattern,
  mayOverlap,
  namesServed,
  normalizeOperation,
  overlapWitness,
  refuseSameOperations,
  routeServes,
  type OperationPattern,
} from './pattern.js';

/**
 * What an operation requires. `public` stands alone; every other field given must hold (AND):
 * e.g. `{ anyRoles: ['artifacts.writer'], scopes: ['artifacts:write'] }`.
 *
 * - `public: true` — anyone, authenticated or not (health checks).
 * - `authenticated: true` — any authenticated caller.
 * - `anyRoles` — at least one of these roles. `allRoles` — every one of them.
 * - `scopes` — every one of these scopes.
 * - `certificate` — the caller's verified client certificate matches one of these identity
 *   rules (the Principal's certificate, else the call's peer certificate).
 *
 * @example
 * ```ts
 * import type { RbacRequirement } from '@fluxguard/core';
 * const upload: RbacRequirement = { anyRoles: ['artifacts.writer', 'artifacts.admin'] };
 * ```
 */
export interface RbacRequirement {
  /** Anyone, authenticated or not; cannot be combined with another field. Only `true` is accepted. */
  readonly public?: true;
  /** Any authenticated caller. Only `true` is accepted. */
  readonly authenticated?: true;
  /** The principal has at least one of these roles (a non-empty list). */
  readonly anyRoles?: readonly string[];
  /** The principal has every one of these roles (a non-empty list). */
  readonly allRoles?: readonly string[];
  /** The principal has every one of these scopes (a non-empty list; each without white space). */
  readonly scopes?: readonly string[];
  /**
   * The verified client certificate matches one of these identity rules. Alone, it is met by the
   * certificate without any token.
   */
  readonly certificate?: readonly IdentityRule[];
}

/**
 * One rule in list form (the shape of `policy.rbac.rules`).
 *
 * @example
 * ```ts
 * import type { RbacRule } from '@fluxguard/core';
 * const rule: RbacRule = { operation: 'DELETE /v1/artifacts/*path', anyRoles: ['artifacts.admin'] };
 * ```
 */
export interface RbacRule extends RbacRequirement {
  /** gRPC `/pkg.Service/Method` or `/pkg.Service/*`; HTTP `METHOD /path/:param/*splat`, method `*` for any. */
  readonly operation: string;
}

/**
 * Rules as a map from operation pattern to requirement, or as a list of {@link RbacRule}.
 *
 * @example
 * ```ts
 * import type { RbacRules } from '@fluxguard/core';
 * const rules: RbacRules = { 'GET /healthz': { public: true }, '/grpc.health.v1.Health/*': { public: true } };
 * ```
 */
export type RbacRules = Readonly<Record<string, RbacRequirement>> | readonly RbacRule[];

/**
 * `enforce` denies; `shadow` allows every call but reports what would have been denied, for
 * rolling a policy out (the adapter logs `rbac.shadow_denied`; the authorizer logs one
 * `rbac.shadow_mode` warning when it is made, so that a server left in shadow mode says so).
 *
 * @example
 * ```ts
 * import type { RbacMode } from '@fluxguard/core';
 * const mode: RbacMode = process.env.RBAC_SHADOW === '1' ? 'shadow' : 'enforce';
 * ```
 */
export type RbacMode = 'enforce' | 'shadow';

/**
 * Options of {@link compileRbac}.
 *
 * @example
 * ```ts
 * import type { RbacOptions } from '@fluxguard/core';
 * const options: RbacOptions = { mode: 'shadow' };
 * ```
 */
export interface RbacOptions {
  /** Default `enforce`. */
  readonly mode?: RbacMode | undefined;
  /** When given, {@link CompiledRbac.checkServed} runs at compile time. */
  readonly servedOperations?: readonly string[] | undefined;
  /** Named in configuration errors: a non-empty string. Default `rbac.rules`. */
  readonly where?: string | undefined;
}

/**
 * Why a decision went the way it did, for the audit log.
 *
 * @example
 * ```ts
 * import type { RbacReason } from '@fluxguard/core';
 * const alert: RbacReason[] = ['no_rule', 'certificate_mismatch'];
 * ```
 */
export type RbacReason =
  | 'public'
  | 'authorized'
  | 'no_rule'
  | 'empty_path_segment'
  | 'unauthenticated'
  | 'missing_role'
  | 'missing_scope'
  | 'certificate_mismatch';

/**
 * The outcome of {@link CompiledRbac.authorize}.
 *
 * - allowed: `allowed: true`, `denial: undefined`.
 * - denied (enforce): `allowed: false`, `denial` is the `SecurityError` to throw.
 * - would-be denial (shadow): `allowed: true`, `shadowDenied: true`, `denial` is what enforce
 *   mode would have thrown; log it as `rbac.shadow_denied` and carry on.
 *
 * @example
 * ```ts
 * const decision = rbac.authorize(call.operation, principal, call.peerCertificate);
 * if (decision.shadowDenied) audit.record({ event: 'rbac.shadow_denied', outcome: 'allowed', reason: decision.reason, operation: call.operation, requestId: call.requestId });
 * if (!decision.allowed) throw decision.denial;
 * ```
 */
export interface RbacDecision {
  /** Whether the call may proceed: true for a shadow-mode would-be denial too. */
  readonly allowed: boolean;
  /** True only in shadow mode, when enforce mode would have denied the call. */
  readonly shadowDenied: boolean;
  /** Why: `public` or `authorized` when allowed, else the denial's reason. */
  readonly reason: RbacReason;
  /** The pattern of the rule applied; undefined for `no_rule`. */
  readonly rule: string | undefined;
  /** Made when first read (the same object on every read): a caller that throws its own error never pays for it. */
  readonly denial: SecurityError | undefined;
}

/**
 * What {@link CompiledRbac.checkServed} returns when no rule is stray.
 *
 * @example
 * ```ts
 * import type { ServedReport } from '@fluxguard/core';
 * const report: ServedReport = rbac.checkServed(['/fluxguard.example.v1.ArtifactStore/GetArtifact', 'GET /v1/artifacts/*path']);
 * if (report.uncovered.length > 0) console.warn('denied to every caller:', report.uncovered);
 * ```
 */
export interface ServedReport {
  /** Served operations that no rule names: every call to them is denied (`no_rule`). */
  readonly uncovered: readonly string[];
}

/**
 * A compiled rule set; build it once at start-up with {@link compileRbac}.
 *
 * @example
 * ```ts
 * import { compileRbac, type CompiledRbac } from '@fluxguard/core';
 * const rbac: CompiledRbac = compileRbac({ '/fluxguard.example.v1.ArtifactStore/GetArtifact': { anyRoles: ['artifacts.reader'] } });
 * rbac.isPublic('/fluxguard.example.v1.ArtifactStore/GetArtifact'); // false
 * ```
 */
export interface CompiledRbac {
  /** The mode the rules were compiled with (`enforce` by default). */
  readonly mode: RbacMode;
  /**
   * Decides one call. A `public` operation is allowed without a principal; any other with no
   * principal is denied `unauthenticated`; an unmet requirement `permission_denied`; an
   * operation no rule names `permission_denied` (reason `no_rule`).
   *
   * @example
   * ```ts
   * const decision = rbac.authorize('/fluxguard.example.v1.ArtifactStore/DeleteArtifact', principal);
   * decision.allowed; // false for a reader
   * ```
   */
  authorize(operation: string, principal: Principal | undefined, peerCertificate?: CertificateIdentity): RbacDecision;
  /**
   * {@link CompiledRbac.authorize}, throwing the denial when it is enforced; returns the
   * decision otherwise (check `shadowDenied` to log would-be denials).
   *
   * @example
   * ```ts
   * const decision = rbac.enforce(call.operation, principal, call.peerCertificate);
   * ```
   */
  enforce(operation: string, principal: Principal | undefined, peerCertificate?: CertificateIdentity): RbacDecision;
  /**
   * True when the rule applying to `operation` is `public`, so an adapter may skip
   * authentication (a token, if sent, is then not read at all).
   *
   * @example
   * ```ts
   * if (!rbac.isPublic(call.operation)) principal = await verifier.authenticate(call);
   * ```
   */
  isPublic(operation: string): boolean;
  /**
   * Compares the rules with what the server serves. Throws a `ConfigurationError` listing the
   * rules that match no served operation (a typo, or a removed method: a policy hole in
   * waiting); returns the served operations no rule covers (denied by default) for the log.
   *
   * @example
   * ```ts
   * const { uncovered } = rbac.checkServed(['/fluxguard.example.v1.ArtifactStore/GetArtifact', 'GET /healthz']);
   * ```
   */
  checkServed(operations: readonly string[]): ServedReport;
  /**
   * Checks HTTP routes given in the order the router tries them (Express runs the first that
   * matches) against the rules, which apply the most specific pattern: where two routes
   * overlap, a request both match reaches the earlier route's handler, and must be decided by
   * the rule of that route's own paths. Throws a `ConfigurationError` naming such a request,
   * the route it reaches and the rule that would decide it instead, e.g. `GET /v1/public/reports`
   * reaching `GET /v1/:tenant/reports` (registered first) under the public rule of
   * `GET /v1/public/*path`. gRPC methods never overlap and are passed over.
   *
   * @example
   * ```ts
   * rbac.checkRouteOrder(['GET /v1/artifacts/export', 'GET /v1/artifacts/:id']); // fine: the specific route first
   * ```
   */
  checkRouteOrder(routes: readonly string[]): void;
  /**
   * For an app's HTTP routes (as for {@link CompiledRbac.checkRouteOrder}): a test of whether
   * `route` may serve a request of `operation`, for a route reached when an earlier one passed
   * the request on (`next()` in Express). It may unless the rule that decided the request is the
   * own rule of another of the routes: with `GET /v1/docs/:page` public before
   * `GET /v1/:collection/:id` for admins, a docs handler's `next()` had the admin route serve
   * `/v1/docs/payroll` to anyone. A rule no route owns (a literal rule below a `:param` route)
   * decides whatever route serves it, as it does without a hand-over, provided the route could
   * have matched the request as it arrived: a middleware that rewrote `req.method` or `req.url`
   * (`method-override`) had a reader's `POST`, decided by a `POST` rule no route owns, run the
   * admins' `DELETE` route. `current`, when given, is the operation the request names now (its
   * method or URL rewritten after the controls): it must be decided by the same rule, or any
   * route could serve another rule's request (an `app.all` route switching on `req.method`).
   * Without a `route` (a middleware is reached, such as a file server), only that is tested.
   * In shadow mode every hand-over may serve, as every call may.
   *
   * @example
   * ```ts
   * const mayServe = rbac.handOver(['GET /v1/docs/:page', 'GET /v1/:collection/:id']);
   * mayServe('GET /v1/docs/payroll', 'GET /v1/:collection/:id'); // false
   * mayServe('GET /v1/docs/readme', undefined, 'GET /v1/users/1'); // false: rewritten to another rule's
   * ```
   */
  handOver(routes: readonly string[]): (operation: string, route: string | undefined, current?: string) => boolean;
  /** The pattern of the rule that applies to `operation`, if any. */
  ruleFor(operation: string): string | undefined;
  /**
   * The patterns of the rules a call passes only with a principal (`authenticated`, roles or
   * scopes): a guard with no way to make one (no verifier, no certificate mapping) would refuse
   * every call they decide, so `createGuard` refuses to start with them.
   */
  readonly principalRules: readonly string[];
  /** The pattern of every rule, in normal form (`GET /v1/items/:id`, `/pkg.Service/*`). */
  readonly patterns: readonly string[];
}

interface CompiledRule {
  readonly pattern: OperationPattern;
  readonly isPublic: boolean;
  readonly authenticated: boolean;
  readonly anyRoles: readonly string[] | undefined;
  readonly allRoles: readonly string[] | undefined;
  readonly scopes: readonly string[] | undefined;
  readonly certificate: IdentityMatcher | undefined;
  /** Only a `certificate` requirement: no role, scope or principal is asked for. */
  readonly certificateOnly: boolean;
  readonly allowed: RbacDecision;
}

/** The rules of one {@link CompiledRbac}, arranged for lookup. */
interface RuleIndex {
  readonly rules: readonly CompiledRule[];
  /**
   * The rules that name one operation, by their pattern key: an operation is found here in one
   * step. Only those: a client may send the text of a pattern as its path (`GET /v1/files/*path`
   * is a path whose last segment is `*path`), which a more specific pattern may match too.
   */
  readonly exact: ReadonlyMap<string, CompiledRule>;
  /** Every rule by its pattern key: the rule of a route, which is named by its pattern. */
  readonly byKey: ReadonlyMap<string, CompiledRule>;
  /** The rules that are patterns, most specific first. */
  readonly wildcards: readonly CompiledRule[];
}

/** Operations whose applying rule is remembered (see `findRule`). */
const FIND_CACHE_ENTRIES = 4096;

const REQUIREMENT_KEYS = ['public', 'authenticated', 'anyRoles', 'allRoles', 'scopes', 'certificate'] as const;
const OPTION_KEYS = ['mode', 'servedOperations', 'where'] as const;

/** Deeper than any valid rule (rule, certificate list, identity rule, role list): only a cycle or junk gets there. */
const MAX_RULE_DEPTH = 16;

/**
 * The compiled form of each rule object {@link checkRbacRules} returned. Those objects are
 * deep-frozen copies made before compiling, so the compiled form cannot go stale, and
 * `compileRbac` can take it instead of compiling the rule again.
 */
const checkedRules = new WeakMap<object, CompiledRule>();

function names(value: unknown, where: string): readonly string[] {
  if (!Array.isArray(value) || value.length === 0) throw new ConfigurationError(`${where} must be a non-empty array`);
  for (const [i, item] of (value as unknown[]).entries()) {
    if (typeof item !== 'string' || item.trim() === '' || item !== item.trim()) {
      throw new ConfigurationError(`${where}[${i}] must be a non-empty string without surrounding spaces`);
    }
  }
  return Object.freeze([...(value as string[])]);
}

/**
 * Required scopes: names as {@link names} checks them, each one token of the space-delimited
 * `scope` claim (RFC 6749 §3.3), which a token's scopes are split from: a scope with white space
 * in it (`'a b'`) matched no token's, and every call was refused `missing_scope`.
 */
function scopeNames(value: unknown, where: string): readonly string[] {
  const scopes = names(value, where);
  const spaced = scopes.findIndex((scope) => /\s/.test(scope));
  if (spaced !== -1) {
    throw new ConfigurationError(
      `${where}[${spaced}] must be one scope, without white space: a token's scopes are split at spaces, so it would never match (list each scope apart)`,
    );
  }
  return scopes;
}

function compileRule(
  operation: unknown,
  requirement: unknown,
  where: string,
  allowOperationKey: boolean,
): CompiledRule {
  if (typeof requirement !== 'object' || requirement === null || Array.isArray(requirement)) {
    throw new ConfigurationError(`${where} must be an object`);
  }
  // A misspelt field gets its hint; an inherited one (a polluted prototype) is refused.
  checkKnownKeys(
    requirement,
    allowOperationKey ? [...REQUIREMENT_KEYS, 'operation'] : REQUIREMENT_KEYS,
    where,
    'field',
  );
  const req = requirement as Record<string, unknown>;
  const pattern = compilePattern(operation, allowOperationKey ? `${where}.operation` : `${where} pattern`);
  const given = REQUIREMENT_KEYS.filter((k) => req[k] !== undefined);
  if (given.length === 0) {
    throw new ConfigurationError(`${where} must name a requirement: ${REQUIREMENT_KEYS.join(', ')}`);
  }
  for (const flag of ['public', 'authenticated'] as const) {
    if (req[flag] !== undefined && req[flag] !== true)
      throw new ConfigurationError(`${where}.${flag} must be true when given`);
  }
  const isPublic = req.public === true;
  if (isPublic && given.length > 1) {
    throw new ConfigurationError(
      `${where}: "public" cannot be combined with ${given.filter((k) => k !== 'public').join(', ')}`,
    );
  }
  return Object.freeze({
    pattern,
    isPublic,
    authenticated: req.authenticated === true,
    anyRoles: req.anyRoles === undefined ? undefined : names(req.anyRoles, `${where}.anyRoles`),
    allRoles: req.allRoles === undefined ? undefined : names(req.allRoles, `${where}.allRoles`),
    scopes: req.scopes === undefined ? undefined : scopeNames(req.scopes, `${where}.scopes`),
    certificate:
      req.certificate === undefined
        ? undefined
        : compileIdentityRules(req.certificate as readonly IdentityRule[], `${where}.certificate`),
    certificateOnly: given.length === 1 && given[0] === 'certificate',
    allowed: Object.freeze({
      allowed: true,
      shadowDenied: false,
      reason: isPublic ? 'public' : 'authorized',
      rule: pattern.key,
      denial: undefined,
    }),
  });
}

function compileListRule(rule: unknown, where: string): CompiledRule {
  const operation: unknown =
    typeof rule === 'object' && rule !== null ? (rule as { operation?: unknown }).operation : undefined;
  return compileRule(operation, rule, where, true);
}

/** Compiles rules in either form, taking the compiled form of rules {@link checkRbacRules} already compiled. */
function compileRules(rules: RbacRules, where: string): readonly CompiledRule[] {
  const raw: unknown = rules;
  if (Array.isArray(raw)) {
    return (raw as unknown[]).map((rule, i) => {
      const checked = typeof rule === 'object' && rule !== null ? checkedRules.get(rule) : undefined;
      return checked ?? compileListRule(rule, `${where}[${i}]`);
    });
  }
  if (typeof raw === 'object' && raw !== null) {
    checkPlainObject(raw, where);
    return Object.entries(raw).map(([pattern, requirement]) =>
      compileRule(pattern, requirement, `${where}[${JSON.stringify(pattern)}]`, false),
    );
  }
  throw new ConfigurationError(`${where} must be an object or an array of rules`);
}

/** Arranges compiled rules for lookup; two rules for one pattern are refused, since only one could ever apply. */
function indexRules(rules: readonly CompiledRule[], where: string): RuleIndex {
  refuseSameOperations(
    rules.map((rule) => rule.pattern),
    () => where,
  );
  const byKey = new Map(rules.map((rule) => [rule.pattern.key, rule]));
  const exact = new Map([...byKey].filter(([, rule]) => rule.pattern.exact));
  const wildcards = rules.filter((r) => !r.pattern.exact).sort((a, b) => compareSpecificity(a.pattern, b.pattern));
  return { rules, exact, byKey, wildcards };
}

/** A copy in which every object and array is a new frozen one, so nothing reachable from it can change. */
function frozenCopy(value: unknown, where: string, depth = 0): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (depth >= MAX_RULE_DEPTH) throw new ConfigurationError(`${where} is nested too deeply`);
  if (Array.isArray(value))
    return Object.freeze((value as unknown[]).map((item) => frozenCopy(item, where, depth + 1)));
  return Object.freeze(
    Object.fromEntries(Object.entries(value).map(([key, item]) => [key, frozenCopy(item, where, depth + 1)])),
  );
}

/**
 * Checks rules in list form exactly as {@link compileRbac} would (each rule, and no pattern
 * twice), and returns a deep-frozen copy of them. `compileRbac` given rules of that copy (all
 * of them, or some, as `rbacRulesForTransport` keeps) reuses their compiled form instead of
 * compiling them again: a policy is checked at parse time and compiled only then.
 *
 * @throws ConfigurationError naming the bad rule, as `compileRbac` does.
 *
 * @example
 * ```ts
 * import { compileRbac } from '@fluxguard/core';
 * // internal to @fluxguard/core (not exported): checkRbacRules
 * const rules = checkRbacRules(JSON.parse(text).rules, 'policy.rbac.rules');
 * const rbac = compileRbac(rules); // no rule compiled a second time
 * ```
 */
export function checkRbacRules(rules: readonly unknown[], where: string): readonly RbacRule[] {
  const copies: object[] = [];
  const compiled: CompiledRule[] = [];
  rules.forEach((rule, i) => {
    const copy = frozenCopy(rule, `${where}[${i}]`);
    compiled.push(compileListRule(copy, `${where}[${i}]`));
    // Compiling refused anything but an object.
    copies.push(copy as object);
  });
  indexRules(compiled, where);
  copies.forEach((copy, i) => {
    const one = compiled[i];
    if (one !== undefined) checkedRules.set(copy, one);
  });
  return Object.freeze(copies as RbacRule[]);
}

function searchRule(index: RuleIndex, operation: string): CompiledRule | undefined {
  const normal = normalizeOperation(operation);
  const normalHit = normal === operation ? undefined : index.exact.get(normal);
  if (normalHit !== undefined) return normalHit;
  for (const rule of index.wildcards) if (rule.pattern.matches(operation)) return rule;
  return undefined;
}

function findRule(
  index: RuleIndex,
  found: LruCache<string, CompiledRule | null>,
  operation: string,
): CompiledRule | undefined {
  const hit = index.exact.get(operation);
  if (hit !== undefined) return hit;
  const remembered = found.get(operation);
  if (remembered !== undefined) return remembered ?? undefined;
  const rule = searchRule(index, operation);
  found.set(operation, rule ?? null);
  return rule;
}

const DENIAL_CODES: Partial<Record<RbacReason, 'unauthenticated' | 'invalid_argument'>> = {
  unauthenticated: 'unauthenticated',
  empty_path_segment: 'invalid_argument',
};

/**
 * An HTTP operation whose path has an empty segment (`PUT /v1/artifacts/a//b`) matches
 * no rule, as rule patterns have none; but Express routes it (a `*splat` takes `a//b`), and
 * over gRPC the same name is a field the handler refuses as invalid. So where the path without
 * them names a rule, it is refused as malformed, not as an operation no rule names.
 */
function withoutEmptySegments(operation: string): string {
  if (operation.startsWith('/') || !operation.includes('/', operation.indexOf('/') + 1)) return operation;
  const collapsed = operation.replace(/\/{2,}/g, '/');
  return collapsed.endsWith('/') && !collapsed.endsWith(' /') ? collapsed.slice(0, -1) : collapsed;
}

function deny(rule: CompiledRule | undefined, reason: RbacReason, mode: RbacMode): RbacDecision {
  const shadow = mode === 'shadow';
  let denial: SecurityError | undefined;
  return Object.freeze({
    allowed: shadow,
    shadowDenied: shadow,
    reason,
    rule: rule?.pattern.key,
    // An error costs about as much as the rest of the decision; an anonymous caller refused by
    // the guard gets the guard's own `missing_token` instead, and never reads this one.
    get denial(): SecurityError {
      denial ??= new SecurityError(DENIAL_CODES[reason] ?? 'permission_denied', { reason });
      return denial;
    },
  });
}

/** The decision of the rule that applies (or of none) for one caller. */
function decide(
  rule: CompiledRule | undefined,
  mode: RbacMode,
  principal: Principal | undefined,
  peerCertificate: CertificateIdentity | undefined,
): RbacDecision {
  if (rule === undefined) return deny(undefined, 'no_rule', mode);
  if (rule.isPublic) return rule.allowed;
  if (principal === undefined) {
    // A rule that asks only for a certificate identity is met by the verified peer
    // certificate alone: a workload with a certificate and no token.
    if (rule.certificateOnly && peerCertificate !== undefined) {
      return rule.certificate?.(peerCertificate) === true ? rule.allowed : deny(rule, 'certificate_mismatch', mode);
    }
    return deny(rule, 'unauthenticated', mode);
  }
  if (rule.anyRoles !== undefined && !rule.anyRoles.some((r) => principal.roles.includes(r)))
    return deny(rule, 'missing_role', mode);
  if (rule.allRoles !== undefined && !rule.allRoles.every((r) => principal.roles.includes(r)))
    return deny(rule, 'missing_role', mode);
  if (rule.scopes !== undefined && !rule.scopes.every((s) => principal.scopes.includes(s)))
    return deny(rule, 'missing_scope', mode);
  if (rule.certificate !== undefined && !rule.certificate(principal.certificate ?? peerCertificate)) {
    return deny(rule, 'certificate_mismatch', mode);
  }
  return rule.allowed;
}

/** `label` names the list as its caller gave it: `checkServed`'s argument, or `compileRbac`'s option. */
function checkServed(
  index: RuleIndex,
  find: (operation: string) => CompiledRule | undefined,
  given: unknown,
  where: string,
  label: readonly [where: string, name: string],
): ServedReport {
  const operations = checkServedList(given, ...label);
  const stray = index.rules.filter((rule) => !namesServed(rule.pattern, operations));
  if (stray.length > 0) {
    throw new ConfigurationError(
      `${where}: ${stray.length === 1 ? 'a rule names' : 'rules name'} operations this server does not serve: ${stray
        .map((r) => `"${r.pattern.written}"`)
        .join(', ')}`,
    );
  }
  return Object.freeze({ uncovered: Object.freeze(operations.filter((op) => find(op) === undefined)) });
}

function checkRouteOrder(
  findRoute: (route: string) => CompiledRule | undefined,
  find: (operation: string) => CompiledRule | undefined,
  routes: readonly string[],
  where: string,
): void {
  if (!Array.isArray(routes) || !routes.every((r) => typeof r === 'string')) {
    throw new ConfigurationError('checkRouteOrder: routes must be an array of strings');
  }
  const http = routes.filter((route) => !route.startsWith('/'));
  const overlaps = mayOverlap(http);
  for (const [i, first] of http.entries()) {
    for (let j = i + 1; j < http.length; j++) {
      if (!overlaps(i, j)) continue;
      const later = http[j] ?? '';
      const request = overlapWitness(first, later);
      if (request === undefined) continue;
      const own = findRoute(first);
      const applied = find(request);
      if (applied === own) continue;
      const rule = (r: CompiledRule | undefined) => (r === undefined ? 'no rule' : `the rule "${r.pattern.written}"`);
      throw new ConfigurationError(
        `${where}: "${request}" reaches the route "${first}", which the router tries first, but ${rule(applied)} decides it, not ${rule(own)} of that route's paths: register "${later}" before "${first}", or make the two routes disjoint`,
      );
    }
  }
}

function rbacMode(options: RbacOptions): RbacMode {
  checkKnownKeys(options, OPTION_KEYS, 'compileRbac', 'option');
  const mode: unknown = options.mode ?? 'enforce';
  if (mode !== 'enforce' && mode !== 'shadow') {
    throw new ConfigurationError(`compileRbac: "mode" must be "enforce" or "shadow"`);
  }
  return mode;
}

/**
 * Compiles RBAC rules once, at start-up: an exact-operation map plus wildcard matchers ordered
 * most specific first. Which rule applies to an operation:
 *
 * 1. a rule naming exactly that operation (`/pkg.Service/Method`, `GET /v1/artifacts/export`);
 *    a path that spells a pattern (`/v1/artifacts/*path`) is a path like any other;
 * 2. otherwise the most specific matching pattern: path segments compared left to right
 *    (literal over `:param` over `*splat`, gRPC `Method` over `*`), then a named method over `*`;
 * 3. otherwise none: denied, `permission_denied` with reason `no_rule` (default deny); but an
 *    HTTP path with empty segments (`a//b`; a trailing `/` is the path without it) that names a rule
 *    without them is decided by that rule and, where it would allow, denied `invalid_argument`
 *    with reason `empty_path_segment`.
 *
 * Only the applying rule counts; rules are not merged. Rules of a parsed policy
 * (`parseSecurityPolicy`) were compiled when it was parsed and are not compiled again.
 *
 * @throws ConfigurationError naming the bad rule (`rbac.rules[3].anyRoles[0] must be ...`),
 *   a duplicate pattern, or (with `servedOperations`) rules matching nothing served.
 *
 * @example
 * ```ts
 * import { compileRbac } from '@fluxguard/core';
 * const S = '/fluxguard.example.v1.ArtifactStore';
 * const rbac = compileRbac({
 *   '/grpc.health.v1.Health/*': { public: true },
 *   [`${S}/GetArtifact`]: { anyRoles: ['artifacts.reader', 'artifacts.writer', 'artifacts.admin'] },
 *   [`${S}/DeleteArtifact`]: { anyRoles: ['artifacts.admin'] },
 *   'GET /healthz': { public: true },
 * }, { mode: 'enforce' });
 * rbac.enforce(call.operation, principal, call.peerCertificate); // throws SecurityError when denied
 * ```
 */
export function compileRbac(rules: RbacRules, options: RbacOptions = {}): CompiledRbac {
  const mode = rbacMode(options);
  const where = options.where ?? 'rbac.rules';
  // Every error of the rules is written with it.
  if (typeof where !== 'string' || where.trim() === '') {
    throw new ConfigurationError('compileRbac: "where" must be a non-empty string');
  }
  const index = indexRules(compileRules(rules, where), where);
  // Rules never change once compiled, so which one applies to an operation can be remembered;
  // bounded, because HTTP operations carry concrete paths a client chooses.
  const found = new LruCache<string, CompiledRule | null>(FIND_CACHE_ENTRIES);
  const find = (operation: string): CompiledRule | undefined => findRule(index, found, operation);
  // A route is named by its pattern: the rule with that pattern is its own, whatever else matches the pattern's text.
  const findRoute = (route: string): CompiledRule | undefined =>
    index.byKey.get(normalizeOperation(route)) ?? find(route);
  const authorize = (operation: string, principal: Principal | undefined, peerCertificate?: CertificateIdentity) => {
    const rule = find(operation);
    if (rule === undefined) {
      // Decided as the rule the path names without its empty segments, as gRPC decides the
      // method before its handler refuses the name: a reader is refused its missing role.
      const collapsed = withoutEmptySegments(operation);
      const named = collapsed === operation ? undefined : find(collapsed);
      if (named !== undefined) {
        const decision = decide(named, mode, principal, peerCertificate);
        return decision.shadowDenied || !decision.allowed ? decision : deny(named, 'empty_path_segment', mode);
      }
    }
    return decide(rule, mode, principal, peerCertificate);
  };

  const result: CompiledRbac = Object.freeze({
    mode,
    authorize,
    enforce(operation: string, principal: Principal | undefined, peerCertificate?: CertificateIdentity): RbacDecision {
      const decision = authorize(operation, principal, peerCertificate);
      if (!decision.allowed && decision.denial !== undefined) throw decision.denial;
      return decision;
    },
    isPublic: (operation: string) => find(operation)?.isPublic === true,
    checkServed: (operations: readonly string[]) =>
      checkServed(index, findRoute, operations, where, ['checkServed', 'operations']),
    checkRouteOrder: (routes: readonly string[]) => {
      checkRouteOrder(findRoute, find, routes, where);
    },
    handOver: (routes: readonly string[]) => {
      // Shadow mode lets every call through: a route another rule owns could be called directly.
      if (mode === 'shadow') return () => true;
      const own = new Map(routes.filter((route) => !route.startsWith('/')).map((route) => [route, findRoute(route)]));
      const owned = new Set(own.values());
      return (operation: string, route: string | undefined, current?: string): boolean => {
        if (route === undefined)
          return current === undefined || current === operation || find(current) === find(operation);
        const applied = find(operation);
        // Rewritten after the controls (`method-override`, a URL rewrite): the request must still
        // name an operation of the rule that decided it, whatever route it reached.
        if (current !== undefined && current !== operation && find(current) !== applied) return false;
        if (applied === undefined) return true;
        // A rule no route owns decides whichever route serves its path; a route that could not
        // have matched the request was reached through a rewritten `req.method` or `req.url`.
        if (!owned.has(applied)) return routeServes(route, operation);
        return (own.has(route) ? own.get(route) : findRoute(route)) === applied;
      };
    },
    ruleFor: (operation: string) => find(operation)?.pattern.key,
    patterns: Object.freeze(index.rules.map((rule) => rule.pattern.key)),
    principalRules: Object.freeze(
      index.rules.filter((rule) => !rule.isPublic && !rule.certificateOnly).map((rule) => rule.pattern.key),
    ),
  });
  if (options.servedOperations !== undefined) {
    checkServed(index, findRoute, options.servedOperations, where, ['compileRbac', 'servedOperations']);
  }
  return result;
}
