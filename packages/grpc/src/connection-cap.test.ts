// The cap on connections held at once by a gRPC port (secureServerOptions' maxConnections,
// applied by addService to the HTTP/2 server grpc-js makes): a flood of connections beyond it
// is closed at once, and the port serves again once the flood is gone.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server, ServerCredentials, status as Status } from '@grpc/grpc-js';
import { Client, credentials } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, secureServerOptions } from './index.js';
import { callKind, captureAudit, testService, type Json } from './testing/harness.js';
import { CLIENT_PREFACE } from './testing/raw-http2.js';
import { floodConnections, holdConnections } from '@fluxguard/test-support/connections';
import {
  clientFor,
  createTestPki,
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

  it('refuses a cap that is not a positive whole number', () => {
    expect(() => secureServerOptions({ maxConnections: 0 })).toThrow(
      '"maxConnections" must be a whole number of at least 1',
    );
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

  it('lets a client in, call after call, while two addresses flood the port with handshake-less connections', async () => {
    const served = await startCapped();
    // Twice each address's share: half of them refused and opened again, for as long as it lasts.
    const flood = floodConnections(served.port, ['127.0.0.27', '127.0.0.28'], 6);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
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
  });
});
