// Where a call's context lives: on the Metadata object grpc-js passes from interceptor to
// handler, under a symbol of this module. No metadata a client sends can reach or replace it.
import { describe, expect, it } from 'vitest';
import { Metadata } from '@grpc/grpc-js';
import { compileClientAddress, type CallInfo } from '@fluxguard/core';
import { CallState } from '@fluxguard/core/adapter';
import { GrpcCall, attachCall, callOf, findCallContext, getRequestId, peerString, type ServerCall } from './context.js';

function newCall(requestId: string): GrpcCall {
  const state = new CallState({
    requestId,
    deadline: undefined,
    end: () => undefined,
    onReleaseError: () => undefined,
  });
  return new GrpcCall(
    '/pkg.Svc/Method',
    { getConnectionInfo: () => ({ remoteAddress: '127.0.0.1', remotePort: 1 }) },
    state,
  );
}

describe('the call context on Metadata', () => {
  it('is found from the same Metadata object, and only from it', () => {
    const metadata = new Metadata();
    const call = newCall('req-1');
    attachCall(metadata, call);
    expect(callOf(metadata)).toBe(call);
    expect(findCallContext(metadata)?.requestId).toBe('req-1');
    expect(getRequestId({ metadata } as unknown as ServerCall)).toBe('req-1');
    // A copy is another call's metadata as far as the context goes.
    expect(callOf(metadata.clone())).toBeUndefined();
  });

  it('is invisible to code that walks the object, and metadata a client sends cannot reach it', () => {
    const metadata = new Metadata();
    const keysBefore = Object.keys(metadata);
    attachCall(metadata, newCall('req-2'));
    expect(Object.keys(metadata)).toEqual(keysBefore);
    expect(JSON.stringify(metadata)).not.toContain('req-2');

    const forged = new Metadata();
    for (const key of ['fluxguard.call', 'x-request-id', 'call', '__proto__', 'constructor']) forged.set(key, 'forged');
    expect(callOf(forged)).toBeUndefined();
    expect(() => getRequestId({ metadata: forged } as unknown as ServerCall)).toThrow(/fluxguardInterceptors/);
  });

  it('works on a frozen Metadata object too', () => {
    const metadata = new Metadata();
    Object.freeze(metadata);
    const call = newCall('req-3');
    attachCall(metadata, call);
    expect(callOf(metadata)).toBe(call);
    expect(findCallContext(metadata)?.requestId).toBe('req-3');
  });

  it('is replaced, not duplicated, when attached twice (two safeErrors interceptors)', () => {
    const metadata = new Metadata();
    attachCall(metadata, newCall('first'));
    const second = newCall('second');
    attachCall(metadata, second);
    expect(callOf(metadata)).toBe(second);
  });
});

describe('peerString', () => {
  it('writes an IPv6 peer in brackets, so that its port never reads as part of the address', () => {
    expect(peerString('2001:db8::c:d:e:f', 5000)).toBe('[2001:db8::c:d:e:f]:5000');
    expect(peerString('10.0.0.1', 5000)).toBe('10.0.0.1:5000');
    expect(peerString('::1', undefined)).toBe('::1');
    expect(peerString(undefined, 5000)).toBe('unknown');
    // What a rate limit's peer key makes of it: the client's /64, whatever its source port.
    const keyOf = (port: number): string | undefined =>
      compileClientAddress({}, 'test').keyOf({ peerAddress: peerString('2001:db8::c:d:e:f', port) } as CallInfo);
    expect(keyOf(5000)).toBe('2001:db8:0:0:0:0:0:0/64');
    expect(keyOf(5001)).toBe(keyOf(5000));
  });
});
