import { describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { answerWaiting, blameUnfinishedRequest, blameUnreadAnswer } from './deadline-blame.js';

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

  it('blames a client that had not sent its whole request, with nothing of it waiting for the handler', () => {
    expect(blameUnfinishedRequest(deadline, false, 0)).toMatchObject({
      code: 'deadline_exceeded',
      reason: 'request_unfinished',
    });
  });

  it('keeps the deadline the server’s for a finished request or one the handler stopped reading', () => {
    expect(blameUnfinishedRequest(deadline, true, 0)).toBe(deadline);
    expect(blameUnfinishedRequest(deadline, false, 16_384)).toBe(deadline);
    const idle = new SecurityError('deadline_exceeded', { reason: 'inbound_idle' });
    expect(blameUnfinishedRequest(idle, false, 0)).toBe(idle);
  });
});
