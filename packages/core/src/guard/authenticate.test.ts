// The authenticator's synchronous path: a token the verifier's cache settles is taken without a
// promise; every other case (first sight, expiry, rotation, a jti to ask the denylist about, a
// malformed or repeated header) still goes through `authenticate`, with its refusals.
import { beforeAll, describe, expect, it } from 'vitest';
import type { CertificateIdentity } from '../call/call-info.js';
import { createMemoryDenylist } from '../denylist/memory.js';
import type { JwksSource } from '../jwt/key-source.js';
import { createJwtVerifier, type JwtVerifierOptions } from '../jwt/verifier.js';
import { CallState } from '../pipeline/call-context.js';
import {
  AUDIENCE,
  ISSUER,
  GUARD_OPS,
  makeKey,
  refusal,
  sign,
  testCall,
  type TestKey,
  BACKUP_CERTIFICATE,
} from '../testing/jwt-fixtures.js';
import { createAuthenticator } from './authenticate.js';

const IDS = { requestId: 'r-1', peerAddress: '127.0.0.1:5000' };

let key: TestKey;
beforeAll(async () => {
  key = await makeKey('ES256', 'ec-1');
});

function newState(): CallState {
  return new CallState({
    requestId: 'r-1',
    deadline: undefined,
    end: () => undefined,
    onReleaseError: () => undefined,
  });
}

function authenticatorWith(extra: Partial<JwtVerifierOptions> = {}) {
  const source = { version: 1, calls: 0 } as JwksSource & { version: number; calls: number };
  Object.assign(source, {
    getKeys: () => {
      source.calls += 1;
      return Promise.resolve([key.publicKey]);
    },
  });
  const jwt = createJwtVerifier({ keySource: source, issuer: ISSUER, audience: AUDIENCE, ...extra });
  return { authenticator: createAuthenticator({ jwt }), source };
}

/** Runs `onStart` once: whether it answered at once, and the principal it set. */
async function start(
  authenticator: ReturnType<typeof createAuthenticator>,
  headers: Record<string, string>,
  certificate?: CertificateIdentity,
): Promise<{ synchronous: boolean; state: CallState }> {
  const state = newState();
  const result = authenticator.onStart?.(testCall(IDS, GUARD_OPS.GET, headers, certificate), state);
  if (result !== undefined) await result;
  return { synchronous: result === undefined, state };
}

describe('createAuthenticator: a token the cache settles', () => {
  it('is taken synchronously once cached (from the third call on), with the same frozen principal', async () => {
    const { authenticator, source } = authenticatorWith();
    const headers = { authorization: `Bearer ${await sign(key)}` };
    const first = await start(authenticator, headers);
    expect(first.synchronous).toBe(false);
    // The cache admits a token on its second verification (the doorkeeper).
    const second = await start(authenticator, headers);
    expect(second.synchronous).toBe(false);
    const third = await start(authenticator, headers);
    expect(third.synchronous).toBe(true);
    expect(third.state.principal).toBe(second.state.principal);
    expect(Object.isFrozen(third.state.principal)).toBe(true);
    expect(third.state.principal?.subject).toBe('alice');
    expect(source.calls).toBe(2);
  });

  it('merges a verified certificate on the synchronous path as on the other', async () => {
    const { authenticator } = authenticatorWith();
    const certificate = BACKUP_CERTIFICATE;
    const headers = { authorization: `Bearer ${await sign(key)}` };
    const first = await start(authenticator, headers, certificate);
    await start(authenticator, headers, certificate);
    const third = await start(authenticator, headers, certificate);
    expect(third.synchronous).toBe(true);
    expect(third.state.principal).toEqual(first.state.principal);
    expect(third.state.principal?.authenticatedBy).toBe('both');
  });

  it('is refused once it expires, through the asynchronous path', async () => {
    let clock = Date.now();
    const { authenticator } = authenticatorWith({ clockToleranceSeconds: 0, now: () => clock });
    const headers = {
      authorization: `Bearer ${await sign(key, { nowSeconds: Math.floor(clock / 1000), ttlSeconds: 60 })}`,
    };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
    clock += 61_000;
    const error = await refusal(start(authenticator, headers));
    expect(error.reason).toBe('token_expired');
  });

  it('is verified again after the key set changed', async () => {
    const { authenticator, source } = authenticatorWith();
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    source.version = 2;
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    expect(source.calls).toBe(2);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
  });

  it('still asks the denylist about a token with a jti, and refuses it once revoked', async () => {
    const denylist = createMemoryDenylist();
    const { authenticator } = authenticatorWith({ denylist });
    const headers = { authorization: `Bearer ${await sign(key, { claims: { jti: 'j-1' } })}` };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    await denylist.revoke('j-1', new Date(Date.now() + 600_000));
    expect((await refusal(start(authenticator, headers))).reason).toBe('revoked');
  });

  it('takes a token without a jti synchronously even with a denylist', async () => {
    const { authenticator } = authenticatorWith({ denylist: createMemoryDenylist() });
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(true);
  });

  it('refuses a cached token sent twice, or under another scheme', async () => {
    const { authenticator } = authenticatorWith();
    const token = await sign(key);
    await start(authenticator, { authorization: `Bearer ${token}` });
    await start(authenticator, { authorization: `Bearer ${token}` });
    const state = newState();
    const headers = {
      get: () => `Bearer ${token}`,
      getAll: () => [`Bearer ${token}`, `Bearer ${token}`],
    };
    const twice = authenticator.onStart?.({ ...testCall(IDS, GUARD_OPS.GET), headers }, state);
    expect(twice).toBeInstanceOf(Promise);
    expect((await refusal(Promise.resolve(twice))).reason).toBe('multiple_authorization');
    expect((await refusal(start(authenticator, { authorization: `Basic ${token}` }))).reason).toBe('not_bearer');
  });

  it('is never taken when the cache is off', async () => {
    const { authenticator, source } = authenticatorWith({ cacheMaxEntries: 0 });
    const headers = { authorization: `Bearer ${await sign(key)}` };
    await start(authenticator, headers);
    expect((await start(authenticator, headers)).synchronous).toBe(false);
    expect(source.calls).toBe(2);
  });
});
