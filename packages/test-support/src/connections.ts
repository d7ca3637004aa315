import {
  connect as http2Connect,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

/**
 * What a held connection completes its TLS handshake with, and then sends nothing more: the
 * server's CA, and for an HTTP/2 server its protocol (`ALPNProtocols: ['h2']`).
 */
export interface HandshakeOptions {
  readonly ca: string | Buffer;
  readonly servername?: string;
  readonly ALPNProtocols?: readonly string[];
}

/**
 * A TCP connection held open without a byte sent (a TLS handshake that never starts), or with
 * {@link HandshakeOptions} one that completes its TLS handshake and then sends nothing.
 */
export interface HeldConnection {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly closed: () => boolean;
}

/**
 * Opens a TCP connection to `port` on 127.0.0.1 from `localAddress` and sends nothing, or with
 * `handshake` completes a TLS handshake and then sends nothing; `ready` once connected (TLS: once
 * the handshake completed), or closed before.
 */
export function holdConnection(
  port: number,
  localAddress: string,
  handshake?: HandshakeOptions,
): HeldConnection & { readonly ready: Promise<void> } {
  let closed = false;
  const socket =
    handshake === undefined
      ? connect({ host: '127.0.0.1', port, localAddress })
      : // Passed on to net.connect, whose socket options Node's tls types leave out.
        tlsConnect({
          host: '127.0.0.1',
          port,
          localAddress,
          ca: handshake.ca,
          servername: handshake.servername ?? 'localhost',
          ...(handshake.ALPNProtocols === undefined ? {} : { ALPNProtocols: [...handshake.ALPNProtocols] }),
        } as ConnectionOptions);
  const ready = new Promise<void>((resolve) => {
    socket.once(handshake === undefined ? 'connect' : 'secureConnect', () => {
      resolve();
    });
    socket.once('close', () => {
      resolve();
    });
  });
  socket.on('error', () => undefined);
  socket.resume();
  socket.once('close', () => {
    closed = true;
  });
  return { socket, localAddress, closed: () => closed, ready };
}

/**
 * An HTTP/2 session over TLS to `port` on 127.0.0.1 from `localAddress`, its handshake
 * completed, and whether its connection has closed since. The socket is handed to HTTP/2 before
 * anything is read from it, so that the server's first settings reach the session.
 */
export async function openHttp2(
  port: number,
  localAddress: string,
  handshake: HandshakeOptions,
): Promise<{ readonly session: ClientHttp2Session; readonly closed: () => boolean }> {
  // Passed on to net.connect, whose socket options Node's tls types leave out.
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    localAddress,
    ca: handshake.ca,
    servername: handshake.servername ?? 'localhost',
    ALPNProtocols: ['h2'],
  } as ConnectionOptions);
  let closed = false;
  socket.once('close', () => {
    closed = true;
  });
  const session = http2Connect(`https://127.0.0.1:${String(port)}`, { createConnection: () => socket });
  session.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => {
      resolve();
    });
    session.once('close', () => {
      reject(new Error('the server closed the connection before its HTTP/2 settings'));
    });
  });
  return { session, closed: () => closed };
}

/**
 * A gRPC request stream opened by hand on `session` (POST, `application/grpc`, `te: trailers`,
 * plus `headers`), its errors ignored: for calls a grpc-js client will not make, such as one
 * whose request never comes.
 */
export function rawGrpcStream(
  session: ClientHttp2Session,
  path: string,
  headers: Readonly<OutgoingHttpHeaders> = {},
): ClientHttp2Stream {
  const stream = session.request({
    ':method': 'POST',
    ':path': path,
    'content-type': 'application/grpc',
    te: 'trailers',
    ...headers,
  });
  stream.on('error', () => undefined);
  return stream;
}

/**
 * Holds `perAddress` handshake-less connections from each of `addresses` (with `handshake`,
 * connections that complete it), one at a time and each counted by the server before the next
 * (so the first opened is the oldest there).
 */
export async function holdConnections(
  port: number,
  addresses: readonly string[],
  perAddress: number,
  handshake?: HandshakeOptions,
): Promise<HeldConnection[]> {
  const held: HeldConnection[] = [];
  for (const address of addresses) {
    for (let i = 0; i < perAddress; i++) {
      const connection = holdConnection(port, address, handshake);
      await connection.ready;
      await new Promise((resolve) => setTimeout(resolve, 20));
      held.push(connection);
    }
  }
  return held;
}

/**
 * Tries to keep `perAddress` handshake-less connections open from each of `addresses` (with
 * `handshake`, connections that complete it and then send nothing), opening a new one for each
 * the server closes or refuses, until `stop()`; `opened` counts them all. More than the server's
 * share per address makes a flood of refused connections.
 */
export function floodConnections(
  port: number,
  addresses: readonly string[],
  perAddress: number,
  handshake?: HandshakeOptions,
): { stop(): void; readonly opened: () => number } {
  let stopped = false;
  let opened = 0;
  const live = new Set<Socket>();
  const keep = (address: string): void => {
    if (stopped) return;
    opened += 1;
    const { socket } = holdConnection(port, address, handshake);
    live.add(socket);
    socket.once('close', () => {
      live.delete(socket);
      // A new one 5 ms later: hundreds a second per connection kept, within a test's means.
      setTimeout(() => {
        keep(address);
      }, 5);
    });
  };
  for (const address of addresses) for (let i = 0; i < perAddress; i++) keep(address);
  return {
    stop() {
      stopped = true;
      for (const socket of live) socket.destroy();
    },
    opened: () => opened,
  };
}
