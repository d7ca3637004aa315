// A call whose client cancels while a control is still deciding (a key set being fetched, a
// Redis-backed limit answering) and that the control then refuses is logged as the refusal it
// is, one `request.denied` line, and a failed authentication is counted by the brute-force
// protection: a client guessing tokens and hanging up on each must leave a trace and be blocked.
// A call whose client left before anything refused it, and whose handler never ran, gets no
// line. The controls here are held on gates the test opens once the server has noticed the
// cancel, so that the refusal comes strictly after the client left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status, type Client, type ClientUnaryCall } from '@grpc/grpc-js';
import {
  SecurityError,
  compileRbac,
  createBruteForceProtection,
  createGuard,
  createJwtVerifier,
  createLocalJwksSource,
  type JwksSource,
} from '@fluxguard/core';
import { createLateDecisions } from '@fluxguard/test-support/late-decisions';
import { deserialize, serialize } from './testing/harness.js';
import { fluxguardInterceptors } from './index.js';
import { grpcFrame, openTlsSession } from './testing/raw-http2.js';
import {
  AUDIENCE,
  ISSUER,
  SERVED,
  createTokenSigner,
  handlerStarts,
  op,
  secureRules,
  startSecureServer,
  unary,
  type SecureServer,
  type TokenSigner,
} from './testing/tls.js';

const MAX_FAILURES = 3;

const late = createLateDecisions(SecurityError);

let signer: TokenSigner;
let forger: TokenSigner;
let secure: SecureServer;
let client: Client;

beforeAll(async () => {
  signer = createTokenSigner();
  // Same key id, another key: its tokens fail their signature check.
  forger = createTokenSigner();
  // A key source that answers late while `late.holdKeys` is set: a remote key set being fetched.
  const keySource: JwksSource = late.keySource(createLocalJwksSource(signer.jwks as never));
  const jwt = createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, keySource });
  const bruteForce = createBruteForceProtection({
    peer: { maxFailures: MAX_FAILURES, windowSeconds: 600, blockSeconds: 600 },
  });
  secure = await startSecureServer(
    (audit, pki) => {
      const rbac = compileRbac(secureRules(pki), { servedOperations: SERVED });
      const guard = createGuard({ audit, jwt, rbac });
      return fluxguardInterceptors({ audit, guard, controls: [late.observer, bruteForce, late.held] });
    },
    { foldRefusals: false },
  );
  client = secure.client();
});

afterAll(() => secure.close());

function metadataOf(requestId: string, token: string | undefined, heldVerdict?: string): Metadata {
  const metadata = new Metadata();
  metadata.set('x-request-id', requestId);
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  if (heldVerdict !== undefined) metadata.set('x-held', heldVerdict);
  return metadata;
}

/** Starts a call and cancels it once a held control has it (see `late.leaveWhileDeciding`). */
function leaveWhileDeciding(metadata: Metadata, expectVerdict: boolean): Promise<void> {
  return late.leaveWhileDeciding(() => {
    const call: ClientUnaryCall = client.makeUnaryRequest(op('Read'), serialize, deserialize, {}, metadata, () => {
      // Cancelled by the test.
    });
    return () => {
      call.cancel();
    };
  }, expectVerdict);
}

const linesOf = (requestId: string) => secure.lines().filter((line) => line.requestId === requestId);

describe('a call refused after its client left, before its handler ran (gRPC)', () => {
  it('logs a refusal a late control made after the client left as a denial, not a cancellation', async () => {
    await leaveWhileDeciding(metadataOf('late-refusal', undefined, 'refuse'), true);
    const lines = linesOf('late-refusal');
    expect(lines.map((line) => [line.event, line.outcome, line.code, line.reason, line.transport])).toEqual([
      ['request.denied', 'denied', 'rate_limited', 'rate_limited', 'grpc'],
    ]);
  });

  it('writes no line for a call whose client left before anything refused it and whose handler never ran', async () => {
    const startsBefore = handlerStarts.count;
    await leaveWhileDeciding(metadataOf('left-early', undefined, 'allow'), false);
    expect(linesOf('left-early')).toEqual([]);
    expect(handlerStarts.count).toBe(startsBefore);
  });

  it('writes no line for a call whose client left while its good token was being verified', async () => {
    const startsBefore = handlerStarts.count;
    late.holdKeys = true;
    const good = signer.sign({ sub: 'alice', roles: ['reader'] });
    await leaveWhileDeciding(metadataOf('good-token', good), false);
    late.holdKeys = false;
    expect(linesOf('good-token')).toEqual([]);
    expect(handlerStarts.count).toBe(startsBefore);
  });

  it('logs a token of an unknown key whose client hung up during the key look-up as a denial', async () => {
    late.holdKeys = true;
    const stranger = createTokenSigner('unknown-key').sign({ sub: 'alice', roles: ['reader'] });
    await leaveWhileDeciding(metadataOf('unknown-key', stranger), true);
    late.holdKeys = false;
    expect(linesOf('unknown-key').map((line) => [line.event, line.code, line.reason])).toEqual([
      ['request.denied', 'unauthenticated', 'unknown_kid'],
    ]);
  });

  it('logs a denial the same way when the client closes its whole connection during the look-up', async () => {
    late.holdKeys = true;
    const stranger = createTokenSigner('unknown-key').sign({ sub: 'alice', roles: ['reader'] });
    await late.leaveWhileDeciding(() => {
      const session = openTlsSession(secure.server.address, { ca: secure.pki.ca.certPem });
      const stream = session.request({
        ':method': 'POST',
        ':path': op('Read'),
        'content-type': 'application/grpc',
        te: 'trailers',
        authorization: `Bearer ${stranger}`,
        'x-request-id': 'connection-closed',
      });
      stream.on('error', () => {
        // Destroyed by the test.
      });
      stream.end(grpcFrame(Buffer.from('{}')));
      return () => {
        session.destroy();
      };
    }, true);
    late.holdKeys = false;
    expect(linesOf('connection-closed').map((line) => [line.event, line.code, line.reason])).toEqual([
      ['request.denied', 'unauthenticated', 'unknown_kid'],
    ]);
  });

  it('logs each bad token whose client hung up during verification as a denial, and blocks the address', async () => {
    const startsBefore = handlerStarts.count;
    late.holdKeys = true;
    const now = Math.floor(Date.now() / 1000);
    const guesses: [string, string][] = [
      ['bad_signature', forger.sign({ sub: 'alice', roles: ['reader'], jti: 'guess-0' })],
      ['token_expired', signer.sign({ sub: 'alice', roles: ['reader'], iat: now - 7200, exp: now - 3600 })],
      ['bad_signature', forger.sign({ sub: 'alice', roles: ['reader'], jti: 'guess-2' })],
    ];
    expect(guesses).toHaveLength(MAX_FAILURES);
    for (const [index, [, token]] of guesses.entries()) {
      await leaveWhileDeciding(metadataOf(`guess-${String(index)}`, token), true);
    }
    late.holdKeys = false;
    // The address is blocked: even a good token is refused now.
    const good = signer.sign({ sub: 'alice', roles: ['reader'] });
    const blocked = await unary(client, 'Read', metadataOf('after-guesses', good));
    expect(blocked.status.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(linesOf('after-guesses')[0]?.reason).toBe('brute_force_blocked');
    for (const [index, [reason]] of guesses.entries()) {
      const lines = linesOf(`guess-${String(index)}`);
      expect(lines.map((line) => [line.event, line.outcome, line.code, line.reason, line.transport])).toEqual([
        ['request.denied', 'denied', 'unauthenticated', reason, 'grpc'],
      ]);
    }
    expect(handlerStarts.count).toBe(startsBefore);
    expect(secure.lines().filter((line) => line.event === 'request.cancelled')).toEqual([]);
  });
});
