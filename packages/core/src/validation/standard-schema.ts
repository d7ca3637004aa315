import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';

/**
 * The Standard Schema interface (standardschema.dev, version 1) that zod, valibot, arktype and
 * others implement: fluxguard validates with whichever the application chose, without
 * depending on any of them.
 *
 * @example
 * ```ts
 * import { z } from 'zod';
 * import type { StandardSchemaV1 } from '@fluxguard/core';
 * const schema: StandardSchemaV1 = z.object({ path: z.string().max(1024) });
 * ```
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  /**
   * The schema's Standard Schema properties: version 1, its vendor, and a synchronous `validate`
   * (fluxguard refuses a schema that answers with a promise).
   */
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/**
 * What a Standard Schema's `validate` answers.
 *
 * @example
 * ```ts
 * import type { StandardResult } from '@fluxguard/core';
 * const ok: StandardResult<string> = { value: 'models/v1/weights.bin' };
 * const refused: StandardResult<string> = { issues: [{ message: 'Too long', path: ['path'] }] };
 * ```
 */
export type StandardResult<Output> =
  { readonly value: Output; readonly issues?: undefined } | { readonly issues: readonly StandardIssue[] };

/**
 * One problem a schema found.
 *
 * @example
 * ```ts
 * import type { StandardIssue } from '@fluxguard/core';
 * const issue: StandardIssue = { message: 'Expected a string', path: ['items', 2, 'name'] }; // field body.items[2].name
 * ```
 */
export interface StandardIssue {
  /**
   * What the schema says is wrong. The first issue's message reaches the client only when it is
   * short, printable, quotes nothing and does not repeat what the client sent.
   */
  readonly message: string;
  /** Where the problem is, key by key; named in `field` (`body.items[2].name`), never quoted. */
  readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[] | undefined;
}

/**
 * Why validation refused a request: a value a schema refused (`schema_mismatch`), or a JSON body
 * too deep, with too many keys, or with a key that could pollute prototypes (`json_too_deep`,
 * `json_too_many_keys`, `json_forbidden_key`, `json_duplicate_key`).
 *
 * @example
 * ```ts
 * import type { ValidationReason } from '@fluxguard/core';
 * const reason: ValidationReason = 'schema_mismatch';
 * ```
 */
export type ValidationReason =
  'schema_mismatch' | 'json_too_deep' | 'json_too_many_keys' | 'json_forbidden_key' | 'json_duplicate_key';

const SAFE_KEY = /^[A-Za-z_$][A-Za-z0-9_$-]{0,40}$/;
const PRINTABLE = /^[\x20-\x7e]{1,200}$/;

/**
 * Checks that `schema` is a Standard Schema, for the factories that take one.
 *
 * @throws ConfigurationError naming `where`.
 *
 * @internal
 */
export function checkSchema(schema: unknown, where: string): StandardSchemaV1 {
  // Checked at run time: the schema arrives from plain JavaScript as often as from TypeScript.
  const standard = (
    schema as { readonly '~standard'?: { readonly version?: unknown; readonly validate?: unknown } } | null
  )?.['~standard'];
  if (typeof standard !== 'object' || standard.version !== 1 || typeof standard.validate !== 'function') {
    throw new ConfigurationError(`${where} must be a Standard Schema (zod, valibot, arktype, ...)`);
  }
  return schema as StandardSchemaV1;
}

/**
 * Validates `value` (the request's `part`: `body`, `query`, `message`, ...) and returns the
 * schema's output. A refusal is `invalid_argument` whose field is the path of the first issue
 * (`body.items[2].name`) and whose public message names the rule that failed (the schema's
 * message) unless that message repeats the value the client sent: a value is never echoed.
 * An asynchronous schema is refused: validation must not wait.
 *
 * @throws SecurityError `invalid_argument` (reason `schema_mismatch`); ConfigurationError for a
 *   schema that answers with a promise.
 *
 * @internal
 */
export function validateWith<T>(schema: StandardSchemaV1<unknown, T>, value: unknown, part: string): T {
  const result = schema['~standard'].validate(value);
  if (result instanceof Promise) {
    throw new ConfigurationError(`the schema of ${part} is asynchronous; fluxguard validates synchronously`);
  }
  if (result.issues === undefined) return result.value;
  const issue = result.issues[0];
  const path = issue?.path ?? [];
  const field = fieldOf(part, path);
  const rule = issue === undefined ? undefined : ruleOf(issue.message, valueAt(value, path));
  throw new SecurityError('invalid_argument', {
    message: rule === undefined ? `The request is invalid: ${field}.` : `The request is invalid: ${field}: ${rule}`,
    details: { field },
    reason: 'schema_mismatch',
  });
}

function keyOf(segment: PropertyKey | { readonly key: PropertyKey }): PropertyKey {
  return typeof segment === 'object' ? segment.key : segment;
}

/** `body.items[2].name`; a key that is not a plain name is shown as `[_]`, never as sent. */
function fieldOf(part: string, path: readonly (PropertyKey | { readonly key: PropertyKey })[]): string {
  let field = part;
  for (const segment of path.slice(0, 8)) {
    const key = keyOf(segment);
    if (typeof key === 'number') field += `[${String(key)}]`;
    else if (typeof key === 'string' && SAFE_KEY.test(key)) field += `.${key}`;
    else field += '[_]';
  }
  return field.slice(0, 100);
}

function valueAt(value: unknown, path: readonly (PropertyKey | { readonly key: PropertyKey })[]): unknown {
  let at = value;
  for (const segment of path) {
    if (typeof at !== 'object' || at === null) return undefined;
    at = (at as Record<PropertyKey, unknown>)[keyOf(segment)];
  }
  return at;
}

/** The schema's message, unless it could carry what the client sent. */
function ruleOf(message: string, offending: unknown): string | undefined {
  if (!PRINTABLE.test(message)) return undefined;
  // A quoted piece may be a value or a key: schema libraries quote what they received (zod's
  // unrecognized keys, valibot's "received" values), whatever the type of the offending value.
  if (/["'`]/.test(message)) return undefined;
  const sent = textsOf(offending);
  if (sent === undefined) return undefined;
  for (const text of sent) if (text !== '' && message.includes(text)) return undefined;
  return message;
}

const MAX_CHECKED_ENTRIES = 64;

/**
 * The texts of what the client sent at the offending place: a scalar itself, or the keys and
 * scalar values of an object or array (an issue about unknown keys points at the object).
 * `undefined` when there is too much to check: the message is then left out.
 */
function textsOf(offending: unknown): readonly string[] | undefined {
  if (typeof offending === 'string' || typeof offending === 'number' || typeof offending === 'bigint') {
    return [String(offending)];
  }
  if (typeof offending !== 'object' || offending === null) return [];
  const keys = Object.keys(offending);
  if (keys.length > MAX_CHECKED_ENTRIES) return undefined;
  const texts: string[] = [];
  for (const key of keys) {
    texts.push(key);
    const value: unknown = (offending as Record<string, unknown>)[key];
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') texts.push(String(value));
  }
  return texts;
}
