import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import type { Control } from '../pipeline/control.js';
import { compileOperationRules } from '../policy/operation-rules.js';
import { checkSchema, validateWith, type StandardSchemaV1 } from './standard-schema.js';

/**
 * One rule of {@link MessageValidationOptions.rules}: the Standard Schema every request message
 * of the gRPC methods a pattern names must satisfy.
 *
 * @example
 * ```ts
 * import { z } from 'zod';
 * import type { MessageSchemaRule } from '@fluxguard/core';
 * const rule: MessageSchemaRule = { operation: '/pkg.Store/Get', schema: z.object({ path: z.string().min(1).max(1024) }) };
 * ```
 */
export interface MessageSchemaRule {
  /** The gRPC methods the rule applies to: `/pkg.Service/Method` or `/pkg.Service/*`; the most specific rule wins. */
  readonly operation: string;
  /** The Standard Schema (zod, valibot, arktype, ...) each request message must satisfy; synchronous only. */
  readonly schema: StandardSchemaV1;
}

/**
 * Options of {@link createMessageValidation}.
 *
 * @example
 * ```ts
 * import type { MessageValidationOptions } from '@fluxguard/core';
 * const options: MessageValidationOptions = { rules: [] };
 * ```
 */
export interface MessageValidationOptions {
  /** The rules, one per pattern; methods no rule names pass unchecked. */
  readonly rules: readonly MessageSchemaRule[];
  /**
   * The gRPC methods this server serves (`/pkg.Service/Method`): a rule whose pattern names
   * none of them is refused at start-up, so a misspelt method cannot leave its messages
   * silently unchecked.
   */
  readonly servedOperations?: readonly string[] | undefined;
}

/**
 * Validates every gRPC request message, of every call kind and every message of a stream,
 * against the Standard Schema (zod, valibot, arktype, ...) of its method, before the handler
 * reads it (stage `input`). A message the schema refuses ends the call with `invalid_argument`
 * (`INVALID_ARGUMENT`, reason `schema_mismatch`) naming the field path (`message.items[2].name`,
 * in `x-fluxguard-field`) and the rule, never the value. Methods no rule names pass unchecked.
 * HTTP requests are validated by the Express adapter's `validate()` middleware, after their body
 * is parsed.
 *
 * @throws ConfigurationError for a rule without a Standard Schema, a bad or duplicate pattern,
 *   an HTTP route's pattern, or (with `servedOperations`) a pattern that names no served method.
 *
 * @example
 * ```ts
 * import { z } from 'zod';
 * import { createMessageValidation } from '@fluxguard/core';
 * const validation = createMessageValidation({
 *   rules: [{ operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact', schema: z.object({ path: z.string().max(1024) }) }],
 * });
 * // fluxguardInterceptors({ audit, guard, controls: [validation] })
 * ```
 */
export function createMessageValidation(options: MessageValidationOptions): Control {
  const where = 'createMessageValidation';
  if (typeof options !== 'object' || (options as unknown) === null)
    throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(options, ['rules', 'servedOperations'], where, 'option');
  if (!Array.isArray(options.rules)) throw new ConfigurationError(`${where}.rules must be an array`);
  const rules = compileOperationRules<StandardSchemaV1 | undefined>(options.rules, {
    where,
    keys: ['schema'],
    defaults: undefined,
    transport: 'grpc',
    compile: (rule, _defaults, at) => checkSchema(rule.schema, `${at}.schema`),
    servedOperations: options.servedOperations,
  });
  // An HTTP route's rule would be kept and never run: HTTP requests are validated by the
  // Express adapter's `validate()`, not message by message.
  const http = rules.patterns.findIndex((pattern) => !pattern.startsWith('/'));
  if (http !== -1) {
    throw new ConfigurationError(
      `${where}.rules[${String(http)}].operation "${rules.patterns[http] ?? ''}" is an HTTP route: message validation checks gRPC request messages; validate HTTP requests with validate() of @fluxguard/express`,
    );
  }
  return Object.freeze({
    name: 'message-validation',
    stage: 'input',
    matchesOperation: rules.hasRules,
    operationPatterns: rules.patterns,
    replacesMessages: true,
    // The schema's output goes on to the handler, as `validate()` of @fluxguard/express puts
    // it in `req.body`: keys a schema strips, values it trims, coerces or defaults reached the
    // handler as sent, so the same schema checked on gRPC what it cleaned on HTTP.
    onMessage(message: unknown, call: CallInfo): unknown {
      if (call.transport !== 'grpc') return undefined;
      const schema = rules.settingsFor(call.operation);
      return schema === undefined ? undefined : validateWith(schema, message, 'message');
    },
  });
}
