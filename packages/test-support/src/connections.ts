import { connect, type Socket } from 'node:net';

/** A TCP connection held open without a byte sent: a TLS handshake that never starts. */
export interface HeldConnection {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly closed: () => boolean;
}

/** Opens a TCP connection to `port` on 127.0.0.1 from `localAddress` and sends nothing. */
export function holdConnection(port: number, localAddress: string): HeldConnection {
  let closed = false;
  const socket = connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  socket.resume();
  socket.once('close', () => {
    closed = true;
  });
  return { socket, localAddress, closed: () => closed };
}

/**
 * Holds `perAddress` handshake-less connections from each of `addresses`, one at a time and
 * each counted by the server before the next (so the first opened is the oldest there).
 */
export async function holdConnections(
  port: number,
  addresses: readonly string[],
  perAddress: number,
): Promise<HeldConnection[]> {
  const held: HeldConnection[] = [];
  for (const address of addresses) {
    for (let i = 0; i < perAddress; i++) {
      const connection = holdConnection(port, address);
      await new Promise<void>((resolve) => {
        connection.socket.once('connect', () => {
          resolve();
        });
        connection.socket.once('close', () => {
          resolve();
        });
      });
      await new Promise((resolve) => setTimeout(resolve, 20));
      held.push(connection);
    }
  }
  return held;
}

/**
 * Tries to keep `perAddress` handshake-less connections open from each of `addresses`, opening a
 * new one for each the server closes or refuses, until `stop()`; `opened` counts them all. More
 * than the server's share per address makes a flood of refused connections.
 */
export function floodConnections(
  port: number,
  addresses: readonly string[],
  perAddress: number,
): { stop(): void; readonly opened: () => number } {
  let stopped = false;
  let opened = 0;
  const live = new Set<Socket>();
  const keep = (address: string): void => {
    if (stopped) return;
    opened += 1;
    const { socket } = holdConnection(port, address);
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
