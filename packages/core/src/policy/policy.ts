import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import type { Denylist } from '../denylist/denylist.js';
import type { Transport } from '../call/call-info.js';
import { isAsymmetricAlgorithm, type AsymmetricAlgorithm } from '../jwt/algorithms.js';
import type { JwtVerifierOptions } from '../jwt/verifier.js';
import { compileCertificateRoles, type IdentityRule } from '../mtls/identity-rules.js';
import type { ClientCertificateMode } from '../mtls/tls-settings.js';
import { compileRbac, type RbacMode, type RbacRule } from '../rbac/rbac.js';

/**
 * The `jwt` section of a {@link SecurityPolicy}. Exactly one of `jwksUrl`, `jwksFile`,
 * `publicKeyFile`. HMAC secrets do not belong in a policy file: configure `secret` in code.
 *
 * @example
 * ```ts
 * import type { JwtPolicy } from '@fluxguard/core';
 * const jwt: JwtPolicy = { issuer: 'https://id.example.com', audience: 'artifacts', jwksUrl: 'https://id.example.com/jwks' };
 * ```
 */
export interface JwtPolicy {
  readonly issuer: string | readonly string[];
  readonly audience: string | readonly string[];
  readonly algorithms?: readonly AsymmetricAlgorithm[];
  readonly jwksUrl?: string;
  /** Path of a local `jwks.json`; relative to the policy file when loaded with {@link loadSecurityPolicy}. */
  readonly jwksFile?: string;
  /** Path of a PEM public key; relative like `jwksFile`. */
  readonly publicKeyFile?: string;
  readonly jwksTimeoutMs?: number;
  readonly jwksCooldownMs?: number;
  readonly jwksMaxAgeMs?: number;
  readonly rolesClaim?: string | readonly string[];
  readonly clockToleranceSeconds?: number;
  readonly maxTokenAgeSeconds?: number;
  readonly requiredClaims?: readonly string[];
  readonly typ?: string;
  readonly maxTokenLength?: number;
  readonly requireJti?: boolean;
  readonly cacheMaxEntries?: number;
}

/**
 * The `rbac` section: a mode and a list of rules (see `compileRbac`).
 *
 * @example
 * ```ts
 * import type { RbacPolicy } from '@fluxguard/core';
 * const rbac: RbacPolicy = { mode: 'enforce', rules: [{ operation: 'GET /healthz', public: true }] };
 * ```
 */
export interface RbacPolicy {
  readonly mode?: RbacMode;
  readonly rules: readonly RbacRule[];
}

/**
 * The `mtls` section: whether the TLS handshake requires a client certificate, and which
 * verified certificates authenticate a caller alone (with the roles of their rule).
 *
 * @example
 * ```ts
 * import type { MtlsPolicy } from '@fluxguard/core';
 * const mtls: MtlsPolicy = {
 *   clientCertificates: 'per-operation',
 *   certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }],
 * };
 * ```
 */
export interface MtlsPolicy {
  /** `strict`: the handshake requires a client certificate; `per-operation` (the default): RBAC rules decide. */
  readonly clientCertificates?: ClientCertificateMode;
  /** Verified certificates these rules match authenticate without a token (see `IdentityRule`). */
  readonly certificateRoles?: readonly IdentityRule[];
}

/**
 * One declarative policy for both transports. `limits`, `rateLimits` and `timeouts` are passed
 * through unchecked here; their own controls validate them.
 *
 * @example
 * ```ts
 * import type { SecurityPolicy } from '@fluxguard/core';
 * const policy: SecurityPolicy = {
 *   jwt: { issuer: 'https://id.example.com', audience: 'artifacts', jwksFile: 'jwks.json' },
 *   rbac: { rules: [{ operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact', anyRoles: ['artifacts.reader'] }] },
 * };
 * ```
 */
export interface SecurityPolicy {
  /** Optional format marker; only 1 exists. */
  readonly version?: 1;
  readonly jwt?: JwtPolicy;
  readonly rbac?: RbacPolicy;
  readonly mtls?: MtlsPolicy;
  readonly limits?: unknown;
  readonly rateLimits?: unknown;
  readonly timeouts?: unknown;
}

const TOP_KEYS = ['version', 'jwt', 'rbac', 'mtls', 'limits', 'rateLimits', 'timeouts'] as const;
const MTLS_KEYS = ['clientCertificates', 'certificateRoles'] as const;
const JWT_KEYS = [
  'issuer',
  'audience',
  'algorithms',
  'jwksUrl',
  'jwksFile',
  'publicKeyFile',
  'jwksTimeoutMs',
  'jwksCooldownMs',
  'jwksMaxAgeMs',
  'rolesClaim',
  'clockToleranceSeconds',
  'maxTokenAgeSeconds',
  'requiredClaims',
  'typ',
  'maxTokenLength',
  'requireJti',
  'cacheMaxEntries',
] as const;
const NUMBER_KEYS = [
  'jwksTimeoutMs',
  'jwksCooldownMs',
  'jwksMaxAgeMs',
  'clockToleranceSeconds',
  'maxTokenAgeSeconds',
  'maxTokenLength',
  'cacheMaxEntries',
] as const;

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function hint(key: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of known) {
    const d = distance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best === undefined ? ` (known: ${known.join(', ')})` : ` (did you mean "${best}"?)`;
}

/** Optimal string alignment distance: a swapped pair of letters counts as one edit. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 0; j <= b.length; j++) (d[0] ?? [])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((d[i - 1]?.[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (d[i - 1]?.[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j] ?? 0, (d[i - 2]?.[j - 2] ?? 0) + 1);
      }
    }
  }
  return d[a.length]?.[b.length] ?? 0;
}

function checkKeys(value: Obj, known: readonly string[], where: string): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new ConfigurationError(`${where}: unknown field "${key}"${hint(key, known)}`);
  }
}

function nonEmptyString(value: unknown, where: string): void {
  if (typeof value !== 'string' || value.trim() === '')
    throw new ConfigurationError(`${where} must be a non-empty string`);
}

function stringOrList(value: unknown, where: string): void {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new ConfigurationError(`${where} must not be empty`);
    (value as unknown[]).forEach((v, i) => {
      nonEmptyString(v, `${where}[${i}]`);
    });
  } else {
    nonEmptyString(value, where);
  }
}

function parseJwt(value: unknown, where: string): JwtPolicy {
  if (!isObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKeys(value, JWT_KEYS, where);
  stringOrList(value.issuer, `${where}.issuer`);
  stringOrList(value.audience, `${where}.audience`);
  const sources = (['jwksUrl', 'jwksFile', 'publicKeyFile'] as const).filter((k) => value[k] !== undefined);
  if (sources.length !== 1) {
    throw new ConfigurationError(`${where} must have exactly one of jwksUrl, jwksFile, publicKeyFile`);
  }
  for (const k of sources) nonEmptyString(value[k], `${where}.${k}`);
  if (value.algorithms !== undefined) {
    if (!Array.isArray(value.algorithms) || value.algorithms.length === 0) {
      throw new ConfigurationError(`${where}.algorithms must be a non-empty array`);
    }
    (value.algorithms as unknown[]).forEach((alg, i) => {
      if (!isAsymmetricAlgorithm(alg)) {
        throw new ConfigurationError(
          `${where}.algorithms[${i}] must be an asymmetric JWS algorithm (RS256, PS256, ES256, EdDSA, ...); HS* needs a secret configured in code`,
        );
      }
    });
  }
  for (const k of NUMBER_KEYS) {
    const n = value[k];
    if (n !== undefined && (typeof n !== 'number' || !Number.isFinite(n) || n < 0)) {
      throw new ConfigurationError(`${where}.${k} must be a non-negative number`);
    }
  }
  if (value.rolesClaim !== undefined) stringOrList(value.rolesClaim, `${where}.rolesClaim`);
  if (value.requiredClaims !== undefined) {
    if (!Array.isArray(value.requiredClaims)) throw new ConfigurationError(`${where}.requiredClaims must be an array`);
    (value.requiredClaims as unknown[]).forEach((c, i) => {
      nonEmptyString(c, `${where}.requiredClaims[${i}]`);
    });
  }
  if (value.typ !== undefined) nonEmptyString(value.typ, `${where}.typ`);
  if (value.requireJti !== undefined && typeof value.requireJti !== 'boolean') {
    throw new ConfigurationError(`${where}.requireJti must be a boolean`);
  }
  return value as unknown as JwtPolicy;
}

function parseMtls(value: unknown, where: string): MtlsPolicy {
  if (!isObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKeys(value, MTLS_KEYS, where);
  const mode = value.clientCertificates;
  if (mode !== undefined && mode !== 'strict' && mode !== 'per-operation') {
    throw new ConfigurationError(`${where}.clientCertificates must be "strict" or "per-operation"`);
  }
  const rules = value.certificateRoles;
  if (rules !== undefined) {
    if (!Array.isArray(rules)) throw new ConfigurationError(`${where}.certificateRoles must be an array`);
    // An empty list maps no certificate, the same as no list; compiling is the validation of the rest.
    if (rules.length > 0) compileCertificateRoles(rules as readonly IdentityRule[], `${where}.certificateRoles`);
  }
  return value;
}

function parseRbac(value: unknown, where: string): RbacPolicy {
  if (!isObject(value)) throw new ConfigurationError(`${where} must be an object`);
  checkKeys(value, ['mode', 'rules'], where);
  if (value.mode !== undefined && value.mode !== 'enforce' && value.mode !== 'shadow') {
    throw new ConfigurationError(`${where}.mode must be "enforce" or "shadow"`);
  }
  if (!Array.isArray(value.rules)) throw new ConfigurationError(`${where}.rules must be an array`);
  // Compiling is the validation: it names the rule and field (policy.rbac.rules[3].anyRoles[0] ...).
  compileRbac(value.rules as readonly RbacRule[], { where: `${where}.rules` });
  return value as unknown as RbacPolicy;
}

/**
 * Checks a policy object (parsed JSON, or a literal) and returns it typed. Errors name the
 * bad field by its path, e.g. `policy.rbac.rules[3].anyRoles[0] must be a non-empty string`;
 * unknown fields are refused with a hint. RBAC rules and `mtls.certificateRoles` are compiled
 * once here to check them completely (patterns, certificate identity rules).
 *
 * @throws ConfigurationError naming the bad field.
 *
 * @example
 * ```ts
 * import { parseSecurityPolicy } from '@fluxguard/core';
 * const policy = parseSecurityPolicy(JSON.parse(text));
 * ```
 */
export function parseSecurityPolicy(input: unknown, where = 'policy'): SecurityPolicy {
  if (!isObject(input)) throw new ConfigurationError(`${where} must be an object`);
  checkKeys(input, TOP_KEYS, where);
  if (input.version !== undefined && input.version !== 1) throw new ConfigurationError(`${where}.version must be 1`);
  if (input.jwt !== undefined) parseJwt(input.jwt, `${where}.jwt`);
  if (input.rbac !== undefined) parseRbac(input.rbac, `${where}.rbac`);
  if (input.mtls !== undefined) parseMtls(input.mtls, `${where}.mtls`);
  return input;
}

/**
 * Reads and checks a JSON policy file. `jwt.jwksFile` and `jwt.publicKeyFile` are resolved
 * relative to the policy file's directory. (JSON only: YAML would need a parser dependency.)
 *
 * @throws ConfigurationError for an unreadable file, invalid JSON or an invalid policy.
 *
 * @example
 * ```ts
 * import { loadSecurityPolicy } from '@fluxguard/core';
 * const policy = await loadSecurityPolicy(process.env.FLUXGUARD_POLICY ?? 'policy.json');
 * ```
 */
export async function loadSecurityPolicy(file: string): Promise<SecurityPolicy> {
  const parsed = await readPolicyDocument(file);
  const policy = parseSecurityPolicy(parsed, `policy (${file})`);
  const jwt = policy.jwt;
  if (jwt === undefined) return policy;
  const base = dirname(resolve(file));
  const abs = (p: string | undefined) => (p === undefined || isAbsolute(p) ? p : resolve(base, p));
  const jwksFile = abs(jwt.jwksFile);
  const publicKeyFile = abs(jwt.publicKeyFile);
  return Object.freeze({
    ...policy,
    jwt: Object.freeze({
      ...jwt,
      ...(jwksFile === undefined ? {} : { jwksFile }),
      ...(publicKeyFile === undefined ? {} : { publicKeyFile }),
    }),
  });
}

/**
 * Reads a policy file as a plain object, not yet validated: YAML when the file name ends with
 * `.yaml` or `.yml`, JSON otherwise. YAML is read with the core schema (no custom tags, so no
 * code or object construction), unique keys, and a bound on alias expansion.
 *
 * @throws ConfigurationError for an unreadable file, a syntax error, or a document that is not an object.
 *
 * @example
 * ```ts
 * import { parseSecurityPolicy, readPolicyDocument } from '@fluxguard/core';
 * const raw = await readPolicyDocument('policy.yaml');
 * const policy = parseSecurityPolicy({ ...raw, jwt: { ...(raw.jwt as object), jwksUrl } });
 * ```
 */
export async function readPolicyDocument(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new ConfigurationError(`cannot read the policy file ${file}`, { cause });
  }
  const isYaml = /\.ya?ml$/i.test(file);
  let parsed: unknown;
  try {
    parsed = isYaml ? yamlToObject(text) : JSON.parse(text);
  } catch (cause) {
    throw new ConfigurationError(`${file} is not valid ${isYaml ? 'YAML' : 'JSON'}`, { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigurationError(`${file}: a policy is an object (a mapping) at the top level`);
  }
  return parsed as Record<string, unknown>;
}

function yamlToObject(text: string): unknown {
  const doc = parseDocument(text, { schema: 'core', uniqueKeys: true, logLevel: 'silent' });
  // A warning (an unknown tag such as !!js/function, say) is refused like an error: a policy
  // is read exactly or not at all.
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem !== undefined) throw problem;
  return doc.toJS({ maxAliasCount: 50 });
}

/** Run-time parts of a verifier that a policy file cannot hold. */
export interface JwtPolicyExtras {
  readonly denylist?: Denylist;
  /** Directory for relative `jwksFile`/`publicKeyFile`. Default: the working directory. */
  readonly baseDir?: string;
}

/**
 * Turns a policy's `jwt` section into `createJwtVerifier` options, reading `jwksFile` or
 * `publicKeyFile` now (at start-up).
 *
 * @throws ConfigurationError for an unreadable or invalid key file.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, jwtVerifierOptionsFromPolicy, loadSecurityPolicy } from '@fluxguard/core';
 * const policy = await loadSecurityPolicy('policy.json');
 * if (policy.jwt) { const verifier = createJwtVerifier(jwtVerifierOptionsFromPolicy(policy.jwt)); }
 * ```
 */
export function jwtVerifierOptionsFromPolicy(jwt: JwtPolicy, extras: JwtPolicyExtras = {}): JwtVerifierOptions {
  const read = (p: string, name: string): string => {
    const path = resolve(extras.baseDir ?? '.', p);
    try {
      return readFileSync(path, 'utf8');
    } catch (cause) {
      throw new ConfigurationError(`policy.jwt.${name}: cannot read ${path}`, { cause });
    }
  };
  let keys: Pick<JwtVerifierOptions, 'jwks' | 'jwksUrl' | 'jwksOptions' | 'publicKey'>;
  if (jwt.jwksFile !== undefined) {
    try {
      keys = { jwks: JSON.parse(read(jwt.jwksFile, 'jwksFile')) as NonNullable<JwtVerifierOptions['jwks']> };
    } catch (cause) {
      if (cause instanceof ConfigurationError) throw cause;
      throw new ConfigurationError(`policy.jwt.jwksFile: ${jwt.jwksFile} is not valid JSON`, { cause });
    }
  } else if (jwt.publicKeyFile !== undefined) {
    keys = { publicKey: read(jwt.publicKeyFile, 'publicKeyFile') };
  } else {
    keys = {
      jwksUrl: jwt.jwksUrl,
      jwksOptions: {
        ...(jwt.jwksTimeoutMs === undefined ? {} : { timeoutMs: jwt.jwksTimeoutMs }),
        ...(jwt.jwksCooldownMs === undefined ? {} : { cooldownMs: jwt.jwksCooldownMs }),
        ...(jwt.jwksMaxAgeMs === undefined ? {} : { maxAgeMs: jwt.jwksMaxAgeMs }),
      },
    };
  }
  return {
    ...keys,
    issuer: jwt.issuer,
    audience: jwt.audience,
    algorithms: jwt.algorithms,
    rolesClaim: jwt.rolesClaim,
    clockToleranceSeconds: jwt.clockToleranceSeconds,
    maxTokenAgeSeconds: jwt.maxTokenAgeSeconds,
    requiredClaims: jwt.requiredClaims,
    typ: jwt.typ,
    maxTokenLength: jwt.maxTokenLength,
    requireJti: jwt.requireJti,
    cacheMaxEntries: jwt.cacheMaxEntries,
    denylist: extras.denylist,
  };
}

/**
 * The rules of one transport from a policy that serves both: gRPC rules name
 * `/pkg.Service/Method` (they start with `/`), HTTP rules `METHOD /path`. Compile each
 * transport's rules apart, so that `servedOperations` checks compare like with like.
 *
 * @example
 * ```ts
 * import { compileRbac, rbacRulesForTransport } from '@fluxguard/core';
 * const rbac = compileRbac(rbacRulesForTransport(policy.rbac?.rules ?? [], 'grpc'), { mode: policy.rbac?.mode });
 * ```
 */
export function rbacRulesForTransport(rules: readonly RbacRule[], transport: Transport): readonly RbacRule[] {
  return Object.freeze(rules.filter((rule) => rule.operation.startsWith('/') === (transport === 'grpc')));
}
