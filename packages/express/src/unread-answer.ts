import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SecurityError } from '@fluxguard/core';
import { UNREAD_PROBE_MS, blameUnreadAnswer } from '@fluxguard/core/adapter';

/**
 * Watches an answer that waited for its client when the deadline came, for
 * `UNREAD_PROBE_MS`, then says who is to blame (`blameUnreadAnswer` of core) and whether the
 * client took it all. Meanwhile the response cannot be destroyed: a handler that reacts to
 * its aborted signal by destroying it (as `pipeline` does) would cut the connection before a
 * reading client could show that it reads, and the cut is `decided`'s to make.
 *
 * @internal
 */
export function probeUnreadAnswer(
  error: SecurityError,
  waiting: number,
  req: IncomingMessage,
  res: ServerResponse,
  decided: (recorded: SecurityError, delivered: boolean) => void,
): void {
  const destroy = res.destroy.bind(res);
  res.destroy = function held(this: ServerResponse) {
    return this;
  };
  setTimeout(() => {
    res.destroy = destroy;
    // The socket closes under a held response only from the client's side.
    const after = res.writableFinished ? 'delivered' : req.socket.destroyed ? 'abandoned' : res.writableLength;
    decided(blameUnreadAnswer(error, waiting, after), after === 'delivered');
  }, UNREAD_PROBE_MS).unref();
}
