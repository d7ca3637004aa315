import { SecurityError } from '../errors/security-error.js';

/**
 * How long after a deadline an answer still waiting for its client is watched before anyone is
 * blamed (see {@link blameUnreadAnswer}).
 *
 * @example
 * ```ts
 * import { UNREAD_PROBE_MS, blameUnreadAnswer } from '@fluxguard/core/adapter';
 * setTimeout(() => record(blameUnreadAnswer(error, waiting, res.writableLength)), UNREAD_PROBE_MS);
 * ```
 */
export const UNREAD_PROBE_MS = 1_000;

/**
 * What became of an answer {@link UNREAD_PROBE_MS} after its deadline: the bytes still waiting,
 * `delivered` (the client took the rest) or `abandoned` (the connection or stream was closed
 * without it).
 *
 * @example
 * ```ts
 * import type { AnswerAfterProbe } from '@fluxguard/core/adapter';
 * const after: AnswerAfterProbe = res.writableFinished ? 'delivered' : req.socket.destroyed ? 'abandoned' : res.writableLength;
 * ```
 */
export type AnswerAfterProbe = number | 'delivered' | 'abandoned';

/**
 * Whether a deadline came while `bytesWaiting` bytes of the answer waited for the client to
 * take them: then who is to blame is known only a moment later, and the adapter watches the
 * answer for {@link UNREAD_PROBE_MS} before it writes the audit line.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { answerWaiting } from '@fluxguard/core/adapter';
 * if (answerWaiting(error, res.writableLength)) probeLater();
 * ```
 */
export function answerWaiting(error: SecurityError, bytesWaiting: number): boolean {
  return isDeadline(error) && bytesWaiting > 0;
}

/** A deadline's error, the server's (`deadline_exceeded`) or the client's own (`client_deadline`). */
function isDeadline(error: SecurityError): boolean {
  return error.reason === 'deadline_exceeded' || error.reason === 'client_deadline';
}

/**
 * What to record for a deadline that came while `waitingAtDeadline` bytes of the answer waited
 * for the client, given what became of them {@link UNREAD_PROBE_MS} later. A client that took
 * nothing more, or left without it, reads slowly or not at all: the client's doing, reason
 * `answer_unread`, logged as a refusal like an upload that stalls, not as a server error with a
 * stack that any client could make at will. A client that took some or all of it was reading:
 * the answer came too late or was too big for the deadline, and `error` stays as it is. The
 * public answer is `deadline_exceeded` either way.
 *
 * For adapter authors (`@fluxguard/core/adapter`): each transport measures what is waiting.
 *
 * @example
 * ```ts
 * import { blameUnreadAnswer } from '@fluxguard/core/adapter';
 * // Express, a second after the deadline (the response held from destroy meanwhile):
 * const after = res.writableFinished ? 'delivered' : req.socket.destroyed ? 'abandoned' : res.writableLength;
 * const recorded = blameUnreadAnswer(error, waitingAtDeadline, after);
 * ```
 */
export function blameUnreadAnswer(
  error: SecurityError,
  waitingAtDeadline: number,
  afterProbe: AnswerAfterProbe,
): SecurityError {
  if (!answerWaiting(error, waitingAtDeadline) || afterProbe === 'delivered') return error;
  if (afterProbe !== 'abandoned' && afterProbe < waitingAtDeadline) return error;
  return new SecurityError('deadline_exceeded', {
    reason: 'answer_unread',
    auditFields: { bytesWaiting: waitingAtDeadline },
  });
}

/**
 * How long, in ms, bytes a client sent must have waited for the handler to read them before a
 * deadline that comes while the client is still sending is the handler's doing (see
 * {@link blameUnfinishedRequest}). Shorter waits are bytes that arrived just now: a client that
 * sends a burst a moment before its deadline cannot make the handler look stuck.
 *
 * @example
 * ```ts
 * import { UNREAD_REQUEST_MS } from '@fluxguard/core/adapter';
 * const handlerStuck = bytesUnread > 0 && unreadForMs >= UNREAD_REQUEST_MS;
 * ```
 */
export const UNREAD_REQUEST_MS = 1_000;

/**
 * What to record for a deadline or an idle limit that ended a call before the client had sent
 * its whole request (no end of the body, no half-close).
 *
 * - Bytes it sent have waited unread for {@link UNREAD_REQUEST_MS} or more (for an idle limit,
 *   through the whole pause): the handler had stopped reading, and the client could not send
 *   the rest. The server's doing, reason `request_unread`, a server failure (`504` on HTTP),
 *   even when the idle limit fired: that pause was the handler's, not the client's. A client's
 *   own deadline stays its own.
 * - Otherwise (nothing waits, or what waits arrived just now): a deadline is the client's doing,
 *   reason `request_unfinished`, logged as a refusal like an upload that stalls; an idle limit
 *   stays `inbound_idle`. A client that sends a burst a moment before its deadline cannot make
 *   the handler look stuck.
 *
 * For adapter authors (`@fluxguard/core/adapter`): `unreadForMs` is how long the oldest unread
 * bytes have waited, as well as the transport can tell; without it, any unread byte blames the
 * handler.
 *
 * @example
 * ```ts
 * import { blameUnfinishedRequest } from '@fluxguard/core/adapter';
 * const recorded = blameUnfinishedRequest(error, req.complete, req.readableLength, Date.now() - unreadSince);
 * ```
 */
export function blameUnfinishedRequest(
  error: SecurityError,
  requestFinished: boolean,
  bytesUnread: number,
  unreadForMs = Number.POSITIVE_INFINITY,
): SecurityError {
  const idle = error.reason === 'inbound_idle';
  if (requestFinished || !(idle || isDeadline(error))) return error;
  // An idle limit fires after a pause in which nothing arrived: bytes still unread then have
  // waited through all of it, unless the handler has asked for more since (`unreadForMs` 0).
  if (bytesUnread > 0 && unreadForMs >= (idle ? 1 : UNREAD_REQUEST_MS)) {
    if (error.reason === 'client_deadline') return error;
    return new SecurityError('deadline_exceeded', { reason: 'request_unread', auditFields: { bytesUnread } });
  }
  return idle ? error : new SecurityError('deadline_exceeded', { reason: 'request_unfinished' });
}
