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
 * What a transport can tell of the bytes a client sent that wait for the handler to read them
 * (see {@link blameUnfinishedRequest}).
 *
 * @example
 * ```ts
 * import type { UnreadRequest } from '@fluxguard/core/adapter';
 * const unread: UnreadRequest = {
 *   bytes: req.readableLength,
 *   forMs: Date.now() - unreadSince,
 *   limit: req.readableHighWaterMark,
 * };
 * ```
 */
export interface UnreadRequest {
  /** How many bytes wait. */
  readonly bytes: number;
  /** How long the oldest of them has waited, in ms. */
  readonly forMs: number;
  /**
   * How many waiting bytes make the transport stop taking more from the client (the stream's
   * `readableHighWaterMark`): below it, the client was free to send more.
   */
  readonly limit: number;
}

/**
 * What a transport can tell of a request the client has sent whole (the end of the body, or
 * the half-close), for {@link blameUnfinishedRequest}.
 *
 * @example
 * ```ts
 * import type { FinishedRequest } from '@fluxguard/core/adapter';
 * const finished: FinishedRequest = { forMs: Date.now() - endedAt, sendingMs: endedAt - startedAt, heldMs };
 * ```
 */
export interface FinishedRequest {
  /** How long ago, in ms, its end arrived. */
  readonly forMs: number;
  /** How long, in ms, from the call's start to the request's end. */
  readonly sendingMs: number;
  /**
   * How long, in ms all told, the handler held the client back while it sent: the bytes it had
   * sent filled what the transport holds for the handler, so the transport took no more.
   */
  readonly heldMs: number;
}

/**
 * What to record for a deadline or an idle limit that ended a call before the client had sent
 * its whole request (no end of the body, no half-close), or just after.
 *
 * - Bytes it sent fill what the transport holds for the handler (`unread.limit`), so the client
 *   could not send more, and they have waited {@link UNREAD_REQUEST_MS} or more (for an idle
 *   limit, through the whole pause): the handler had stopped reading. The server's doing,
 *   reason `request_unread`, a server failure (`504` on HTTP), even when the idle limit fired:
 *   that pause was the handler's, not the client's.
 * - Otherwise the client is to blame: nothing waits, what waits arrived just now (a burst a
 *   moment before the deadline cannot make the handler look stuck), or it is less than the
 *   transport holds (a client that sends a few bytes and stops was free to send more, whether
 *   the handler reads or not). A deadline is reason `request_unfinished`, logged as a refusal
 *   like an upload that stalls; an idle limit stays `inbound_idle`.
 * - A server deadline less than {@link UNREAD_REQUEST_MS} after the request's end, which left
 *   the handler less time than the client took to send it (held back by the handler or not):
 *   the client's slowness used the time up, reason `request_late`, logged as a refusal.
 *   Otherwise the handler had its time, or slowed the sending itself: the deadline stays the
 *   server's. A client that finished a slow upload a few ms before its deadline made `504` and
 *   an error line at will before.
 * - A client's own deadline (`client_deadline`) is its budget whatever the handler did, and
 *   stays as it is, unless nothing the client sent was waiting: then `request_unfinished`.
 *
 * For adapter authors (`@fluxguard/core/adapter`): `unread` as well as the transport can tell;
 * a number alone is a count of bytes, any of which blames the handler.
 *
 * @example
 * ```ts
 * import { blameUnfinishedRequest } from '@fluxguard/core/adapter';
 * const recorded = blameUnfinishedRequest(error, req.complete, {
 *   bytes: req.readableLength,
 *   forMs: Date.now() - unreadSince,
 *   limit: req.readableHighWaterMark,
 * });
 * ```
 */
export function blameUnfinishedRequest(
  error: SecurityError,
  requestFinished: boolean | FinishedRequest,
  unread: number | UnreadRequest,
): SecurityError {
  if (typeof requestFinished === 'object') return blameLateRequest(error, requestFinished);
  const idle = error.reason === 'inbound_idle';
  if (requestFinished || !(idle || isDeadline(error))) return error;
  const waiting = typeof unread === 'number' ? { bytes: unread, forMs: Infinity, limit: 1 } : unread;
  const unfinished = (): SecurityError => new SecurityError('deadline_exceeded', { reason: 'request_unfinished' });
  // The client's own deadline is its budget, whatever the handler did: the line names it, unless
  // nothing the client sent was waiting, when "not sent in time" says more.
  if (error.reason === 'client_deadline') return waiting.bytes > 0 ? error : unfinished();
  if (handlerHeldBack(waiting, idle)) {
    return new SecurityError('deadline_exceeded', {
      reason: 'request_unread',
      auditFields: { bytesUnread: waiting.bytes },
    });
  }
  return idle ? error : unfinished();
}

/** A server deadline just after the request's end, the handler not to blame for its lateness: the client's. */
function blameLateRequest(error: SecurityError, { forMs, sendingMs, heldMs }: FinishedRequest): SecurityError {
  if (error.reason !== 'deadline_exceeded' || forMs >= UNREAD_REQUEST_MS || forMs >= sendingMs - heldMs) return error;
  return new SecurityError('deadline_exceeded', { reason: 'request_late', auditFields: { msSinceRequestEnd: forMs } });
}

/** Whether the handler, not reading, kept the client from sending (see {@link blameUnfinishedRequest}). */
function handlerHeldBack({ bytes, forMs, limit }: UnreadRequest, idle: boolean): boolean {
  // An idle limit fires after a pause in which nothing arrived: bytes still unread then have
  // waited through all of it, unless the handler has asked for more since (`forMs` 0).
  return bytes > 0 && bytes >= limit && forMs >= (idle ? 1 : UNREAD_REQUEST_MS);
}
