/**
 * Whether `socket` (a `net.Socket`, or a TLS socket over one) is a live connection of a Unix
 * socket: its handle, or the handle of the socket it wraps, is a pipe. Node reports no address
 * for such a connection, and none either for a TCP connection the client has reset, whose handle
 * is gone: that one is never taken for a Unix socket (`false`), so a client cannot pass for the
 * proxy in front of a socket by resetting its connection. Asked of the connection itself, not of
 * its server, which may have listened on a path before, or may since.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { UNIX_SOCKET_PEER, isUnixSocketConnection } from '@fluxguard/core/adapter';
 * const peer = socket.remoteAddress ?? (isUnixSocketConnection(socket) ? UNIX_SOCKET_PEER : undefined);
 * ```
 */
export function isUnixSocketConnection(socket: unknown): boolean {
  let current = socket as Wrapping | null | undefined;
  // A TLS socket wraps the connection's own socket (`_parent`); one level is all Node makes.
  for (let depth = 0; depth < 2 && current !== null && current !== undefined; depth++) {
    if (current._handle?.constructor?.name === 'Pipe') return true;
    current = current._parent;
  }
  return false;
}

/** What Node keeps on a socket: its libuv handle, and for a TLS socket the socket it wraps. */
interface Wrapping {
  readonly _handle?: { readonly constructor?: { readonly name?: unknown } } | null;
  readonly _parent?: Wrapping | null;
}
