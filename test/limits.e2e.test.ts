// Size limits end to end against both reference servers: a 200 MiB upload to an operation
// limited to 10 MiB is refused once the limit is passed, with the server's memory growing by a
// bounded amount; a declared Content-Length over the limit is refused before any body byte;
// a gRPC message over its limit and a stream with too many messages are refused. The limits
// come from a copy of the reference policy with a 10 MiB upload limit.
import { readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/clients.js';
import { rawHttps } from './support/raw-https.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

const MiB = 1024 * 1024;
const LIMIT = 10 * MiB;

let world: E2eEnvironment;
let policyFile: string;

beforeAll(async () => {
  world = await createE2eEnvironment();
  policyFile = world.writePolicy('limits', (reference) => ({
    ...reference,
    limits: {
      maxBodyBytes: 65_536,
      maxMessageBytes: 65_536,
      maxMessages: 1,
      rules: [
        {
          operation: '/fluxguard.example.v1.ArtifactStore/UploadArtifact',
          maxBodyBytes: LIMIT,
          maxMessageBytes: 2 * MiB,
          maxMessages: 50,
        },
        { operation: 'PUT /v1/artifacts/*path', maxBodyBytes: LIMIT },
      ],
    },
  }));
});

afterAll(() => {
  world.cleanup();
});

/** Heap and buffers outside it: what holding an upload in memory would grow. */
function memory(): number {
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

describe.each(TRANSPORTS)('input limits over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: policyFile } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('refuses a 200 MiB upload once 10 MiB have arrived, holding a bounded amount of memory, and keeps nothing', async () => {
    // One 1 MiB buffer sent 200 times: the client itself holds little.
    const part = Buffer.alloc(MiB, 7);
    const parts = Array.from({ length: 200 }, () => part);
    global.gc?.();
    const before = memory();
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, memory());
    }, 5);
    const outcome = await t.client
      // A short gap between parts: the client does not pile up its own unsent megabytes, so the
      // memory measured is what the server holds.
      .uploadPaced('big/model.bin', sha256('not the content'), parts, { gapMs: 2, deadlineMs: 30_000 })
      .finally(() => {
        clearInterval(sampler);
      });
    expect(outcome.ok).toBe(false);
    expect(outcome.status).toBe(t.client.statusOf({ code: 'payload_too_large' }));
    // Far below the 200 MiB sent at it: the 10 MiB that arrived before the refusal, what client
    // and server (one process here) buffer on loopback, and garbage not yet collected.
    expect(peak - before).toBeLessThan(64 * MiB);
    const line = t.log.lines.find((l) => l.requestId === outcome.requestId && l.event === 'request.denied');
    expect(line).toMatchObject({ code: 'payload_too_large', reason: 'body_too_large' });
    // The handler removes its temporary file once its signal aborts, just after the answer.
    const left = () => readdirSync(t.dataDir, { recursive: true }).filter((f) => String(f).includes('model'));
    for (let i = 0; i < 50 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(left()).toEqual([]);
  });

  it('accepts an upload just under the limit', async () => {
    const content = Buffer.alloc(LIMIT - 4096, 3);
    const parts = Array.from({ length: 10 }, (_, i) =>
      content.subarray(i * (content.length / 10), (i + 1) * (content.length / 10)),
    );
    const outcome = await t.client.upload('big/fits.bin', sha256(content), parts);
    expect(outcome.ok, outcome.exposed).toBe(true);
  });

  if (transport === 'grpc') {
    it('refuses one gRPC message over its limit, and a stream of too many messages', async () => {
      const tooBig = await t.client.upload('big/one.bin', sha256('x'), [Buffer.alloc(2 * MiB + 1)]);
      expect(tooBig.status).toBe(t.client.statusOf({ code: 'payload_too_large' }));
      const many = await t.client.upload(
        'big/many.bin',
        sha256('x'),
        Array.from({ length: 60 }, () => Buffer.from('x')),
      );
      expect(many.status).toBe(t.client.statusOf({ code: 'payload_too_large' }));
      const reasons = t.log.lines
        .filter((l) => l.requestId === tooBig.requestId || l.requestId === many.requestId)
        .map((l) => l.reason);
      expect(reasons).toEqual(expect.arrayContaining(['message_too_large', 'too_many_messages']));
    });
  } else {
    it('refuses a declared Content-Length over the limit before a byte of the body is sent', async () => {
      const token = await world.token('e2e-admin', ['artifacts.admin']);
      // No body follows the head: the answer must come before any body byte.
      const head = await rawHttps(
        t.port,
        world,
        [
          'PUT /v1/artifacts/big/declared.bin HTTP/1.1',
          'Host: localhost',
          `Authorization: Bearer ${token}`,
          `Repr-Digest: sha-256=:${Buffer.from(sha256('x'), 'hex').toString('base64')}:`,
          'Content-Type: application/octet-stream',
          'Content-Length: 209715200',
          '',
          '',
        ].join('\r\n'),
        { untilHead: true },
      );
      expect(head).toMatch(/^HTTP\/1\.1 413 /);
      expect(head.toLowerCase()).toContain('connection: close');
      expect(t.log.lines.some((l) => l.reason === 'declared_too_large')).toBe(true);
    });

    it('refuses a compressed body before a byte of it is read: the limits count what arrives, a parser inflates it', async () => {
      // gRPC limits a message once decompressed (the compressed health checks of dos.e2e); on
      // HTTP a body parser inflated 50 gzip bytes to 5,000 past a 100-byte limit.
      const token = await world.token('e2e-admin', ['artifacts.admin']);
      // An import's JSON: jsonBody (express.json) would inflate and parse it.
      const body = gzipSync(JSON.stringify({ url: 'https://origin.example/m.bin', sha256: sha256('x') }));
      const answer = await rawHttps(
        t.port,
        world,
        [
          'POST /v1/artifacts/big/coded.bin:import HTTP/1.1',
          'Host: localhost',
          `Authorization: Bearer ${token}`,
          'Content-Type: application/json',
          'Content-Encoding: gzip',
          `Content-Length: ${String(body.length)}`,
          '',
          '',
        ].join('\r\n'),
        { untilHead: true },
      );
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(t.log.lines.some((l) => l.reason === 'body_encoding_unsupported')).toBe(true);
    });
  }
});
