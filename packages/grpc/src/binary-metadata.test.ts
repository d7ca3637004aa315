// grpc-js splits a binary (`-bin`) metadata value on its commas and decodes each piece into an
// entry of its own before any interceptor runs: a header of commas alone, sent with no
// credential, made a call cost as much CPU as a hundred others. Past as many values as Node
// reads header fields, the call is refused before grpc-js builds its metadata.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { DEFAULT_MAX_HEADER_FIELDS } from './server-credentials.js';
import { fluxguardInterceptors, secureServerOptions } from './index.js';
import type { Json } from './testing/harness.js';
import {
  handlerStarts,
  op,
  registerSecureService,
  startSecureServer,
  unary,
  type SecureServer,
} from './testing/tls.js';

let secure: SecureServer;

beforeAll(async () => {
  // No header limits: the bound holds whatever controls the server runs.
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit, timeouts: false }), {
    serverOptions: secureServerOptions(),
  });
});

afterAll(() => secure.close());

/** Metadata with `count` values of one binary key (grpc-js's client sends each as a header of its own). */
function binaryValues(count: number): Metadata {
  const metadata = new Metadata();
  for (let i = 0; i < count; i++) metadata.add('x-many-bin', Buffer.from([i % 256]));
  return metadata;
}

const lineOf = (requestId: string): Json | undefined => secure.lines().find((line) => line.requestId === requestId);

/** A call over raw HTTP/2 with TLS carrying `value` as one `x-commas-bin` header: its response headers. */
async function rawCall(value: string, requestId: string): Promise<Record<string, unknown>> {
  return (await secure.rawCall(op('Public'), { 'x-commas-bin': value, 'x-request-id': requestId })).headers;
}

/** `count` base64 values joined as grpc-js's client or a proxy joins them. */
const joined = (count: number): string => Array.from({ length: count }, () => 'AA').join(',');

describe('binary metadata that grpc-js splits into many values', () => {
  it('is served from a grpc-js client sending many values', async () => {
    const outcome = await unary(secure.client(), 'Public', binaryValues(200));
    expect(outcome.status.code).toBe(Status.OK);
  });

  it('is served up to as many values as Node reads header fields', async () => {
    const starts = handlerStarts.count;
    const headers = await rawCall(joined(DEFAULT_MAX_HEADER_FIELDS), 'bin-at-bound');
    expect(headers['grpc-status']).toBeUndefined();
    expect(handlerStarts.count).toBe(starts + 1);
  });

  it('is refused RESOURCE_EXHAUSTED past that, with the request id and a too_many_headers line, no handler run', async () => {
    const starts = handlerStarts.count;
    const headers = await rawCall(joined(DEFAULT_MAX_HEADER_FIELDS + 1), 'bin-past-bound');
    expect(headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
    expect(decodeURIComponent(String(headers['grpc-message']))).toBe('The request is too large.');
    expect(headers['x-request-id']).toBe('bin-past-bound');
    expect(headers['x-fluxguard-field']).toBe('headers');
    expect(handlerStarts.count).toBe(starts);
    expect(lineOf('bin-past-bound')).toMatchObject({
      event: 'request.denied',
      reason: 'too_many_headers',
      code: 'payload_too_large',
      operation: '/fluxguard.test.v1.Secure/Public',
    });
  });

  it('is refused so for one header of 60 KB of commas', async () => {
    const headers = await rawCall(','.repeat(60_000), 'bin-commas');
    expect(headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
    expect(headers['x-request-id']).toBe('bin-commas');
    expect(lineOf('bin-commas')).toMatchObject({ reason: 'too_many_headers' });
  });
});

describe('binary metadata on a server whose HTTP/2 options set fewer header pairs', () => {
  const pairs = 50;
  let lower: SecureServer;

  beforeAll(async () => {
    lower = await startSecureServer((audit) => fluxguardInterceptors({ audit, timeouts: false }), {
      serverOptions: secureServerOptions(),
      register: (server) => {
        // grpc-js sets no `maxHeaderListPairs` today; one that did would make Node read fewer
        // header fields than `maxHeaderFields`, and the binary-values count must follow it.
        const made = server as unknown as { createHttp2Server: (this: unknown, ...args: unknown[]) => object };
        const original = made.createHttp2Server;
        made.createHttp2Server = function (this: unknown, ...args: unknown[]) {
          const http2Server = original.apply(this, args);
          const key = Object.getOwnPropertySymbols(http2Server).find((symbol) => symbol.description === 'options');
          if (key === undefined) throw new Error('this Node keeps its HTTP/2 server options elsewhere');
          (http2Server as Record<symbol, { maxHeaderListPairs?: number }>)[key] = {
            ...(http2Server as Record<symbol, object>)[key],
            maxHeaderListPairs: pairs,
          };
          return http2Server;
        };
        registerSecureService(server);
      },
    });
  });

  afterAll(() => lower.close());

  it('refuses binary values past that lower bound', async () => {
    const starts = handlerStarts.count;
    const { headers } = await lower.rawCall(op('Public'), {
      'x-commas-bin': joined(pairs + 1),
      'x-request-id': 'bin-lower',
    });
    expect(headers['grpc-status']).toBe(String(Status.RESOURCE_EXHAUSTED));
    expect(headers['x-request-id']).toBe('bin-lower');
    expect(handlerStarts.count).toBe(starts);
    expect(lower.lines().find((line) => line.requestId === 'bin-lower')).toMatchObject({ reason: 'too_many_headers' });
  });

  it('serves as many as that bound', async () => {
    const { headers } = await lower.rawCall(op('Public'), {
      'x-commas-bin': joined(pairs),
      'x-request-id': 'bin-lower-ok',
    });
    expect(headers['grpc-status']).toBeUndefined();
  });
});
