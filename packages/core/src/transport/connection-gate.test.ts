import { createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { holdConnection, holdConnections, type HeldConnection } from '@fluxguard/test-support/connections';
import { capturedAudit } from '../testing/jwt-fixtures.js';
import { createConnectionGate, defaultConnectionsPerAddress, gateConnections } from './connection-gate.js';
import { noteServerEnding, serverEndingOf } from './server-ending.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('createConnectionGate', () => {
  it('admits each client address up to its share, and again once one of its connections closes', () => {
    const gate = createConnectionGate({ maxPerAddress: 2, audit: undefined, transport: 'http' });
    const first = gate.admit('203.0.113.7');
    const second = gate.admit('::ffff:203.0.113.7');
    expect(first).toBeTypeOf('function');
    expect(second).toBeTypeOf('function');
    // IPv4-mapped IPv6 is the same client; another address has its own share.
    expect(gate.admit('203.0.113.7')).toBeUndefined();
    expect(gate.admit('203.0.113.8')).toBeTypeOf('function');
    first?.();
    first?.(); // a second release gives nothing back twice
    expect(gate.heldBy('203.0.113.7')).toBe(1);
    expect(gate.admit('203.0.113.7')).toBeTypeOf('function');
    expect(gate.admit('203.0.113.7')).toBeUndefined();
  });

  it('counts an IPv6 client by its /64: rotating through its addresses does not escape the share', () => {
    const gate = createConnectionGate({ maxPerAddress: 3, audit: undefined, transport: 'grpc' });
    for (let i = 1; i <= 3; i++) expect(gate.admit(`2001:db8:1:2::${String(i)}`)).toBeTypeOf('function');
    expect(gate.admit('2001:db8:1:2:ffff::9')).toBeUndefined();
    expect(gate.admit('2001:db8:1:3::1')).toBeTypeOf('function');
  });

  it('writes the first refusal at once and the rest of a flood as one line per 10 s', () => {
    vi.useFakeTimers();
    const { audit, lines } = capturedAudit();
    const gate = createConnectionGate({ maxPerAddress: 1, audit, transport: 'http' });
    gate.admit('198.51.100.1');
    for (let i = 0; i < 1_000; i++) gate.admit('198.51.100.1');
    gate.refusedOverall();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      event: 'connection.refused',
      reason: 'address_connection_limit',
      refusedByAddressShare: 1,
      addresses: ['198.51.100.1'],
    });
    vi.advanceTimersByTime(10_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ refusedByAddressShare: 999, refusedByPortCap: 1, intervalMs: 10_000 });
    // A quiet interval ends the spell: the next refusal is written at once again.
    vi.advanceTimersByTime(20_000);
    expect(lines).toHaveLength(2);
    gate.admit('198.51.100.1');
    expect(lines).toHaveLength(3);
  });

  it('writes failed handshakes by their code, folded as refusals are', () => {
    vi.useFakeTimers();
    const { audit, lines } = capturedAudit();
    const gate = createConnectionGate({ maxPerAddress: 1, audit, transport: 'grpc' });
    gate.handshakeFailed('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', '203.0.113.9');
    for (let i = 0; i < 99; i++) gate.handshakeFailed('ERR_TLS_HANDSHAKE_TIMEOUT', '203.0.113.9');
    vi.advanceTimersByTime(10_000);
    expect(lines).toEqual([
      expect.objectContaining({
        event: 'tls.handshake_failed',
        failures: { ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 1 },
        addresses: ['203.0.113.9'],
      }),
      expect.objectContaining({ failures: { ERR_TLS_HANDSHAKE_TIMEOUT: 99 }, intervalMs: 10_000 }),
    ]);
  });

  it('writes sessions the HTTP/2 layer refused by their kind, folded as refusals are', () => {
    vi.useFakeTimers();
    const { audit, lines } = capturedAudit();
    const gate = createConnectionGate({ maxPerAddress: 1, audit, transport: 'grpc' });
    gate.sessionRefused('flood', '203.0.113.9');
    for (let i = 0; i < 499; i++) gate.sessionRefused('headers_too_large', '2001:db8:1:2::7');
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(10_000);
    expect(lines).toEqual([
      expect.objectContaining({
        event: 'http2.session_refused',
        transport: 'grpc',
        reason: 'http2_refused',
        refusals: { flood: 1 },
        addresses: ['203.0.113.9'],
      }),
      expect.objectContaining({
        refusals: { headers_too_large: 499 },
        addresses: ['2001:db8:1:2:0:0:0:0/64'],
        intervalMs: 10_000,
      }),
    ]);
  });

  it('writes refused sessions noted with a count as that many single notes: one at once, the rest folded', () => {
    vi.useFakeTimers();
    const one = capturedAudit();
    const counted = capturedAudit();
    const byOne = createConnectionGate({ maxPerAddress: 1, audit: one.audit, transport: 'grpc' });
    const byCount = createConnectionGate({ maxPerAddress: 1, audit: counted.audit, transport: 'grpc' });
    for (let i = 0; i < 1_000; i++) byOne.sessionRefused('stream_reset', '203.0.113.9');
    byOne.sessionRefused('stream_reset', '203.0.113.10');
    for (let i = 0; i < 4; i++) byOne.sessionRefused('stream_reset', '203.0.113.10');
    byCount.sessionRefused('stream_reset', '203.0.113.9', 1_000);
    byCount.sessionRefused('stream_reset', '203.0.113.10');
    byCount.sessionRefused('stream_reset', '203.0.113.10', 4);
    // Nothing is noted for no stream.
    byCount.sessionRefused('stream_reset', '203.0.113.11', 0);
    expect(counted.lines).toEqual([
      expect.objectContaining({ refusals: { stream_reset: 1 }, addresses: ['203.0.113.9'] }),
    ]);
    vi.advanceTimersByTime(10_000);
    byOne.sessionRefused('flood', '203.0.113.9');
    byCount.sessionRefused('flood', '203.0.113.9', 3);
    byOne.sessionRefused('flood', '203.0.113.9');
    byOne.sessionRefused('flood', '203.0.113.9');
    vi.advanceTimersByTime(10_000);
    expect(counted.lines).toEqual([
      expect.objectContaining({ refusals: { stream_reset: 1 }, addresses: ['203.0.113.9'] }),
      expect.objectContaining({
        refusals: { stream_reset: 1_004 },
        addresses: ['203.0.113.9', '203.0.113.10'],
        intervalMs: 10_000,
      }),
      expect.objectContaining({ refusals: { flood: 3 }, addresses: ['203.0.113.9'], intervalMs: 10_000 }),
    ]);
    const withoutTime = (lines: readonly Record<string, unknown>[]): unknown[] =>
      lines.map(({ time: _time, ...rest }) => rest);
    expect(withoutTime(counted.lines)).toEqual(withoutTime(one.lines));
  });

  it('gives each address half of the port by default, at least 16, never above the cap', () => {
    expect(defaultConnectionsPerAddress(14_000)).toBe(7_000);
    expect(defaultConnectionsPerAddress(20)).toBe(16);
    expect(defaultConnectionsPerAddress(5)).toBe(5);
  });
});

describe('gateConnections on a server without TLS', () => {
  it('destroys every connection it holds at destroyAll, so that the server closes', async () => {
    const server = createServer();
    const gated = gateConnections(server, { maxPerAddress: 10, audit: undefined, transport: 'grpc' });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const accepted: Socket[] = [];
    server.on('connection', (socket: Socket) => accepted.push(socket));
    const held = await holdConnections(port, ['127.0.0.45'], 3);
    await expect.poll(() => gated.heldBy('127.0.0.45'), { timeout: 2_000 }).toBe(3);
    expect(accepted.map((socket) => serverEndingOf(socket))).toEqual([undefined, undefined, undefined]);
    // Held past close() by connections that send nothing, as long as their clients like.
    const closed = new Promise((resolve) => server.close(resolve));
    gated.destroyAll();
    // Each noted as the shutdown's cut, for the calls it carried.
    expect(accepted.map((socket) => serverEndingOf(socket))).toEqual(Array(3).fill('server_shutdown'));
    await closed;
    await expect.poll(() => held.every((c) => c.closed()), { timeout: 2_000 }).toBe(true);
    expect(gated.heldBy('127.0.0.45')).toBe(0);
  });

  // No handshake tells a waiting connection from a working one: none is closed for a new one,
  // unless the adapter says which serve nothing.
  it('refuses a new connection at the cap, and closes none of those it holds', async () => {
    const server = createServer();
    const audit = capturedAudit();
    gateConnections(server, { maxPerAddress: 10, maxConnections: 3, audit: audit.audit, transport: 'grpc' });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const held = await holdConnections(port, ['127.0.0.41'], 3);
      const [extra] = await holdConnections(port, ['127.0.0.42'], 1);
      await expect.poll(() => extra?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.every((c) => !c.closed())).toBe(true);
      expect(audit.lines).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', reason: 'connection_limit', refusedByPortCap: 1 }),
      );
      for (const c of held) c.socket.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('closes a connection the adapter says serves nothing to admit a new one, and logs it', async () => {
    const server = createServer();
    const audit = capturedAudit();
    const busy = new WeakSet<Socket>();
    server.on('connection', (socket: Socket) => {
      // Those from .43 are busy; those from .44 serve nothing.
      if (socket.remoteAddress === '127.0.0.43') busy.add(socket);
    });
    gateConnections(server, {
      maxPerAddress: 10,
      maxConnections: 4,
      audit: audit.audit,
      transport: 'grpc',
      isIdle: (socket) => !busy.has(socket),
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      // The busy address holds the most: its connections are looked at first, and passed over.
      const held = [
        ...(await holdConnections(port, ['127.0.0.43'], 3)),
        ...(await holdConnections(port, ['127.0.0.44'], 1)),
      ];
      const [extra] = await holdConnections(port, ['127.0.0.45'], 1);
      await expect.poll(() => held[3]?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held.slice(0, 3).every((c) => !c.closed())).toBe(true);
      expect(extra?.closed()).toBe(false);
      expect(audit.lines).toContainEqual(
        expect.objectContaining({ event: 'connection.refused', closedIdle: 1, addresses: ['127.0.0.44'] }),
      );
      for (const c of [...held, extra]) c?.socket.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('leaves refusals at the cap to Node for a moment once nothing could be closed', async () => {
    const server = createServer();
    let searched = 0;
    gateConnections(server, {
      maxPerAddress: 10,
      maxConnections: 2,
      audit: undefined,
      transport: 'http',
      isIdle: () => {
        searched += 1;
        return false;
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const held: HeldConnection[] = [];
    try {
      held.push(...(await holdConnections(port, ['127.0.0.46'], 2)));
      // Room could be made: Node lets a connection past the cap through to the gate.
      expect(server.maxConnections).toBeGreaterThan(2);
      const [first] = await holdConnections(port, ['127.0.0.47'], 1);
      await expect.poll(() => first?.closed(), { timeout: 2_000 }).toBe(true);
      expect(searched).toBe(2);
      // Nothing to close: a flood meets Node's own refusal, no search, for a moment. Twenty at
      // once: at most one search (of the two held) per such moment while they come.
      const started = performance.now();
      const flood = Array.from({ length: 20 }, () => holdConnection(port, '127.0.0.47'));
      await expect.poll(() => flood.every((c) => c.closed()), { timeout: 5_000 }).toBe(true);
      const moments = Math.ceil((performance.now() - started) / 100) + 1;
      expect(searched - 2).toBeLessThanOrEqual(2 * Math.min(moments, 10));
      await expect.poll(() => server.maxConnections, { timeout: 2_000 }).toBeGreaterThan(2);
    } finally {
      for (const c of held) c.socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('never closes a connection of a client holding fewer than the newcomer would', async () => {
    const server = createServer();
    const audit = capturedAudit();
    const busy = new WeakSet<Socket>();
    server.on('connection', (socket: Socket) => {
      if (socket.remoteAddress !== '127.0.0.50') busy.add(socket);
    });
    gateConnections(server, {
      maxPerAddress: 4,
      maxConnections: 6,
      audit: audit.audit,
      transport: 'grpc',
      isIdle: (socket) => !busy.has(socket),
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const held: HeldConnection[] = [];
    try {
      // One client's one idle connection, and two clients' busy ones.
      held.push(...(await holdConnections(port, ['127.0.0.50'], 1)));
      held.push(...(await holdConnections(port, ['127.0.0.51'], 3)));
      held.push(...(await holdConnections(port, ['127.0.0.52'], 2)));
      // A third from .52 would push out the one of .50: refused.
      held.push(...(await holdConnections(port, ['127.0.0.52'], 1)));
      await expect.poll(() => held[6]?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held[0]?.closed()).toBe(false);
      // A first from a new client takes its turn with it.
      held.push(...(await holdConnections(port, ['127.0.0.53'], 1)));
      await expect.poll(() => held[0]?.closed(), { timeout: 2_000 }).toBe(true);
      expect(held[7]?.closed()).toBe(false);
    } finally {
      for (const c of held) c.socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('noteServerEnding', () => {
  it('keeps the first reason noted for a connection, and knows none for another', () => {
    const cut = {};
    noteServerEnding(cut, 'trust_revoked');
    noteServerEnding(cut, 'server_shutdown');
    expect(serverEndingOf(cut)).toBe('trust_revoked');
    expect(serverEndingOf({})).toBeUndefined();
    expect(serverEndingOf(undefined)).toBeUndefined();
    expect(serverEndingOf(null)).toBeUndefined();
  });
});
