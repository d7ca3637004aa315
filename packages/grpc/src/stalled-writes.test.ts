// A client that stops reading its connection while answers are on their way: what the server
// wrote waits in its socket, past the end of every call, and Node never finishes closing a
// session whose writes are stuck (neither the idle limit nor a failed keepalive reaches it).
// One reader held 1.3 GB this way. The connection is dropped once nothing has been taken from
// it for `maxWriteStallMs`; a client that reads slowly keeps it. The calls the drop cuts are
// logged as the server's cut (`reason: 'write_stalled'`), unlike those of a client that leaves.
import { readdirSync } from 'node:fs';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js';
import { ConfigurationError } from '@fluxguard/core';
import { addService, fluxguardInterceptors, getSignal, secureServerOptions } from './index.js';
import { bufferMethod } from './testing/harness.js';
import { h2Frame, hpackLiterals } from '@fluxguard/test-support/http2-frames';
import { CLIENT_PREFACE, grpcFrame } from './testing/raw-http2.js';
import { startSecureServer, type SecureServer } from './testing/tls.js';

const STALL_MS = 1_000;
const CHUNK = Buffer.alloc(256 * 1024, 7);

const floodService = {
  Flood: bufferMethod('/fluxguard.test.v1.Stall/Flood', false, true),
  Wait: bufferMethod('/fluxguard.test.v1.Stall/Wait', false, false),
};

/** `Wait` handlers at work now. */
let waiting = 0;

/**
 * `Flood` writes answers as fast as the connection takes them, and is at work until its call
 * ends; `Wait` answers nothing until its call ends.
 */
function registerFlood(server: Server): void {
  addService(server, floodService, {
    Flood: async (call: ServerWritableStream<Buffer, Buffer>) => {
      const write = (): void => {
        while (!call.cancelled && call.write(CHUNK));
      };
      call.on('drain', write);
      write();
      await new Promise((resolve) => {
        getSignal(call).addEventListener('abort', resolve);
      });
    },
    Wait: async (call: ServerUnaryCall<Buffer, Buffer>) => {
      waiting += 1;
      try {
        await new Promise((resolve) => {
          getSignal(call).addEventListener('abort', resolve);
        });
      } finally {
        waiting -= 1;
      }
      return Buffer.alloc(0);
    },
  });
}

let secure: SecureServer;
const openDescriptors = (): number => readdirSync('/proc/self/fd').length;

beforeAll(async () => {
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit }), {
    register: registerFlood,
    serverOptions: secureServerOptions({ maxWriteStallMs: STALL_MS, maxConnectionIdleMs: 60_000 }),
  });
});

afterAll(() => secure.close());

/** The request headers of a call of `path` on the raw connections below, with a 30 s deadline. */
function callHeaders(path: string, requestId?: string): Buffer {
  return hpackLiterals([
    [':method', 'POST'],
    [':scheme', 'https'],
    [':path', path],
    [':authority', 'localhost'],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
    ['grpc-timeout', '30S'],
    ...(requestId === undefined ? [] : [['x-request-id', requestId] as [string, string]]),
  ]);
}

/**
 * A client of one `Flood` call (a 30 s deadline) with HTTP/2 windows opened wide, so that the
 * server writes all it can: it reads until `readBytes` have come, then `reading` decides.
 * `requestIds` names the `Flood` call, and opens a `Wait` call beside it on the same connection.
 */
function floodClient(
  readBytes: number,
  reading: 'stops' | 'slowly',
  requestIds?: { readonly flood: string; readonly wait: string },
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      {
        host: '127.0.0.1',
        port: secure.server.port,
        ca: secure.pki.ca.certPem,
        servername: 'localhost',
        ALPNProtocols: ['h2'],
      },
      () => {
        const settings = Buffer.alloc(6);
        settings.writeUInt16BE(0x4, 0); // SETTINGS_INITIAL_WINDOW_SIZE
        settings.writeUInt32BE(2 ** 31 - 1, 2);
        const increment = Buffer.alloc(4);
        increment.writeUInt32BE(2 ** 31 - 1 - 65_535);
        socket.write(
          Buffer.concat([
            CLIENT_PREFACE,
            h2Frame(0x4, 0, 0, settings),
            h2Frame(0x8, 0, 0, increment),
            h2Frame(0x1, 0x4, 1, callHeaders(floodService.Flood.path, requestIds?.flood)),
            h2Frame(0x0, 0x1, 1, grpcFrame(Buffer.alloc(0))),
            ...(requestIds === undefined
              ? []
              : [
                  h2Frame(0x1, 0x4, 3, callHeaders(floodService.Wait.path, requestIds.wait)),
                  h2Frame(0x0, 0x1, 3, grpcFrame(Buffer.alloc(0))),
                ]),
          ]),
        );
      },
    );
    socket.on('error', () => undefined);
    socket.once('error', reject);
    let pending = Buffer.alloc(0);
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      pending = Buffer.concat([pending, chunk]);
      // The server's SETTINGS want an acknowledgement; nothing else is parsed.
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) break;
        if (pending[3] === 0x4 && ((pending[4] ?? 0) & 0x1) === 0) socket.write(h2Frame(0x4, 0x1, 0));
        pending = pending.subarray(9 + length);
      }
      if (received < readBytes || socket.isPaused()) return;
      socket.pause();
      if (reading === 'slowly') {
        // A little, now and then: slow, but always taking some.
        const trickle = setInterval(() => {
          if (socket.destroyed) clearInterval(trickle);
          else socket.read(16 * 1024);
        }, STALL_MS / 4);
      }
      resolve(socket);
    });
  });
}

/** The `request.cancelled` lines of the two calls of `ids`, the `Flood` call's first. */
function cancelledLines(ids: { readonly flood: string; readonly wait: string }): Record<string, unknown>[] {
  const cancelled = secure.lines().filter((line) => line.event === 'request.cancelled');
  return [ids.flood, ids.wait].flatMap((id) => cancelled.filter((line) => line.requestId === id));
}

describe('a connection whose client stops reading', () => {
  it('is dropped once nothing has been taken from it for maxWriteStallMs, and its answers go with it', async () => {
    const count = 4;
    const before = openDescriptors();
    const clients = await Promise.all(Array.from({ length: count }, () => floodClient(1024 * 1024, 'stops')));
    try {
      // This process holds both ends: the clients' descriptors stay, the server's go.
      await expect.poll(openDescriptors, { timeout: 10 * STALL_MS }).toBeLessThanOrEqual(before + count + 2);
    } finally {
      for (const socket of clients) socket.destroy();
    }
  });

  it('has the calls it still carried logged as cut by the server, with reason write_stalled', async () => {
    const ids = { flood: 'stalled-flood', wait: 'stalled-wait' };
    const client = await floodClient(1024 * 1024, 'stops', ids);
    try {
      await expect.poll(() => waiting).toBe(1);
      // Both at work when the connection goes: the stream writing, and the one not answered yet.
      await expect
        .poll(() => cancelledLines(ids), { timeout: 10 * STALL_MS })
        .toEqual([
          expect.objectContaining({ requestId: ids.flood, outcome: 'cancelled', reason: 'write_stalled' }),
          expect.objectContaining({ requestId: ids.wait, outcome: 'cancelled', reason: 'write_stalled' }),
        ]);
    } finally {
      client.destroy();
    }
  });

  it('is kept while its client reads, however slowly', async () => {
    const client = await floodClient(1024 * 1024, 'slowly');
    try {
      await new Promise((resolve) => setTimeout(resolve, 4 * STALL_MS));
      expect(client.destroyed).toBe(false);
      expect(client.readableEnded).toBe(false);
    } finally {
      client.destroy();
    }
  });

  it('refuses a stall limit that is not a positive number of ms', () => {
    expect(() => secureServerOptions({ maxWriteStallMs: 0 })).toThrow(ConfigurationError);
  });
});
