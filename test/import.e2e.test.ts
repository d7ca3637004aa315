// Imports from a URL the client gives, against both reference servers: the server fetches it
// through the outbound URL guard. A local HTTPS server (the test CA's certificate) stands in for
// a public one: the guard of these tests accepts 127.0.0.1 explicitly (allowAddresses), and
// refuses every other private or loopback address, as the reference servers' default guard
// refuses them all.
import { createServer, type Server } from 'node:https';
import type { LookupAddress } from 'node:dns';
import type { AddressInfo } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUrlGuard } from '@fluxguard/core';
import { IN_FLIGHT_BUDGET } from '@fluxguard/example-artifact-store';
import { sha256 } from './support/clients.js';
import { rawHttps } from './support/raw-https.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

const MODEL = Buffer.from('safetensors-ish model bytes');
const PICKLE = Buffer.from('80049510000000000000007d94288c016194680294752e', 'hex');
/** `pickle.dumps(os.system, protocol=4)`: it imports `posix.system` as it loads. */
const IMPORTING_PICKLE = Buffer.from('80049514000000000000008c05706f736978948c0673797374656d9493942e', 'hex');

let world: E2eEnvironment;
let origin: Server;
let base: string;
let fetched = 0;
/** Requests to `/slow` whose connection the importing server closed, by the time it did. */
const slowClosed: number[] = [];
/** Requests to `/pickle-then-more` whose connection the importing server closed. */
const pickleClosed: number[] = [];
let policyFile: string;
/** The deadline of an import in these tests: the slow origin never answers within it. */
const IMPORT_DEADLINE_MS = 800;

beforeAll(async () => {
  world = await createE2eEnvironment();
  origin = createServer(
    { cert: readFileSync(world.pki.serverCertFile), key: readFileSync(world.pki.serverKeyFile) },
    (req, res) => {
      fetched += 1;
      if (req.url === '/model.bin') res.end(MODEL);
      else if (req.url === '/pickle.bin') res.end(PICKLE);
      else if (req.url === '/pickle-then-more') {
        // A pickle that imports a name, then the origin holds the rest back for ever.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.write(IMPORTING_PICKLE);
        res.on('close', () => pickleClosed.push(performance.now()));
      } else if (req.url === '/gzip.bin') res.writeHead(200, { 'content-encoding': 'gzip' }).end(MODEL);
      else if (req.url === '/to-private') res.writeHead(302, { location: 'https://10.0.0.1/model.bin' }).end();
      else if (req.url?.startsWith('/to-nowhere') === true)
        res.writeHead(302, { location: 'https://admin:SECRETMARK-password@[bad/x' }).end();
      else if (req.url === '/slow') {
        // Sends headers and a first byte, then nothing: a slow upstream holding the handler.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.write('s');
        res.on('close', () => slowClosed.push(performance.now()));
      } else res.writeHead(404).end();
    },
  );
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  base = `https://127.0.0.1:${String((origin.address() as AddressInfo).port)}`;
  // The gRPC client sets a deadline of its own (10 s): the maximum brings it down.
  const rule = { defaultMs: IMPORT_DEADLINE_MS, maxMs: IMPORT_DEADLINE_MS };
  policyFile = world.writePolicy('import', (policy) => ({
    ...policy,
    timeouts: {
      ...policy.timeouts,
      rules: [
        ...policy.timeouts.rules,
        { operation: '/fluxguard.example.v1.ArtifactStore/ImportArtifact', ...rule },
        { operation: 'POST /v1/artifacts/*path', ...rule },
      ],
    },
  }));
});

afterAll(async () => {
  await new Promise((resolve) => origin.close(resolve));
  world.cleanup();
});

/**
 * The DNS of these tests: `unreachable.test` is a name whose address no connection can reach
 * (TCP to a multicast address fails inside connect() itself, ENETUNREACH, as it does on a host
 * with no route to a name's only address); no other name resolves.
 */
function lookup(hostname: string): Promise<readonly LookupAddress[]> {
  if (hostname === 'unreachable.test') return Promise.resolve([{ address: '224.0.0.1', family: 4 }]);
  return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }));
}

describe.each(TRANSPORTS)('importing from a URL over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, {
      env: { FLUXGUARD_POLICY: policyFile },
      urlGuard: createUrlGuard({ ca: world.pki.ca, allowAddresses: ['127.0.0.1', '224.0.0.1'], lookup }),
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('stores what the URL serves when its SHA-256 matches', async () => {
    const imported = await t.client.importFrom('imports/model.bin', `${base}/model.bin`, sha256(MODEL));
    expect(imported.ok, imported.exposed).toBe(true);
    expect(imported.value).toMatchObject({ path: 'imports/model.bin', sha256: sha256(MODEL), size: MODEL.length });
    const read = await t.client.get('imports/model.bin');
    expect((read.value as { content: Buffer }).content.equals(MODEL)).toBe(true);
  });

  it.each([
    ['http://', () => `${base.replace('https:', 'http:')}/model.bin`, 'url_scheme_refused'],
    ['another loopback address', () => 'https://127.0.0.2/model.bin', 'url_address_refused'],
    ['IPv6 loopback', () => 'https://[::1]/model.bin', 'url_address_refused'],
    ['cloud metadata', () => 'https://169.254.169.254/latest/meta-data/', 'url_address_refused'],
    ['a decimal spelling of loopback', () => 'https://2130706434/model.bin', 'url_address_refused'],
    ['a redirect to a private address', () => `${base}/to-private`, 'url_address_refused'],
    ['a redirect to what is no URL', () => `${base}/to-nowhere?access_token=SECRETMARK-query`, 'url_fetch_failed'],
  ])('refuses %s as the client’s invalid argument, the reason in the log only', async (_label, url, reason) => {
    const before = fetched;
    const outcome = await t.client.importFrom('imports/refused.bin', url(), sha256(MODEL));
    expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(outcome.exposed).not.toContain(reason);
    expect(t.log.textFor(outcome.requestId ?? '')).toContain(`"reason":"${reason}"`);
    expect(JSON.stringify(t.log.lines)).not.toContain('SECRETMARK');
    // Only the redirect rows reach the origin (once); no refused address is ever connected to.
    expect(fetched - before).toBeLessThanOrEqual(1);
  });

  it('refuses a URL past its length as the same invalid argument on both transports, never fetched', async () => {
    // 9,000 characters: within a request message (16 KiB) and, since the HTTP body limit is
    // the same, within a body; the schema's 2,048 refuses it on both. An 8 KiB body limit made
    // it a 413 over HTTP where gRPC said INVALID_ARGUMENT.
    const before = fetched;
    const outcome = await t.client.importFrom('imports/long.bin', `${base}/${'a'.repeat(9_000)}`, sha256(MODEL));
    expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(fetched).toBe(before);
  });

  it('refuses a name whose connection fails at once as the client’s invalid argument, and serves on', async () => {
    for (let i = 0; i < 3; i++) {
      const outcome = await t.client.importFrom(
        'imports/unreachable.bin',
        'https://unreachable.test/model.bin',
        sha256(MODEL),
      );
      expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
      expect(t.log.textFor(outcome.requestId ?? '')).toContain('"reason":"url_fetch_failed"');
    }
    // The server is still there: a fetch that works is served.
    const imported = await t.client.importFrom('imports/after.bin', `${base}/model.bin`, sha256(MODEL));
    expect(imported.ok, imported.exposed).toBe(true);
  });

  it('ends an import held by a slow origin at its deadline: the client is told, the handler’s signal stops the fetch, the log says so', async () => {
    const closedBefore = slowClosed.length;
    const started = performance.now();
    const outcome = await t.client.importFrom('imports/slow.bin', `${base}/slow`, sha256(MODEL));
    const tookMs = performance.now() - started;
    expect(outcome.status).toBe(t.client.statusOf({ code: 'deadline_exceeded' }));
    expect(outcome.requestId).toMatch(/^[A-Za-z0-9._-]{1,200}$/);
    // The deadline answered, not the URL guard's own (much longer) timeout.
    expect(tookMs).toBeLessThan(IMPORT_DEADLINE_MS + 10_000);
    // The handler's signal aborted the outbound request: the origin sees its connection closed.
    await expect.poll(() => slowClosed.length - closedBefore, { timeout: 5_000 }).toBe(1);
    const lines = t.log.lines.filter((l) => l.requestId === outcome.requestId && l.code === 'deadline_exceeded');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reason: 'deadline_exceeded' });
    expect(
      readdirSync(t.dataDir, { recursive: true })
        .map(String)
        .filter((f) => f.includes('slow')),
    ).toEqual([]);
    console.log(
      `${transport}: an import held by a slow origin was answered after ${tookMs.toFixed(0)} ms (deadline ${String(IMPORT_DEADLINE_MS)} ms)`,
    );
  });

  it('stores an import as it streams: a pickle in its first bytes is refused while the origin still holds the rest', async () => {
    const closedBefore = pickleClosed.length;
    const outcome = await t.client.importFrom(
      'imports/streamed.bin',
      `${base}/pickle-then-more`,
      sha256(IMPORTING_PICKLE),
    );
    // Gathered whole before the check, the body would never have ended: the deadline would answer.
    expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(t.log.textFor(outcome.requestId ?? '')).toContain('"reason":"content_refused"');
    // The refusal stopped the read, and that ended the request.
    await expect.poll(() => pickleClosed.length - closedBefore, { timeout: 5_000 }).toBe(1);
    expect(
      readdirSync(t.dataDir, { recursive: true })
        .map(String)
        .filter((f) => f.includes('streamed') || f.includes('.upload-')),
    ).toEqual([]);
  });

  it('holds one caller to its part of the imports in flight: more are refused at once', async () => {
    const share = IN_FLIGHT_BUDGET.maxInFlightPerOperation['POST /v1/artifacts/*path'];
    const outcomes = await Promise.all(
      Array.from({ length: share.perCaller + 2 }, (_, i) =>
        t.client.importFrom(`imports/held-${String(i)}.bin`, `${base}/slow`, sha256(MODEL)),
      ),
    );
    const statuses = outcomes.map((o) => o.status);
    // Each held import ends at its deadline; those over the caller's part never start a fetch.
    expect(statuses.filter((s) => s === t.client.statusOf({ code: 'deadline_exceeded' }))).toHaveLength(
      share.perCaller,
    );
    expect(statuses.filter((s) => s === t.client.statusOf({ code: 'unavailable' }))).toHaveLength(2);
    // A slot comes back once its handler has stopped (the aborted fetch, the temporary file
    // removed), a moment after its client was told.
    await expect
      .poll(async () => (await t.client.importFrom('imports/after.bin', `${base}/model.bin`, sha256(MODEL))).ok, {
        timeout: 5_000,
      })
      .toBe(true);
  });

  it('refuses an answer in a content coding, which would be stored unread by any check', async () => {
    const outcome = await t.client.importFrom('imports/coded.bin', `${base}/gzip.bin`, sha256(MODEL));
    expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(t.log.textFor(outcome.requestId ?? '')).toContain('"reason":"url_content_coded"');
  });

  it.each([
    ['a refused extension', 'imports/model.pt', sha256(MODEL), 'extension_refused'],
    ['a name reserved for uploads in progress', 'imports/.upload-x/model.bin', sha256(MODEL), 'app.reserved_name'],
  ])('refuses %s before it fetches anything', async (_label, path, digest, reason) => {
    const before = fetched;
    const outcome = await t.client.importFrom(path, `${base}/model.bin`, digest);
    expect(outcome.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(t.log.textFor(outcome.requestId ?? '')).toContain(`"reason":"${reason}"`);
    expect(fetched).toBe(before);
  });

  it('keeps nothing when the digest does not match, or the content is a pickle', async () => {
    const mismatch = await t.client.importFrom('imports/wrong.bin', `${base}/model.bin`, sha256('other'));
    expect(mismatch.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    const pickle = await t.client.importFrom('imports/pickle.bin', `${base}/pickle.bin`, sha256(PICKLE));
    expect(pickle.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
    expect(t.log.textFor(pickle.requestId ?? '')).toContain('"reason":"content_refused"');
    const kept = readdirSync(t.dataDir, { recursive: true }).map(String);
    expect(kept.filter((f) => f.includes('wrong') || f.includes('pickle'))).toEqual([]);
  });
});

describe('the JSON body of an import over HTTP', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('http', world, {
      urlGuard: createUrlGuard({ ca: world.pki.ca, allowAddresses: ['127.0.0.1'] }),
    });
  });
  afterAll(async () => {
    await t.close();
  });

  async function post(
    body: string | Buffer,
    contentType = 'application/json',
  ): Promise<{ head: string; json: Record<string, unknown> }> {
    const token = await world.token('e2e-writer', ['artifacts.writer']);
    const answer = await rawHttps(
      t.port,
      world,
      Buffer.concat([
        Buffer.from(
          `POST /v1/artifacts/imports/x.bin:import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n` +
            `Content-Type: ${contentType}\r\nContent-Length: ${String(Buffer.byteLength(body))}\r\nConnection: close\r\n\r\n`,
        ),
        Buffer.from(body),
      ]),
    );
    return { head: answer, json: JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown> };
  }

  it('refuses a __proto__ key before any handler or schema sees it; Object.prototype is unchanged', async () => {
    const { head, json } = await post(
      `{"url":"${base}/model.bin","sha256":"${sha256(MODEL)}","__proto__":{"polluted":true}}`,
    );
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(json).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect(t.log.textFor(String(json.requestId))).toContain('"reason":"json_forbidden_key"');
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('refuses a url given twice, which JSON.parse would read as its second and a gateway as its first', async () => {
    const { head, json } = await post(
      `{"url":"${base}/model.bin","sha256":"${sha256(MODEL)}","url":"http://169.254.169.254/latest/meta-data"}`,
    );
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(json).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect(t.log.textFor(String(json.requestId))).toContain('"reason":"json_duplicate_key"');
  });

  it('refuses the url given twice in UTF-16, where a check of the bytes as UTF-8 would see no key', async () => {
    const text = `{"url":"${base}/model.bin","sha256":"${sha256(MODEL)}","url":"http://169.254.169.254/latest/meta-data"}`;
    const { head, json } = await post(Buffer.from(text, 'utf16le').swap16(), 'application/json; charset=utf-16be');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(json).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect(t.log.textFor(String(json.requestId))).toContain('"reason":"body_charset_unsupported"');
  });

  it('names the field a schema refuses and the rule, never the value', async () => {
    const { head, json } = await post(`{"url":"${base}/model.bin","sha256":"NOT-A-DIGEST-SECRET"}`);
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(json).toMatchObject({ code: 'invalid_argument', field: 'body.sha256' });
    expect(String(json.detail)).toContain('must be 64 hex digits');
    expect(head).not.toContain('SECRET');
  });
});
