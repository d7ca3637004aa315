import { SecurityError } from '../errors/security-error.js';

/**
 * What to record for a deadline that ended a call while `bytesWaiting` bytes of its answer
 * still waited for the client to take them (a client that reads slowly or not at all, whose
 * flow-control window or socket buffer is full): the client's doing, reason `answer_unread`,
 * logged as a refusal like an upload that stalls, not as a server error with a stack that any
 * client could make at will. With nothing waiting, the handler was slow: `error` as it is.
 * The public answer is `deadline_exceeded` either way.
 *
 * For adapter authors (`@fluxguard/core/adapter`): each transport measures what is waiting.
 *
 * @example
 * ```ts
 * import { blameUnreadAnswer } from '@fluxguard/core/adapter';
 * // Express: the response's bytes not yet taken by the kernel.
 * const recorded = blameUnreadAnswer(error, res.writableLength);
 * ```
 */
export function blameUnreadAnswer(error: SecurityError, bytesWaiting: number): SecurityError {
  if (error.reason !== 'deadline_exceeded' || !(bytesWaiting > 0)) return error;
  return new SecurityError('deadline_exceeded', {
    reason: 'answer_unread',
    auditFields: { bytesWaiting },
  });
}
