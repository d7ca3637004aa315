// A server on a Unix socket (behind a local proxy, say) gives no peer address: limits by client
// address skipped every call, so a peer rate limit and the brute-force protection did nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
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

/** An app with a peer rate limit and the brute-force protection, listening on a Unix socket. */
async function serveOnSocket(name: string) {
  const guard = fluxguard({
    audit: audit.audit,
    guard: createGuard({
      audit: audit.audit,
      jwt: tokens.verifier,
      rbac: compileRbac({ 'GET /v1/ping': { authenticated: true } }),
    }),
    controls: peerLimits([], 3, 2),
  });
  const site = express();
  site.set('case sensitive routing', true);
  site.use(guard.before);
  site.get('/v1/ping', (_req, res) => res.json({ ping: true }));
  site.use(guard.after);
  const server = createServer(guard.wrap(site));
  const socketPath = join(dir, name);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const get = (authorization: string, forwardedFor?: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const headers =
        forwardedFor === undefined ? { authorization } : { authorization, 'x-forwarded-for': forwardedFor };
      request({ socketPath, path: '/v1/ping', headers }, (res) => {
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
});
