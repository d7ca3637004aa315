import { readFileSync, readdirSync } from 'node:fs';
import { once, type EventEmitter } from 'node:events';
import { connect as http2Connect } from 'node:http2';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdConnections, openHttp2 } from '@fluxguard/test-support/connections';
import { reprDigestOf } from '@fluxguard/example-artifact-store';
import { CLIENT_TOO_SLOW, sha256 } from './support/clients.js';
import { rapidReset, rawGrpcStream } from './support/raw-http2.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  forUploads,
  spawnReferenceServer,
  type E2eEnvironment,
  type ServerProcess,
  type TransportName,
} from './support/servers.js';

/**
 * Connections as an attacker holds them, against both reference servers each in a process of
 * its own (so that its descriptors and memory are its own): thousands of TLS connections that
 * never send a request, a rapid-reset loop on the gRPC port, anonymous gRPC clients that keep
 * sending a byte now and then after their answer. Short handshake and idle times come from the
 * policy's `connections` section.
 */
const IDLE_MS = 2_000;
/** Idle connections per transport: the count the gRPC port was exhausted with, fewer on HTTPS (its own tests hold more). */
const IDLE_FLOOD = { grpc: 5_000, http: 2_000 } as const;
/** The open-file limit of the budget rows: 358 connections and 51 calls in flight (`descriptorBudget`). */
const OPEN_FILES = 512;
const UPLOAD_RULE = { defaultMs: 10_000, idleMs: 1_000 };

let world: E2eEnvironment;
let policyFile: string;
beforeAll(async () => {
  world = await createE2eEnvironment();
  policyFile = world.writePolicy('connections', (policy) => ({
    ...policy,
    connections: { handshakeTimeoutMs: IDLE_MS, idleMs: IDLE_MS },
    timeouts: { rules: forUploads(UPLOAD_RULE) },
  }));
});
afterAll(() => {
  world.cleanup();
});

/** Open descriptors and resident memory of a process, from `/proc`. */
function usage(pid: number): { fds: number; rssMb: number } {
  const status = readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 'NaN');
  return { fds: readdirSync(`/proc/${String(pid)}/fd`).length, rssMb: rssKb / 1024 };
}

describe.each(TRANSPORTS)('connections that never become requests over %s', (transport) => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnReferenceServer(transport, world, { FLUXGUARD_POLICY: policyFile });
  });
  afterAll(async () => {
    await server.close();
  });

  it(`closes ${String(IDLE_FLOOD[transport])} idle TLS connections (no certificate, no request) within the idle time, and serves a real caller meanwhile`, async () => {
    const client = server.clientWith(await world.token('conn-reader', ['artifacts.reader']));
    // Warm: the first call loads what the server loads lazily.
    expect((await client.list('')).ok).toBe(true);
    const before = usage(server.pid);

    const lifetimes: number[] = [];
    let peak = before;
    const closings: Promise<void>[] = [];
    for (let opened = 0; opened < IDLE_FLOOD[transport];) {
      const batch = Array.from({ length: 250 }, () => {
        const socket = tlsConnect({
          host: '127.0.0.1',
          port: server.port,
          ca: world.pki.ca,
          servername: 'localhost',
          ...(transport === 'grpc' ? { ALPNProtocols: ['h2'] } : {}),
        });
        socket.on('error', () => undefined);
        socket.resume();
        let connectedAt = 0;
        const connected = new Promise<void>((resolve) => {
          socket.once('secureConnect', () => {
            connectedAt = performance.now();
            resolve();
          });
          socket.once('close', () => {
            resolve();
          });
        });
        closings.push(
          new Promise<void>((resolve) => {
            socket.once('close', () => {
              if (connectedAt > 0) lifetimes.push(performance.now() - connectedAt);
              resolve();
            });
          }),
        );
        return connected;
      });
      await Promise.all(batch);
      opened += batch.length;
      const now = usage(server.pid);
      if (now.fds > peak.fds) peak = now;
    }
    const during = await client.get('missing/during-flood.txt');
    // Reached the handler and answered: not found, not a refused connection.
    expect(during.status).toBe(client.statusOf({ code: 'not_found' }));

    await Promise.race([
      Promise.all(closings),
      new Promise((_resolve, reject) =>
        setTimeout(() => {
          reject(new Error('idle connections still open'));
        }, IDLE_MS + 20_000),
      ),
    ]);
    await expect.poll(() => usage(server.pid).fds, { timeout: 5_000 }).toBeLessThanOrEqual(before.fds + 5);
    const after = usage(server.pid);
    const longest = Math.max(...lifetimes);
    console.log(
      `${transport}: ${String(IDLE_FLOOD[transport])} idle connections: server descriptors ${String(before.fds)} → peak ${String(peak.fds)} → ${String(after.fds)}, RSS ${before.rssMb.toFixed(0)} → ${peak.rssMb.toFixed(0)} → ${after.rssMb.toFixed(0)} MB; longest held ${longest.toFixed(0)} ms (idle limit ${String(IDLE_MS)} ms)`,
    );
    expect(lifetimes).toHaveLength(IDLE_FLOOD[transport]);
    // The idle check runs about once a second; the rest is a busy machine's scheduling.
    expect(longest).toBeLessThan(IDLE_MS + 8_000);
    // Resident memory is not handed back to the system at once (about 30 KB per connection
    // stays with the allocator); what matters is that it is bounded, where it once reached 1.67 GB.
    expect(after.rssMb).toBeLessThan(before.rssMb + 300);
    expect((await client.list('')).ok).toBe(true);
  }, 90_000);
});

describe('a rapid-reset client on the gRPC port', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnReferenceServer('grpc', world, { FLUXGUARD_POLICY: policyFile });
  });
  afterAll(async () => {
    await server.close();
  });

  it('is sent away (GOAWAY) while the server stays up, bounded in memory, and serves a real caller', async () => {
    const client = server.clientWith(await world.token('rr-reader', ['artifacts.reader']));
    expect((await client.list('')).ok).toBe(true);
    const before = usage(server.pid);
    const attacks = [];
    for (let round = 0; round < 3; round++) {
      attacks.push(
        await rapidReset({
          port: server.port,
          ca: world.pki.ca,
          path: '/fluxguard.example.v1.ArtifactStore/GetArtifact',
          maxStreams: 200_000,
          maxMs: 10_000,
          // Another loopback address: the streams that reach the interceptors count against
          // the attacker's per-peer rate limit, which must not throttle the real caller.
          localAddress: '127.0.0.2',
        }),
      );
    }
    const after = usage(server.pid);
    for (const a of attacks) {
      console.log(
        `rapid reset: ${String(a.streams)} streams opened and reset in ${a.elapsedMs.toFixed(0)} ms, GOAWAY ${String(a.goawayCode)}, closed ${String(a.closed)}; server RSS ${before.rssMb.toFixed(0)} → ${after.rssMb.toFixed(0)} MB`,
      );
      // Node's HTTP/2 answers a reset flood with GOAWAY and closes the connection, long before
      // the loop's bounds: each attacking connection costs a bounded number of streams. (The
      // GOAWAY is printed when seen: on Node 24 the close can reset the connection first, and
      // the kernel then drops the frame before the client reads it.)
      expect(a.closed).toBe(true);
      expect(a.streams).toBeLessThan(200_000);
      expect(a.elapsedMs).toBeLessThan(10_000);
    }
    expect(after.rssMb).toBeLessThan(before.rssMb + 150);
    expect(after.fds).toBeLessThanOrEqual(before.fds + 5);
    const served = await client.list('');
    expect(served.ok, `${String(served.status)} ${served.exposed}`).toBe(true);
  }, 60_000);
});

describe('a flood of whole calls the server answers at once on the gRPC port', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnReferenceServer('grpc', world, { FLUXGUARD_POLICY: policyFile });
  });
  afterAll(async () => {
    await server.close();
  });

  // Written faster than the server's stream limit lets them in, Node refuses streams and then
  // drops the connection while the rest of what was read still reaches grpc-js: its answer to
  // an unknown method, or fluxguard's to a request that is no gRPC, met a destroyed stream and
  // threw out of the event loop. About 9 KB from a client without a token took the server down.
  it.each([
    { name: 'an unknown method', path: '/a.B/C', contentType: 'application/grpc' },
    {
      name: 'no gRPC (text/plain)',
      path: '/fluxguard.example.v1.ArtifactStore/GetArtifact',
      contentType: 'text/plain',
    },
  ])(
    'of $name leaves the server up, serving a real caller',
    async ({ path, contentType }) => {
      const client = server.clientWith(await world.token('flood-reader', ['artifacts.reader']));
      for (let round = 0; round < 3; round++) {
        const flood = await rapidReset({
          port: server.port,
          ca: world.pki.ca,
          path,
          contentType,
          complete: true,
          maxStreams: 3_000,
          maxMs: 5_000,
          localAddress: '127.0.0.3',
        });
        expect(flood.streams).toBeGreaterThan(0);
      }
      const served = await client.list('');
      expect(served.ok, `${String(served.status)} ${served.exposed}\n${server.output().slice(-2_000)}`).toBe(true);
      expect(server.output()).not.toContain('ERR_HTTP2_INVALID_STREAM');
    },
    60_000,
  );
});

/** Whether `emitter` (a stream, a session) emits 'close' within `ms`. */
function closedWithin(emitter: EventEmitter, ms: number): Promise<'closed' | 'open'> {
  return Promise.race([
    once(emitter, 'close').then(() => 'closed' as const),
    new Promise<'open'>((resolve) =>
      setTimeout(() => {
        resolve('open');
      }, ms),
    ),
  ]);
}

describe('anonymous clients that keep sending after their answer on the gRPC port', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnReferenceServer('grpc', world, { FLUXGUARD_POLICY: policyFile });
  });
  afterAll(async () => {
    await server.close();
  });

  it('have their streams closed after the answer, and then their connections at the idle limit (bounded: 50 clients, 15 s)', async () => {
    const before = usage(server.pid);
    // A public Health/Check whose request never ends, then a byte every 300 ms: each byte
    // restarted the stream's idle timeout, and the connections stayed open past every limit.
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const session = http2Connect(`https://127.0.0.1:${String(server.port)}`, {
          ca: world.pki.ca,
          servername: 'localhost',
        });
        session.on('error', () => undefined);
        const stream = rawGrpcStream(session, '/grpc.health.v1.Health/Check');
        stream.on('data', () => undefined);
        stream.write(Buffer.alloc(5));
        const trickle = setInterval(() => {
          if (!stream.closed && !stream.destroyed) stream.write(Buffer.from([0]));
        }, 300);
        const streamClosed = await closedWithin(stream, 8_000);
        clearInterval(trickle);
        const sessionClosed = await closedWithin(session, 7_000);
        session.destroy();
        return { stream: streamClosed, rstCode: stream.rstCode, session: sessionClosed };
      }),
    );
    expect(outcomes).toEqual(Array.from({ length: 50 }, () => ({ stream: 'closed', rstCode: 0, session: 'closed' })));
    await expect.poll(() => usage(server.pid).fds, { timeout: 5_000 }).toBeLessThanOrEqual(before.fds + 5);
  }, 30_000);
});

describe.each(TRANSPORTS)('one client address holding connections over %s', (transport) => {
  const SHARE = 20;
  let server: ServerProcess;
  beforeAll(async () => {
    const policy = world.writePolicy(`connections-share-${transport}`, (p) => ({
      ...p,
      connections: { handshakeTimeoutMs: 30_000, idleMs: 30_000, maxConnectionsPerAddress: SHARE },
    }));
    server = await spawnReferenceServer(transport, world, { FLUXGUARD_POLICY: policy });
  });
  afterAll(async () => {
    await server.close();
  });

  it('holds it to its share of the port: one more from it is closed at once, other addresses are served, and the refusal is logged', async () => {
    const open = (localAddress: string) => {
      // Passed on to net.connect, whose socket options Node's tls types leave out.
      const options = { host: '127.0.0.1', port: server.port, localAddress, ca: world.pki.ca, servername: 'localhost' };
      const socket = tlsConnect(options);
      socket.on('error', () => undefined);
      const outcome = new Promise<'connected' | 'closed'>((resolve) => {
        socket.once('secureConnect', () => {
          resolve('connected');
        });
        socket.once('close', () => {
          resolve('closed');
        });
      });
      return { socket, outcome };
    };
    // An anonymous client: no certificate, no request, each connection held.
    const held = Array.from({ length: SHARE }, () => open('127.0.0.7'));
    expect(await Promise.all(held.map((h) => h.outcome))).toEqual(Array.from({ length: SHARE }, () => 'connected'));
    const more = Array.from({ length: 10 }, () => open('127.0.0.7'));
    expect(await Promise.all(more.map((m) => m.outcome))).toEqual(Array.from({ length: 10 }, () => 'closed'));
    // A caller from another address is served meanwhile.
    const reader = server.clientWith(await world.token('share-reader', ['artifacts.reader']));
    expect((await reader.list('')).ok).toBe(true);
    await expect.poll(() => server.output(), { timeout: 5_000 }).toMatch(/"event":"connection.refused"/);
    expect(server.output()).toMatch(/"addresses":\["127\.0\.0\.7"\]/);
    for (const h of [...held, ...more]) h.socket.destroy();
  }, 30_000);
});

/** Two callers are served, each in a new connection of its own on a port full again. */
async function expectTwoCallersServed(server: ServerProcess, name: string): Promise<void> {
  for (const reader of [`${name}-reader`, `${name}-reader-2`]) {
    const client = server.clientWith(await world.token(reader, ['artifacts.reader']));
    expect((await client.list('')).ok).toBe(true);
  }
}

/** A reference server whose port holds `CAP` connections, half of them per address, for 30 s each. */
function spawnCapped(transport: TransportName, name: string): Promise<ServerProcess> {
  const policy = world.writePolicy(`${name}-${transport}`, (p) => ({
    ...p,
    connections: {
      handshakeTimeoutMs: 30_000,
      idleMs: 30_000,
      maxConnections: CAP,
      maxConnectionsPerAddress: CAP / 2,
    },
  }));
  return spawnReferenceServer(transport, world, { FLUXGUARD_POLICY: policy });
}
const CAP = 8;

describe.each(TRANSPORTS)('two client addresses holding the whole port over %s', (transport) => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnCapped(transport, 'connections-cap');
  });
  afterAll(async () => {
    await server.close();
  });

  it('with connections that never start a handshake, shut out no caller: the oldest is closed for it, and that is logged', async () => {
    // Each address its share, without a certificate or any cryptography: the whole cap.
    const held = await holdConnections(server.port, ['127.0.0.31', '127.0.0.32'], CAP / 2);
    const reader = server.clientWith(await world.token('cap-reader', ['artifacts.reader']));
    expect((await reader.list('')).ok).toBe(true);
    expect(held.some((c) => c.closed())).toBe(true);
    await expect.poll(() => server.output(), { timeout: 5_000 }).toMatch(/"closedInHandshake":1/);
    for (const c of held) c.socket.destroy();
  }, 30_000);

  it('close a connection of the address waiting on the most first: one slow client outlasts a flood', async () => {
    // The oldest connection waiting, as a client whose handshake takes round trips would be.
    const [slow] = await holdConnections(server.port, ['127.0.0.36'], 1);
    const held = await holdConnections(server.port, ['127.0.0.37', '127.0.0.38'], CAP / 2);
    // Each new connection at the cap closes one of those waiting: never the slow client's.
    const flood = await holdConnections(server.port, ['127.0.0.39'], CAP);
    expect(slow?.closed()).toBe(false);
    expect(held.filter((c) => c.closed()).length).toBeGreaterThan(0);
    for (const c of [slow, ...held, ...flood]) c?.socket.destroy();
  }, 30_000);
});

describe.each(TRANSPORTS)('two client addresses holding the whole port past the handshake over %s', (transport) => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnCapped(transport, 'connections-idle-cap');
  });
  afterAll(async () => {
    await server.close();
  });

  it('with connections that send nothing, shut out no caller: one serving nothing is closed for it, and that is logged', async () => {
    // Anyone completes a handshake where client certificates are asked per operation.
    const handshake = { ca: world.pki.ca, ...(transport === 'grpc' ? { ALPNProtocols: ['h2'] } : {}) };
    const held = await holdConnections(server.port, ['127.0.0.33', '127.0.0.34'], CAP / 2, handshake);
    expect(held.every((c) => !c.closed())).toBe(true);
    await expectTwoCallersServed(server, 'idle-cap');
    expect(held.some((c) => c.closed())).toBe(true);
    await expect.poll(() => server.output(), { timeout: 5_000 }).toMatch(/"closedIdle":\d/);
    for (const c of held) c.socket.destroy();
  }, 30_000);
});

describe.each(TRANSPORTS)(
  'two client addresses holding the whole port with requests they never finish over %s',
  (transport) => {
    let server: ServerProcess;
    beforeAll(async () => {
      server = await spawnCapped(transport, 'connections-waiting-cap');
    });
    afterAll(async () => {
      await server.close();
    });

    it('with requests opened and never finished (a call whose message never comes, a body never sent), shut out no caller', async () => {
      // gRPC: a public health check on each connection, its message never sent, anonymous. HTTPS:
      // an upload on each, its body never finished, by a writer with its certificate.
      const writer = await world.token('waiting-cap-writer', ['artifacts.writer']);
      const held = await Promise.all(
        ['127.0.0.41', '127.0.0.42'].flatMap((localAddress) =>
          Array.from({ length: CAP / 2 }, (_, i) =>
            transport === 'grpc'
              ? openGrpcCallWithoutMessage(server.port, localAddress)
              : openUploadWithoutBody(
                  server.port,
                  localAddress,
                  writer,
                  `waiting/${localAddress.replaceAll('.', '-')}-${String(i)}`,
                ),
          ),
        ),
      );
      try {
        // Long enough for calls answered and held to be open on every gRPC connection.
        await new Promise((resolve) => setTimeout(resolve, 700));
        expect(held.every((c) => !c.closed())).toBe(true);
        await expectTwoCallersServed(server, 'waiting-cap');
        expect(held.some((c) => c.closed())).toBe(true);
        await expect.poll(() => server.output(), { timeout: 5_000 }).toMatch(/"closedIdle":\d/);
      } finally {
        for (const c of held) c.destroy();
      }
    }, 30_000);
  },
);

describe.each(TRANSPORTS)('the descriptor budget over %s', (transport) => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await spawnReferenceServer(transport, world, { FLUXGUARD_POLICY: policyFile }, { openFiles: OPEN_FILES });
  });
  afterAll(async () => {
    await server.close();
  });

  it(`refuses connections and calls cleanly before the ${String(OPEN_FILES)} open files run out, and serves again`, async () => {
    const reader = server.clientWith(await world.token('budget-reader', ['artifacts.reader']));
    expect((await reader.list('')).ok).toBe(true);

    // 600 idle connections against a cap of 358: those beyond it are closed at once.
    const sockets = Array.from({ length: 600 }, () => {
      const socket = tlsConnect({ host: '127.0.0.1', port: server.port, ca: world.pki.ca, servername: 'localhost' });
      socket.on('error', () => undefined);
      return new Promise<'connected' | 'closed'>((resolve) => {
        socket.once('secureConnect', () => {
          resolve('connected');
        });
        socket.once('close', () => {
          resolve('closed');
        });
      }).then((outcome) => ({ socket, outcome }));
    });
    const held = await Promise.all(sockets);
    const connected = held.filter((h) => h.outcome === 'connected').length;
    const peak = usage(server.pid).fds;
    for (const h of held) h.socket.destroy();
    console.log(
      `${transport} with ${String(OPEN_FILES)} open files: ${String(connected)} of 600 connections accepted, ${String(peak)} descriptors held`,
    );
    expect(connected).toBeLessThanOrEqual(Math.floor(OPEN_FILES * 0.7));
    expect(connected).toBeGreaterThan(0);
    expect(peak).toBeLessThan(OPEN_FILES);

    // 80 stalled uploads from three writers (32 each at most) against 51 calls in flight.
    const writers = await Promise.all(
      ['budget-a', 'budget-b', 'budget-c'].map(async (s) =>
        server.clientWith(await world.token(s, ['artifacts.writer'])),
      ),
    );
    const part = Buffer.from('stalled');
    const outcomes = await Promise.all(
      Array.from({ length: 80 }, (_, i) =>
        (writers[i % writers.length] ?? reader).uploadPaced(
          `budget/stalled-${String(i)}.bin`,
          sha256(Buffer.concat([part, part])),
          [part, part],
          { gapMs: 10, stallAfter: 1 },
        ),
      ),
    );
    const statuses = outcomes.map((o) => o.status);
    const refused = statuses.filter((s) => s === reader.statusOf({ code: 'unavailable' })).length;
    const timedOut = statuses.filter((s) => s === reader.statusOf(CLIENT_TOO_SLOW)).length;
    console.log(
      `${transport}: 80 stalled uploads: ${String(timedOut)} ended by the idle limit, ${String(refused)} refused at once`,
    );
    expect(refused + timedOut).toBe(80);
    expect(refused).toBeGreaterThan(0);

    expect(server.output()).not.toMatch(/EMFILE|ENFILE/);
    expect((await reader.list('')).ok).toBe(true);
  }, 60_000);
});

/** A connection held open by a request its client never finishes, and whether it has closed. */
interface WaitingRequest {
  readonly closed: () => boolean;
  readonly destroy: () => void;
}

/**
 * Opens, from `localAddress`, a public gRPC health check whose message never comes, and then
 * another every 200 ms with a deadline of 100 ms, none of which its client ever ends: each is
 * answered at its deadline (or refused at once by a limit) and stays open until a second after
 * its status.
 */
async function openGrpcCallWithoutMessage(port: number, localAddress: string): Promise<WaitingRequest> {
  const { session, closed } = await openHttp2(port, localAddress, { ca: world.pki.ca });
  const call = (headers: Readonly<Record<string, string>>): void => {
    if (closed() || session.closed || session.destroyed) return;
    rawGrpcStream(session, '/grpc.health.v1.Health/Check', headers).resume();
  };
  const again = setInterval(() => {
    call({ 'grpc-timeout': '100m' });
  }, 200);
  session.once('close', () => {
    clearInterval(again);
  });
  call({});
  return {
    closed,
    destroy: () => {
      clearInterval(again);
      session.destroy();
    },
  };
}

/** Opens, from `localAddress`, an HTTPS upload by `token`'s writer whose body never comes whole. */
async function openUploadWithoutBody(
  port: number,
  localAddress: string,
  token: string,
  path: string,
): Promise<WaitingRequest> {
  const { cert, key } = world.pki.clients.valid;
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    localAddress,
    ca: world.pki.ca,
    cert,
    key,
    servername: 'localhost',
  } as ConnectionOptions);
  socket.on('error', () => undefined);
  await once(socket, 'secureConnect');
  let closed = false;
  socket.once('close', () => (closed = true));
  socket.resume();
  socket.write(
    `PUT /v1/artifacts/${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n` +
      `Repr-Digest: ${reprDigestOf(sha256(Buffer.alloc(100_000)))}\r\n` +
      'Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nfirst bytes',
  );
  return {
    closed: () => closed,
    destroy: () => {
      socket.destroy();
    },
  };
}
