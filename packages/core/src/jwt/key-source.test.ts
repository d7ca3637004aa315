import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { createJwtVerifier } from './verifier.js';
import { createLocalJwksSource, createRemoteJwksSource } from './key-source.js';
import {
  AUDIENCE,
  ISSUER,
  makeKey,
  sign,
  startJwksServer,
  type JwksServer,
  type TestKey,
} from '../testing/jwt-fixtures.js';

let oldKey: TestKey;
let newKey: TestKey;
let server: JwksServer | undefined;

beforeAll(async () => {
  [oldKey, newKey] = await Promise.all([makeKey('ES256', 'k-old'), makeKey('ES256', 'k-new')]);
});

afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function refusal(promise: Promise<unknown>): Promise<SecurityError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(SecurityError);
    return err as SecurityError;
  }
  throw new Error('expected a refusal');
}

function setup(
  srv: JwksServer,
  extra: { cooldownMs?: number; maxAgeMs?: number; timeoutMs?: number; now?: () => number } = {},
) {
  const errors: Error[] = [];
  const keySource = createRemoteJwksSource({
    url: srv.url,
    // Generous: a loaded machine must not turn a good fetch into a timeout (one test sets its own).
    timeoutMs: extra.timeoutMs ?? 2_000,
    cooldownMs: extra.cooldownMs ?? 0,
    ...(extra.maxAgeMs === undefined ? {} : { maxAgeMs: extra.maxAgeMs }),
    ...(extra.now === undefined ? {} : { now: extra.now }),
    onRefreshError: (e) => errors.push(e),
  });
  const verifier = createJwtVerifier({ keySource, issuer: ISSUER, audience: AUDIENCE });
  return { keySource, verifier, errors };
}

describe('createRemoteJwksSource against a real JWKS endpoint', () => {
  it('fetches the key set once and serves tokens from it', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier } = setup(server, { cooldownMs: 60_000 });
    expect((await verifier.verify(await sign(oldKey))).principal.subject).toBe('alice');
    expect((await verifier.verify(await sign(oldKey, { claims: { sub: 'bob' } }))).principal.subject).toBe('bob');
    expect(server.requests).toBe(1);
  });

  it('fails closed with unavailable when the endpoint is down and no key set was ever loaded', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    server.mode = 'down';
    const { verifier, errors } = setup(server);
    const err = await refusal(verifier.verify(await sign(oldKey)));
    expect(err.code).toBe('unavailable');
    expect(err.reason).toBe('jwks_unavailable');
    expect(errors[0]?.message).toMatch(/HTTP 503/);
  });

  it('keeps the last good key set in service while the endpoint is down or answers garbage', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier, keySource, errors } = setup(server, { maxAgeMs: 1 });
    expect(await keySource.refresh()).toBe(true);
    for (const mode of ['down', 'garbage'] as const) {
      server.mode = mode;
      await new Promise((r) => setTimeout(r, 5));
      expect(await keySource.refresh()).toBe(true); // still a set in service
      expect((await verifier.verify(await sign(oldKey, { claims: { sub: mode } }))).principal.subject).toBe(mode);
    }
    expect(errors.map((e) => e.message).join('|')).toMatch(/HTTP 503.*invalid JSON|HTTP 503.*unusable/);
  });

  it('aborts a fetch slower than the timeout: unavailable at first, last good set afterwards', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    server.mode = 'slow';
    server.slowMs = 3000;
    const { verifier, keySource, errors } = setup(server, { timeoutMs: 500 });
    const started = Date.now();
    const err = await refusal(verifier.verify(await sign(oldKey)));
    expect(Date.now() - started).toBeLessThan(2000);
    expect(err.code).toBe('unavailable');
    expect(errors[0]?.name).toMatch(/TimeoutError|AbortError/);

    server.mode = 'ok';
    expect(await keySource.refresh()).toBe(true);
    server.mode = 'slow';
    // A token with an unknown kid triggers a (slow, aborted) refetch; known tokens keep working.
    const unknown = await refusal(verifier.verify(await sign(newKey)));
    expect(unknown.code).toBe('unauthenticated');
    expect(unknown.reason).toBe('unknown_kid');
    expect((await verifier.verify(await sign(oldKey))).principal.subject).toBe('alice');
  });

  it('ends every fetch of a body that trickles in at the timeout, garbage collection or not', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    server.mode = 'trickle';
    const { verifier, keySource, errors } = setup(server, { timeoutMs: 600 });
    // Node's fetch loses its timeout signal's hold on a body being read once the collector has
    // run: the read then waits for good. Collect often, as a busy server does.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const collector = setInterval(gc, 50);
    // A bound for liveness, five times the timeout: a fetch that never settles is what fails.
    const settled = (promise: Promise<unknown>): Promise<unknown> =>
      Promise.race([
        promise.catch((err: unknown) => err),
        new Promise((r) => {
          setTimeout(() => {
            r('hung');
          }, 3000);
        }),
      ]);
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        expect(await settled(keySource.refresh())).toBe(false);
      }
      const err = await settled(verifier.verify(await sign(oldKey)));
      expect(err).toMatchObject({ code: 'unavailable', reason: 'jwks_unavailable' });
    } finally {
      clearInterval(collector);
    }
    expect(errors.map((e) => e.name)).toEqual(Array(errors.length).fill('TimeoutError'));
    server.mode = 'ok';
    expect(await settled(keySource.refresh())).toBe(true);
    expect((await verifier.verify(await sign(oldKey))).principal.subject).toBe('alice');
  });

  it('follows a key rotation without a new verifier: new tokens accepted, old ones refused once their key is gone', async () => {
    let clock = Date.now();
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier } = setup(server, { cooldownMs: 30_000, now: () => clock });
    const oldToken = await sign(oldKey);
    await verifier.verify(oldToken); // cached under the first key set

    server.keys = [newKey.publicJwk];
    clock += 31_000;
    expect((await verifier.verify(await sign(newKey, { claims: { sub: 'carol' } }))).principal.subject).toBe('carol');
    const err = await refusal(verifier.verify(oldToken));
    expect(err.code).toBe('unauthenticated');
    expect(err.reason).toBe('unknown_kid');
  });

  it('fetches again when the clock went back after a fetch: a rotated-in key accepted, a removed one refused', async () => {
    let clock = Date.now();
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier } = setup(server, { cooldownMs: 30_000, maxAgeMs: 60_000, now: () => clock });
    const oldToken = await sign(oldKey);
    await verifier.verify(oldToken);

    server.keys = [newKey.publicJwk];
    clock -= 3_600_000; // the system clock is set an hour back
    expect((await verifier.verify(await sign(newKey, { claims: { sub: 'dave' } }))).principal.subject).toBe('dave');
    expect((await refusal(verifier.verify(oldToken))).reason).toBe('unknown_kid');
    expect(server.requests).toBe(2);
    // The count restarted at that fetch: the cooldown holds again.
    for (let i = 0; i < 5; i++) await refusal(verifier.verify(await sign(oldKey, { header: { kid: `made-up-${i}` } })));
    expect(server.requests).toBe(2);
  });

  it('refreshes a set past its max age even while its keys are known, and drops a key the endpoint removed', async () => {
    let clock = Date.now();
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier, keySource } = setup(server, { cooldownMs: 0, maxAgeMs: 60_000, now: () => clock });
    await verifier.verify(await sign(oldKey, { claims: { sub: 'u1' } }));
    await verifier.verify(await sign(oldKey, { claims: { sub: 'u2' } })); // a known key: no fetch
    expect(server.requests).toBe(1);

    server.keys = [newKey.publicJwk];
    clock += 61_000;
    // Due for a refresh: this token is still checked against the set in service, and starts it.
    expect((await verifier.verify(await sign(oldKey, { claims: { sub: 'u3' } }))).principal.subject).toBe('u3');
    // The refresh runs in the background: wait for its request (bounded), not for a refresh of ours.
    const deadline = Date.now() + 3_000;
    while (server.requests < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(server.requests).toBe(2);
    await keySource.refresh(); // joins the refresh under way, if it has not settled yet
    const err = await refusal(verifier.verify(await sign(oldKey, { claims: { sub: 'u4' } })));
    expect(err.reason).toBe('unknown_kid');
    expect((await verifier.verify(await sign(newKey, { claims: { sub: 'u5' } }))).principal.subject).toBe('u5');
  });

  it('refreshes a set past its max age when only cached tokens arrive, and refuses them once their key is gone', async () => {
    let clock = Date.now();
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier, keySource } = setup(server, { cooldownMs: 0, maxAgeMs: 60_000, now: () => clock });
    const cached = await sign(oldKey, { claims: { sub: 'cached' } });
    for (let i = 0; i < 3; i++) expect((await verifier.verify(cached)).principal.subject).toBe('cached');
    expect(server.requests).toBe(1);

    server.keys = [newKey.publicJwk];
    clock += 61_000;
    // Only the cached token comes: accepted from the cache while the refresh it starts runs.
    expect((await verifier.verify(cached)).principal.subject).toBe('cached');
    const deadline = Date.now() + 3_000;
    while (server.requests < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(server.requests).toBe(2);
    await keySource.refresh(); // joins the refresh under way, if it has not settled yet
    expect((await refusal(verifier.verify(cached))).reason).toBe('unknown_kid');
  });

  it('refetches on unknown kids at most once per cooldown', async () => {
    const clock = Date.now();
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier } = setup(server, { cooldownMs: 30_000, now: () => clock });
    await verifier.verify(await sign(oldKey));
    for (let i = 0; i < 20; i++) {
      const err = await refusal(verifier.verify(await sign(oldKey, { header: { kid: `made-up-${i}` } })));
      expect(err.reason).toBe('unknown_kid');
    }
    expect(server.requests).toBe(1);
  });

  it('deduplicates concurrent first fetches', async () => {
    server = await startJwksServer([oldKey.publicJwk]);
    const { verifier } = setup(server, { cooldownMs: 0 });
    const tokens = await Promise.all(Array.from({ length: 10 }, (_, i) => sign(oldKey, { claims: { sub: `u${i}` } })));
    await Promise.all(tokens.map((t) => verifier.verify(t)));
    expect(server.requests).toBe(1);
  });
});

describe('createLocalJwksSource: keys in hand', () => {
  it('answers keysNow only for a key it has resolved, never for a made-up kid', async () => {
    const source = createLocalJwksSource({ keys: [oldKey.publicJwk] });
    const known = { alg: 'ES256', kid: 'k-old' };
    expect(source.keysNow?.(known)).toBeUndefined();
    expect(await source.getKeys(known)).toHaveLength(1);
    expect(source.keysNow?.(known)).toHaveLength(1);
    for (let i = 0; i < 200; i++) {
      const madeUp = { alg: 'ES256', kid: `made-up-${String(i)}` };
      await expect(source.getKeys(madeUp)).rejects.toMatchObject({ reason: 'unknown_kid' });
      expect(source.keysNow?.(madeUp)).toBeUndefined();
    }
    expect(source.keysNow?.(known)).toHaveLength(1);
  });
});

describe('createLocalJwksSource: a set that verifies nothing', () => {
  it('is refused at construction: every token would be refused as an unknown key', () => {
    expect(() => createLocalJwksSource({ keys: [] })).toThrow(
      'jwks: the key set holds no key, so every token would be refused',
    );
  });

  it('refuses a key Node cannot import: every token it was meant for would be refused', () => {
    for (const key of [{ kty: 'EC' }, { kty: 'RSA', e: 'AQAB' }, { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' }]) {
      expect(() => createLocalJwksSource({ keys: [key as never] })).toThrow(
        /^jwks: keys\[0\] is not a usable public key \(missing or malformed members for its "kty"\)$/,
      );
    }
  });
});
