import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { wholeNumber } from '../options/whole-number.js';
import type { ValidationReason } from './standard-schema.js';

/**
 * Limits on the shape of a JSON document, checked on its text before it is parsed.
 *
 * @example
 * ```ts
 * import type { JsonShapeLimits } from '@fluxguard/core';
 * const limits: JsonShapeLimits = { maxDepth: 16, maxKeys: 200 };
 * ```
 */
export interface JsonShapeLimits {
  /** Deepest nesting of objects and arrays. Default 32. */
  readonly maxDepth?: number | undefined;
  /** Object keys in the whole document. Default 1,000. */
  readonly maxKeys?: number | undefined;
}

/** Keys that reach `Object.prototype` when a parsed document is merged or assigned into an object. */
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Checks the limits once and returns a checker of JSON text: one linear pass over the text,
 * before any parser or handler sees the document, that refuses nesting deeper than `maxDepth`,
 * more than `maxKeys` keys, any key named `__proto__`, `constructor` or `prototype` (escaped
 * spellings included), and a key given twice in one object (`JSON.parse` keeps the last, other
 * parsers the first: a gateway that checked one value would let the other through). A refusal
 * is `invalid_argument` naming `field` (reasons `json_too_deep`, `json_too_many_keys`,
 * `json_forbidden_key`, `json_duplicate_key`). Malformed JSON is left to the parser.
 *
 * @throws ConfigurationError for a limit that is not a positive whole number.
 *
 * @example
 * ```ts
 * import { compileJsonShape } from '@fluxguard/core';
 * const check = compileJsonShape({ maxDepth: 16 });
 * check('{"__proto__":{"admin":true}}', 'body'); // throws SecurityError invalid_argument
 * ```
 */
export function compileJsonShape(limits: JsonShapeLimits = {}): (text: string, field: string) => void {
  if (typeof limits !== 'object' || (limits as unknown) === null) {
    throw new ConfigurationError('compileJsonShape: the limits must be an object');
  }
  checkKnownKeys(limits, ['maxDepth', 'maxKeys'], 'compileJsonShape', 'option');
  const maxDepth = positive(limits.maxDepth ?? 32, 'maxDepth');
  const maxKeys = positive(limits.maxKeys ?? 1_000, 'maxKeys');
  return (text, field) => {
    const refuse = (reason: Exclude<ValidationReason, 'schema_mismatch'>): never => {
      throw new SecurityError('invalid_argument', { details: { field }, reason });
    };
    let depth = 0;
    let keys = 0;
    // The keys seen in each open object or array, innermost last (made at an object's first key).
    const seen: (Set<string> | undefined)[] = [];
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x7b || c === 0x5b) {
        depth += 1;
        if (depth > maxDepth) refuse('json_too_deep');
        seen.push(undefined);
      } else if (c === 0x7d || c === 0x5d) {
        depth -= 1;
        seen.pop();
      } else if (c === 0x22) {
        const start = i;
        for (i += 1; i < text.length; i++) {
          const d = text.charCodeAt(i);
          if (d === 0x5c) i += 1;
          else if (d === 0x22) break;
        }
        // A string followed by a colon is a key.
        let j = i + 1;
        while (j < text.length && (text[j] === ' ' || text[j] === '\t' || text[j] === '\n' || text[j] === '\r')) j += 1;
        if (text[j] !== ':') continue;
        keys += 1;
        if (keys > maxKeys) refuse('json_too_many_keys');
        const raw = text.slice(start, i + 1);
        let key: unknown = raw.slice(1, -1);
        if (raw.includes('\\')) {
          try {
            key = JSON.parse(raw);
          } catch {
            continue;
          }
        }
        if (typeof key !== 'string') continue;
        if (FORBIDDEN_KEYS.has(key)) refuse('json_forbidden_key');
        if (seen.length === 0) continue;
        const inObject = (seen[seen.length - 1] ??= new Set());
        if (inObject.has(key)) refuse('json_duplicate_key');
        inObject.add(key);
      }
    }
  };
}

function positive(value: unknown, name: string): number {
  return wholeNumber(value, `compileJsonShape: "${name}"`);
}
