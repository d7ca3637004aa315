import { describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { UNREAD_REQUEST_MS, answerWaiting, blameUnfinishedRequest, blameUnreadAnswer } from './deadline-blame.js';

describe('blameUnreadAnswer', () => {
  const deadline = new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded' });
  const WAITING = 2_097_152;

  it.each([
    ['took nothing more', WAITING],
    ['left without it', 'abandoned'],
  ] as const)('blames a client that %s after the deadline', (_label, after) => {
    const blamed = blameUnreadAnswer(deadline, WAITING, after);
    expect(blamed).toMatchObject({ code: 'deadline_exceeded', reason: 'answer_unread' });
    expect(blamed.auditFields).toEqual({ bytesWaiting: WAITING });
  });

  it.each([
    ['took some of it', WAITING - 65_536],
    ['took all of it', 'delivered'],
  ] as const)('keeps the deadline as the server’s when the client %s: it was reading', (_label, after) => {
    expect(blameUnreadAnswer(deadline, WAITING, after)).toBe(deadline);
  });

  it('keeps a slow handler’s deadline (nothing waiting) and every other refusal as they are', () => {
    expect(answerWaiting(deadline, 0)).toBe(false);
    expect(blameUnreadAnswer(deadline, 0, 0)).toBe(deadline);
    expect(blameUnreadAnswer(deadline, Number.NaN, 'abandoned')).toBe(deadline);
    const idle = new SecurityError('deadline_exceeded', { reason: 'inbound_idle' });
    expect(answerWaiting(idle, 100)).toBe(false);
    expect(blameUnreadAnswer(idle, 100, 100)).toBe(idle);
  });
});

describe('blameUnfinishedRequest', () => {
  const deadline = new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded' });
  const idle = new SecurityError('deadline_exceeded', { reason: 'inbound_idle' });
  const LIMIT = 16_384;
  const unread = (bytes: number, forMs: number) => ({ bytes, forMs, limit: LIMIT });

  it('blames a client that had not sent its whole request, with nothing of it waiting for the handler', () => {
    expect(blameUnfinishedRequest(deadline, false, 0)).toMatchObject({
      code: 'deadline_exceeded',
      reason: 'request_unfinished',
    });
    expect(blameUnfinishedRequest(deadline, false, unread(0, 0))).toMatchObject({ reason: 'request_unfinished' });
  });

  it.each([0, 40, UNREAD_REQUEST_MS - 1])(
    'blames a client whose unread bytes arrived %i ms before the deadline (a late burst, not a stuck handler)',
    (forMs) => {
      expect(blameUnfinishedRequest(deadline, false, unread(4_194_304, forMs))).toMatchObject({
        code: 'deadline_exceeded',
        reason: 'request_unfinished',
      });
    },
  );

  it('blames a client that sent less than the transport holds and stopped, however long it waited', () => {
    expect(blameUnfinishedRequest(deadline, false, unread(LIMIT - 1, 60_000))).toMatchObject({
      reason: 'request_unfinished',
    });
    expect(blameUnfinishedRequest(idle, false, unread(16, 30_000))).toBe(idle);
  });

  it('keeps a finished request’s deadline, and an idle limit the handler is not to blame for, as they are', () => {
    expect(blameUnfinishedRequest(deadline, true, 0)).toBe(deadline);
    expect(blameUnfinishedRequest(deadline, true, unread(LIMIT, 60_000))).toBe(deadline);
    expect(blameUnfinishedRequest(idle, false, 0)).toBe(idle);
    // gRPC: the handler has asked for the next message since; what waits is not its doing.
    expect(blameUnfinishedRequest(idle, false, unread(LIMIT, 0))).toBe(idle);
    const other = new SecurityError('unavailable', { reason: 'concurrency_limit' });
    expect(blameUnfinishedRequest(other, false, unread(LIMIT, 60_000))).toBe(other);
  });

  it.each([
    ['a deadline', deadline, unread(LIMIT, UNREAD_REQUEST_MS), LIMIT],
    ['a deadline', deadline, unread(65_536, 60_000), 65_536],
    ['a deadline', deadline, 1, 1],
    ['an idle limit', idle, unread(65_536, 30_000), 65_536],
    ['an idle limit', idle, unread(LIMIT, 500), LIMIT],
  ] as const)(
    'blames the handler for %s when what it left unread held the client back',
    (_label, error, left, bytes) => {
      const blamed = blameUnfinishedRequest(error, false, left);
      expect(blamed).toMatchObject({ code: 'deadline_exceeded', reason: 'request_unread' });
      expect(blamed.auditFields).toEqual({ bytesUnread: bytes });
    },
  );

  it.each([
    [0, 1_500, 0],
    [8, 29_992, 0],
    [UNREAD_REQUEST_MS - 1, 60_000, 20_000],
    [150, 300, 100],
  ])(
    'blames a client whose request ended %i ms before the deadline, %i ms after the start, %i ms of it held back',
    (forMs, sendingMs, heldMs) => {
      const blamed = blameUnfinishedRequest(deadline, { forMs, sendingMs, heldMs }, 0);
      expect(blamed).toMatchObject({ code: 'deadline_exceeded', reason: 'request_late' });
      expect(blamed.auditFields).toEqual({ msSinceRequestEnd: forMs });
    },
  );

  it.each([
    ['a second or more before the deadline', UNREAD_REQUEST_MS, 60_000, 0],
    ['at the start of a short deadline (a unary call)', 299, 1, 0],
    ['late because the handler held it back', 350, 1_150, 1_100],
    ['halfway through a short deadline', 150, 150, 0],
  ])('keeps the deadline the server’s for a request that ended %s', (_label, forMs, sendingMs, heldMs) => {
    expect(blameUnfinishedRequest(deadline, { forMs, sendingMs, heldMs }, 0)).toBe(deadline);
  });

  it('keeps a client’s own deadline and an idle limit as they are after the request’s end', () => {
    const own = new SecurityError('deadline_exceeded', { reason: 'client_deadline' });
    const late = { forMs: 5, sendingMs: 10_000, heldMs: 0 };
    expect(blameUnfinishedRequest(own, late, 0)).toBe(own);
    expect(blameUnfinishedRequest(idle, late, 0)).toBe(idle);
  });

  it('leaves a client’s own deadline its own when anything it sent waits, stuck handler or not', () => {
    const own = new SecurityError('deadline_exceeded', { reason: 'client_deadline' });
    expect(blameUnfinishedRequest(own, false, unread(LIMIT, 60_000))).toBe(own);
    expect(blameUnfinishedRequest(own, false, unread(7, 10))).toBe(own);
    expect(blameUnfinishedRequest(own, false, unread(0, 0))).toMatchObject({ reason: 'request_unfinished' });
  });
});
