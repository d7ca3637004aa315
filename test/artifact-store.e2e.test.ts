import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { deflateSync, gzipSync } from 'node:zlib';
import { tarMember } from '@fluxguard/test-support/archives';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_TOO_SLOW, sha256, type Expected, type Outcome } from './support/clients.js';
import { expectNoLeak } from './support/leaks.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * The end-to-end scenario table: every row runs against the gRPC and the HTTP reference
 * server with real clients. Later controls add rows here; a row describes one call and what
 * must come back, and the table checks, for every failure, that nothing internal leaked.
 */
interface Scenario {
  readonly name: string;
  /** gRPC call kind exercised, so the table can prove it covers all four. */
  readonly kind: 'unary' | 'server-streaming' | 'client-streaming' | 'none';
  readonly act: (t: TransportUnderTest) => Promise<Outcome>;
  /** A failure the call must end in; omitted for a success. */
  readonly expect?: Expected;
  /** Extra checks on the outcome. */
  readonly check?: (outcome: Outcome, t: TransportUnderTest) => void | Promise<void>;
}

const HELLO = Buffer.from('hello, artifact');

/**
 * Waits (up to a second: a refusal by a control can reach the client before the store has
 * cleaned up) for nothing under `relative` of the data directory to be left, not even the
 * directories a refused upload made on its way.
 */
async function expectNothingLeft(t: TransportUnderTest, relative: string): Promise<void> {
  const at = join(t.dataDir, relative);
  for (let i = 0; i < 50 && existsSync(at); i++) await new Promise((r) => setTimeout(r, 20));
  expect(existsSync(at) ? readdirSync(at, { recursive: true }) : 'nothing').toBe('nothing');
}

/** Python's pickle.dumps(None, protocol=4): data only, nothing imported. */
const NONE_PICKLE = Buffer.from('80049500000000000000004e2e', 'hex');
/** Python's pickle.dumps(os.system, protocol=4): loading it imports posix.system. */
const IMPORTING_PICKLE = Buffer.from('80049514000000000000008c05706f736978948c0673797374656d9493942e', 'hex');

/** An upload its content gets refused (`content_refused` or `reason`), of which nothing is kept. */
function contentRefused(what: string, path: string, chunks: readonly Buffer[], reason = 'content_refused'): Scenario {
  return {
    name: `${what} is refused by its content, and nothing is kept`,
    kind: 'client-streaming',
    act: (t) => t.client.upload(path, sha256(Buffer.concat(chunks)), chunks),
    expect: { code: 'invalid_argument' },
    check: async (o, t) => {
      expect(t.log.textFor(o.requestId ?? '')).toContain(`"reason":"${reason}"`);
      await expectNothingLeft(t, 'uploads');
    },
  };
}

const scenarios: readonly Scenario[] = [
  {
    name: 'health is served',
    kind: 'unary',
    act: (t) => t.client.health(),
    check: (o) => {
      expect(o.value).toBe('SERVING');
    },
  },
  {
    name: 'upload stores an artifact whose digest matches',
    kind: 'client-streaming',
    act: (t) => t.client.upload('models/hello.txt', sha256(HELLO), [HELLO.subarray(0, 5), HELLO.subarray(5)]),
    check: (o) => {
      expect(o.value).toEqual({ path: 'models/hello.txt', sha256: sha256(HELLO), size: HELLO.length });
    },
  },
  {
    name: 'get returns the bytes that were uploaded',
    kind: 'unary',
    act: async (t) => {
      await t.client.upload('models/get.txt', sha256(HELLO), [HELLO]);
      return t.client.get('models/get.txt');
    },
    check: (o) => {
      expect((o.value as { content: Buffer }).content.equals(HELLO)).toBe(true);
    },
  },
  {
    name: 'list streams the artifacts under a prefix',
    kind: 'server-streaming',
    act: async (t) => {
      await t.client.upload('list/a.txt', sha256('a'), [Buffer.from('a')]);
      await t.client.upload('list/b.txt', sha256('bb'), [Buffer.from('bb')]);
      await t.client.upload('other/c.txt', sha256('c'), [Buffer.from('c')]);
      return t.client.list('list/');
    },
    check: (o) => {
      expect(o.value).toEqual([
        { path: 'list/a.txt', sha256: sha256('a'), size: 1 },
        { path: 'list/b.txt', sha256: sha256('bb'), size: 2 },
      ]);
    },
  },
  {
    // Directories left empty would pile up, from deep uploads and deletes, for every listing to walk.
    name: 'delete removes an artifact, and the directories it leaves empty',
    kind: 'unary',
    act: async (t) => {
      await t.client.upload('del/deep/er/x.txt', sha256('x'), [Buffer.from('x')]);
      const deleted = await t.client.delete('del/deep/er/x.txt');
      expect(deleted.ok).toBe(true);
      return t.client.get('del/deep/er/x.txt');
    },
    expect: { code: 'not_found' },
    check: (_o, t) => expectNothingLeft(t, 'del'),
  },
  {
    name: 'checksum mismatch is refused and nothing is kept, not even the new directories',
    kind: 'client-streaming',
    act: async (t) => {
      const refused = await t.client.upload('bad/new/sum.txt', sha256('something else'), [HELLO]);
      const after = await t.client.get('bad/new/sum.txt');
      expect(after.status).toBe(t.client.statusOf({ code: 'not_found' }));
      return refused;
    },
    expect: { code: 'invalid_argument' },
    check: (_o, t) => expectNothingLeft(t, 'bad'),
  },
  {
    name: 'get of a missing artifact is not found',
    kind: 'unary',
    act: (t) => t.client.get('missing/nothing.bin'),
    expect: { code: 'not_found' },
  },
  {
    name: 'path traversal is refused',
    kind: 'unary',
    act: (t) => t.client.get('../../etc/passwd'),
    expect: { code: 'invalid_argument' },
  },
  {
    // What is stored is what is measured and shown: the composed (NFC) name, whose length can
    // triple what was sent, and dots under marks, which read as `..` in a listing.
    name: 'a path too long once composed, or with dots under accents, is refused and nothing is stored',
    kind: 'client-streaming',
    act: async (t) => {
      const grows = Array.from({ length: 16 }, () => 'grown\ufb2c'.repeat(8)).join('/');
      const grown = await t.client.upload(grows, sha256(HELLO), [HELLO]);
      expect(grown.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
      return t.client.upload('..\u0301/dots.txt', sha256(HELLO), [HELLO]);
    },
    expect: { code: 'invalid_argument' },
    check: async (_o, t) => {
      expect((await t.client.list('')).value?.some((a) => a.path.startsWith('grown') || a.path.startsWith('.'))).toBe(
        false,
      );
    },
  },
  {
    // Express routes `a//b` to the artifact routes, where no rule pattern matches it; over gRPC
    // the name is a field. Both transports refuse it as invalid, not one of them as forbidden.
    name: 'a path with an empty segment is refused as invalid by every operation',
    kind: 'unary',
    act: async (t) => {
      for (const path of ['a//b.txt', '/abs.txt']) {
        expect((await t.client.get(path)).status, path).toBe(t.client.statusOf({ code: 'invalid_argument' }));
        const upload = await t.client.upload(path, sha256(HELLO), [HELLO]);
        expect(upload.status, path).toBe(t.client.statusOf({ code: 'invalid_argument' }));
      }
      return t.client.delete('a//b.txt');
    },
    expect: { code: 'invalid_argument' },
    check: (_o, t) => expectNothingLeft(t, 'a'),
  },
  {
    // A lenient reader would find the path in either request and delete the artifact.
    name: 'a delete cut short in its encoding is refused and deletes nothing',
    kind: 'unary',
    act: async (t) => {
      await t.client.upload('cut/short.txt', sha256(HELLO), [HELLO]);
      return t.client.deleteCutShort('cut/short.txt');
    },
    expect: { code: 'invalid_argument' },
    check: async (_o, t) => {
      expect((await t.client.get('cut/short.txt')).ok).toBe(true);
    },
  },
  {
    name: 'a traversing listing prefix is refused on the stream',
    kind: 'server-streaming',
    act: (t) => t.client.list('../'),
    expect: { code: 'invalid_argument' },
  },
  {
    // A socket file where an artifact should be: opening it fails (ENXIO), which no client can
    // cause through the API, so it is the server's failure.
    name: 'a file-system failure is a generic internal error, the cause only in the log',
    kind: 'unary',
    act: async (t) => {
      const socket = createServer().listen(join(t.dataDir, 'a-socket'));
      await once(socket, 'listening');
      try {
        return await t.client.get('a-socket');
      } finally {
        socket.close();
      }
    },
    expect: { code: 'internal' },
    check: (o, t) => {
      expect(o.requestId).toBeTruthy();
      const logged = t.log.textFor(o.requestId ?? '');
      expect(logged).toContain(t.dataDir);
      expect(logged).toContain('ENXIO');
      expect(logged).toMatch(/\\n\s+at /);
    },
  },
  {
    name: 'ordinary names are accepted: spaces, accents, punctuation, a dot inside or first, deep folders',
    kind: 'unary',
    act: async (t) => {
      const names = [
        'names/my file.txt',
        'names/café/naïve.txt',
        'names/résumé (final) [v2].pdf',
        'names/a..b.txt',
        'names/.hidden',
        "names/it's x+y@z~1,2=3#4&5.txt",
        'names/données/日本語/файл.txt',
        'names/a/b/c/d/e/f/g/h.txt',
      ];
      for (const name of names) {
        const body = Buffer.from(`content of ${name}`);
        const stored = await t.client.upload(name, sha256(body), [body]);
        if (!stored.ok) throw new Error(`${name} was refused: ${stored.exposed}`);
        const read = await t.client.get(name);
        if (!(read.value as { content: Buffer } | undefined)?.content.equals(body))
          throw new Error(`${name} did not read back`);
      }
      return t.client.list('names/');
    },
    check: (o) => {
      expect((o.value as { path: string }[]).map((a) => a.path)).toContain('names/.hidden');
    },
  },
  {
    name: 'a name that looks like a separator or a device is refused, naming the field',
    kind: 'unary',
    act: (t) => t.client.get('names/a\uff0fb.txt'),
    expect: { code: 'invalid_argument' },
  },
  {
    // gRPC: the request message's schema (zod) refuses it first; HTTP: the path resolver.
    name: 'an over-long path is refused, naming the field and never echoing the value',
    kind: 'unary',
    act: (t) => t.client.get(`long/${'x'.repeat(5000)}`),
    expect: { code: 'invalid_argument' },
    check: (o, t) => {
      expect(o.exposed).not.toContain('xxxxxxxxxx');
      expect(o.exposed).toContain(t.transport === 'grpc' ? 'message.path' : '"field":"path"');
    },
  },
  {
    // Python's pickle.dumps({'a': 1}, protocol=4): loading it runs code, whatever it is called.
    name: 'a pickle posing as .bin is refused by its first bytes, and nothing is kept',
    kind: 'client-streaming',
    act: (t) => {
      const pickle = Buffer.from('80049510000000000000007d94288c016194680294752e', 'hex');
      return t.client.upload('uploads/model.bin', sha256(pickle), [pickle]);
    },
    expect: { code: 'invalid_argument' },
    check: async (o, t) => {
      expect(t.log.textFor(o.requestId ?? '')).toContain('"reason":"content_refused"');
      const torch = await t.client.upload('uploads/model.pt', sha256('x'), [Buffer.from('x')]);
      expect(torch.status).toBe(t.client.statusOf({ code: 'invalid_argument' }));
      await expectNothingLeft(t, 'uploads');
    },
  },
  // Cut inside the central directory, where the pickle's name stands a second time.
  contentRefused(
    'a ZIP whose pickle is not its first entry (PyTorch finds data.pkl by name)',
    'uploads/weights.bin',
    ((archive) => [archive.subarray(0, archive.length - 40), archive.subarray(archive.length - 40)])(
      zipOf(['archive/version', 'archive/data.pkl']),
    ),
  ),
  // Text opcodes, no header: os.system('id') when loaded.
  contentRefused('a protocol 0 pickle posing as .txt', 'uploads/notes.txt', [Buffer.from("cos\nsystem\n(S'id'\ntR.")]),
  // Python's zipfile finds an archive by its end, whatever stands in front of it.
  contentRefused('a ZIP holding a pickle behind a GIF header', 'uploads/picture.gif', [
    Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(2048), zipOf(['archive/data.pkl'])]),
  ]),
  // np.savez stores its arrays; np.load(allow_pickle=True) unpickles an array of objects. Its
  // descr refuses it, whatever its pickle holds (None here, which no scan of imports would refuse).
  contentRefused('an .npz holding an array of Python objects', 'uploads/arrays.npz', [
    zipOf(['arr_0.npy'], { 'arr_0.npy': npyOfObjects(NONE_PICKLE) }),
  ]),
  // NumPy's descr_to_dtype unpacks the string 'xO' as a field x of type O, and '2 O' is two
  // objects: np.load(allow_pickle=True) unpickled both. Their pickle (None) imports nothing,
  // so the descr alone refuses them.
  contentRefused("an .npz whose array's descr is a list of 2-character strings", 'uploads/fields.npz', [
    zipOf(['arr_0.npy'], { 'arr_0.npy': npyOfObjects(NONE_PICKLE, "['xO']") }),
  ]),
  contentRefused('a .npy whose type string has a space', 'uploads/spaced.npy', [npyOfObjects(NONE_PICKLE, "'2 O'")]),
  // zipfile.ZipFile(f, 'w', compression=ZIP_LZMA).writestr('objects.npy', <np.save of an array
  // of objects>): Python's zipfile opens LZMA, so np.load unpickles it; no check reads it.
  contentRefused('an .npz whose member is compressed with LZMA', 'uploads/lzma.npz', [
    Buffer.from(
      'UEsDBD8AAgAOAHQjhF044nhB2gAAAB8BAAALAAAAb2JqZWN0cy5ucHkJBAUAXQAAgAAASZOGpN7TgnlqWw0jODarnZ1MTe7jbcMxYR0apQ/XnAr1k3szS/2duK0AcqeVbalPF4NHVHXgJ3h+TPopMYggkPZbwMQBUgDlb7Z8gbbvaPh5zpUKeY3WIQ9AmjHnASiLwmouzdimbI9hbaFpygvlRBEQfTzHXn3YZGiSIlgnbz3JOu2vEBoz+wrIYkOQqVDIvRASSW/hauMktKm61Us34W3Xw6Na2H3d0KSMVXwEeHd3qvuNMtrce1P5cbwDfaMqp8bCnrfVgTp4Zar/tCYAAFBLAQI/Az8AAgAOAHQjhF044nhB2gAAAB8BAAALAAAAAAAAAAAAAACAAQAAAABvYmplY3RzLm5weVBLBQYAAAAAAQABADkAAAADAQAAAAA=',
      'base64',
    ),
  ]),
  // PyTorch's legacy checkpoint: a tar whose member `pickle` torch.load unpickles (os.system here).
  contentRefused('a tar holding a pickle (a legacy PyTorch checkpoint)', 'uploads/checkpoint.tar', [
    tarMember({ name: 'sys_info', data: Buffer.from('little-endian') }),
    tarMember({ name: 'pickle', data: IMPORTING_PICKLE }),
  ]),
  // joblib decompresses a file that starts as gzip before it unpickles it (os.system here).
  contentRefused('a gzip pickle posing as .bin (joblib opens it)', 'uploads/model.bin', [gzipSync(IMPORTING_PICKLE)]),
  // joblib.load still reads its format before 0.10: `ZF`, the length in hex, a zlib stream.
  contentRefused("a pickle in joblib's old format posing as .bin", 'uploads/model.bin', [
    Buffer.from(`ZF${`0x${IMPORTING_PICKLE.length.toString(16)}`.padEnd(19)}`),
    deflateSync(IMPORTING_PICKLE),
  ]),
  // A Zstandard frame of one raw block holding the pickle: pandas' read_pickle opens a `.zst`,
  // and no check here can read inside one.
  contentRefused(
    'a Zstandard pickle',
    'uploads/frame.bin.zst',
    [
      Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, IMPORTING_PICKLE.length]),
      Buffer.from([1 | (IMPORTING_PICKLE.length << 3), IMPORTING_PICKLE.length >> 5, 0]),
      IMPORTING_PICKLE,
    ],
    'compression_not_opened',
  ),
  // 64 MiB of zeros inflated from 64 KiB, then a pickle member: the tar is read until the ratio stops it.
  contentRefused(
    'a tar.gz whose pickle stands behind a compression bomb',
    'uploads/model.tar.gz',
    ((archive) => [archive.subarray(0, 16_384), archive.subarray(16_384)])(
      gzipSync(
        Buffer.concat([
          tarMember({ name: 'zeros.bin', data: Buffer.alloc(64 * 1024 * 1024) }),
          tarMember({ name: 'pickle', data: IMPORTING_PICKLE }),
        ]),
        {
          level: 9,
        },
      ),
    ),
    'compression_ratio_exceeded',
  ),
  {
    name: 'a directory asked for as an artifact is not found',
    kind: 'unary',
    act: (t) => {
      mkdirSync(join(t.dataDir, 'a-directory'), { recursive: true });
      return t.client.get('a-directory');
    },
    expect: { code: 'not_found' },
  },
  {
    name: 'an upload under a file, or onto a directory, is a conflict, and nothing is kept',
    kind: 'client-streaming',
    act: async (t) => {
      await t.client.upload('conflict/file.txt', sha256('x'), [Buffer.from('x')]);
      mkdirSync(join(t.dataDir, 'conflict', 'dir'), { recursive: true });
      const onDirectory = await t.client.upload('conflict/dir', sha256('y'), [Buffer.from('y')]);
      expect(onDirectory.status).toBe(t.client.statusOf({ code: 'conflict' }));
      return t.client.upload('conflict/file.txt/below.txt', sha256('y'), [Buffer.from('y')]);
    },
    expect: { code: 'conflict' },
    check: (_o, t) => {
      expect(readdirSync(join(t.dataDir, 'conflict')).sort()).toEqual(['dir', 'file.txt']);
      expect(readdirSync(join(t.dataDir, 'conflict', 'dir'))).toEqual([]);
    },
  },
  {
    // grpc-js answers an unknown method (UNIMPLEMENTED) before any interceptor, and fluxguard
    // gives that answer its request id and line; over HTTP the guard runs before routing, and
    // an operation no rule names is denied by default.
    name: 'an unknown method or route is refused without detail, under a request id that finds its line',
    kind: 'none',
    act: (t) => t.client.unknownOperation(),
    expect: { status: { grpc: 12, http: 403 } },
    check: (o, t) => {
      expect(t.log.textFor(o.requestId ?? '')).toContain('"event":"request.denied"');
    },
  },
  {
    name: 'a client-sent principal header changes nothing',
    kind: 'unary',
    act: async (t) => {
      await t.client.upload('forge/x.txt', sha256('x'), [Buffer.from('x')]);
      const anonymous = t.clientWith({ cert: t.world.pki.clients.valid, token: null });
      return anonymous.getWithHeaders('forge/x.txt', {
        'x-fluxguard-principal': '{"subject":"admin","roles":["artifacts.admin"]}',
        'x-principal': 'admin',
        'x-user': 'admin',
        'x-roles': 'artifacts.admin',
      });
    },
    expect: { code: 'unauthenticated' },
  },
  {
    // The reference policy's `limits`: an upload may be 64 MiB (HTTP body) or 65 MiB (gRPC
    // messages together); 70 MiB streamed at it are refused once the limit is passed.
    name: 'an upload over the policy size limit is refused while it streams, and nothing is kept',
    kind: 'client-streaming',
    act: (t) => {
      const part = Buffer.alloc(1024 * 1024, 1);
      return t.client.uploadPaced(
        'limits/huge.bin',
        sha256('x'),
        Array.from({ length: 70 }, () => part),
        {
          gapMs: 0,
          deadlineMs: 30_000,
        },
      );
    },
    expect: { code: 'payload_too_large' },
    check: async (o, t) => {
      expect(t.log.textFor(o.requestId ?? '')).toContain('"reason":"body_too_large"');
      await expectNothingLeft(t, 'limits');
    },
  },
  {
    // The reference policy's `lists` rule: 30 a minute per caller. A fresh subject, so that the
    // row does not depend on what other rows listed.
    name: 'a caller over the policy rate limit is refused with a retry hint and the RateLimit fields',
    kind: 'server-streaming',
    act: async (t) => {
      const reader = t.clientWith({
        cert: t.world.pki.clients.valid,
        token: await t.world.token(`lister-${t.transport}`, ['artifacts.reader']),
      });
      for (let i = 0; i < 30; i++) {
        const listed = await reader.list('list/');
        if (!listed.ok) throw new Error(`list ${String(i + 1)} of the allowed 30 was refused: ${listed.exposed}`);
      }
      return reader.list('list/');
    },
    expect: { code: 'rate_limited' },
    check: (o, t) => {
      expect(o.exposed).toMatch(/retry-after/i);
      expect(o.exposed).toMatch(/"ratelimit":\[?"\\"per-peer\\";r=\d+;t=\d+, \\"lists\\";r=0;t=\d+"/);
      expect(t.log.textFor(o.requestId ?? '')).toContain('"detail":{"rule":"lists","keyKind":"subject"}');
    },
  },
  {
    // The table's policy brings the upload idle limit down to 1 s (the reference policy: 30 s).
    name: 'an upload that stalls after its first part is ended by the idle limit, and nothing is kept',
    kind: 'client-streaming',
    act: (t) =>
      t.client.uploadPaced('stalled/upload.bin', sha256('xx'), [Buffer.from('x'), Buffer.from('x')], {
        gapMs: 10,
        stallAfter: 1,
      }),
    expect: CLIENT_TOO_SLOW,
    check: async (o, t) => {
      expect(t.log.textFor(o.requestId ?? '')).toContain('"reason":"inbound_idle"');
      await expectNothingLeft(t, 'stalled');
    },
  },
  {
    name: 'a request with more headers than allowed is refused before its token is verified',
    kind: 'unary',
    act: (t) =>
      t.client.getWithHeaders(
        'models/hello.txt',
        Object.fromEntries(Array.from({ length: 110 }, (_, i) => [`x-fill-${String(i)}`, '1'])),
      ),
    expect: { code: 'payload_too_large' },
    check: (o, t) => {
      const line = t.log.textFor(o.requestId ?? '');
      expect(line).toContain('"reason":"too_many_headers"');
      // Refused at pre-authentication: no subject was ever established.
      expect(line).not.toContain('"subject"');
    },
  },
];

/**
 * The reference policy, with the upload idle limits brought down to 1 s so that the stalled
 * upload row ends quickly.
 */
function tablePolicy(world: E2eEnvironment): string {
  return world.writePolicy('table', (policy) => ({
    ...policy,
    timeouts: {
      ...policy.timeouts,
      rules: policy.timeouts.rules.map((rule) =>
        rule.idleMs === undefined ? rule : { ...rule, idleMs: Math.min(rule.idleMs, 1_000) },
      ),
    },
  }));
}

describe('the scenario table covers every gRPC call kind', () => {
  it('has rows for unary, server-streaming and client-streaming calls', () => {
    const kinds = new Set(scenarios.map((s) => s.kind));
    for (const kind of ['unary', 'server-streaming', 'client-streaming'] as const) expect(kinds).toContain(kind);
  });
});

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

describe.each(TRANSPORTS)('ArtifactStore over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: tablePolicy(world) } });
  });
  afterAll(async () => {
    await t.close();
  });

  it.each(scenarios)('$name', async (scenario) => {
    const outcome = await scenario.act(t);
    if (scenario.expect === undefined) {
      expect(outcome.ok, outcome.exposed).toBe(true);
    } else {
      expect(outcome.ok).toBe(false);
      expect(outcome.status).toBe(t.client.statusOf(scenario.expect));
      expectNoLeak(outcome, t.dataDir);
      expect(outcome.requestId).toMatch(/^[A-Za-z0-9._-]{1,200}$/);
    }
    await scenario.check?.(outcome, t);
  });

  it('keeps nothing of an upload whose client cancels after its last part, before ending it', async () => {
    // gRPC: a cancelling client's stream ends (END_STREAM) just before its reset, so the
    // handler saw a whole upload and stored it before the cancellation arrived.
    for (let i = 0; i < 5; i++) {
      const outcome = await t.client.uploadPaced(
        `cancelled/after-last-${String(i)}.bin`,
        sha256('ab'),
        [Buffer.from('a'), Buffer.from('b')],
        { gapMs: 5, stallAfter: 2, cancelAfterMs: 50 },
      );
      expect(outcome.ok).toBe(false);
    }
    await expectNothingLeft(t, 'cancelled');
  });
});

/**
 * Not a row of the table, whose rows share one server: a shutdown ends it. An upload still at
 * work when the reference server's grace runs out is cut by the server, and its line says so
 * (`reason: 'server_shutdown'`), where a client that leaves gets a line without a reason.
 */
describe.each(TRANSPORTS)('a shutdown of the %s reference server', (transport) => {
  it('logs an upload still at work at the end of its grace as cut by the shutdown, not as left by its client', async () => {
    const t = await startTransport(transport, world);
    try {
      // About fifteen seconds of upload, past the reference server's 5 s grace.
      const parts = Array.from({ length: 60 }, (_, i) => Buffer.from(`part ${String(i)};`));
      const upload = t.client.uploadPaced('shutdown/mid-upload.txt', sha256(Buffer.concat(parts)), parts, {
        gapMs: 250,
      });
      await new Promise((r) => setTimeout(r, 500));
      await t.shutDown();
      const outcome = await upload;
      expect(outcome.ok).toBe(false);
      expectNoLeak(outcome, t.dataDir);
      await expect
        .poll(() => t.log.lines.filter((line) => line.event === 'request.cancelled'), { timeout: 5_000 })
        .toEqual([expect.objectContaining({ outcome: 'cancelled', reason: 'server_shutdown', transport })]);
      await expectNothingLeft(t, 'shutdown');
    } finally {
      await t.close();
    }
  });
});

/** A ZIP archive of entries with these names (stored, each a few bytes), with its central directory. */
/** A NumPy .npy file (format 1.0) of Python objects: its `descr` (`'|O'` unless given), and `pickled` after its header. */
function npyOfObjects(pickled: Buffer, descr = "'|O'"): Buffer {
  const dict = `{'descr': ${descr}, 'fortran_order': False, 'shape': (1,), }`;
  const header = `${dict}${' '.repeat(63 - ((10 + dict.length) % 64))}\n`;
  const length = Buffer.alloc(2);
  length.writeUInt16LE(header.length);
  return Buffer.concat([Buffer.from('\x93NUMPY\x01\x00', 'latin1'), length, Buffer.from(header, 'latin1'), pickled]);
}

function zipOf(names: readonly string[], contents: Readonly<Record<string, Buffer>> = {}): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of names) {
    const name = Buffer.from(entry);
    const data = contents[entry] ?? Buffer.from(`bytes of ${entry}`);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  return Buffer.concat([...locals, ...centrals, end]);
}

describe.each(TRANSPORTS)('listings longer than the server returns at once, over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, { maxListEntries: 2 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('come in pages: each says where the next starts, the last says nothing, and together they hold every artifact once', async () => {
    const paths = ['p/a.bin', 'p/b/c.bin', 'p/b/d.bin', 'p/e f.bin', 'p/é.bin'];
    for (const path of paths) expect((await t.client.upload(path, sha256(path), [Buffer.from(path)])).ok).toBe(true);
    const pages: string[][] = [];
    const nexts: (string | undefined)[] = [];
    let startAfter = '';
    for (let page = 0; page < 10; page++) {
      const outcome = await t.client.listPage('p/', startAfter);
      expect(outcome.ok, outcome.exposed).toBe(true);
      const value = outcome.value ?? { items: [], next: undefined };
      pages.push(value.items.map((item) => item.path));
      nexts.push(value.next);
      if (value.next === undefined) break;
      startAfter = value.next;
    }
    // Sorted by path as JavaScript compares strings: a directory where `name/` sorts.
    expect(pages).toEqual([['p/a.bin', 'p/b/c.bin'], ['p/b/d.bin', 'p/e f.bin'], ['p/é.bin']]);
    expect(nexts).toEqual(['p/b/c.bin', 'p/e f.bin', undefined]);
    // A listing without a start is the first page, as before.
    expect((await t.client.list('p/')).value?.map((item) => item.path)).toEqual(['p/a.bin', 'p/b/c.bin']);
  });
});
