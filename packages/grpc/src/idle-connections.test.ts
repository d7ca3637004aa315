// Connections that never become calls: with Node's and grpc-js's defaults, an idle TLS
// connection (or a TCP connection that never starts its handshake) is held for minutes, and a
// few thousand exhaust the process's descriptors. The server credentials and options close them.
import { readdirSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { ConfigurationError } from '@fluxguard/core';
import { addService, createServerCredentials, fluxguardInterceptors, secureServerOptions } from './index.js';
import { deserialize, serialize, startServer, testService, unaryAnswering } from './testing/harness.js';
import { startSecureServer, unary, type SecureServer } from './testing/tls.js';
import { h2Frame, hpackLiterals } from '@fluxguard/test-support/http2-frames';
import { CLIENT_PREFACE } from './testing/raw-http2.js';

const IDLE_MS = 400;
const FLOOD = 200;

let secure: SecureServer;
let port: number;

const openDescriptors = (): number => readdirSync('/proc/self/fd').length;

beforeAll(async () => {
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit }), {
    handshakeTimeoutMs: IDLE_MS,
    serverOptions: secureServerOptions({ maxConnectionIdleMs: IDLE_MS, closingGraceMs: IDLE_MS }),
  });
  port = secure.server.port;
});

afterAll(() => secure.close());

/**
 * Opens `count` sockets with `open` and counts those the server closes. Node's defaults would
 * hold them for two minutes (handshake) or for ever (a session without calls): the tests wait
 * a few seconds, bounded, for all of them.
 */
function flood(count: number, open: () => Socket): { closed: () => number } {
  let closed = 0;
  for (let i = 0; i < count; i++) {
    const socket = open();
    socket.on('error', () => undefined);
    // Reads (and drops) what the server sends, so that its closing the connection is seen.
    socket.resume();
    socket.on('close', () => {
      closed += 1;
    });
  }
  return { closed: () => closed };
}

const BOUND_MS = 5_000;

describe('connections that never become calls', () => {
  it('closes TCP connections that never start their TLS handshake, and serves a real call meanwhile', async () => {
    const before = openDescriptors();
    const flooding = flood(FLOOD, () => netConnect({ host: '127.0.0.1', port }));
    // Closed before the descriptors are counted: its connection is not one of the flood's.
    const client = secure.client();
    try {
      const outcome = await unary(client, 'Public');
      expect(outcome.status.code).toBe(Status.OK);
    } finally {
      client.close();
    }
    await expect.poll(flooding.closed, { timeout: BOUND_MS }).toBe(FLOOD);
    await expect.poll(openDescriptors, { timeout: BOUND_MS }).toBeLessThanOrEqual(before + 2);
  });

  it('closes TLS connections that complete their handshake and then send nothing', async () => {
    const before = openDescriptors();
    const flooding = flood(FLOOD, () =>
      tlsConnect({
        host: '127.0.0.1',
        port,
        ca: secure.pki.ca.certPem,
        servername: 'localhost',
        ALPNProtocols: ['h2'],
      }),
    );
    await expect.poll(flooding.closed, { timeout: BOUND_MS }).toBe(FLOOD);
    await expect.poll(openDescriptors, { timeout: BOUND_MS }).toBeLessThanOrEqual(before + 2);
  });

  it('drops TLS connections whose clients stop reading once their session has started, and never close', async () => {
    const count = 50;
    const before = openDescriptors();
    const clients = await Promise.all(
      Array.from(
        { length: count },
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = tlsConnect(
              { host: '127.0.0.1', port, ca: secure.pki.ca.certPem, servername: 'localhost', ALPNProtocols: ['h2'] },
              () => {
                // An HTTP/2 session, then nothing read and nothing closed: the server's GOAWAY
                // and the end of its side go unanswered.
                socket.write(CLIENT_PREFACE);
                socket.pause();
                resolve(socket);
              },
            );
            socket.on('error', () => undefined);
            socket.once('error', reject);
          }),
      ),
    );
    try {
      // The clients' own descriptors stay open (this process holds both ends); the server's go,
      // after the idle limit and the grace after it.
      await expect.poll(openDescriptors, { timeout: BOUND_MS }).toBeLessThanOrEqual(before + count + 2);
    } finally {
      for (const socket of clients) socket.destroy();
    }
  });

  it('drops connections that leave a header block open (HEADERS without END_HEADERS), and read on', async () => {
    const count = 20;
    const flooding = flood(count, () => {
      const socket = tlsConnect(
        { host: '127.0.0.1', port, ca: secure.pki.ca.certPem, servername: 'localhost', ALPNProtocols: ['h2'] },
        () => {
          // The first fields of a request's header block, and no CONTINUATION ever: no stream
          // reaches grpc-js, and nghttp2 waits for the rest of the block. The client reads
          // everything (the GOAWAY of the idle limit included) and never closes.
          const fields = hpackLiterals([
            [':method', 'POST'],
            [':scheme', 'https'],
          ]);
          socket.write(Buffer.concat([CLIENT_PREFACE, h2Frame(1, 0, 1, fields)]));
        },
      );
      return socket;
    });
    // Before: the idle limit's GOAWAY at 400 ms, and then the connection kept until the
    // keepalive dropped it, about two minutes later.
    await expect.poll(flooding.closed, { timeout: BOUND_MS }).toBe(count);
  });

  it('refuses a handshake timeout that is not a positive number of ms', () => {
    expect(() =>
      createServerCredentials(
        { ...secure.pki.files, crlFile: undefined, clientCertificates: 'per-operation' },
        { audit: secure.audit, reload: false, handshakeTimeoutMs: 0 },
      ),
    ).toThrow(ConfigurationError);
  });
});

describe('a session closed gracefully while a call is in flight', () => {
  it('lets the call finish past the closing grace: only a session with no stream open is dropped', async () => {
    const started = await startServer(
      fluxguardInterceptors({ audit: secure.audit }),
      (server) => {
        addService(server, testService, {
          ...unaryAnswering({ ok: true }),
          ClientStream: async (call) => {
            let count = 0;
            for await (const _message of call) count += 1;
            return { count };
          },
        });
      },
      secureServerOptions({ closingGraceMs: 100 }),
    );
    let shutDown = false;
    try {
      const outcome = new Promise<{ code: number; value: unknown }>((resolve) => {
        let value: unknown;
        const call = started.client.makeClientStreamRequest(
          testService.ClientStream.path,
          serialize,
          deserialize,
          (_err, answer) => {
            value = answer;
          },
        );
        call.on('status', (status: { code: number }) => {
          resolve({ code: status.code, value });
        });
        call.write({ part: 1 });
        // The server is asked to shut down gracefully (its sessions are closed); the call goes on
        // for ten times the grace before it ends.
        setTimeout(() => {
          started.server.tryShutdown(() => {
            shutDown = true;
          });
        }, 100);
        setTimeout(() => {
          call.write({ part: 2 });
          call.end();
        }, 1_100);
      });
      expect(await outcome).toEqual({ code: Status.OK, value: { count: 2 } });
      await expect.poll(() => shutDown, { timeout: 5_000 }).toBe(true);
    } finally {
      started.client.close();
      started.server.forceShutdown();
    }
  });
});
