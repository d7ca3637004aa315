import { once } from 'node:events';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as http2Connect } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_TOO_SLOW, sha256, type Outcome, type Pace } from './support/clients.js';
import { expectNoLeak } from './support/leaks.js';
import { rawGrpcStream } from './support/raw-http2.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  forUploads,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * Deadlines and idle limits on both reference servers, from the policy's `timeouts` section
 * (short values here; the reference policy's are minutes). Each row is a paced upload that
 * would succeed without the limit: that it ends with `deadline_exceeded` is the limit at work,
 * and the audit line says which one.
 */
const UPLOAD_DEFAULT_MS = 600;
const UPLOAD_MAX_MS = 900;
const UPLOAD_IDLE_MS = 300;

const TIMEOUTS = {
  defaultMs: 5_000,
  maxMs: 10_000,
  idleMs: 2_000,
  rules: forUploads({ defaultMs: UPLOAD_DEFAULT_MS, maxMs: UPLOAD_MAX_MS, idleMs: UPLOAD_IDLE_MS }),
};

const PART = Buffer.from('0123456789abcdef');
const parts = (n: number): Buffer[] => Array.from({ length: n }, () => PART);

interface Row {
  readonly name: string;
  readonly pace: Pace;
  readonly count: number;
  /**
   * The audit reason of the refusal; omitted: the upload succeeds. An upload still being sent
   * at its deadline is `request_unfinished`: the client's pace, a refusal line, not an error.
   */
  readonly reason?: 'inbound_idle' | 'request_unfinished';
  readonly only?: 'grpc';
}

const rows: readonly Row[] = [
  { name: 'an upload paced within every limit completes', pace: { gapMs: 40 }, count: 5 },
  {
    name: 'a stalled upload (first part, then nothing) is ended by the idle limit',
    pace: { gapMs: 20, stallAfter: 1 },
    count: 3,
    reason: 'inbound_idle',
  },
  {
    // Before its first part: held to its deadline once, were the idle limit counted from there.
    name: 'an upload that sends its head and nothing more is ended by the idle limit',
    pace: { gapMs: 20, stallAfter: 0 },
    count: 3,
    reason: 'inbound_idle',
  },
  {
    name: 'a call without a client deadline gets the operation default',
    // 20 parts 100 ms apart: 2 s, longer than the 600 ms default, never idle for 300 ms.
    pace: { gapMs: 100, deadlineMs: Infinity },
    count: 20,
    reason: 'request_unfinished',
  },
  {
    name: 'a ten-hour client deadline is brought down to the maximum',
    pace: { gapMs: 100, deadlineMs: 10 * 3_600_000 },
    count: 20,
    reason: 'request_unfinished',
    only: 'grpc',
  },
];

let world: E2eEnvironment;
let policyFile: string;
beforeAll(async () => {
  world = await createE2eEnvironment();
  policyFile = world.writePolicy('timeouts', (policy) => ({ ...policy, timeouts: TIMEOUTS }));
});
afterAll(() => {
  world.cleanup();
});

describe.each(TRANSPORTS)('deadlines and idle limits over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: policyFile } });
  });
  afterAll(async () => {
    await t.close();
  });

  it.each(rows.filter((row) => row.only === undefined || row.only === transport))('$name', async (row) => {
    const content = Buffer.concat(parts(row.count));
    const path = `timeouts/${row.name.replaceAll(' ', '-').replaceAll(/[^a-z-]/g, '')}.bin`;
    const outcome: Outcome = await t.client.uploadPaced(path, sha256(content), parts(row.count), row.pace);
    if (row.reason === undefined) {
      expect(outcome.ok, outcome.exposed).toBe(true);
      return;
    }
    expect(outcome.ok).toBe(false);
    expect(outcome.status).toBe(t.client.statusOf(CLIENT_TOO_SLOW));
    expectNoLeak(outcome, t.dataDir);
    expect(outcome.requestId).toMatch(/^[A-Za-z0-9._-]{1,200}$/);
    const lines = t.log.lines.filter(
      (line) => line.requestId === outcome.requestId && line.code === 'deadline_exceeded',
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reason: row.reason });
    // The handler's signal fired: the store removed its temporary file and kept nothing.
    await expect
      .poll(() =>
        readdirSync(t.dataDir, { recursive: true })
          .map(String)
          .filter((f) => f.includes('.upload-')),
      )
      .toEqual([]);
    expect(readdirSync(t.dataDir, { recursive: true }).map(String)).not.toContain(path);
  });
});

describe('a gRPC call whose head comes and nothing more, with a ten-hour deadline', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('grpc', world, { env: { FLUXGUARD_POLICY: policyFile } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('ends at the 2 s idle limit, not at the 10 s longest deadline (bounded: 8 s)', async () => {
    const session = http2Connect(`https://127.0.0.1:${String(t.port)}`, {
      ca: world.pki.ca,
      cert: world.pki.clients.valid.cert,
      key: world.pki.clients.valid.key,
      servername: 'localhost',
    });
    session.on('error', () => undefined);
    try {
      const token = await world.token('idle-head', ['artifacts.reader']);
      // No request message, no end: before, the call waited for its first message to its deadline.
      const stream = rawGrpcStream(session, '/fluxguard.example.v1.ArtifactStore/GetArtifact', {
        authorization: `Bearer ${token}`,
        'grpc-timeout': '36000S',
        'x-request-id': 'idle-head',
      });
      const status = await new Promise<string>((resolve) => {
        const statusOf = (headers: Record<string, unknown>): void => {
          const code = headers['grpc-status'];
          if (typeof code === 'string') resolve(code);
        };
        stream.on('response', statusOf);
        stream.on('trailers', statusOf);
        setTimeout(() => {
          resolve('held');
        }, 8_000);
      });
      expect(status).toBe('4'); // DEADLINE_EXCEEDED
      const line = t.log.lines.find((l) => l.requestId === 'idle-head' && l.code === 'deadline_exceeded');
      expect(line).toMatchObject({ reason: 'inbound_idle' });
    } finally {
      session.destroy();
    }
  });
});

/**
 * A download the client never reads, with the reference servers' read deadline (5 s here): at
 * the deadline the server lets go (HTTP: the connection is cut; gRPC: the stream is reset),
 * and the log line blames the client (`answer_unread`, a refusal line) rather than the
 * handler (a `deadline_exceeded` error with a stack).
 */
describe.each(TRANSPORTS)('a download never read over %s', (transport) => {
  // More than the socket buffers of both ends take on loopback: bytes stay queued in the server.
  const BIG = Buffer.alloc(24 * 1024 * 1024, 7);
  let t: TransportUnderTest;
  let token: string;
  beforeAll(async () => {
    t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: policyFile } });
    // Written beside the store, as an artifact stored earlier: uploaded, 24 MiB had to arrive
    // within this policy's 600 ms upload deadline, which a loaded machine sometimes missed.
    mkdirSync(join(t.dataDir, 'unread'), { recursive: true });
    writeFileSync(join(t.dataDir, 'unread', 'big.bin'), BIG);
    const small = await t.client.upload('unread/small.txt', sha256('small'), [Buffer.from('small')]);
    expect(small.ok, small.exposed).toBe(true);
    token = await world.token(`unread-${transport}`, ['artifacts.reader']);
  });
  afterAll(async () => {
    await t.close();
  });

  /** Sends the get and reads nothing; resolves when the server has let the call go. */
  async function unreadGet(requestId: string): Promise<void> {
    const { cert, key } = world.pki.clients.valid;
    const tls = { ca: world.pki.ca, cert, key, servername: 'localhost' };
    if (transport === 'http') {
      const socket = tlsConnect({ host: '127.0.0.1', port: t.port, ...tls });
      // The reset can be reported before anything is read (Node 24 does): an error is expected.
      socket.on('error', () => undefined);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      await once(socket, 'secureConnect');
      socket.pause();
      socket.write(
        `GET /v1/artifacts/unread/big.bin HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${token}\r\n` +
          `x-request-id: ${requestId}\r\n\r\n`,
      );
      // Cut by the server with a reset (through the TCP socket below TLS), which drops what
      // its kernel held for us: reading now finds only what our receive buffer took.
      await expect.poll(() => t.log.lines.some((line) => line.requestId === requestId), { timeout: 15_000 }).toBe(true);
      let bytes = 0;
      socket.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      socket.resume();
      await closed;
      expect(bytes).toBeLessThan(1024 * 1024);
      return;
    }
    // A flow-control window of 1 KiB that the client never opens further.
    const session = http2Connect(`https://127.0.0.1:${String(t.port)}`, {
      ...tls,
      settings: { initialWindowSize: 1024 },
    });
    session.on('error', () => undefined);
    try {
      const stream = rawGrpcStream(session, '/fluxguard.example.v1.ArtifactStore/GetArtifact', {
        authorization: `Bearer ${token}`,
        'x-request-id': requestId,
      });
      stream.pause();
      // GetArtifactRequest { path = 1 }, protobuf by hand, in one gRPC frame.
      const path = Buffer.from('unread/big.bin');
      const message = Buffer.concat([Buffer.from([0x0a, path.length]), path]);
      const frame = Buffer.alloc(5);
      frame.writeUInt32BE(message.length, 1);
      stream.end(Buffer.concat([frame, message]));
      await once(stream, 'close');
    } finally {
      session.destroy();
    }
  }

  it('lets the call go at the deadline and logs the client’s doing as a refusal, not an error', async () => {
    const requestId = `unread-${transport}-1`;
    await unreadGet(requestId);
    await expect
      // At the audit log's level (info): what the handler throws after the answer is a debug line.
      .poll(() => t.log.lines.filter((line) => line.requestId === requestId && Number(line.level) >= 30), {
        timeout: 5_000,
      })
      .toMatchObject([{ event: 'request.denied', code: 'deadline_exceeded', reason: 'answer_unread' }]);
    // The server still serves.
    expect((await t.client.get('unread/small.txt')).ok).toBe(true);
  }, 30_000);
});
