// A server on a Unix socket (behind a local proxy, say) gives no peer address: limits by client
// address skipped every call, so a peer rate limit and the brute-force protection did nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { compileRbac, createGuard } from '@fluxguard/core';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard } from './index.js';
import { captureAudit, createTokenSigner, peerLimits } from './testing/tls.js';

const audit = captureAudit();
const tokens = createTokenSigner();
const dir = mkdtempSync(join(tmpdir(), 'fluxguard-unix-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * An app with a peer rate limit of 3 calls and the brute-force protection (blocking after 2
 * failures), both trusting `trustedProxies`, listening on a Unix socket (`name`), or on TCP at
 * 127.0.0.1 when `name` is undefined.
 */
async function serveOnSocket(name: string | undefined, trustedProxies: readonly string[] = []) {
  const guard = fluxguard({
    audit: audit.audit,
    guard: createGuard({
      audit: audit.audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /v1/ping': { authenticated: true } }),
    }),
    controls: peerLimits(trustedProxies, 3, 2),
  });
  const site = express();
  site.set('case sensitive routing', true);
  site.use(guard.before);
  site.get('/v1/ping', (_req, res) => res.json({ ping: true }));
  site.use(guard.after);
  const server = createServer(guard.wrap(site));
  const socketPath = name === undefined ? undefined : join(dir, name);
  await new Promise<void>((resolve) => {
    if (socketPath === undefined) server.listen(0, '127.0.0.1', resolve);
    else server.listen(socketPath, resolve);
  });
  const where =
    socketPath === undefined ? { host: '127.0.0.1', port: (server.address() as AddressInfo).port } : { socketPath };
  const get = (authorization: string, forwardedFor?: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const headers =
        forwardedFor === undefined ? { authorization } : { authorization, 'x-forwarded-for': forwardedFor };
      request({ ...where, path: '/v1/ping', headers }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
  const close = () => new Promise((resolve) => server.close(resolve));
  return { get, close };
}

describe('a server on a Unix socket', () => {
  it('counts every client of the socket as one, and says so once', async () => {
    const captured = captureWarnings('FLUXGUARD_NO_PEER_ADDRESS');
    const limited = await serveOnSocket('limited.sock');
    try {
      const good = `Bearer ${tokens.sign({ roles: [] })}`;
      const answers: number[] = [];
      for (let i = 0; i < 4; i++) answers.push(await limited.get(good));
      expect(answers).toEqual([200, 200, 200, 429]);
      await captured.settled();
      expect(captured.messages()).toHaveLength(1);
      expect(captured.messages()[0]).toContain('as one client');
    } finally {
      captured.stop();
      await limited.close();
    }
  });

  it('blocks the socket after failed authentications', async () => {
    const blocked = await serveOnSocket('blocked.sock');
    try {
      const good = `Bearer ${tokens.sign({ roles: [] })}`;
      const forged = `${good.slice(0, -4)}AAAA`;
      expect([await blocked.get(forged), await blocked.get(forged)]).toEqual([401, 401]);
      // Blocked now: a further guess, and even a good token, is refused before it is checked.
      expect(await blocked.get(forged)).toBe(429);
      expect(await blocked.get(good)).toBe(429);
    } finally {
      await blocked.close();
    }
  });

  it('counts each client the proxy on the socket names, once "unix" is a trusted proxy', async () => {
    // One client's forged tokens blocked every client of the socket.
    const proxied = await serveOnSocket('proxied.sock', ['unix']);
    try {
      const good = `Bearer ${tokens.sign({ roles: [] })}`;
      const forged = `${good.slice(0, -4)}AAAA`;
      const attacker = '198.51.100.66';
      expect([await proxied.get(forged, attacker), await proxied.get(forged, attacker)]).toEqual([401, 401]);
      expect(await proxied.get(good, attacker)).toBe(429);
      expect(await proxied.get(good, '203.0.113.7')).toBe(200);
      // Nothing the proxy wrote: the calls share one key still.
      expect([await proxied.get(forged), await proxied.get(forged), await proxied.get(good)]).toEqual([401, 401, 429]);
    } finally {
      await proxied.close();
    }
  });

  it('never takes a TCP client for the proxy on a socket', async () => {
    // A TCP server that trusts "unix": the header a client writes is its own, whatever it says.
    const tcp = await serveOnSocket(undefined, ['unix']);
    try {
      const good = `Bearer ${tokens.sign({ roles: [] })}`;
      const answers: number[] = [];
      for (let i = 0; i < 4; i++) answers.push(await tcp.get(good, `198.51.100.${String(i)}`));
      expect(answers).toEqual([200, 200, 200, 429]);
    } finally {
      await tcp.close();
    }
  });

  it('never takes a reset TCP client of a server that once listened on a path for the proxy', async () => {
    // Node's server keeps the path it listened on after it moves to TCP (and answers it while it
    // drains): asked of the server, a client that reset was taken for the socket's proxy.
    const served: string[] = [];
    const guard = fluxguard({ audit: audit.audit, controls: peerLimits(['unix'], 3, 2) });
    const site = express();
    site.use(guard.before);
    site.get('/v1/ping', (_req, res) => {
      served.push('ping');
      res.json({ ping: true });
    });
    site.use(guard.after);
    const server = createServer(guard.wrap(site));
    await new Promise<void>((resolve) => server.listen(join(dir, 'moved.sock'), resolve));
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const sockets: Socket[] = [];
    for (let i = 0; i < 10; i++) {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write('GET /v1/ping HTTP/1.1\r\nHost: x\r\n');
      sockets.push(socket);
    }
    const drained = new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
    for (const [i, socket] of sockets.entries()) {
      socket.write(`X-Forwarded-For: 203.0.113.${String(i)}\r\n\r\n`);
      socket.resetAndDestroy();
    }
    await drained;
    // Their forged addresses were never believed: one key, no-address, with its 3 calls at most.
    expect(served.length).toBeLessThanOrEqual(3);
  });
});
