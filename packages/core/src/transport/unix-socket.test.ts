import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isUnixSocketConnection } from './unix-socket.js';

const dir = mkdtempSync(join(tmpdir(), 'fluxguard-unix-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The server side of one connection to a server listening on `where` (a path, or TCP). */
async function accepted(
  where: 'unix' | 'tcp',
): Promise<{ server: Socket; client: Socket; close: () => Promise<void> }> {
  const server = createServer();
  const path = join(dir, `${String(Math.random()).slice(2)}.sock`);
  await new Promise<void>((resolve) => {
    if (where === 'unix') server.listen(path, resolve);
    else server.listen(0, '127.0.0.1', resolve);
  });
  const serverSide = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = where === 'unix' ? connect(path) : connect((server.address() as AddressInfo).port, '127.0.0.1');
  const socket = await serverSide;
  return {
    server: socket,
    client,
    close: async () => {
      client.destroy();
      socket.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}

describe('isUnixSocketConnection', () => {
  it('tells a connection of a Unix socket from a TCP one', async () => {
    const unix = await accepted('unix');
    const tcp = await accepted('tcp');
    try {
      expect(isUnixSocketConnection(unix.server)).toBe(true);
      expect(unix.server.remoteAddress).toBeUndefined();
      expect(isUnixSocketConnection(tcp.server)).toBe(false);
    } finally {
      await Promise.all([unix.close(), tcp.close()]);
    }
  });

  it('never takes a TCP connection whose client reset it for one, nor anything else', async () => {
    const tcp = await accepted('tcp');
    const closed = new Promise((resolve) => tcp.server.once('close', resolve));
    tcp.server.on('error', () => undefined);
    tcp.client.resetAndDestroy();
    await closed;
    // Node has let go of the connection: no address, and no handle to ask.
    expect(tcp.server.remoteAddress).toBeUndefined();
    expect(isUnixSocketConnection(tcp.server)).toBe(false);
    await tcp.close();
    for (const other of [undefined, null, {}, { _handle: null }, { _parent: { _handle: { constructor: 'Pipe' } } }]) {
      expect(isUnixSocketConnection(other)).toBe(false);
    }
  });
});
