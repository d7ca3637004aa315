import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { deflateRawSync, gzipSync } from 'node:zlib';
import { tar } from '@fluxguard/test-support/archives';
import { Metadata } from '@grpc/grpc-js';
import { metadataHeaders } from '@fluxguard/grpc';
import {
  compileRbac,
  createHeaderLimits,
  createMemoryRateLimitStore,
  createUploadCheck,
  createPathResolver,
  resolveRequestId,
  type CallInfo,
  type Principal,
  type RbacRules,
} from '@fluxguard/core';
import type { BenchConfig } from './config.js';
import { HTTP_PATH, HTTP_RULES, READER_ROLE, TokenMinter, benchGuard, nullAudit, type SigningKey } from './fixtures.js';
import { formatCount, median, table } from './stats.js';

interface MicroCase {
  readonly name: string;
  /** Synchronous cases return their result; asynchronous ones a promise of it. */
  readonly run: () => unknown;
  readonly async: boolean;
}

// Every result feeds this, so that no call can be optimized away as dead code.
let sink = 0;

function consume(value: unknown): void {
  sink = (sink + (value === undefined ? 1 : 2)) | 0;
}

async function runFor(c: MicroCase, ms: number): Promise<number> {
  const deadline = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
  const started = process.hrtime.bigint();
  let ops = 0;
  // Check the clock every 64 calls: hrtime itself costs about as much as the cheapest case.
  for (;;) {
    for (let i = 0; i < 64; i++) consume(c.async ? await c.run() : c.run());
    ops += 64;
    if (process.hrtime.bigint() >= deadline) break;
  }
  return ops / (Number(process.hrtime.bigint() - started) / 1e9);
}

function headerReader(headers: Record<string, string>): CallInfo['headers'] {
  return {
    get: (name) => headers[name.toLowerCase()],
    getAll: (name) => {
      const value = headers[name.toLowerCase()];
      return value === undefined ? [] : [value];
    },
  };
}

function callInfo(operation: string, headers: Record<string, string>): CallInfo {
  return {
    transport: 'http',
    operation,
    requestId: 'bench-request',
    peerAddress: '127.0.0.1',
    peerCertificate: undefined,
    headers: headerReader(headers),
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

/** 200 rules, the measured one last: how RBAC lookup scales with the size of a policy. */
function manyRules(): RbacRules {
  const rules: Record<string, { anyRoles: string[] }> = {};
  for (let i = 0; i < 199; i++) rules[`GET /v1/resource${i}/:id`] = { anyRoles: [`resource${i}.reader`] };
  rules['GET /v1/items/:id'] = { anyRoles: [READER_ROLE] };
  return rules;
}

/**
 * 256 KiB of ZIP local headers back to back, each with a 2-byte name: the most headers a scan
 * reads without refusing (headers nested in the names of others are refused past a few).
 */
function madeUpZipHeaders(): Buffer {
  const header = Buffer.alloc(32, 0x41);
  header.writeUInt32LE(0x04034b50, 0);
  header.writeUInt16LE(2, 26);
  header.writeUInt16LE(0, 28);
  return Buffer.concat(Array.from({ length: 8_192 }, () => header));
}

/**
 * 256 KiB of ZIP local headers, each followed by the start of a dynamic deflate block (its code
 * lengths, 40 bytes, filler and the next header, 160 bytes on): every entry is read as deflated
 * too, and a dynamic block's code lengths are the most a made-up entry makes that reading cost.
 * Closer together, they are refused (past 2 code lengths a byte).
 */
function madeUpDeflatedEntries(): Buffer {
  const header = Buffer.alloc(31, 0x41);
  header.writeUInt32LE(0x04034b50, 0);
  header.writeUInt16LE(1, 26);
  header.writeUInt16LE(0, 28);
  const words = Array.from(
    { length: 400 },
    (_, i) => `${['lorem', 'ipsum', 'dolor', 'sit', 'amet'][i % 5] ?? ''}${String(i)}`,
  );
  const start = deflateRawSync(words.join(' '), { level: 9 }).subarray(0, 40);
  const entry = Buffer.concat([header, start, Buffer.alloc(160 - header.length - start.length, 0x41)]);
  return Buffer.concat(Array.from({ length: Math.ceil((256 * 1024) / entry.length) }, () => entry));
}

/**
 * 256 KiB of ZIP local headers, each followed by a deflated NumPy header that says it is 10 KB
 * long (all spaces past its type) and filler to the next header, 2,600 bytes on: every head is
 * inflated to its header's end, about as many of them as the upload may claim (4 bytes of longer
 * headers for each byte).
 */
function madeUpLongNumpyHeads(): Buffer {
  const header = Buffer.alloc(31, 0x41);
  header.writeUInt32LE(0x04034b50, 0);
  header.writeUInt16LE(1, 26);
  header.writeUInt16LE(0, 28);
  const text = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }".padEnd(9_989, ' ') + '\n';
  const length = Buffer.alloc(2);
  length.writeUInt16LE(text.length);
  const deflated = deflateRawSync(
    Buffer.concat([Buffer.from('\x93NUMPY\x01\x00', 'latin1'), length, Buffer.from(text)]),
  );
  const entry = Buffer.concat([header, deflated, Buffer.alloc(2_600 - header.length - deflated.length, 0x20)]);
  return Buffer.concat(Array.from({ length: Math.ceil((256 * 1024) / entry.length) }, () => entry));
}

/** `data` in pieces of `size` bytes, cut once: cutting them in the measured loop would cost more than checking them. */
function pieces(data: Buffer, size: number): Buffer[] {
  const cut: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) cut.push(data.subarray(at, at + size));
  return cut;
}

/** One upload through the default upload check, piece by piece; it passes. */
function checkUpload(upload: readonly Buffer[], sha256: string): string {
  const check = createUploadCheck({ refusedExtensions: [] }).begin({ name: 'model.bin', sha256 });
  for (const piece of upload) check.update(piece);
  return check.finish();
}

export async function runMicro(config: BenchConfig, key: SigningKey): Promise<void> {
  const audit = nullAudit();
  const minter = new TokenMinter(key);
  const token = minter.next();
  const authorization = { authorization: `Bearer ${token}` };
  const guard = benchGuard(audit, key.jwks, HTTP_RULES);
  const uncachedGuard = benchGuard(audit, key.jwks, HTTP_RULES, 0);
  const cachedCall = callInfo(`GET ${HTTP_PATH}`, authorization);
  const publicCall = callInfo('GET /healthz', {});
  await guard.check(cachedCall); // fills the verified-token cache
  // A thousand clients, each with its own token, cached from its second verification on.
  const clientCalls = minter.many(1_000).map((t) => callInfo(`GET ${HTTP_PATH}`, { authorization: `Bearer ${t}` }));
  for (let round = 0; round < 2; round++) for (const call of clientCalls) await guard.check(call);
  let nextClient = 0;
  const root = mkdtempSync(join(tmpdir(), 'fluxguard-bench-'));
  const paths = createPathResolver({ root });
  const rbac = compileRbac(HTTP_RULES);
  const bigRbac = compileRbac(manyRules());
  const principal: Principal = {
    subject: 'bench-user',
    roles: [READER_ROLE],
    scopes: [],
    claims: {},
    certificate: undefined,
    authenticatedBy: 'jwt',
  };
  const operation = `GET ${HTTP_PATH}`;
  // A rule holding its default 100 000 keys, so that every new key evicts the one used longest ago.
  const fullRule = createMemoryRateLimitStore().limiter({
    name: 'flood',
    points: 10,
    durationSeconds: 3600,
    storeFailure: 'open',
  });
  let keys = 0;
  // The memory store answers at once: nothing to await.
  while (keys < 100_000) void fullRule.consume(`hdr:key-${String(keys++)}`, 1);

  const plain = Buffer.alloc(64 * 1024, 0x20);
  const headers = madeUpZipHeaders();
  const plainSha = createHash('sha256').update(plain).digest('hex');
  const headersSha = createHash('sha256').update(headers).digest('hex');
  const deflatedEntries = madeUpDeflatedEntries();
  const deflatedEntriesSha = createHash('sha256').update(deflatedEntries).digest('hex');
  const longHeads = madeUpLongNumpyHeads();
  const longHeadsSha = createHash('sha256').update(longHeads).digest('hex');
  const plainBytes = pieces(plain, 1);
  // A .tar.gz of 70 KB, a member of rows of numbers: the content check inflates a tar and reads it to its end.
  const rows = Array.from({ length: 17_000 }, (_, i) => `${String(i)},${String((i * 7919) % 10_007)}\n`).join('');
  const gzipped = gzipSync(tar([{ name: 'rows.csv', data: Buffer.from(rows) }]));
  const gzippedSha = createHash('sha256').update(gzipped).digest('hex');
  const gzippedBytes = pieces(gzipped, 1);
  const headerBytes = pieces(headers, 1);

  const headerLimits = createHeaderLimits();
  // What a gRPC call pays before its controls run and in the header limits: grpc-js makes its
  // metadata from the request's headers, the limits count and size the entries.
  const limitMetadata = (headers: Record<string, string>): boolean => {
    const call = { headers: metadataHeaders(Metadata.fromHttp2Headers(headers)) } as unknown as CallInfo;
    try {
      void headerLimits.onStart?.(call, undefined as never);
      return true;
    } catch {
      return false;
    }
  };
  const oneByteEntries = (count: number): Record<string, string> =>
    Object.fromEntries(Array.from({ length: count }, (_, i) => [`x-e${String(i)}`, 'v']));
  const entries150 = oneByteEntries(150);
  const entries900 = oneByteEntries(900);
  const servedEntries = {
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': 'grpc-node-js/1.14.7',
    'grpc-accept-encoding': 'identity,deflate,gzip',
    'accept-encoding': 'identity',
    authorization: `Bearer ${'e'.repeat(300)}`,
    'grpc-timeout': '5S',
    'x-request-id': 'req-0123456789abcdef',
  };

  const cases: MicroCase[] = [
    { name: 'guard.check, cached token', async: true, run: () => guard.check(cachedCall) },
    { name: 'guard.check, public operation (no token)', async: true, run: () => guard.check(publicCall) },
    {
      name: 'guard.check, token cache off (full ES256 verify)',
      async: true,
      run: () => uncachedGuard.check(cachedCall),
    },
    {
      name: 'guard.check, 1 000 cached tokens in turn',
      async: true,
      run: () => guard.check(clientCalls[nextClient++ % clientCalls.length] ?? cachedCall),
    },
    {
      name: 'header limits, gRPC metadata of a served call (8 entries)',
      async: false,
      run: () => limitMetadata(servedEntries),
    },
    {
      name: 'header limits, gRPC metadata of 150 entries (refused)',
      async: false,
      run: () => limitMetadata(entries150),
    },
    {
      name: 'header limits, gRPC metadata of 900 entries (refused)',
      async: false,
      run: () => limitMetadata(entries900),
    },
    { name: 'resolveRequestId, client id kept', async: false, run: () => resolveRequestId('req-0123456789abcdef') },
    { name: 'resolveRequestId, none sent (new UUID)', async: false, run: () => resolveRequestId(undefined) },
    { name: 'createPathResolver().resolve', async: false, run: () => paths.resolve('models/v1/weights.bin') },
    { name: 'compileRbac(10 rules).authorize', async: false, run: () => rbac.authorize(operation, principal) },
    { name: 'compileRbac(200 rules).authorize', async: false, run: () => bigRbac.authorize(operation, principal) },
    { name: 'memory rate limit, full rule, a key in use', async: false, run: () => fullRule.consume('hdr:key-7', 1) },
    {
      name: 'memory rate limit, full rule, a new key each call',
      async: false,
      run: () => fullRule.consume(`hdr:key-${String(keys++)}`, 1),
    },
    { name: 'upload check, 64 KiB in one chunk', async: false, run: () => checkUpload([plain], plainSha) },
    { name: 'upload check, 64 KiB a byte at a time', async: false, run: () => checkUpload(plainBytes, plainSha) },
    {
      name: 'upload check, a .tar.gz of 70 KB a byte at a time',
      async: false,
      run: () => checkUpload(gzippedBytes, gzippedSha),
    },
    {
      name: 'upload check, 256 KiB of made-up ZIP headers in one chunk',
      async: false,
      run: () => checkUpload([headers], headersSha),
    },
    {
      name: 'upload check, 256 KiB of made-up ZIP headers a byte at a time',
      async: false,
      run: () => checkUpload(headerBytes, headersSha),
    },
    {
      name: 'upload check, 256 KiB of made-up ZIP entries read as deflated, in one chunk',
      async: false,
      run: () => checkUpload([deflatedEntries], deflatedEntriesSha),
    },
    {
      name: 'upload check, 256 KiB of made-up ZIP entries with 10 KB NumPy headers, deflated, in one chunk',
      async: false,
      run: () => checkUpload([longHeads], longHeadsSha),
    },
  ];

  try {
    const rows: string[][] = [];
    for (const c of cases) {
      await runFor(c, Math.min(config.microMs, 100)); // warm-up: JIT, caches
      const rates: number[] = [];
      for (let r = 0; r < config.rounds; r++) rates.push(await runFor(c, config.microMs));
      const opsPerSecond = median(rates);
      rows.push([c.name, formatCount(opsPerSecond), (1e9 / opsPerSecond).toFixed(0)]);
    }
    console.log('\n## core micro-benchmarks (no server, one thread)');
    console.log(`   ${config.rounds} rounds x ${config.microMs} ms per case, median of rounds`);
    console.log(table(['operation', 'ops/s', 'ns/op'], rows));
    if (sink === 42) console.log(''); // keeps `sink` observable
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
