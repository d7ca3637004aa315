// A client that skips stream numbers leaves a gap of streams Node reset (or never opened) before
// any JavaScript object existed: each gap is noted to the port's connection gate once, with its
// count (at most 1,000), not once per missing stream.
import { once } from 'node:events';
import { connect } from 'node:tls';
import { describe, expect, it, vi } from 'vitest';
import type * as Adapter from '@fluxguard/core/adapter';
import { FLAG, FRAME, PREFACE, h2Frame, hpackLiterals } from '@fluxguard/test-support/http2-frames';
import { fluxguardInterceptors, secureServerOptions } from './index.js';
import type { Json } from './testing/harness.js';
import { startSecureServer, waitFor } from './testing/tls.js';

const sessionRefused = vi.hoisted(() => vi.fn());

// The gate `addService` makes for the port, with its `sessionRefused` calls recorded.
vi.mock('@fluxguard/core/adapter', async (importOriginal) => {
  const original = await importOriginal<typeof Adapter>();
  return {
    ...original,
    gateConnections: (...args: Parameters<typeof Adapter.gateConnections>): Adapter.GatedConnections => {
      const gated = original.gateConnections(...args);
      const recorded: Adapter.GatedConnections['sessionRefused'] = (...noted) => {
        sessionRefused(...noted);
        gated.sessionRefused(...noted);
      };
      return Object.create(gated, { sessionRefused: { value: recorded } }) as Adapter.GatedConnections;
    },
  };
});

describe('stream numbers a client skips', () => {
  it('are noted once per gap with the gap as the count, the summary counting each stream', async () => {
    const secure = await startSecureServer((audit) => fluxguardInterceptors({ audit, timeouts: false }), {
      serverOptions: secureServerOptions(),
    });
    const socket = connect({
      host: '127.0.0.1',
      port: secure.server.port,
      servername: 'localhost',
      ALPNProtocols: ['h2'],
      ca: secure.pki.ca.certPem,
    });
    socket.on('error', () => undefined);
    try {
      await once(socket, 'secureConnect');
      socket.resume();
      const block = hpackLiterals([
        [':method', 'POST'],
        [':scheme', 'https'],
        [':path', '/fluxguard.test.v1.Secure/Public'],
        [':authority', 'localhost'],
        ['content-type', 'application/grpc'],
        ['te', 'trailers'],
      ]);
      const open = (id: number): Buffer => h2Frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, block);
      // Streams 1, then 1001 (499 numbers skipped), then 5001 (1,999 skipped, counted as 1,000).
      socket.write(
        Buffer.concat([PREFACE, h2Frame(FRAME.SETTINGS, 0, 0), h2Frame(FRAME.SETTINGS, FLAG.ACK, 0), open(1)]),
      );
      socket.write(open(1001));
      socket.write(open(5001));
      const resets = (): unknown[][] => sessionRefused.mock.calls.filter(([kind]) => kind === 'stream_reset');
      await waitFor(() => resets().length >= 2);
      // The connection's end finds no gap past the last stream.
      const closed = once(socket, 'close');
      socket.destroy();
      await closed;
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(resets()).toEqual([
        ['stream_reset', expect.stringContaining('127.0.0.1'), 499],
        ['stream_reset', expect.stringContaining('127.0.0.1'), 1_000],
      ]);
      // The first of the spell is written at once, alone; the rest wait for the interval's line.
      const refused = (): Json[] => secure.lines().filter((line) => line.event === 'http2.session_refused');
      expect(refused()).toEqual([expect.objectContaining({ refusals: { stream_reset: 1 }, addresses: ['127.0.0.1'] })]);
    } finally {
      socket.destroy();
      await secure.close();
    }
  });
});
