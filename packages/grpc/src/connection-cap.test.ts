// The cap on connections held at once by a gRPC port (secureServerOptions' maxConnections,
// applied by addService to the HTTP/2 server grpc-js makes): a flood of connections beyond it
// is closed at once, and the port serves again once the flood is gone.
import type { ClientHttp2Session } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, Server, ServerCredentials, status as Status, type ClientWritableStream } from '@grpc/grpc-js';
import { Client, credentials } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, secureServerOptions } from './index.js';
import { callKind, captureAudit, testService, type Json } from './testing/harness.js';
import { CLIENT_PREFACE } from './testing/raw-http2.js';
import { floodConnections, holdConnections, openHttp2, rawGrpcStream } from '@fluxguard/test-support/connections';
import {
  clientFor,
  createTestPki,
  handlerStarts,
  op,
  perOperationCredentials,
  registerSecureService,
  startTlsServer,
  unary,
  type TestPki,
  type TestServer,
} from './testing/tls.js';

const CAP = 5;
const IDLE_MS = 300;
const GRACE_MS = 300;
const audit = captureAudit();
let server: Server;
let port: number;

beforeAll(async () => {
  server = new Server({
    ...secureServerOptions({ maxConnections: CAP, maxConnectionIdleMs: IDLE_MS, closingGraceMs: GRACE_MS }),
    interceptors: fluxguardInterceptors({ audit: audit.audit, timeouts: false }),
  });
  const echo = (message: Json): Json => message;
  addService(server, testService, {
    Unary: (call) => echo(call.request),
    ClientStream: () => ({}),
    ServerStream: (call) => {
      call.end();
    },
    Bidi: (call) => {
      call.end();
    },
  });
  port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(err);
      else resolve(bound);
    });
  });
});

afterAll(() => {
  server.forceShutdown();
});

function open(): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      resolve({
        socket,
        closed: new Promise((done) =>
          socket.once('close', () => {
            done();
          }),
        ),
      });
    });
    socket.on('error', () => undefined);
    socket.once('error', reject);
  });
}

/** A real client's call is served: the port has room for a new connection. */
async function expectServed(): Promise<void> {
  const client = new Client(`127.0.0.1:${String(port)}`, credentials.createInsecure());
  try {
    const outcome = await callKind(client, 'unary', { hello: 'again' });
    expect(outcome.status.code).toBe(Status.OK);
  } finally {
    client.close();
  }
}

describe('the connection cap of a gRPC port', () => {
  it('closes the connections beyond the cap at once, and serves again once the flood is gone', async () => {
    const flood = await Promise.all(Array.from({ length: CAP + 10 }, () => open()));
    const settled = await Promise.all(
      flood.map(({ closed }) =>
        Promise.race([
          closed.then(() => 'closed'),
          new Promise((r) =>
            setTimeout(() => {
              r('open');
            }, 1_000),
          ),
        ]),
      ),
    );
    expect(settled.filter((s) => s === 'closed')).toHaveLength(10);
    expect(settled.filter((s) => s === 'open')).toHaveLength(CAP);
    for (const { socket } of flood) socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    await expectServed();
  });

  it('drops connections whose clients stop reading and never close them, so that they free their place', async () => {
    // Each starts an HTTP/2 session (preface and SETTINGS), then reads nothing and never closes:
    // the server's GOAWAY and FIN go unanswered. Held for ever, they would fill the cap.
    const abandoned = await Promise.all(Array.from({ length: CAP }, () => open()));
    for (const { socket } of abandoned) {
      socket.pause();
      socket.write(CLIENT_PREFACE);
    }
    try {
      // Past the idle limit and the grace after it, and then some.
      await new Promise((r) => setTimeout(r, IDLE_MS + GRACE_MS + 1_000));
      await expectServed();
    } finally {
      for (const { socket } of abandoned) socket.destroy();
    }
  });

  it('holds each client address to its share of the cap', async () => {
    const shared = new Server({
      ...secureServerOptions({ maxConnections: 100, maxConnectionsPerAddress: 3 }),
      interceptors: fluxguardInterceptors({ audit: audit.audit, timeouts: false }),
    });
    addService(shared, testService, {
      Unary: (call) => call.request,
      ClientStream: () => ({}),
      ServerStream: (call) => {
        call.end();
      },
      Bidi: (call) => {
        call.end();
      },
    });
    const sharedPort = await new Promise<number>((resolve, reject) => {
      shared.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => {
        if (err) reject(err);
        else resolve(bound);
      });
    });
    const from = (localAddress: string) => {
      const socket = connect({ host: '127.0.0.1', port: sharedPort, localAddress });
      socket.on('error', () => undefined);
      let closed = false;
      socket.once('close', () => (closed = true));
      return { socket, closed: () => closed };
    };
    try {
      const held = Array.from({ length: 3 }, () => from('127.0.0.5'));
      await new Promise((r) => setTimeout(r, 200));
      const extra = from('127.0.0.5');
      await expect.poll(extra.closed, { timeout: 2_000 }).toBe(true);
      const other = from('127.0.0.6');
      await new Promise((r) => setTimeout(r, 300));
      expect(other.closed()).toBe(false);
      expect(held.every((s) => !s.closed())).toBe(true);
      for (const s of [...held, other]) s.socket.destroy();
    } finally {
      shared.forceShutdown();
    }
  });

  it('takes a stream being answered while its client still sends (a bidi stream) as busy, not as waiting for its client', async () => {
    const streaming = new Server({
      ...secureServerOptions({ maxConnections: 2 }),
      interceptors: fluxguardInterceptors({ audit: audit.audit, timeouts: false }),
    });
    // Answers at once, and keeps the stream open until its client ends it.
    addService(streaming, testService, {
      Bidi: (call) => {
        call.write({ hello: 'first' });
        call.on('data', () => undefined);
        call.on('end', () => call.end());
      },
    });
    const streamingPort = await new Promise<number>((resolve, reject) => {
      streaming.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => {
        if (err) reject(err);
        else resolve(bound);
      });
    });
    const clients = [0, 1].map(
      () =>
        new Client(`127.0.0.1:${String(streamingPort)}`, credentials.createInsecure(), {
          'grpc.use_local_subchannel_pool': 1,
        }),
    );
    try {
      const calls = clients.map((client) => {
        const call = client.makeBidiStreamRequest(
          testService.Bidi.path,
          testService.Bidi.requestSerialize,
          testService.Bidi.responseDeserialize,
        );
        call.on('error', () => undefined);
        const answered = new Promise((resolve) => call.once('data', resolve));
        call.write({ hello: 'open' });
        return { call, answered };
      });
      await Promise.all(calls.map((c) => c.answered));
      const [extra] = await holdConnections(streamingPort, ['127.0.0.7'], 1);
      await expect.poll(() => extra?.closed(), { timeout: 2_000 }).toBe(true);
      const ended = calls.map(
        ({ call }) =>
          new Promise((resolve) => {
            call.once('status', (s: { code: number }) => {
              resolve(s.code);
            });
          }),
      );
      for (const { call } of calls) call.end();
      expect(await Promise.all(ended)).toEqual([Status.OK, Status.OK]);
    } finally {
      for (const client of clients) client.close();
      streaming.forceShutdown();
    }
  });

  it('refuses a cap that is not a positive whole number', () => {
    expect(() => secureServerOptions({ maxConnections: 0 })).toThrow(
      '"maxConnections" must be a whole number of at least 1',
    );
    // Checked before the per-address share is derived from it, not a TypeError from inside.
    for (const maxConnections of [10n, Symbol('cap')]) {
      expect(() => secureServerOptions({ maxConnections } as never)).toThrow(
        /^secureServerOptions: "maxConnections" must be a whole number/,
      );
    }
    // The port's cap is reached first: a larger share per address would never apply.
    expect(() => secureServerOptions({ maxConnections: 2, maxConnectionsPerAddress: 5 })).toThrow(
      'secureServerOptions: "maxConnectionsPerAddress" (5) is above maxConnections (2), so it would never apply',
    );
    // Against the machine's budget, which differs by machine, a larger share means the whole port.
    expect(() => secureServerOptions({ maxConnectionsPerAddress: Number.MAX_SAFE_INTEGER })).not.toThrow();
  });
});

describe('the connection cap of a gRPC port over TLS', () => {
  const tlsAudit = captureAudit();
  let pki: TestPki;
  beforeAll(async () => {
    pki = await createTestPki();
  });
  afterAll(async () => {
    await pki.cleanup();
  });

  /** A port of 6 connections, 3 per address, whose handshakes may wait a minute. */
  function startCapped(): Promise<TestServer> {
    return startTlsServer(
      perOperationCredentials(pki, tlsAudit.audit, { handshakeTimeoutMs: 60_000 }),
      fluxguardInterceptors({ audit: tlsAudit.audit, timeouts: false }),
      registerSecureService,
      secureServerOptions({ maxConnections: 6, maxConnectionsPerAddress: 3 }),
    );
  }

  it('closes the oldest connection still in its TLS handshake to let a client in at the cap, and logs it', async () => {
    const served = await startCapped();
    const client = clientFor(served.address, { ca: pki.ca.certPem });
    try {
      const before = tlsAudit.lines().length;
      // Two addresses hold the whole cap, each its share, with connections that never start a
      // handshake: no certificate and no cryptography needed.
      const held = await holdConnections(served.port, ['127.0.0.22', '127.0.0.23'], 3);
      expect(held.every((c) => !c.closed())).toBe(true);
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      await expect.poll(() => held[0]?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.slice(1).every((c) => !c.closed())).toBe(true);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({
          event: 'connection.refused',
          transport: 'grpc',
          reason: 'connection_limit',
          closedInHandshake: 1,
          addresses: ['127.0.0.22'],
        }),
      );
      for (const c of held) c.socket.destroy();
    } finally {
      client.close();
      await served.close();
    }
  });

  it('closes the oldest connection serving nothing, of the address holding most, to let a client in at the cap', async () => {
    const served = await startCapped();
    const client = clientFor(served.address, { ca: pki.ca.certPem });
    try {
      const before = tlsAudit.lines().length;
      // Connections that complete their handshake (HTTP/2 offered) and send nothing: anyone can
      // make them where client certificates are asked per operation.
      const handshake = { ca: pki.ca.certPem, ALPNProtocols: ['h2'] };
      const held = [
        ...(await holdConnections(served.port, ['127.0.0.24'], 1, handshake)),
        ...(await holdConnections(served.port, ['127.0.0.25'], 3, handshake)),
        ...(await holdConnections(served.port, ['127.0.0.26'], 2, handshake)),
      ];
      expect(held.every((c) => !c.closed())).toBe(true);
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      // The oldest of the address with three, not the older ones of the others.
      await expect.poll(() => held[1]?.closed(), { timeout: 2_000 }).toBe(true);
      expect([held[0], ...held.slice(2)].every((c) => c?.closed() === false)).toBe(true);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({
          event: 'connection.refused',
          transport: 'grpc',
          reason: 'connection_limit',
          closedIdle: 1,
          addresses: ['127.0.0.25'],
        }),
      );
      for (const c of held) c.socket.destroy();
    } finally {
      client.close();
      await served.close();
    }
  });

  it('closes a connection that offered no HTTP/2 (no session, held by Node until its client closes) to let a client in', async () => {
    const served = await startCapped();
    const client = clientFor(served.address, { ca: pki.ca.certPem });
    const sockets: TLSSocket[] = [];
    try {
      const before = tlsAudit.lines().length;
      // Node answers these with a 403 and its side closed, and waits for the client's, which
      // never comes: the cap is full of connections with no session.
      for (const localAddress of ['127.0.0.32', '127.0.0.32', '127.0.0.32', '127.0.0.33', '127.0.0.33', '127.0.0.33']) {
        const socket = tlsConnect({
          host: '127.0.0.1',
          port: served.port,
          localAddress,
          ca: pki.ca.certPem,
          servername: 'localhost',
          allowHalfOpen: true,
        } as ConnectionOptions);
        socket.on('error', () => undefined);
        socket.resume();
        sockets.push(socket);
        await new Promise((resolve) => socket.once('secureConnect', resolve));
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', transport: 'grpc', closedIdle: 1 }),
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      client.close();
      await served.close();
    }
  });

  it('closes a connection whose every call waits for its client (a call whose message never comes, one answered that its client never ends) to let a client in', async () => {
    const served = await startCapped();
    const client = clientFor(served.address, { ca: pki.ca.certPem });
    const sessions: ClientHttp2Session[] = [];
    try {
      const before = tlsAudit.lines().length;
      // Anyone can open a public call: each connection of the cap has one, whose message never
      // comes, and the client keeps opening more. None of them is served, and all hold a place.
      for (const localAddress of ['127.0.0.34', '127.0.0.34', '127.0.0.34', '127.0.0.35', '127.0.0.35', '127.0.0.35']) {
        const { session } = await openHttp2(served.port, localAddress, { ca: pki.ca.certPem });
        sessions.push(session);
        for (let i = 0; i < 2; i++) rawGrpcStream(session, op('Public')).resume();
        // And calls answered at once (here past their deadline), open until their client ends
        // them, or a second after the status.
        for (let i = 0; i < 2; i++) rawGrpcStream(session, op('Public'), { 'grpc-timeout': '20m' }).resume();
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(sessions.every((s) => !s.closed && !s.destroyed)).toBe(true);
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', transport: 'grpc', closedIdle: 1 }),
      );
      await expect.poll(() => sessions.filter((s) => s.destroyed || s.closed).length, { timeout: 2_000 }).toBe(1);
    } finally {
      for (const session of sessions) session.destroy();
      client.close();
      await served.close();
    }
  });

  /**
   * A port of 3 connections whose uploads are served once their client has sent them whole,
   * each then held until `release`, and a client per upload, each its own connection, uploading
   * (request id `upload-<i>` after `id`).
   */
  async function startUploads(hanging: boolean[], id = 'cap') {
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const served = await startTlsServer(
      perOperationCredentials(pki, tlsAudit.audit, { handshakeTimeoutMs: 60_000 }),
      fluxguardInterceptors({ audit: tlsAudit.audit, timeouts: false }),
      (server) => {
        registerSecureService(server, {
          Upload: async (call) => {
            handlerStarts.count++;
            const messages: Json[] = [];
            for await (const message of call) messages.push(message as Json);
            // Served: the client has sent everything, and the answer takes its time.
            await released;
            return { messages };
          },
        });
      },
      secureServerOptions({ maxConnections: 3, maxConnectionsPerAddress: 3 }),
    );
    const clients = hanging.map(() => clientFor(served.address, { ca: pki.ca.certPem }));
    const started = handlerStarts.count;
    const calls: ClientWritableStream<unknown>[] = [];
    const uploads = clients.map((client, i) => {
      let ended: (status: number) => void = () => undefined;
      const status = new Promise<number>((resolve) => (ended = resolve));
      const metadata = new Metadata();
      metadata.set('x-request-id', `${id}-upload-${String(i)}`);
      const call = client.makeClientStreamRequest(
        op('Upload'),
        (value: unknown) => Buffer.from(JSON.stringify(value)),
        (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
        metadata,
        () => undefined,
      );
      calls.push(call);
      call.on('status', (s) => {
        ended(s.code);
      });
      call.write({ part: 1 });
      if (hanging[i] !== true) call.end();
      return status;
    });
    await expect.poll(() => handlerStarts.count - started, { timeout: 5_000 }).toBe(hanging.length);
    return {
      served,
      uploads,
      calls,
      release,
      close: async () => {
        release();
        for (const client of clients) client.close();
        await served.close();
      },
    };
  }

  it('still refuses a new connection at the cap when every connection has a call being served', async () => {
    const { served, uploads, release, close } = await startUploads([false, false, false]);
    try {
      const before = tlsAudit.lines().length;
      const [extra] = await holdConnections(served.port, ['127.0.0.29'], 1);
      await expect.poll(() => extra?.closed(), { timeout: 2_000 }).toBe(true);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', transport: 'grpc', refusedByPortCap: 1 }),
      );
      expect(
        tlsAudit
          .lines()
          .slice(before)
          .some((line) => 'closedIdle' in line),
      ).toBe(false);
      // Every upload goes on to its end.
      release();
      expect(await Promise.all(uploads)).toEqual([Status.OK, Status.OK, Status.OK]);
    } finally {
      await close();
    }
  });

  it('closes a connection whose upload is left hanging by its client, while those with a call being served stay, and logs the upload cut with reason connection_cap', async () => {
    const { served, uploads, release, close } = await startUploads([true, false, false], 'hanging');
    try {
      const before = tlsAudit.lines().length;
      const [extra] = await holdConnections(served.port, ['127.0.0.29'], 1);
      expect(await uploads[0]).toBe(Status.UNAVAILABLE);
      expect(extra?.closed()).toBe(false);
      expect(tlsAudit.lines().slice(before)).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', transport: 'grpc', closedIdle: 1 }),
      );
      // Its handler was at work, waiting for the next message: cut by the server, not left by
      // its client.
      await expect
        .poll(() => tlsAudit.lines().find((line) => line.requestId === 'hanging-upload-0'), { timeout: 2_000 })
        .toMatchObject({
          event: 'request.cancelled',
          outcome: 'cancelled',
          reason: 'connection_cap',
          transport: 'grpc',
          operation: op('Upload'),
        });
      release();
      expect(await Promise.all(uploads.slice(1))).toEqual([Status.OK, Status.OK]);
      extra?.socket.destroy();
    } finally {
      await close();
    }
  });

  it('logs an upload left hanging whose client cancels it with no reason', async () => {
    const { calls, uploads, close } = await startUploads([true], 'left');
    try {
      calls[0]?.cancel();
      expect(await uploads[0]).toBe(Status.CANCELLED);
      await expect
        .poll(() => tlsAudit.lines().find((line) => line.requestId === 'left-upload-0'), { timeout: 2_000 })
        .toMatchObject({ event: 'request.cancelled', outcome: 'cancelled', operation: op('Upload') });
      expect(tlsAudit.lines().find((line) => line.requestId === 'left-upload-0')).not.toHaveProperty('reason');
    } finally {
      await close();
    }
  });

  it.each([
    { held: 'that never start a handshake', addresses: ['127.0.0.27', '127.0.0.28'], completed: false },
    {
      held: 'that complete their handshake (HTTP/2 offered) and send nothing',
      addresses: ['127.0.0.30', '127.0.0.31'],
      completed: true,
    },
  ])(
    'lets a client in, call after call, while two addresses flood the port with connections $held',
    async ({ addresses, completed }) => {
      const served = await startCapped();
      // Twice each address's share, each opened again as soon as it is closed or refused.
      const handshake = { ca: pki.ca.certPem, ALPNProtocols: ['h2'] };
      const flood = floodConnections(served.port, addresses, 6, completed ? handshake : undefined);
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        for (let i = 0; i < 5; i++) {
          // A new channel each time, as a client whose connection was closed makes.
          const client = clientFor(served.address, { ca: pki.ca.certPem });
          try {
            expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
          } finally {
            client.close();
          }
        }
        expect(flood.opened()).toBeGreaterThan(12);
      } finally {
        flood.stop();
        await served.close();
      }
    },
  );
});
