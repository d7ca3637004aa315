// Floods of headers and metadata against both reference servers: 2,000 HTTP headers, 1,000
// gRPC metadata entries, a 100 KB value. Each is refused with a clear status, the server stays up
// and serves the next client.
import { connect as http2Connect, type IncomingHttpHeaders } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawGrpcStream } from './support/raw-http2.js';
import { rawHttps } from './support/raw-https.js';
import {
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

describe('header floods over HTTP', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('http', world);
  });
  afterAll(async () => {
    await t.close();
  });

  const rawHead = (headers: string): Promise<string> =>
    rawHttps(t.port, world, `GET /healthz HTTP/1.1\r\nHost: localhost\r\n${headers}Connection: close\r\n\r\n`);

  it('refuses 2,000 headers (431 from Node 24, else 413 from the header limits) and keeps serving', async () => {
    const head = await rawHead(Array.from({ length: 2000 }, (_, i) => `x-h${String(i)}: v\r\n`).join(''));
    expect(head).toMatch(/^HTTP\/1\.1 (413|431) /);
    if (head.startsWith('HTTP/1.1 413')) expect(t.log.lines.some((l) => l.reason === 'too_many_headers')).toBe(true);
    expect((await t.client.health()).ok).toBe(true);
  });

  it('refuses 150 headers, within what Node accepts, with 413 naming the headers', async () => {
    const head = await rawHead(Array.from({ length: 150 }, (_, i) => `x-h${String(i)}: v\r\n`).join(''));
    expect(head).toMatch(/^HTTP\/1\.1 413 /);
    expect(head).toContain('"field":"headers"');
    expect(t.log.lines.some((l) => l.reason === 'too_many_headers')).toBe(true);
  });

  it('refuses a 100 KB value (431: Node, before any middleware) and keeps serving', async () => {
    const head = await rawHead(`x-big: ${'a'.repeat(100 * 1024)}\r\n`);
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect((await t.client.health()).ok).toBe(true);
  });
});

describe('metadata floods over gRPC', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('grpc', world);
  });
  afterAll(async () => {
    await t.close();
  });

  it.each([
    // grpc-js refuses this many entries itself (its metadata size limit), below the interceptors.
    ['1,000 metadata entries', Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`x-m${String(i)}`, 'v']))],
    // This one reaches the interceptors: the header limits refuse it, with a request id.
    ['a 100 KB value', { 'x-big': 'a'.repeat(100 * 1024) }],
    ['150 entries', Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`x-m${String(i)}`, 'v']))],
  ])('refuses %s with RESOURCE_EXHAUSTED and keeps serving', async (_label, metadata) => {
    const outcome = await t.client.getWithHeaders('any/thing.txt', metadata);
    expect(outcome.status).toBe(t.client.statusOf({ code: 'payload_too_large' }));
    expect((await t.client.health()).ok).toBe(true);
  });

  it('refuses a 20 KB value under the metadata key __proto__ too', async () => {
    // grpc-js's toJSON() puts metadata into a plain object, where this key sets the prototype
    // instead of adding an entry; grpc-js's own client drops it, so the call is made by hand.
    const status = async (metadata: Record<string, string>): Promise<string | undefined> => {
      const session = http2Connect(`https://127.0.0.1:${String(t.port)}`, {
        ca: world.pki.ca,
        servername: 'localhost',
      });
      session.on('error', () => undefined);
      try {
        const stream = rawGrpcStream(session, '/grpc.health.v1.Health/Check', metadata);
        let answer: IncomingHttpHeaders = {};
        stream.on('response', (headers) => (answer = { ...answer, ...headers }));
        stream.on('trailers', (trailers: IncomingHttpHeaders) => (answer = { ...answer, ...trailers }));
        stream.resume();
        stream.end(Buffer.alloc(5)); // one empty message
        await new Promise((resolve) => stream.once('close', resolve));
        const value = answer['grpc-status'];
        return typeof value === 'string' ? value : `reset ${String(stream.rstCode)}`;
      } finally {
        session.destroy();
      }
    };
    expect(await status({ ['__proto__']: 'a' })).toBe('0');
    expect(await status({ ['__proto__']: 'a'.repeat(20 * 1024) })).toBe(
      String(t.client.statusOf({ code: 'payload_too_large' })),
    );
  });
});
