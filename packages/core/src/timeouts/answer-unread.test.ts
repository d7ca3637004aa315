import { describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { blameUnreadAnswer } from './answer-unread.js';

describe('blameUnreadAnswer', () => {
  const deadline = new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded' });

  it('blames the client for a deadline that came while its answer waited to be read', () => {
    const blamed = blameUnreadAnswer(deadline, 2_097_152);
    expect(blamed).toMatchObject({ code: 'deadline_exceeded', reason: 'answer_unread' });
    expect(blamed.auditFields).toEqual({ bytesWaiting: 2_097_152 });
  });

  it('keeps a slow handler’s deadline (nothing waiting) and every other refusal as they are', () => {
    expect(blameUnreadAnswer(deadline, 0)).toBe(deadline);
    expect(blameUnreadAnswer(deadline, Number.NaN)).toBe(deadline);
    const idle = new SecurityError('deadline_exceeded', { reason: 'inbound_idle' });
    expect(blameUnreadAnswer(idle, 100)).toBe(idle);
  });
});
