import { afterEach, describe, expect, it, vi } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { CallState } from './call-context.js';

function state(onReleaseError: (error: unknown) => void = () => undefined) {
  const ended: SecurityError[] = [];
  const s = new CallState({ requestId: 'r', deadline: undefined, end: (error) => ended.push(error), onReleaseError });
  return { s, ended };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CallState', () => {
  it('enforces a deadline longer than Node’s longest timer at its time, not at once', () => {
    vi.useFakeTimers({ now: 0 });
    const { s, ended } = state();
    const thirtyDays = 30 * 24 * 3_600_000;
    s.limitDeadline(thirtyDays);
    vi.advanceTimersByTime(1_000);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(thirtyDays - 1_001);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(ended.map((e) => e.code)).toEqual(['deadline_exceeded']);
  });

  it('runs every release even when one throws and the reporter of that throws too', () => {
    const { s } = state(() => {
      throw new Error('log sink down');
    });
    const ran: number[] = [];
    s.addRelease(() => ran.push(1));
    s.addRelease(() => {
      throw new Error('release failed');
    });
    s.addRelease(() => ran.push(3));
    expect(() => {
      s.finish('ended');
    }).not.toThrow();
    expect(ran).toEqual([1, 3]);
  });

  it('aborts the signal after ending: as a timeout for a deadline, as an abort otherwise', () => {
    const timedOut = state();
    const seen: string[] = [];
    timedOut.s.signal.addEventListener('abort', () =>
      seen.push(`aborted after ${String(timedOut.ended.length)} answer(s)`),
    );
    timedOut.s.end(new SecurityError('deadline_exceeded'));
    expect((timedOut.s.signal.reason as DOMException).name).toBe('TimeoutError');
    expect(seen).toEqual(['aborted after 1 answer(s)']);

    const refused = state();
    refused.s.end(new SecurityError('payload_too_large'));
    expect((refused.s.signal.reason as DOMException).name).toBe('AbortError');
    expect(refused.s.endedEarly).toBe(true);
  });

  it('refuses an already passed deadline, and ignores one later than the current', () => {
    vi.useFakeTimers({ now: 10_000 });
    const { s } = state();
    expect(() => {
      s.limitDeadline(9_000);
    }).toThrow(SecurityError);
    s.limitDeadline(20_000);
    s.limitDeadline(30_000);
    expect(s.deadline).toBe(20_000);
  });
});
