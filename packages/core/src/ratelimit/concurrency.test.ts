import { describe, expect, it, vi } from 'vitest';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { ipv6Prefix } from './client-address.js';
import { createConcurrencyLimit, type ConcurrencyLimitOptions } from './concurrency.js';

const alice: Principal = Object.freeze({
  subject: 'alice',
  roles: Object.freeze([]),
  scopes: Object.freeze([]),
  claims: Object.freeze({}),
  certificate: undefined,
  authenticatedBy: 'jwt',
});

function call(peerAddress = '10.1.2.3:5000', operation = '/pkg.S/M'): CallInfo {
  return {
    transport: operation.startsWith('/') ? 'grpc' : 'http',
    operation,
    requestId: 'r',
    peerAddress,
    peerCertificate: undefined,
    headers: { get: () => undefined, getAll: () => [] },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

function starter(options: ConcurrencyLimitOptions) {
  const limit = createConcurrencyLimit(options);
  const pipeline = createPipeline('test', [limit]);
  const start = (info: CallInfo, principal?: Principal): CallState => {
    const state = new CallState({
      requestId: 'r',
      deadline: undefined,
      end: () => undefined,
      onReleaseError: () => undefined,
    });
    if (principal !== undefined) state.setPrincipal(principal);
    // The control is synchronous: start returns undefined once it has allowed the call.
    expect(pipeline.start(info, state)).toBeUndefined();
    return state;
  };
  return { limit, start };
}

describe('createConcurrencyLimit', () => {
  it('holds callers without a principal to their shared part, whatever their addresses; callers with one keep the rest', () => {
    const { limit, start } = starter({ maxInFlight: 8, maxInFlightPerCaller: 2, maxInFlightAnonymous: 4 });
    // Two anonymous calls from each of two addresses fill the anonymous part ...
    for (const address of ['10.0.0.1:1', '10.0.0.2:1']) for (let i = 0; i < 2; i++) start(call(address));
    // ... so a third address, within its own two, is refused ...
    expect(() => start(call('10.0.0.3:1'))).toThrow(
      expect.objectContaining({ code: 'unavailable', reason: 'concurrency_limit' }) as SecurityError,
    );
    // ... and a caller with a principal is not.
    start(call('10.0.0.3:1'), alice);
    expect(limit.inFlight()).toBe(5);
    expect(() => createConcurrencyLimit({ maxInFlight: 4, maxInFlightAnonymous: 5 })).toThrow(
      /"maxInFlightAnonymous" is above "maxInFlight"/,
    );
  });

  it('counts a certificate without a principal per address (replicas sharing one workload certificate)', () => {
    const { limit, start } = starter({ maxInFlightPerCaller: 1 });
    const certificate = {
      spiffeId: 'spiffe://fluxguard.dev/replica',
      uris: ['spiffe://fluxguard.dev/replica'],
      dnsNames: [],
      commonName: undefined,
      fingerprint256: 'ab',
      validFrom: new Date(0),
      validTo: new Date(8.64e15),
    };
    // Two replicas sharing one workload certificate, on a public operation: one count each.
    start({ ...call('10.0.0.1:1'), peerCertificate: certificate });
    start({ ...call('10.0.0.2:1'), peerCertificate: certificate });
    expect(limit.inFlightFor('certificate:spiffe://fluxguard.dev/replica|peer:10.0.0.1')).toBe(1);
    expect(limit.inFlightFor('certificate:spiffe://fluxguard.dev/replica|peer:10.0.0.2')).toBe(1);
    // An anonymous caller at one of those addresses is counted apart.
    start(call('10.0.0.1:2'));
    expect(limit.inFlightFor('peer:10.0.0.1')).toBe(1);
  });

  it('refuses the call over the overall limit with unavailable, and admits again once one ends', () => {
    const { limit, start } = starter({ maxInFlight: 2 });
    const a = start(call());
    start(call('10.9.9.9:1'));
    expect(() => start(call('10.8.8.8:1'))).toThrow(
      expect.objectContaining({ code: 'unavailable', reason: 'concurrency_limit' }) as SecurityError,
    );
    expect(limit.inFlight()).toBe(2);
    a.finish('ended');
    a.finish('cancelled');
    expect(limit.inFlight()).toBe(1);
    start(call('10.8.8.8:1'));
    expect(limit.inFlight()).toBe(2);
  });

  it('keeps the slot of an ended call while its handler works, and at most holdForHandlerMs', () => {
    vi.useFakeTimers({ now: 0 });
    try {
      const { limit, start } = starter({ maxInFlight: 2, maxInFlightPerCaller: 2, holdForHandlerMs: 1_000 });
      // The client cancels while the handler works: the slot stays taken until it stops.
      const working = start(call());
      working.handlerStarted();
      working.finish('cancelled');
      expect(limit.inFlight()).toBe(1);
      expect(limit.inFlightFor('peer:10.1.2.3')).toBe(1);
      working.handlerStopped();
      expect(limit.inFlight()).toBe(0);
      expect(limit.inFlightFor('peer:10.1.2.3')).toBe(0);

      // A handler that never stops holds it for holdForHandlerMs, then goes on uncounted.
      const stuck = start(call());
      stuck.handlerStarted();
      stuck.finish('cancelled');
      vi.advanceTimersByTime(999);
      expect(limit.inFlight()).toBe(1);
      vi.advanceTimersByTime(1);
      expect(limit.inFlight()).toBe(0);
      stuck.handlerStopped();
      expect(limit.inFlight()).toBe(0);

      // A handler that stopped before the call ended, or never started, holds nothing after it.
      const answered = start(call());
      answered.handlerStarted();
      answered.handlerStopped();
      answered.finish('ended');
      start(call()).finish('cancelled');
      expect(limit.inFlight()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('gives the slot back when the call ends with holdForHandlerMs 0', () => {
    const { limit, start } = starter({ maxInFlight: 1, holdForHandlerMs: 0 });
    const working = start(call());
    working.handlerStarted();
    working.finish('cancelled');
    expect(limit.inFlight()).toBe(0);
  });

  it('counts per caller: the subject when authenticated, else the peer host whatever its port', () => {
    const { limit, start } = starter({ maxInFlightPerCaller: 1 });
    start(call('10.1.2.3:1'), alice);
    expect(() => start(call('10.7.7.7:1'), alice)).toThrow(SecurityError);
    const peer = start(call('10.1.2.3:2'));
    expect(() => start(call('10.1.2.3:3'))).toThrow(SecurityError);
    start(call('[2001:db8::1]:4'));
    expect(limit.inFlightFor('subject:tok:0::alice')).toBe(1);
    expect(limit.inFlightFor('peer:10.1.2.3')).toBe(1);
    expect(limit.inFlightFor(`peer:${ipv6Prefix('2001:db8::1', 64)}`)).toBe(1);
    peer.finish('ended');
    // No entry is kept for a key with nothing in flight.
    expect(limit.inFlightFor('peer:10.1.2.3')).toBe(0);
    expect(limit.inFlight()).toBe(2);
  });

  it("counts a subject within its issuer: one issuer's alice does not hold another's share", () => {
    const { limit, start } = starter({ maxInFlightPerCaller: 1 });
    const of = (iss: string): Principal => Object.freeze({ ...alice, claims: Object.freeze({ iss, sub: 'alice' }) });
    start(call('10.1.2.3:1'), of('https://b.example'));
    expect(() => start(call('10.1.2.3:2'), of('https://b.example'))).toThrow(SecurityError);
    start(call('10.1.2.3:3'), of('https://a.example'));
    expect(limit.inFlightFor('subject:tok:17:https://a.example:alice')).toBe(1);
  });

  it('counts a peer as rate limits do: an IPv4-mapped address as IPv4, an IPv6 host by its /64', () => {
    const { limit, start } = starter({ maxInFlightPerCaller: 1, key: 'peer' });
    start(call('10.1.2.3:1'));
    expect(() => start(call('[::ffff:10.1.2.3]:2'))).toThrow(SecurityError);
    start(call('[2001:db8:1:2::10]:3'));
    // Another address of the same /64: the same host, whatever address it picks.
    expect(() => start(call('[2001:db8:1:2:ffff::99]:4'))).toThrow(SecurityError);
    start(call('[2001:db8:1:3::10]:5'));
    expect(limit.inFlight()).toBe(3);
  });

  it('takes a key function; a call it names no key for counts overall only', () => {
    const { limit, start } = starter({
      maxInFlightPerCaller: 1,
      maxInFlight: 5,
      key: (info) => info.headers.get('x-tenant'),
    });
    start(call());
    start(call());
    expect(limit.inFlight()).toBe(2);
  });

  it('keeps a share for the other operations: a held operation cannot take more than its own limit', () => {
    const { limit, start } = starter({
      maxInFlight: 4,
      maxInFlightPerOperation: { '/pkg.S/Upload': 2, 'PUT /v1/files/*path': 1, 'PUT /v1/files/big/*path': 2 },
    });
    const uploads = [start(call('10.0.0.1:1', '/pkg.S/Upload')), start(call('10.0.0.2:1', '/pkg.S/Upload'))];
    expect(() => start(call('10.0.0.3:1', '/pkg.S/Upload'))).toThrow(
      expect.objectContaining({ code: 'unavailable', reason: 'concurrency_limit' }) as SecurityError,
    );
    expect(limit.inFlightOn('/pkg.S/Upload')).toBe(2);
    // The other operations still have the rest of the overall budget.
    start(call('10.0.0.4:1', '/pkg.S/Get'));
    start(call('10.0.0.5:1', '/pkg.S/Get'));
    expect(limit.inFlight()).toBe(4);
    uploads[0]?.finish('ended');
    expect(limit.inFlightOn('/pkg.S/Upload')).toBe(1);
    start(call('10.0.0.3:1', '/pkg.S/Upload'));
    expect(limit.inFlightOn('/pkg.S/Upload')).toBe(2);
  });

  it('keeps each caller to its part of a share, so that one caller cannot take the share from the others', () => {
    const { limit, start } = starter({
      maxInFlight: 10,
      maxInFlightPerOperation: { '/grpc.health.v1.Health/Watch': { max: 3, perCaller: 2 } },
    });
    const watch = (peer: string, principal?: Principal): CallState =>
      start(call(peer, '/grpc.health.v1.Health/Watch'), principal);
    // An anonymous caller (counted by its address, whatever its port) holds its two, no more.
    const first = watch('10.0.0.1:1');
    watch('10.0.0.1:2');
    expect(() => watch('10.0.0.1:3')).toThrow(
      expect.objectContaining({ code: 'unavailable', reason: 'concurrency_limit' }) as SecurityError,
    );
    // Another caller still gets the rest of the share, and the share still bounds them all.
    watch('10.0.0.2:1', alice);
    expect(() => watch('10.0.0.3:1')).toThrow(SecurityError);
    expect(limit.inFlightOn('/grpc.health.v1.Health/Watch')).toBe(3);
    // The same caller's other operations are not counted in the share.
    start(call('10.0.0.1:4', '/pkg.S/Get'));
    first.finish('ended');
    first.finish('cancelled');
    watch('10.0.0.1:5');
    expect(() => watch('10.0.0.1:6')).toThrow(SecurityError);
  });

  it('takes a per-caller part without a total, and counts a call with no key in neither', () => {
    const { limit, start } = starter({
      key: (info) => (info.peerAddress === 'none' ? undefined : info.peerAddress),
      maxInFlightPerOperation: { '/pkg.S/Watch': { perCaller: 1 } },
    });
    start(call('a', '/pkg.S/Watch'));
    expect(() => start(call('a', '/pkg.S/Watch'))).toThrow(SecurityError);
    for (let i = 0; i < 5; i++) start(call(`b${String(i)}`, '/pkg.S/Watch'));
    for (let i = 0; i < 5; i++) start(call('none', '/pkg.S/Watch'));
    expect(limit.inFlightOn('/pkg.S/Watch')).toBe(11);
  });

  it('counts an HTTP operation under its most specific pattern, with or without a trailing slash', () => {
    const { limit, start } = starter({
      maxInFlightPerOperation: { 'PUT /v1/files/*path': 1, 'PUT /v1/files/big/*path': 2 },
    });
    start(call('10.0.0.1:1', 'PUT /v1/files/big/a'));
    start(call('10.0.0.1:1', 'PUT /v1/files/big/b/'));
    expect(() => start(call('10.0.0.1:1', 'PUT /v1/files/big/c'))).toThrow(SecurityError);
    start(call('10.0.0.1:1', 'PUT /v1/files/small'));
    expect(() => start(call('10.0.0.1:1', 'PUT /v1/files/other/'))).toThrow(SecurityError);
    // Operations no pattern names are not limited at all here (no overall limit given).
    for (let i = 0; i < 10; i++) start(call('10.0.0.1:1', 'GET /v1/files/big/a'));
    expect(limit.inFlightOn('PUT /v1/files/big/*path')).toBe(2);
    expect(limit.inFlightOn('PUT /v1/files/*path')).toBe(1);
    expect(limit.inFlightOn('PUT /v1/other')).toBe(0);
  });

  it('stays bounded under a flood of distinct HTTP paths and counts each call once', () => {
    const { limit, start } = starter({
      maxInFlight: 50_000,
      maxInFlightPerOperation: { 'PUT /v1/files/*path': 20_000 },
    });
    const states = Array.from({ length: 5_000 }, (_, i) => start(call('10.0.0.1:1', `PUT /v1/files/${String(i)}`)));
    expect(limit.inFlightOn('PUT /v1/files/*path')).toBe(5_000);
    for (const state of states) {
      state.finish('ended');
      state.finish('cancelled');
    }
    expect(limit.inFlightOn('PUT /v1/files/*path')).toBe(0);
    expect(limit.inFlight()).toBe(0);
  });

  it.each([
    [{}, /give "maxInFlight", "maxInFlightPerCaller", "maxInFlightAnonymous", "maxInFlightPerOperation" or several/],
    [{ maxInFlightPerOperation: {} }, /"maxInFlightPerOperation" names no operation/],
    [{ maxInFlightPerOperation: ['/pkg.S/M'] }, /must be an object of operation pattern to limit/],
    [
      { maxInFlightPerOperation: { '/pkg.S/M': 0 } },
      /"maxInFlightPerOperation"\["\/pkg.S\/M"\] must be a whole number of at least 1/,
    ],
    [{ maxInFlightPerOperation: { 'pkg.S/M': 1 } }, /is not an operation pattern/],
    // Only one share could apply: the one written first, so a limit of 1 was never applied.
    [
      { maxInFlightPerOperation: { 'PUT /v1/up': 10, 'PUT /v1/up/': 1 } },
      /"maxInFlightPerOperation" key "PUT \/v1\/up\/" names the operations of "PUT \/v1\/up", written before it/,
    ],
    [
      { maxInFlightPerOperation: { 'PUT /v1/:id': 10, 'PUT /v1/:name': 1 } },
      /"maxInFlightPerOperation" key "PUT \/v1\/:name" names the operations of "PUT \/v1\/:id"/,
    ],
    [
      { maxInFlight: 4, maxInFlightPerOperation: { '/pkg.S/M': 5 } },
      /above "maxInFlight" \(4\) and could never be reached/,
    ],
    [{ maxInFlightPerOperation: { '/pkg.S/M': {} } }, /must give "max", "perCaller" or both/],
    [{ maxInFlightPerOperation: { '/pkg.S/M': { max: 2, perCaller: 3 } } }, /perCaller is above its "max" \(2\)/],
    [{ maxInFlightPerOperation: { '/pkg.S/M': { max: 2, percaller: 1 } } }, /did you mean "perCaller"/],
    [{ maxInFlightPerOperation: { '/pkg.S/M': { perCaller: 0 } } }, /perCaller must be a whole number of at least 1/],
    [
      { maxInFlight: 4, maxInFlightPerOperation: { '/pkg.S/M': { max: 5 } } },
      /above "maxInFlight" \(4\) and could never be reached/,
    ],
    [{ maxInFlight: 0 }, /"maxInFlight" must be a whole number of at least 1/],
    [{ maxInFlightPerCaller: 1.5 }, /"maxInFlightPerCaller" must be a whole number of at least 1/],
    [{ maxInFlightPerCaller: 1, key: 'tenant' }, /"key" must be/],
    // Read by nothing: no per-caller limit.
    [{ maxInFlight: 1, key: () => 'tenant' }, /"key" names the caller of a per-caller limit, and none is given/],
    [
      { maxInFlight: 4, maxInFlightPerCaller: 5 },
      /"maxInFlightPerCaller" is above "maxInFlight" \(4\) and could never be reached/,
    ],
    [
      { maxInFlight: 4, maxInFlightPerOperation: { '/pkg.S/M': { perCaller: 5 } } },
      /perCaller is above "maxInFlight" \(4\) and could never be reached/,
    ],
    [{ maxInflight: 1 }, /did you mean "maxInFlight"/],
    [{ maxInFlight: 1, holdForHandlerMs: -1 }, /"holdForHandlerMs" must be a whole number of ms, from 0 to 600000/],
    [{ maxInFlight: 1, holdForHandlerMs: 5.5 }, /"holdForHandlerMs" must be a whole number of ms/],
    [{ maxInFlight: 1, holdForHandlerMS: 5 }, /did you mean "holdForHandlerMs"/],
  ])('refuses %o at start-up', (options, message) => {
    expect(() => createConcurrencyLimit(options as ConcurrencyLimitOptions)).toThrow(ConfigurationError);
    expect(() => createConcurrencyLimit(options as ConcurrencyLimitOptions)).toThrow(message);
  });
});
