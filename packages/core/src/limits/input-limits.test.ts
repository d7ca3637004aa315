import { describe, expect, it } from 'vitest';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { createInputLimits, type InputLimitsOptions } from './input-limits.js';
import { compileRbac } from '../rbac/rbac.js';

function call(operation: string, headers: Record<string, string> = {}): CallInfo {
  return {
    transport: operation.startsWith('/') ? 'grpc' : 'http',
    operation,
    requestId: 'r',
    peerAddress: '127.0.0.1:5000',
    peerCertificate: undefined,
    headers: { get: (name) => headers[name], getAll: (name) => (name in headers ? [headers[name] ?? ''] : []) },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

/** Runs the limits on one call: its start, then each message of `sizes`; the refusal, if any. */
function run(options: InputLimitsOptions, info: CallInfo, sizes: readonly (number | undefined)[]): unknown {
  const pipeline = createPipeline('test', [createInputLimits(options)]);
  const state = new CallState({
    requestId: 'r',
    deadline: undefined,
    end: () => undefined,
    onReleaseError: () => undefined,
  });
  try {
    void pipeline.start(info, state);
    for (const bytes of sizes) pipeline.message(bytes === undefined ? {} : Buffer.alloc(0), info, state, bytes);
  } catch (error) {
    return error;
  }
  return undefined;
}

const UPLOAD = '/pkg.Store/Upload';

describe('createInputLimits', () => {
  it('refuses an HTTP body when its bytes pass the limit, counting chunk by chunk', () => {
    expect(run({ maxBodyBytes: 10 }, call('PUT /x'), [4, 6])).toBeUndefined();
    expect(run({ maxBodyBytes: 10 }, call('PUT /x'), [4, 6, 1])).toMatchObject({
      code: 'payload_too_large',
      reason: 'body_too_large',
    });
  });

  it('refuses a declared Content-Length over the limit at the start, before any chunk', () => {
    const refusal = run({ maxBodyBytes: 10 }, call('PUT /x', { 'content-length': '11' }), []);
    expect(refusal).toBeInstanceOf(SecurityError);
    expect(refusal).toMatchObject({ code: 'payload_too_large', reason: 'declared_too_large' });
    expect(run({ maxBodyBytes: 10 }, call('PUT /x', { 'content-length': '10' }), [10])).toBeUndefined();
  });

  it('refuses an HTTP body with a content coding it was not given, before any chunk', () => {
    // The limits count a body as it arrives; a parser inflated 50 gzip bytes to 5,000 past them.
    const coded = (coding: string) => call('POST /x', { 'content-encoding': coding, 'content-length': '50' });
    for (const coding of ['gzip', 'GZIP', 'deflate', 'br', 'identity, gzip', 'x-gzip']) {
      expect(run({ maxBodyBytes: 100 }, coded(coding), []), coding).toMatchObject({
        code: 'invalid_argument',
        reason: 'body_encoding_unsupported',
      });
    }
    for (const coding of ['identity', 'IDENTITY', '']) {
      expect(run({ maxBodyBytes: 100 }, coded(coding), [50]), coding).toBeUndefined();
    }
    expect(run({ maxBodyBytes: 100, contentEncodings: ['gzip'] }, coded('gzip'), [50])).toBeUndefined();
    expect(run({ maxBodyBytes: 100, contentEncodings: ['gzip'] }, coded('gzip, br'), [])).toMatchObject({
      reason: 'body_encoding_unsupported',
    });
    // Nothing to inflate: a request without a body.
    expect(run({}, call('GET /x', { 'content-encoding': 'gzip' }), [])).toBeUndefined();
    expect(run({}, call('GET /x', { 'content-encoding': 'gzip', 'content-length': '0' }), [])).toBeUndefined();
    expect(run({}, call('POST /x', { 'content-encoding': 'gzip', 'transfer-encoding': 'chunked' }), [])).toMatchObject({
      reason: 'body_encoding_unsupported',
    });
    // gRPC compression is grpc-js's, limited once decompressed.
    expect(run({}, call(UPLOAD, { 'content-encoding': 'gzip' }), [1])).toBeUndefined();
  });

  it.each<[unknown, string]>([
    ['gzip', 'createInputLimits.contentEncodings must be a list of content codings, e.g. ["gzip"]'],
    [
      ['gzip', 'two words'],
      'createInputLimits.contentEncodings[1] must be a content coding of "gzip", "deflate", "br"',
    ],
    [[7], 'createInputLimits.contentEncodings[0] must be a content coding'],
    // Accepted without a word, and meaning nothing: no parser inflates them, identity always passes.
    ...['x', 'GZIP', 'identity', 'zstd'].map((coding): [unknown, string] => [
      ['br', coding],
      'createInputLimits.contentEncodings[1] must be a content coding of "gzip", "deflate", "br", in lower case (identity is always accepted)',
    ]),
  ])('refuses contentEncodings %j at start-up', (contentEncodings, message) => {
    expect(() => createInputLimits({ contentEncodings } as InputLimitsOptions)).toThrow(message);
  });

  it('refuses a gRPC message over its limit, a stream over its total and one with too many messages', () => {
    const limits = { maxMessageBytes: 5, maxBodyBytes: 12, maxMessages: 3 };
    expect(run(limits, call(UPLOAD), [5, 5])).toBeUndefined();
    expect(run(limits, call(UPLOAD), [6])).toMatchObject({ reason: 'message_too_large' });
    expect(run(limits, call(UPLOAD), [5, 5, 5])).toMatchObject({ reason: 'body_too_large' });
    expect(run(limits, call(UPLOAD), [1, 1, 1, 1])).toMatchObject({ reason: 'too_many_messages' });
  });

  it('fails closed on a gRPC message of unknown size (a service registered without fluxguard)', () => {
    expect(run({}, call(UPLOAD), [undefined])).toMatchObject({ code: 'internal', reason: 'message_size_unknown' });
  });

  it('gives each operation its most specific rule, else the defaults (1 MiB body)', () => {
    const options: InputLimitsOptions = {
      rules: [
        { operation: 'PUT /v1/artifacts/*path', maxBodyBytes: 100 },
        { operation: 'PUT /v1/artifacts/small/:name', maxBodyBytes: 10 },
      ],
    };
    expect(run(options, call('PUT /v1/artifacts/a/b'), [100])).toBeUndefined();
    expect(run(options, call('PUT /v1/artifacts/small/x'), [11])).toMatchObject({ reason: 'body_too_large' });
    expect(run(options, call('POST /v1/other'), [1024 * 1024])).toBeUndefined();
    expect(run(options, call('POST /v1/other'), [1024 * 1024 + 1])).toMatchObject({ reason: 'body_too_large' });
  });

  it('tells the pipeline each gRPC operation’s message limit, the smallest of every control that sets one', () => {
    const limits = createInputLimits({ rules: [{ operation: '/pkg.Svc/Small', maxMessageBytes: 100 }] });
    const tighter = { name: 'tighter', stage: 'input' as const, onMessage: () => undefined, maxMessageBytes: () => 50 };
    expect(createPipeline('test', [limits]).maxMessageBytes('/pkg.Svc/Small')).toBe(100);
    expect(createPipeline('test', [limits]).maxMessageBytes('/pkg.Svc/Other')).toBe(4 * 1024 * 1024);
    expect(createPipeline('test', [limits, tighter]).maxMessageBytes('/pkg.Svc/Small')).toBe(50);
    const unlimited = { name: 'none', stage: 'input' as const, onMessage: () => undefined };
    expect(createPipeline('test', [unlimited]).maxMessageBytes('/pkg.Svc/Small')).toBeUndefined();
    expect(() => createPipeline('test', [{ ...unlimited, maxMessageBytes: 5 } as never])).toThrow(
      'test: controls[0] (none): "maxMessageBytes" must be a function',
    );
  });

  it.each([
    [{ maxBodyBytes: 0 }, 'createInputLimits.maxBodyBytes must be a whole number of at least 1'],
    [{ maxMessages: 1.5 }, 'createInputLimits.maxMessages must be a whole number of at least 1'],
    [{ maxBodyByte: 1 }, 'unknown option "maxBodyByte" (did you mean "maxBodyBytes"?)'],
    [
      { rules: [{ operation: 'PUT /x' }, { operation: 'PUT /x/' }] },
      'rules[1].operation "PUT /x/" names the operations of "PUT /x"',
    ],
    [{ rules: [{ operation: 'put /x' }] }, 'is not an operation pattern'],
    // Read by nothing: an HTTP request has a body, not messages.
    [
      { rules: [{ operation: 'POST /v1/upload', maxMessages: 1 }] },
      'createInputLimits.rules[0].maxMessages applies to gRPC messages, and "POST /v1/upload" is an HTTP route: limit its body with maxBodyBytes',
    ],
    [
      { rules: [{ operation: 'POST /v1/upload', maxMessageBytes: 10 }] },
      'rules[0].maxMessageBytes applies to gRPC messages',
    ],
  ])('refuses bad options %j', (options, message) => {
    expect(() => createInputLimits(options as InputLimitsOptions)).toThrow(ConfigurationError);
    expect(() => createInputLimits(options as InputLimitsOptions)).toThrow(message);
  });
});

describe('createInputLimits: which operations a rule applies to', () => {
  // As RBAC decides by the rule of the same pattern: a second trailing slash is not dropped.
  it.each(['GET /v1/x', 'GET /v1/x/', 'GET /v1/x//', 'GET /v1/x/y', 'GET /V1/x', 'POST /v1/x'])(
    'applies the rule of GET /v1/x to %s exactly when RBAC would',
    (operation) => {
      const rbac = compileRbac({ 'GET /v1/x': { public: true } });
      // The rule's own body limit refuses a body of 8 bytes; the default (1 MiB) takes it.
      const refused = run({ rules: [{ operation: 'GET /v1/x', maxBodyBytes: 7 }] }, call(operation), [8]);
      expect(refused !== undefined).toBe(rbac.ruleFor(operation) === 'GET /v1/x');
    },
  );
});
