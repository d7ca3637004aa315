import express, { type RequestHandler } from 'express';
import { passRefusalOn } from './hand-over.js';
import { refusedStandIn } from './stand-ins.js';
import {
  ConfigurationError,
  SecurityError,
  compileJsonShape,
  type JsonShapeLimits,
  type StandardSchemaV1,
} from '@fluxguard/core';
import { checkSchema, resolveOptions, validateWith, wholeNumber } from '@fluxguard/core/adapter';

/**
 * Options of {@link validate}: a Standard Schema (zod, valibot, arktype, ...) per part of the
 * request. Parts left out are not checked.
 *
 * @example
 * ```ts
 * import { z } from 'zod';
 * import type { ValidateOptions } from '@fluxguard/express';
 * const options: ValidateOptions = { params: z.object({ id: z.string().regex(/^\d+$/) }) };
 * ```
 */
export interface ValidateOptions {
  /** Schema of `req.params`; its output replaces `req.params`. */
  readonly params?: StandardSchemaV1 | undefined;
  /** Schema of `req.query`; checked only, `req.query` is left as parsed. */
  readonly query?: StandardSchemaV1 | undefined;
  /** Schema of `req.headers` (names lowercase); checked only. */
  readonly headers?: StandardSchemaV1 | undefined;
  /** Schema of `req.body` as a body parser left it (mount one first); its output replaces `req.body`. */
  readonly body?: StandardSchemaV1 | undefined;
}

const PARTS = ['params', 'query', 'headers', 'body'] as const;
const DEFAULTS: Readonly<ValidateOptions> = Object.freeze({
  params: undefined,
  query: undefined,
  headers: undefined,
  body: undefined,
});

/**
 * A route middleware that validates the request's `params`, `query`, `headers` and `body`
 * (parsed: mount it after a body parser such as {@link jsonBody}) against Standard Schemas. A
 * refusal is `400` problem+json with `"code":"invalid_argument"`, the field path of the problem
 * (`body.items[2].name`) in `field` and the rule in `detail`, never the value the client sent.
 * The schemas' outputs replace `req.params` and `req.body` (defaults and transforms apply);
 * `query` and `headers` are checked only (Express 5 makes `req.query` read-only).
 *
 * @throws ConfigurationError for unknown options or a part whose schema is not a Standard Schema.
 *
 * @example
 * ```ts
 * import { z } from 'zod';
 * import { jsonBody, validate } from '@fluxguard/express';
 * app.post('/v1/items/:id', jsonBody(), validate({ params: z.object({ id: z.string().max(64) }), body: z.object({ name: z.string() }) }), handler);
 * ```
 */
export function validate(options: ValidateOptions): RequestHandler {
  const opts = resolveOptions('validate', DEFAULTS, options);
  const schemas = PARTS.flatMap((part) => {
    const schema: unknown = opts[part];
    return schema === undefined ? [] : [{ part, schema: checkSchema(schema, `validate: "${part}"`) }];
  });
  if (schemas.length === 0) throw new ConfigurationError('validate: give a schema for params, query, headers or body');
  return function fluxguardValidate(req, res, next) {
    if (refusedStandIn(req, res, next)) return;
    try {
      for (const { part, schema } of schemas) {
        const output = validateWith(schema, req[part], part);
        if (part === 'params') req.params = output as typeof req.params;
        else if (part === 'body') req.body = output;
      }
    } catch (error) {
      // Never resumed into the handler by an error middleware that calls `next()`.
      passRefusalOn(error, req, next);
      return;
    }
    next();
  };
}

/**
 * Options of {@link jsonBody}: express.json's size limit, and the shape limits checked on the
 * text before it is parsed.
 *
 * @example
 * ```ts
 * import type { JsonBodyOptions } from '@fluxguard/express';
 * const options: JsonBodyOptions = { limit: '64kb', maxDepth: 16, maxKeys: 200 };
 * ```
 */
export interface JsonBodyOptions extends JsonShapeLimits {
  /** The largest body parsed (express.json's `limit`). Default `100kb`. */
  readonly limit?: number | string | undefined;
}

/** A size as body-parser reads one: a number, then its unit. */
const SIZE = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)$/i;
const UNIT_BYTES: Readonly<Record<string, number>> = Object.freeze({ b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 });

/**
 * `express.json()` with its text checked before it is parsed: nesting deeper than `maxDepth`
 * (32), more than `maxKeys` keys (1,000), a `__proto__`, `constructor` or `prototype` key in
 * any spelling, or a key given twice in one object is refused with `400` (`invalid_argument`,
 * reasons `json_too_deep`, `json_too_many_keys`, `json_forbidden_key`, `json_duplicate_key`)
 * before any handler or schema sees the document. A body whose `Content-Type` names a charset
 * other than UTF-8 is refused too (`400`, reason `body_charset_unsupported`), as JSON between
 * systems must be UTF-8: express.json would decode UTF-16 or UTF-32 that the check cannot read.
 *
 * @throws ConfigurationError for a bad limit.
 *
 * @example
 * ```ts
 * import { jsonBody } from '@fluxguard/express';
 * app.post('/v1/items', jsonBody({ limit: '16kb', maxDepth: 8 }), handler);
 * ```
 */
export function jsonBody(options: JsonBodyOptions = {}): RequestHandler {
  const opts = resolveOptions('jsonBody', { limit: '100kb', maxDepth: 32, maxKeys: 1_000 }, options);
  const check = compileJsonShape({ maxDepth: opts.maxDepth, maxKeys: opts.maxKeys });
  // Said by fluxguard, not by body-parser's TypeError, and not left to read -1 or 1.5 as a size.
  const size = typeof opts.limit === 'string' ? SIZE.exec(opts.limit) : null;
  if (typeof opts.limit === 'number') wholeNumber(opts.limit, 'jsonBody: "limit"', { unit: 'bytes' });
  else if (size === null) {
    throw new ConfigurationError(
      'jsonBody: "limit" must be a whole number of bytes, or a size such as "100kb" or "1mb"',
    );
  } else {
    // The bytes the size means, held to the same bounds: "0kb" refused every body, and
    // "999999999999gb" meant no limit at all.
    const bytes = Math.floor(Number(size[1]) * (UNIT_BYTES[(size[2] ?? '').toLowerCase()] ?? 1));
    wholeNumber(bytes, `jsonBody: "limit" (${opts.limit})`, { unit: 'bytes' });
  }
  const parse: RequestHandler = express.json({
    limit: opts.limit,
    verify: (_req, _res, buffer, encoding) => {
      // body-parser decodes any `utf-*` charset (iconv-lite): checked as another text, a
      // UTF-16 document hides its keys from the check and reaches the handler. JSON between
      // systems is UTF-8 (RFC 8259, section 8.1).
      if (encoding !== 'utf-8') {
        throw new SecurityError('invalid_argument', {
          reason: 'body_charset_unsupported',
          details: { field: 'body' },
        });
      }
      check(buffer.toString('utf8'), 'body');
    },
  });
  return function fluxguardJsonBody(req, res, next) {
    if (refusedStandIn(req, res, next)) return;
    // A refused body is never resumed into the handler, which would find no body or half of one.
    parse(req, res, (error?: unknown) => {
      if (error === undefined || error === null) next();
      else passRefusalOn(error, req, next);
    });
  };
}
