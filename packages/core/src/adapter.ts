/**
 * `@fluxguard/core/adapter`: what an adapter for a transport needs and an application does
 * not — the per-call state behind `CallContext`, the pipeline runner, the option resolver and
 * the bounded cache. The gRPC and Express adapters are built on exactly these.
 *
 * @example
 * ```ts
 * import { CallState, createPipeline } from '@fluxguard/core/adapter';
 * ```
 *
 * @packageDocumentation
 */
export { CallState, missingContextError, type CallStateInit, type EndCause } from './pipeline/call-context.js';
export { createPipeline, type Pipeline } from './pipeline/pipeline.js';
export { resolveOptions } from './options/resolve-options.js';
export { LruCache } from './cache/lru.js';
