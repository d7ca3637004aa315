import { describe, expect, it } from 'vitest';
import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { createConcurrencyLimit, type ConcurrencyLimitOptions } from './concurrency.js';

const alice: Principal = Object.freeze({
  subject: 'alice',
  roles: Object.freeze([]),
  scopes: Object.freeze([]),
  claims: Object.freeze({}),
  certificate: undefined,
  authenticatedBy: 'jwt',
});

function call(peerAddress = '10.1.2.3:5000'): CallInfo {
  return {
    transport: 'grpc',
    operation: '/pkg.S/M',
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

  it('counts per caller: the subject when authenticated, else the peer host whatever its port', () => {
    const { limit, start } = starter({ maxInFlightPerCaller: 1 });
    start(call('10.1.2.3:1'), alice);
    expect(() => start(call('10.7.7.7:1'), alice)).toThrow(SecurityError);
    const peer = start(call('10.1.2.3:2'));
    expect(() => start(call('10.1.2.3:3'))).toThrow(SecurityError);
    start(call('[::1]:4'));
    expect(limit.inFlightFor('subject:alice')).toBe(1);
    expect(limit.inFlightFor('peer:10.1.2.3')).toBe(1);
    expect(limit.inFlightFor('peer:[::1]')).toBe(1);
    peer.finish('ended');
    // No entry is kept for a key with nothing in flight.
    expect(limit.inFlightFor('peer:10.1.2.3')).toBe(0);
    expect(limit.inFlight()).toBe(2);
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

  it.each([
    [{}, /give "maxInFlight", "maxInFlightPerCaller" or both/],
    [{ maxInFlight: 0 }, /"maxInFlight" must be a positive whole number/],
    [{ maxInFlightPerCaller: 1.5 }, /"maxInFlightPerCaller" must be a positive whole number/],
    [{ maxInFlight: 1, key: 'tenant' }, /"key" must be/],
    [{ maxInflight: 1 }, /did you mean "maxInFlight"/],
  ])('refuses %o at start-up', (options, message) => {
    expect(() => createConcurrencyLimit(options as ConcurrencyLimitOptions)).toThrow(ConfigurationError);
    expect(() => createConcurrencyLimit(options as ConcurrencyLimitOptions)).toThrow(message);
  });
});
