import { AsyncLocalStorage } from 'node:async_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import type { SecurityError } from '../errors/security-error.js';
import { CallState } from '../pipeline/call-context.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { TIMEOUT_DEFAULTS, createTimeouts, type TimeoutsOptions } from './timeouts.js';

function call(operation: string, deadline?: number): CallInfo {
  return {
    transport: operation.startsWith('/') ? 'grpc' : 'http',
    operation,
    requestId: 'r1',
    peerAddress: undefined,
    peerCertificate: undefined,
    headers: { get: () => undefined, getAll: () => [] },
    deadline,
    signal: new AbortController().signal,
  };
}

/** Runs the control through a real pipeline on a real call state; records how the call ended. */
function start(options: TimeoutsOptions, info: CallInfo) {
  const ended: SecurityError[] = [];
  const state = new CallState({
    requestId: info.requestId,
    deadline: info.deadline,
    end: (error) => ended.push(error),
    onReleaseError: () => undefined,
  });
  const pipeline = createPipeline('test', [createTimeouts(options)]);
  expect(pipeline.start(info, state)).toBeUndefined();
  return { state, ended, pipeline };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('createTimeouts', () => {
  it('has secure defaults: 60 s without a client deadline, at most 15 minutes, 30 s idle', () => {
    expect(TIMEOUT_DEFAULTS).toEqual({ defaultMs: 60_000, maxMs: 900_000, idleMs: 30_000 });
    expect(createTimeouts().limitsFor('GET /x')).toEqual(TIMEOUT_DEFAULTS);
  });

  it('picks the most specific rule, with the defaults for what a rule leaves out', () => {
    const timeouts = createTimeouts({
      defaultMs: 10_000,
      rules: [
        { operation: 'PUT /v1/*path', defaultMs: 20_000 },
        { operation: 'PUT /v1/uploads/:id', idleMs: 5_000 },
        { operation: '/pkg.Store/*', maxMs: 30_000 },
      ],
    });
    expect(timeouts.limitsFor('PUT /v1/uploads/7')).toEqual({ defaultMs: 10_000, maxMs: 900_000, idleMs: 5_000 });
    expect(timeouts.limitsFor('PUT /v1/a/b')).toMatchObject({ defaultMs: 20_000 });
    expect(timeouts.limitsFor('/pkg.Store/Get')).toMatchObject({ maxMs: 30_000, defaultMs: 10_000 });
    expect(timeouts.limitsFor('GET /v1/a')).toMatchObject({ defaultMs: 10_000 });
  });

  it('keeps only one transport’s rules when asked', () => {
    const rules = [
      { operation: 'PUT /v1/*path', defaultMs: 20_000 },
      { operation: '/pkg.Store/Put', defaultMs: 40_000 },
    ];
    expect(createTimeouts({ rules, transport: 'grpc' }).limitsFor('PUT /v1/a').defaultMs).toBe(60_000);
    expect(createTimeouts({ rules, transport: 'grpc' }).limitsFor('/pkg.Store/Put').defaultMs).toBe(40_000);
  });

  it.each([
    [{ defaultMs: 0 }, /defaultMs must be a whole number/],
    [{ idleMs: -1 }, /idleMs must be a whole number/],
    [{ maxMs: 2 ** 31 }, /maxMs must be a whole number/],
    [{ defaultMs: 1.5 }, /defaultMs must be a whole number/],
    [{ defaultMs: 10_000, maxMs: 5_000 }, /maxMs \(5000\) must not be below defaultMs/],
    [{ defautMs: 1 }, /did you mean "defaultMs"/],
    [{ rules: {} }, /rules must be an array/],
    [
      { rules: [{ operation: 'GET /a' }, { operation: 'GET /a/' }] },
      /rules\[1\]\.operation "GET \/a\/" names the operations of "GET \/a"/,
    ],
    [{ rules: [{ operation: 'get /a' }] }, /not an operation pattern/],
    [{ rules: [{ operation: 'GET /a', idle: 1 }] }, /unknown option "idle"/],
    [{ transport: 'smtp' }, /"transport" must be "grpc" or "http"/],
  ])('refuses %o at start-up', (options, message) => {
    expect(() => createTimeouts(options as TimeoutsOptions)).toThrow(ConfigurationError);
    expect(() => createTimeouts(options as TimeoutsOptions)).toThrow(message);
  });
});

describe('the timeouts control on a call', () => {
  it('gives a call without a client deadline the default, and ends it there', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { state, ended } = start({ defaultMs: 5_000, idleMs: 0 }, call('GET /x'));
    expect(state.deadline).toBe(1_005_000);
    vi.advanceTimersByTime(4_999);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(ended.map((e) => [e.code, e.reason])).toEqual([['deadline_exceeded', 'deadline_exceeded']]);
    expect((state.signal.reason as DOMException).name).toBe('TimeoutError');
  });

  it('brings a later client deadline down to the maximum, and leaves an earlier one alone', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    expect(
      start({ defaultMs: 5_000, maxMs: 10_000, idleMs: 0 }, call('/pkg.S/M', 1_000_000 + 36_000_000)).state.deadline,
    ).toBe(1_010_000);
    expect(start({ defaultMs: 5_000, maxMs: 10_000, idleMs: 0 }, call('/pkg.S/M', 1_002_000)).state.deadline).toBe(
      1_002_000,
    );
  });

  it('ends an inbound stream that pauses longer than the idle limit, and only while it streams', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const info = call('/pkg.S/Upload', 1_000_000 + 60_000);
    const { state, ended, pipeline } = start({ idleMs: 1_000 }, info);
    vi.advanceTimersByTime(900);
    pipeline.message({ chunk: 1 }, info, state, 1);
    vi.advanceTimersByTime(900);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(ended.map((e) => e.reason)).toEqual(['inbound_idle']);

    const quiet = start({ idleMs: 1_000 }, info);
    quiet.pipeline.inboundEnd(info, quiet.state);
    vi.advanceTimersByTime(5_000);
    expect(quiet.ended).toEqual([]);
  });

  it('ends a call that sends its head and then nothing at the idle limit, not at its deadline', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const withBody = (headers: Record<string, string>): CallInfo => ({
      ...call('PUT /x'),
      headers: { get: (name) => headers[name], getAll: (name) => (name in headers ? [headers[name] ?? ''] : []) },
    });
    // A gRPC call with a 15-minute client deadline, and an HTTP request that declares a body.
    for (const info of [
      call('/pkg.S/Get', 1_000_000 + 900_000),
      withBody({ 'content-length': '10' }),
      withBody({ 'transfer-encoding': 'chunked' }),
    ]) {
      const { ended } = start({ idleMs: 1_000 }, info);
      vi.advanceTimersByTime(999);
      expect(ended).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(ended.map((e) => e.reason)).toEqual(['inbound_idle']);
    }
    // An HTTP request without a body has nothing to wait for: its deadline's timer, no other.
    const before = vi.getTimerCount();
    start({ idleMs: 1_000, defaultMs: 5_000 }, withBody({ 'content-length': '0' }));
    expect(vi.getTimerCount()).toBe(before + 1);
    start({ idleMs: 1_000, defaultMs: 5_000 }, withBody({ 'content-length': '1' }));
    expect(vi.getTimerCount()).toBe(before + 3);
  });

  it('makes no idle timer for a call whose request ends in the turn it started, and one for a call still sending', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const made = vi.spyOn(globalThis, 'setTimeout');
    // A limit of its own: calls left waiting by earlier tests get their timers in this turn too.
    const idleTimers = () => made.mock.calls.filter(([, ms]) => ms === 1_234).length;
    const info = call('/pkg.S/Get', 1_000_000 + 60_000);
    const whole = start({ idleMs: 1_234 }, info);
    whole.pipeline.message({ id: 1 }, info, whole.state, 1);
    whole.pipeline.inboundEnd(info, whole.state);
    const sending = start({ idleMs: 1_234 }, info);
    sending.pipeline.message({ chunk: 1 }, info, sending.state, 1);
    expect(idleTimers()).toBe(0);
    vi.advanceTimersByTime(0);
    expect(idleTimers()).toBe(1);
    vi.advanceTimersByTime(1_233);
    expect([whole.ended, sending.ended]).toEqual([[], []]);
    vi.advanceTimersByTime(1);
    expect(whole.ended).toEqual([]);
    expect(sending.ended.map((e) => e.reason)).toEqual(['inbound_idle']);
  });

  it('ends each idle call in its own async context, though their timers were made in one turn', async () => {
    // An application's per-request store (a trace, the caller) must not be another call's where
    // the call's end runs: its signal's listeners, its audit line.
    const requests = new AsyncLocalStorage<string>();
    const seen: (string | undefined)[] = [];
    const startIn = (name: string): void => {
      requests.run(name, () => {
        const { state } = start({ idleMs: 20 }, call('/pkg.S/Upload', Date.now() + 60_000));
        state.signal.addEventListener('abort', () => seen.push(`${name}: ${String(requests.getStore())}`));
      });
    };
    startIn('first');
    startIn('second');
    startIn('third');
    await expect.poll(() => seen.length).toBe(3);
    expect(seen).toEqual(['first: first', 'second: second', 'third: third']);
  });

  it('still ends idle calls after fake timers that never ran their turn were uninstalled', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const info = call('/pkg.S/Upload', Date.now() + 60_000);
    start({ idleMs: 1_000 }, info);
    vi.useRealTimers();
    const { ended } = start({ idleMs: 20 }, call('/pkg.S/Upload', Date.now() + 60_000));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(ended.map((e) => e.reason)).toEqual(['inbound_idle']);
  });

  it('stops its timers when the call ends', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { state, ended } = start({ defaultMs: 5_000, idleMs: 1_000 }, call('PUT /x'));
    state.finish('ended');
    vi.advanceTimersByTime(10_000);
    expect(ended).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
