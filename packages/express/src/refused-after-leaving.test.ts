// A request whose client hangs up while a control is still deciding (a key set being fetched, a
// Redis-backed limit answering) and that the control then refuses is logged as the refusal it
// is, one `request.denied` line, not as a cancelled request, and a failed authentication is
// counted by the brute-force protection: a client guessing tokens and hanging up on each must
// leave its denials in the log and be blocked, as on gRPC. A request whose client left before
// anything refused it, and whose handler never ran, gets no line. The controls here are held on
// gates the test opens once the server has noticed the client left.
import { generateKeyPairSync, sign, type JsonWebKey, type KeyObject } from 'node:crypto';
import { connect, type TLSSocket } from 'node:tls';
import express, { type RequestHandler } from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SecurityError,
  compileRbac,
  createAuthenticator,
  createBruteForceProtection,
  createConcurrencyLimit,
  createGuard,
  createJwtVerifier,
  createLocalJwksSource,
  type Control,
  type JwksSource,
} from '@fluxguard/core';
import { createLateDecisions } from '@fluxguard/test-support/late-decisions';
import { fluxguard, jwtAuth } from './index.js';
import {
  AUDIENCE,
  ISSUER,
  agentFor,
  captureAudit,
  createTestPki,
  listen,
  perOperationServer,
  type Served,
  type TestPki,
} from './testing/tls.js';

const MAX_FAILURES = 3;

const late = createLateDecisions(SecurityError);

/** An ES256 key and its tokens; `kid` names the key. */
function signerOf(kid = 'k1'): { jwk: JsonWebKey; sign(claims: Record<string, unknown>): string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk: JsonWebKey = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signWith = (key: KeyObject, claims: Record<string, unknown>): string => {
    const now = Math.floor(Date.now() / 1000);
    const head = b64({ alg: 'ES256', kid, typ: 'JWT' });
    const body = b64({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 300, roles: [], ...claims });
    const signature = sign('sha256', Buffer.from(`${head}.${body}`), { key, dsaEncoding: 'ieee-p1363' });
    return `${head}.${body}.${signature.toString('base64url')}`;
  };
  return { jwk, sign: (claims) => signWith(privateKey, claims) };
}

const signer = signerOf();
// Same key id, another key: its tokens fail their signature check.
const forger = signerOf();
const { audit, lines } = captureAudit({ foldRefusals: false });
let pki: TestPki;
let agent: Agent;
let handlerStarts = 0;
const closers: (() => Promise<void>)[] = [];

/** The token checks in `fluxguard().before` (a guard), or in a route's `jwtAuth()` after it. */
type Layout = 'guard' | 'route';

async function start(layout: Layout, more: readonly Control[] = []): Promise<Served> {
  // A key source that answers late while `late.holdKeys` is set: a remote key set being fetched.
  const keySource: JwksSource = late.keySource(createLocalJwksSource({ keys: [signer.jwk] }));
  const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, keySource });
  const bruteForce = createBruteForceProtection({
    peer: { maxFailures: MAX_FAILURES, windowSeconds: 600, blockSeconds: 600 },
  });
  const app = express();
  app.set('case sensitive routing', true);
  const handler: RequestHandler = (_req, res) => {
    handlerStarts += 1;
    res.json({ ok: true });
  };
  if (layout === 'guard') {
    const guard = createGuard({ audit, jwt, rbac: compileRbac({ 'GET /v1/items/:id': { anyRoles: ['reader'] } }) });
    const { before, after } = fluxguard({ audit, guard, controls: [late.observer, bruteForce, late.held] });
    app.use(before);
    app.get('/v1/items/:id', handler);
    app.use(after);
  } else {
    const { before, after } = fluxguard({ audit, controls: [late.observer, bruteForce, late.held, ...more] });
    app.use(before);
    app.get('/v1/items/:id', jwtAuth({ authenticator: createAuthenticator({ jwt }) }), handler);
    app.use(after);
  }
  const served = await listen(perOperationServer(app, pki, audit));
  closers.push(() => served.close());
  return served;
}

beforeAll(async () => {
  pki = await createTestPki();
  agent = agentFor(pki.ca.certPem);
});

afterAll(async () => {
  await agent.close();
  await Promise.all(closers.map((close) => close()));
  await pki.remove();
});

/**
 * Sends a request over its own TLS connection and destroys the socket once a held control has
 * the request (see `late.leaveWhileDeciding`).
 */
function leaveWhileDeciding(served: Served, headers: Record<string, string>, expectVerdict: boolean): Promise<void> {
  return late.leaveWhileDeciding(() => {
    const socket: TLSSocket = connect({
      host: '127.0.0.1',
      port: served.port,
      ca: pki.ca.certPem,
      servername: 'localhost',
    });
    socket.on('error', () => {
      // Destroyed by the test.
    });
    const head = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.write(`GET /v1/items/1 HTTP/1.1\r\nhost: localhost\r\n${head}\r\n`);
    return () => {
      socket.destroy();
    };
  }, expectVerdict);
}

describe.each(['guard', 'route'] as const)(
  'a request refused after its client left, before its handler ran (Express, token checked by the %s)',
  (layout) => {
    let served: Served;
    beforeAll(async () => {
      served = await start(layout);
    });
    const linesOf = (requestId: string) => lines().filter((line) => line.requestId === `${layout}-${requestId}`);
    const id = (requestId: string): string => `${layout}-${requestId}`;

    it('logs a refusal a late control made after the client left as a denial, not a cancellation', async () => {
      await leaveWhileDeciding(served, { 'x-request-id': id('late-refusal'), 'x-held': 'refuse' }, true);
      expect(
        linesOf('late-refusal').map((line) => [line.event, line.outcome, line.code, line.reason, line.transport]),
      ).toEqual([['request.denied', 'denied', 'rate_limited', 'rate_limited', 'http']]);
    });

    it('writes no line for a request whose client left before anything refused it and whose handler never ran', async () => {
      const startsBefore = handlerStarts;
      await leaveWhileDeciding(served, { 'x-request-id': id('left-early'), 'x-held': 'allow' }, false);
      expect(linesOf('left-early')).toEqual([]);
      expect(handlerStarts).toBe(startsBefore);
    });

    it('writes no line for a request whose client left while its good token was being verified', async () => {
      const startsBefore = handlerStarts;
      late.holdKeys = true;
      const good = signer.sign({ roles: ['reader'] });
      await leaveWhileDeciding(served, { 'x-request-id': id('good-token'), authorization: `Bearer ${good}` }, false);
      late.holdKeys = false;
      expect(linesOf('good-token')).toEqual([]);
      expect(handlerStarts).toBe(startsBefore);
    });

    it('logs a token of an unknown key whose client hung up during the key look-up as a denial', async () => {
      late.holdKeys = true;
      const stranger = signerOf('unknown-key').sign({ roles: ['reader'] });
      await leaveWhileDeciding(
        served,
        { 'x-request-id': id('unknown-key'), authorization: `Bearer ${stranger}` },
        true,
      );
      late.holdKeys = false;
      expect(linesOf('unknown-key').map((line) => [line.event, line.code, line.reason])).toEqual([
        ['request.denied', 'unauthenticated', 'unknown_kid'],
      ]);
    });

    it('logs each bad token whose client hung up during verification as a denial, and blocks the address', async () => {
      const startsBefore = handlerStarts;
      late.holdKeys = true;
      const now = Math.floor(Date.now() / 1000);
      const guesses: [string, string][] = [
        ['bad_signature', forger.sign({ roles: ['reader'], jti: 'guess-0' })],
        ['token_expired', signer.sign({ roles: ['reader'], iat: now - 7200, exp: now - 3600 })],
        ['bad_signature', forger.sign({ roles: ['reader'], jti: 'guess-2' })],
      ];
      expect(guesses).toHaveLength(MAX_FAILURES);
      for (const [index, [, token]] of guesses.entries()) {
        await leaveWhileDeciding(
          served,
          { 'x-request-id': id(`guess-${String(index)}`), authorization: `Bearer ${token}` },
          true,
        );
      }
      late.holdKeys = false;
      // The address is blocked: even a good token is refused now.
      const good = signer.sign({ roles: ['reader'] });
      const blocked = await fetch(`${served.url}/v1/items/1`, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${good}`, 'x-request-id': id('after-guesses') },
      });
      await blocked.arrayBuffer();
      expect(blocked.status).toBe(429);
      expect(linesOf('after-guesses')[0]?.reason).toBe('brute_force_blocked');
      for (const [index, [reason]] of guesses.entries()) {
        expect(
          linesOf(`guess-${String(index)}`).map((line) => [
            line.event,
            line.outcome,
            line.code,
            line.reason,
            line.transport,
          ]),
        ).toEqual([['request.denied', 'denied', 'unauthenticated', reason, 'http']]);
      }
      expect(handlerStarts).toBe(startsBefore);
      expect(lines().filter((line) => line.event === 'request.cancelled')).toEqual([]);
    });
  },
);

describe("a route's token check that decides after its client left (Express)", () => {
  // Long enough that only the handler's end, not the wait's limit, can give the slot back.
  const limit = createConcurrencyLimit({ maxInFlight: 1, holdForHandlerMs: 60_000 });
  let served: Served;
  beforeAll(async () => {
    served = await start('route', [limit]);
  });

  it('gives the concurrency slot back at once, whether the check then allows or refuses', async () => {
    late.holdKeys = true;
    const good = signer.sign({ roles: ['reader'] });
    await leaveWhileDeciding(served, { 'x-request-id': 'slot-allowed', authorization: `Bearer ${good}` }, false);
    await expect.poll(() => limit.inFlight()).toBe(0);
    const stranger = signerOf('slot-unknown-key').sign({ roles: ['reader'] });
    await leaveWhileDeciding(served, { 'x-request-id': 'slot-refused', authorization: `Bearer ${stranger}` }, true);
    late.holdKeys = false;
    await expect.poll(() => limit.inFlight()).toBe(0);
    // The one slot is free for the next caller.
    const next = await fetch(`${served.url}/v1/items/1`, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${signer.sign({ roles: ['reader'] })}` },
    });
    await next.arrayBuffer();
    expect(next.status).toBe(200);
  });
});
