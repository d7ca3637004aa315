import { createReadStream } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigurationError, isConfigurationError } from '../errors/fluxguard-error.js';
import { isSecurityError } from '../errors/security-error.js';
import { compileJsonShape } from '../validation/json-shape.js';
import { parseJwtPolicy, type JwtPolicy } from '../jwt/policy.js';
import { parseMtlsPolicy, type MtlsPolicy } from '../mtls/policy.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { parseRbacPolicy, type RbacPolicy } from '../rbac/policy.js';
import { parseLimitsPolicy, type LimitsPolicy } from '../limits/policy.js';
import { parseRateLimitsPolicy, type RateLimitsPolicy } from '../ratelimit/policy.js';
import { parseTimeoutsPolicy, type TimeoutsPolicy } from '../timeouts/policy.js';
import { parseConnectionsPolicy, type ConnectionLimits } from '../transport/connections.js';
import { isPolicyObject } from './fields.js';

/**
 * One declarative policy for both transports. Each section belongs to the control that
 * enforces it, which also checks it.
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
  /** Token verification (`JwtPolicy`). Absent: no token is accepted, unless a verifier is given in code. */
  readonly jwt?: JwtPolicy;
  /** The RBAC mode and rules. Absent: every operation is denied (no rule). */
  readonly rbac?: RbacPolicy;
  /** Client-certificate mode and the certificates that authenticate alone (`MtlsPolicy`). */
  readonly mtls?: MtlsPolicy;
  /** Deadlines and idle limits, default and per operation. Absent: the secure defaults still apply. */
  readonly timeouts?: TimeoutsPolicy;
  /** Rate limits, brute-force protection and client-address settings. Absent: no rate limit. */
  readonly rateLimits?: RateLimitsPolicy;
  /** Input size limits, default and per operation. Absent: `createGuardFromPolicy` adds no size-limit control. */
  readonly limits?: LimitsPolicy;
  /** Handshake and idle times and the connection cap of each port (`resolveConnectionLimits`). */
  readonly connections?: ConnectionLimits;
}

type SectionName = Exclude<keyof SecurityPolicy, 'version'>;

/**
 * The parser of each section, owned by its control. Typed from {@link SecurityPolicy} so that a
 * section added there cannot be forgotten here.
 */
const SECTIONS: { readonly [K in SectionName]: (value: unknown, where: string) => NonNullable<SecurityPolicy[K]> } = {
  jwt: parseJwtPolicy,
  rbac: parseRbacPolicy,
  mtls: parseMtlsPolicy,
  timeouts: parseTimeoutsPolicy,
  rateLimits: parseRateLimitsPolicy,
  limits: parseLimitsPolicy,
  connections: parseConnectionsPolicy,
};

const TOP_KEYS: readonly string[] = ['version', ...Object.keys(SECTIONS)];

/**
 * Checks a policy object (parsed JSON or YAML, or a literal) and returns it typed, as a new
 * frozen object (the input is left as it is; every section is a frozen copy, so that changing
 * the input afterwards changes nothing). Errors name the bad field by its path, e.g. `policy.rbac.rules[3].anyRoles[0] must be a
 * non-empty string`; unknown fields are refused with a hint. RBAC rules
 * and `mtls.certificateRoles` are compiled here to check them completely (patterns,
 * certificate identity rules); `compileRbac` and `createGuardFromPolicy` reuse the compiled
 * rules of the returned policy.
 *
 * @throws ConfigurationError naming the bad field or refused section.
 *
 * @example
 * ```ts
 * import { parseSecurityPolicy } from '@fluxguard/core';
 * const policy = parseSecurityPolicy(JSON.parse(text));
 * ```
 */
export function parseSecurityPolicy(input: unknown, where = 'policy'): SecurityPolicy {
  if (!isPolicyObject(input)) throw new ConfigurationError(`${where} must be an object`);
  checkNesting(input, where);
  checkKnownKeys(input, TOP_KEYS, where, 'field');
  if (input.version !== undefined && input.version !== 1) throw new ConfigurationError(`${where}.version must be 1`);
  const policy: Record<string, unknown> = input.version === undefined ? {} : { version: input.version };
  for (const [name, parse] of Object.entries(SECTIONS)) {
    const section = input[name];
    if (section !== undefined) policy[name] = parse(section, `${where}.${name}`);
  }
  return Object.freeze(policy);
}

/** Deeper than any policy needs (an RBAC rule nests at most 16 levels below its section). */
const MAX_POLICY_DEPTH = 32;

/**
 * Refuses a document nested deeper than {@link MAX_POLICY_DEPTH}, naming where, before any
 * section copies or walks it: those recurse, and a deep enough document overflowed the stack.
 */
function checkNesting(input: object, where: string): void {
  const pending: { value: unknown; path: string; depth: number }[] = [{ value: input, path: where, depth: 0 }];
  const seen = new Set<object>();
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { value, path, depth } = next;
    if (typeof value !== 'object' || value === null || seen.has(value)) continue;
    seen.add(value);
    if (depth >= MAX_POLICY_DEPTH) {
      throw new ConfigurationError(`${path} is nested too deeply (at most ${String(MAX_POLICY_DEPTH)} levels)`);
    }
    for (const [key, child] of Object.entries(value)) {
      pending.push({
        value: child,
        path: Array.isArray(value) ? `${path}[${key}]` : `${path}.${key}`,
        depth: depth + 1,
      });
    }
  }
}

/**
 * Reads and checks a policy file, YAML or JSON as {@link readPolicyDocument} reads it.
 * `jwt.jwksFile` and `jwt.publicKeyFile` are resolved relative to the policy file's directory.
 *
 * @throws ConfigurationError for an unreadable file, invalid YAML or JSON, or an invalid policy.
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
  const text = await readPolicyText(file);
  const isYaml = /\.ya?ml$/i.test(file);
  if (!isYaml) checkJsonKeys(text, file);
  let parsed: unknown;
  try {
    parsed = isYaml ? yamlToObject(text) : JSON.parse(text);
  } catch (cause) {
    if (isConfigurationError(cause)) throw new ConfigurationError(`${file}: ${cause.message}`);
    const at = [faultPosition(cause, text), isYaml ? yamlFaultKind(cause) : undefined].filter(Boolean).join(': ');
    throw new ConfigurationError(`${file} is not valid ${isYaml ? 'YAML' : 'JSON'}${at === '' ? '' : ` (${at})`}`, {
      cause,
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigurationError(`${file}: a policy is an object (a mapping) at the top level`);
  }
  return parsed as Record<string, unknown>;
}

/**
 * The most bytes a policy file may hold (16 MiB), far above any real policy: a path to a device
 * (`/dev/zero`) or to a file that keeps growing was read until memory ran out.
 */
export const MAX_POLICY_FILE_BYTES = 16 * 1024 * 1024;

/** A policy file's text, read one byte past {@link MAX_POLICY_FILE_BYTES} at most. */
async function readPolicyText(file: string): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    // Without `start`, reads go on from where the last ended: a pipe (`<(...)`) reads too.
    for await (const chunk of createReadStream(file, { end: MAX_POLICY_FILE_BYTES })) {
      chunks.push(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (cause) {
    throw new ConfigurationError(`cannot read the policy file ${file}`, { cause });
  }
  if (bytes > MAX_POLICY_FILE_BYTES) {
    throw new ConfigurationError(`${file} is larger than 16 MiB, the most a policy file may hold`);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// A key given twice is read as its last value by JSON.parse, where a reader of the file sees
// the first (`"mode": "enforce", ..., "mode": "shadow"` ran in shadow mode); YAML refuses it too.
// The depth and key counts are a policy's, far above any real one.
const JSON_POLICY_SHAPE = compileJsonShape({ maxDepth: 64, maxKeys: 1_000_000 });
const JSON_KEY_FAULTS: Readonly<Record<string, string>> = {
  json_duplicate_key: 'gives one key twice in an object (JSON.parse would keep only the last)',
  json_forbidden_key: 'has a key named __proto__, constructor or prototype',
  json_too_deep: 'is nested more than 64 levels',
  json_too_many_keys: 'has more than 1,000,000 keys',
};

function checkJsonKeys(text: string, file: string): void {
  try {
    JSON_POLICY_SHAPE(text, 'policy');
  } catch (cause) {
    const reason = isSecurityError(cause) ? cause.reason : undefined;
    throw new ConfigurationError(`${file} ${JSON_KEY_FAULTS[reason ?? ''] ?? 'is not valid JSON'}`, { cause });
  }
}

/**
 * Where a syntax error is, as `line L, column C`, or '' when the parser does not say: the
 * parsers' messages quote the text around the fault, which may hold a secret, so only the place
 * is given (the error stays the `cause`).
 */
function faultPosition(error: unknown, text: string): string {
  const linePos = (error as { linePos?: readonly { line: number; col: number }[] }).linePos?.[0];
  if (linePos !== undefined) return `line ${String(linePos.line)}, column ${String(linePos.col)}`;
  const offset = /\bposition (\d{1,10})\b/.exec(error instanceof Error ? error.message : '')?.[1];
  if (offset === undefined) return '';
  const before = text.slice(0, Number(offset)).split('\n');
  return `line ${String(before.length)}, column ${String((before.at(-1)?.length ?? 0) + 1)}`;
}

/** The YAML faults a policy author meets most, in words; another is named by its code. */
const YAML_FAULTS: Readonly<Record<string, string>> = {
  DUPLICATE_KEY: 'a key given twice',
  TAG_RESOLVE_FAILED: 'a tag the core schema does not have (no custom tags)',
  TAB_AS_INDENT: 'a tab used to indent',
  MISSING_CHAR: 'a closing quote or bracket missing',
  BAD_INDENT: 'bad indentation',
  BLOCK_AS_IMPLICIT_KEY: 'bad indentation (a block where a key should be)',
};

/**
 * What kind of YAML fault `error` is: the parser's code (a constant, never the document's
 * text), in words for the common ones, or the alias bound; `undefined` when it does not say.
 */
function yamlFaultKind(error: unknown): string | undefined {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code)) {
    return YAML_FAULTS[code] ?? code.toLowerCase().replaceAll('_', ' ');
  }
  // yaml's own bound on alias expansion (`maxAliasCount`), thrown without a code.
  if (error instanceof ReferenceError && /\balias count\b/.test(error.message)) return 'more than 50 aliases expanded';
  return undefined;
}

function yamlToObject(text: string): unknown {
  const docs = parseAllDocuments(text, { schema: 'core', uniqueKeys: true, logLevel: 'silent' });
  // A second document (after `---`, or anything after `...`) would be ignored by a reader of the
  // first: a policy whose second half says `enforce` ran in shadow mode.
  const count = Array.isArray(docs) ? docs.length : 0;
  const doc = Array.isArray(docs) ? docs[0] : undefined;
  if (count !== 1 || doc === undefined) {
    throw new ConfigurationError(`a policy is one YAML document (found ${String(count)})`);
  }
  // A warning (an unknown tag such as !!js/function, say) is refused like an error: a policy
  // is read exactly or not at all.
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem !== undefined) throw problem;
  return doc.toJS({ maxAliasCount: 50 });
}
