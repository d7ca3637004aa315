import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createJwtVerifier } from '@fluxguard/core';
import { DEV_AUDIENCE, DEV_ISSUER } from '@fluxguard/example-artifact-store';
import { sha256 } from './support/clients.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * A remote JWKS endpoint (a real HTTP server on loopback) that is down, slower than the
 * timeout, and rotated to a new key: the servers keep the last good key set, refuse while no
 * key set was ever loaded, and follow a rotation without a restart.
 */

interface Signer {
  readonly jwk: JWK;
  sign(roles: readonly string[]): Promise<string>;
}

async function newSigner(kid: string): Promise<Signer> {
  const { privateKey, publicKey }: { privateKey: CryptoKey; publicKey: CryptoKey } = await generateKeyPair('ES256', {
    extractable: true,
  });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  return {
    jwk,
    sign: (roles) =>
      new SignJWT({ roles: [...roles] })
        .setProtectedHeader({ alg: 'ES256', kid })
        .setIssuer(DEV_ISSUER)
        .setAudience(DEV_AUDIENCE)
        .setSubject('idp-user')
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(privateKey),
  };
}

/**
 * The identity provider's JWKS endpoint, whose behaviour a test sets. `trickle` sends its
 * headers and the start of a body, then a space every 50 ms, never ending.
 */
class Idp {
  keys: JWK[] = [];
  mode: 'ok' | 'down' | 'slow' | 'trickle' = 'ok';
  readonly server: Server = createServer((req, res) => {
    if (this.mode === 'down') {
      res.writeHead(503).end();
      return;
    }
    if (this.mode === 'trickle') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys":[ ');
      const timer = setInterval(() => res.write(' '), 50);
      res.on('close', () => {
        clearInterval(timer);
      });
      return;
    }
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys }));
    };
    if (this.mode === 'slow') {
      const timer = setTimeout(answer, 3000);
      req.on('close', () => {
        clearTimeout(timer);
      });
    } else answer();
  });
  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks.json`;
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }
}

const COOLDOWN_MS = 200;
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

describe.each(TRANSPORTS)('remote JWKS over %s', (transport) => {
  let idp: Idp;
  let t: TransportUnderTest;
  let k1: Signer;

  async function start(now?: () => number): Promise<void> {
    idp = new Idp();
    const url = await idp.listen();
    const jwt = createJwtVerifier({
      issuer: DEV_ISSUER,
      audience: DEV_AUDIENCE,
      jwksUrl: url,
      jwksOptions: { timeoutMs: 300, cooldownMs: COOLDOWN_MS, ...(now === undefined ? {} : { now }) },
    });
    t = await startTransport(transport, world, { jwt });
    k1 = await newSigner('k1');
  }
  afterEach(async () => {
    await t.close();
    await idp.close();
  });

  const get = async (token: string) => t.clientWith({ cert: world.pki.clients.valid, token }).get('jwks/x.txt');

  it('refuses (unavailable) while the endpoint is down and no key set was ever loaded, then recovers', async () => {
    await start();
    idp.keys = [k1.jwk];
    idp.mode = 'down';
    const down = await get(await k1.sign(['artifacts.reader']));
    expect(down.ok).toBe(false);
    expect(down.status).toBe(t.client.statusOf({ code: 'unavailable' }));
    expect(t.log.textFor(down.requestId ?? 'none')).toContain('"reason":"jwks_unavailable"');
    idp.mode = 'ok';
    await pause(COOLDOWN_MS + 50);
    const up = await get(await k1.sign(['artifacts.reader']));
    expect(up.status).toBe(t.client.statusOf({ code: 'not_found' }));
  });

  it('refuses (unavailable) when the endpoint is slower than the timeout, without hanging the call', async () => {
    await start();
    idp.keys = [k1.jwk];
    idp.mode = 'slow';
    const slow = await get(await k1.sign(['artifacts.reader']));
    expect(slow.status).toBe(t.client.statusOf({ code: 'unavailable' }));
  });

  it('keeps the last good key set while the endpoint is down or slow', async () => {
    await start();
    idp.keys = [k1.jwk];
    const writer = t.clientWith({ cert: world.pki.clients.valid, token: await k1.sign(['artifacts.writer']) });
    expect((await writer.upload('jwks/x.txt', sha256('x'), [Buffer.from('x')])).ok).toBe(true);
    for (const mode of ['down', 'slow'] as const) {
      idp.mode = mode;
      await pause(COOLDOWN_MS + 50);
      // An unknown kid forces a refetch that fails; the known key keeps working.
      const stranger = await newSigner('k-unknown');
      expect((await get(await stranger.sign(['artifacts.reader']))).ok).toBe(false);
      const known = await get(await k1.sign(['artifacts.reader']));
      expect(known.ok, known.exposed).toBe(true);
    }
  });

  it('follows a key rotation without a restart: new tokens accepted, old ones refused once their key is gone', async () => {
    await start();
    idp.keys = [k1.jwk];
    const writer = t.clientWith({ cert: world.pki.clients.valid, token: await k1.sign(['artifacts.writer']) });
    expect((await writer.upload('jwks/x.txt', sha256('x'), [Buffer.from('x')])).ok).toBe(true);
    const oldToken = await k1.sign(['artifacts.reader']);
    expect((await get(oldToken)).ok).toBe(true);

    const k2 = await newSigner('k2');
    idp.keys = [k2.jwk];
    await pause(COOLDOWN_MS + 50);
    const fresh = await get(await k2.sign(['artifacts.reader']));
    expect(fresh.ok, fresh.exposed).toBe(true);
    const stale = await get(oldToken);
    expect(stale.status).toBe(t.client.statusOf({ code: 'unauthenticated' }));
    expect(t.log.textFor(stale.requestId ?? 'none')).toMatch(/"reason":"(unknown_kid|bad_signature)"/);
  });

  it('follows a key rotation after the clock went back an hour, without waiting for it to catch up', async () => {
    let skew = 0;
    await start(() => Date.now() + skew);
    idp.keys = [k1.jwk];
    const oldToken = await k1.sign(['artifacts.reader']);
    // No such file: authenticated and authorized, then answered by the store.
    expect((await get(oldToken)).status).toBe(t.client.statusOf({ code: 'not_found' }));

    const k2 = await newSigner('k2');
    idp.keys = [k2.jwk];
    skew = -3_600_000; // an NTP step or a restored VM
    await pause(COOLDOWN_MS + 50);
    const fresh = await get(await k2.sign(['artifacts.reader']));
    expect(fresh.status, fresh.exposed).toBe(t.client.statusOf({ code: 'not_found' }));
    expect((await get(oldToken)).status).toBe(t.client.statusOf({ code: 'unauthenticated' }));
  });
});

/** The least `jwksCooldownMs` a policy takes. */
const POLICY_COOLDOWN_MS = 1_000;

describe.each(TRANSPORTS)('a remote JWKS from the policy over %s', (transport) => {
  let idp: Idp;
  let t: TransportUnderTest;

  beforeAll(async () => {
    idp = new Idp();
    const url = await idp.listen();
    const policy = world.writePolicy(`jwks-${transport}`, (reference) => ({
      ...reference,
      // A policy's shortest cooldown: each attempt below waits it out, so each fetches again.
      jwt: { ...(reference.jwt as object), jwksTimeoutMs: 300, jwksCooldownMs: POLICY_COOLDOWN_MS },
    }));
    t = await startTransport(transport, world, {
      env: {
        FLUXGUARD_POLICY: policy,
        FLUXGUARD_JWKS_URL: url,
        FLUXGUARD_JWT_ISSUER: DEV_ISSUER,
        FLUXGUARD_JWT_AUDIENCE: DEV_AUDIENCE,
      },
    });
  });
  afterAll(async () => {
    await t.close();
    await idp.close();
  });

  it('answers every call while the endpoint trickles its body, logs each failed fetch once, and recovers', async () => {
    const k1 = await newSigner('k1');
    idp.keys = [k1.jwk];
    idp.mode = 'trickle';
    // Node's fetch loses its timeout's hold on a body being read once the garbage collector has
    // run; a busy server collects often.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const collector = setInterval(gc, 50);
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        if (attempt > 0) await pause(POLICY_COOLDOWN_MS + 50);
        const refused = await t
          .clientWith({ cert: world.pki.clients.valid, token: await k1.sign(['artifacts.reader']) })
          .get('jwks/x.txt');
        expect(refused.status).toBe(t.client.statusOf({ code: 'unavailable' }));
      }
    } finally {
      clearInterval(collector);
    }
    const failures = t.log.lines.filter((line) => line.event === 'jwt.jwks_refresh_failed');
    expect(failures).toHaveLength(3);
    expect(String(failures[0]?.error)).toMatch(/^TimeoutError: JWKS endpoint did not answer/);
    idp.mode = 'ok';
    await pause(POLICY_COOLDOWN_MS + 50);
    const served = await t
      .clientWith({ cert: world.pki.clients.valid, token: await k1.sign(['artifacts.reader']) })
      .get('jwks/x.txt');
    expect(served.status).toBe(t.client.statusOf({ code: 'not_found' }));
  });
});
