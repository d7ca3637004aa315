import type { Server as NetServer, Socket } from 'node:net';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import type { AuditLogger } from '../audit/audit-logger.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { peerClientKey } from '../ratelimit/client-address.js';
import { RefusalSummary, SUMMARY_INTERVAL_MS } from './refusal-summary.js';
import { ConnectionsByAddress, type Judgement } from './connections-by-address.js';
import { noteServerEnding, type ServerEndReason } from './server-ending.js';

const BY_SHARE = 'address_share';
const BY_CAP = 'port_cap';
const IN_HANDSHAKE = 'in_handshake';
const IDLE = 'idle';

/**
 * The connections of one listening port, counted per client address, as the adapters admit
 * them. Built by {@link createConnectionGate}.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * server.on('connection', (socket) => {
 *   const release = gate.admit(socket.remoteAddress);
 *   if (release === undefined) socket.destroy();
 *   else socket.once('close', release);
 * });
 * server.on('drop', () => gate.refusedOverall());
 * ```
 */
export interface ConnectionGate {
  /**
   * Notes a TLS handshake that failed (`tlsClientError`: a certificate refused, a timeout, a
   * client that speaks no TLS), by its error's code: `tls.handshake_failed`, folded as
   * refusals are. A refusal at the handshake makes no call, and so no line of its own.
   */
  handshakeFailed(code: string, remoteAddress: string | undefined): void;
  /**
   * Notes an HTTP/2 session the server's HTTP/2 layer itself ended on the client's account (a
   * flood, a header block past its limits, a protocol or flow-control error), or a stream it
   * reset as it opened, by `kind`: `http2.session_refused`, folded as refusals are. Node answers
   * these with a GOAWAY or a reset and no call, so nothing else would write a line. `count`
   * (a whole number, default 1) notes that many at once, written as that many single notes
   * would be: a run of streams reset unseen is found in one go, up to a thousand of them.
   */
  sessionRefused(kind: string, remoteAddress: string | undefined, count?: number): void;
  /**
   * Admits a new connection from `remoteAddress` (the socket's, without port): its release,
   * to call once when it closes, or `undefined` when that client (an IPv6 client by its /64)
   * holds `maxPerAddress` already and the connection must be closed at once.
   */
  admit(remoteAddress: string | undefined): (() => void) | undefined;
  /** Notes a connection the port's overall cap refused (Node's `drop` event), for the summary. */
  refusedOverall(): void;
  /**
   * Notes a connection from `remoteAddress` closed while still in its TLS handshake, to make room
   * under the port's cap for a new one, for the summary.
   */
  closedInHandshake(remoteAddress: string | undefined): void;
  /**
   * Notes a connection from `remoteAddress` closed while it served nothing, to make room under
   * the port's cap for a new one, for the summary.
   */
  closedIdle(remoteAddress: string | undefined): void;
  /** Connections held now by the client of `remoteAddress`. */
  heldBy(remoteAddress: string | undefined): number;
}

/**
 * A per-address share of a port's connections: one client holding the whole port's cap shut out
 * everyone (an anonymous client reopening every connection the server closed kept HTTPS and gRPC
 * unanswered for as long as it went on). Refusals are written as one `connection.refused` line
 * at once and then at most one summary every 10 s while they go on (how many, by the port's cap
 * or by the share, and the addresses), so a flood cannot flood the log and is never silent.
 *
 * For adapter authors (`@fluxguard/core/adapter`): `createSecureServer` of `@fluxguard/express`
 * and `addService` of `@fluxguard/grpc` run one per port.
 *
 * @example
 * ```ts
 * import { createConnectionGate } from '@fluxguard/core/adapter';
 * const gate = createConnectionGate({ maxPerAddress: 1_000, audit, transport: 'http' });
 * ```
 */
export function createConnectionGate(options: {
  readonly maxPerAddress: number;
  readonly audit: AuditLogger | undefined;
  readonly transport: 'grpc' | 'http';
}): ConnectionGate {
  return buildConnectionGate(options).gate;
}

/**
 * A {@link ConnectionGate}, and its admission by client key ({@link peerClientKey}'s, `''` for
 * none), for {@link gateConnections}, which works the key out once per connection for its own
 * count too.
 */
function buildConnectionGate(options: {
  readonly maxPerAddress: number;
  readonly audit: AuditLogger | undefined;
  readonly transport: 'grpc' | 'http';
}): {
  readonly gate: ConnectionGate;
  readonly admitClient: (key: string) => (() => void) | undefined;
  readonly heldByClient: (key: string) => number;
} {
  const { maxPerAddress, audit, transport } = options;
  const held = new Map<string, number>();
  const summary = new RefusalSummary(({ counts, addresses, first }) => {
    const byShare = counts.get(BY_SHARE) ?? 0;
    const inHandshake = counts.get(IN_HANDSHAKE) ?? 0;
    const idle = counts.get(IDLE) ?? 0;
    audit?.logger.warn(
      {
        event: 'connection.refused',
        transport,
        reason: byShare === 0 ? 'connection_limit' : 'address_connection_limit',
        refusedByAddressShare: byShare,
        refusedByPortCap: counts.get(BY_CAP) ?? 0,
        ...(inHandshake === 0 ? {} : { closedInHandshake: inHandshake }),
        ...(idle === 0 ? {} : { closedIdle: idle }),
        addresses,
        ...(first ? {} : { intervalMs: SUMMARY_INTERVAL_MS }),
      },
      'connection.refused',
    );
  });
  const handshakes = new RefusalSummary(({ counts, addresses, first }) => {
    audit?.logger.warn(
      {
        event: 'tls.handshake_failed',
        transport,
        reason: 'handshake_failed',
        failures: Object.fromEntries(counts),
        addresses,
        ...(first ? {} : { intervalMs: SUMMARY_INTERVAL_MS }),
      },
      'tls.handshake_failed',
    );
  });

  const sessions = new RefusalSummary(({ counts, addresses, first }) => {
    audit?.logger.warn(
      {
        event: 'http2.session_refused',
        transport,
        reason: 'http2_refused',
        refusals: Object.fromEntries(counts),
        addresses,
        ...(first ? {} : { intervalMs: SUMMARY_INTERVAL_MS }),
      },
      'http2.session_refused',
    );
  });

  const admitClient = (key: string): (() => void) | undefined => {
    const count = held.get(key) ?? 0;
    if (count >= maxPerAddress) {
      summary.note(BY_SHARE, key);
      return undefined;
    }
    held.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (held.get(key) ?? 1) - 1;
      if (left <= 0) held.delete(key);
      else held.set(key, left);
    };
  };

  const gate: ConnectionGate = Object.freeze({
    admit(remoteAddress: string | undefined) {
      return admitClient(peerClientKey(remoteAddress) ?? '');
    },
    refusedOverall() {
      summary.note(BY_CAP);
    },
    closedInHandshake(remoteAddress: string | undefined) {
      summary.note(IN_HANDSHAKE, peerClientKey(remoteAddress));
    },
    closedIdle(remoteAddress: string | undefined) {
      summary.note(IDLE, peerClientKey(remoteAddress));
    },
    handshakeFailed(code: string, remoteAddress: string | undefined) {
      handshakes.note(code, peerClientKey(remoteAddress));
    },
    sessionRefused(kind: string, remoteAddress: string | undefined, count = 1) {
      sessions.note(kind, peerClientKey(remoteAddress), count);
    },
    heldBy(remoteAddress: string | undefined) {
      return held.get(peerClientKey(remoteAddress) ?? '') ?? 0;
    },
  });
  return { gate, admitClient, heldByClient: (key) => held.get(key) ?? 0 };
}

/**
 * The default share of one client address: half of the port's connections, at least 16. One
 * client cannot hold the whole port, while a reverse proxy in front, whose connections all come
 * from one address, keeps a large pool: a smaller share by default would refuse a busy proxy's
 * connections. Where clients connect directly, a smaller share (an eighth, say) makes it take
 * more addresses to hold the port; behind a single proxy, raise it to `maxConnections`.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { defaultConnectionsPerAddress } from '@fluxguard/core/adapter';
 * defaultConnectionsPerAddress(14_000); // 7000
 * ```
 */
export function defaultConnectionsPerAddress(maxConnections: number): number {
  return Math.min(maxConnections, Math.max(16, Math.floor(maxConnections / 2)));
}

/**
 * Refuses a per-address cap above the port's cap as given: the port's cap is reached first, so
 * the per-address one would never apply while it reads as in force. Without a given cap (the
 * machine's descriptor budget, which differs by machine) a larger share means the whole port.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { checkConnectionsPerAddress } from '@fluxguard/core/adapter';
 * checkConnectionsPerAddress('createSecureServer: "maxConnectionsPerAddress"', 5, 2); // throws ConfigurationError
 * ```
 */
export function checkConnectionsPerAddress(
  where: string,
  perAddress: number,
  maxConnections: number | undefined,
): void {
  if (maxConnections !== undefined && perAddress > maxConnections) {
    throw new ConfigurationError(
      `${where} (${String(perAddress)}) is above maxConnections (${String(maxConnections)}), so it would never apply: give at most maxConnections`,
    );
  }
}

/**
 * The client address of a TLS socket whose handshake failed: Node has closed its handle by then,
 * so it is read from the TCP socket the TLS socket wraps (`_parent`, which Node keeps), when
 * there is one.
 */
function remoteAddressOf(socket: { readonly remoteAddress?: string | undefined }): string | undefined {
  return (
    socket.remoteAddress ??
    (socket as { readonly _parent?: { readonly remoteAddress?: string | undefined } })._parent?.remoteAddress
  );
}

/**
 * What {@link gateConnections} needs: the gate's options, and the port's cap on connections.
 *
 * @example
 * ```ts
 * import type { GateConnectionsOptions } from '@fluxguard/core/adapter';
 * const options: GateConnectionsOptions = { maxPerAddress: 7_000, maxConnections: 14_000, audit, transport: 'grpc' };
 * ```
 */
export interface GateConnectionsOptions {
  readonly maxPerAddress: number;
  /** Connections held at once on the port; none: no cap (Node's `maxConnections` left as it is). */
  readonly maxConnections?: number | undefined;
  readonly audit: AuditLogger | undefined;
  readonly transport: 'grpc' | 'http';
  /**
   * Whether a connection serves nothing now (HTTP/1.1: no answer being written; HTTP/2: no
   * stream open; either: every request on it waiting for its client to finish sending, nothing
   * answered), given its TLS socket (its TCP socket on a port without TLS). With it, at the
   * cap, such a connection can be closed to make room for a new one, as one in its TLS handshake
   * can. Asked only at the cap, of a few connections: it must be cheap (a throw counts as busy).
   */
  readonly isIdle?: ((socket: Socket) => boolean) | undefined;
  /**
   * What the calls of a connection are told by besides its sockets, when the server ends it
   * (`serverEndingOf`), given its TLS socket (its TCP socket on a port without TLS): the
   * HTTP/2 session on it, `undefined` when there is none. The gate notes why on it too before
   * it destroys a connection itself (a throw notes the sockets only).
   */
  readonly endingKey?: ((socket: Socket) => object | undefined) | undefined;
}

/**
 * A {@link ConnectionGate} put in front of a listening server by {@link gateConnections}, which
 * holds every connection it admitted until it closes.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * const gated = gateConnections(server, { maxPerAddress: 7_000, audit, transport: 'grpc' });
 * // at the end of a shutdown's grace, once the server's own forced close has run:
 * gated.destroyAll();
 * ```
 */
export interface GatedConnections extends ConnectionGate {
  /**
   * Destroys every connection admitted and not closed yet, whatever it is at: in its TLS
   * handshake, past it with no HTTP/2 session or request yet, or serving. A server's own forced
   * close (grpc-js's `forceShutdown`, Node's `closeAllConnections`) reaches only the connections
   * it has a session or a request for, and a listening server closes only once every connection
   * has: one accepted before the shutdown whose handshake ended late, then trickled its first
   * bytes, held the process. For the end of a shutdown's grace: each connection is noted as
   * ended by it first ({@link noteServerEnding}, `server_shutdown`), so that a call it carried
   * is logged as cut by the server, not as left by its client.
   */
  destroyAll(): void;
}

/**
 * How long Node refuses at the cap by itself after a search found no connection to close: a
 * flood at a cap held by busy connections then costs a refusal, not a search, per connection,
 * while a connection that goes idle makes room again soon after.
 */
const NOTHING_TO_CLOSE_PAUSE_MS = 100;

/**
 * How far past the cap Node itself drops a new connection while the gate could make room for it
 * (some connection is in its handshake or past it, and no search has just come back empty):
 * Node counts a new connection before the gate sees it, and one the gate closes (the new one,
 * or one it makes room with) stops counting as it is destroyed. One would do; the rest is a
 * margin, far below the descriptors the budget keeps aside.
 */
const CLOSING_HEADROOM = 64;

/**
 * Puts a {@link ConnectionGate} in front of a listening server (HTTPS, or the HTTP/2 server
 * grpc-js makes): each TCP connection admitted or closed at once, those Node's `maxConnections`
 * drops and the TLS handshakes it refuses noted for the log. The gate's listener comes first, so
 * that nothing else works for a connection it closes.
 *
 * At the port's cap (`maxConnections`), the gate closes a connection to admit the new one: the
 * oldest still in its TLS handshake of the client address with the most waiting, or the oldest
 * that serves nothing (`isIdle`; one that has received nothing since the gate last looked at it
 * first) of the client address holding the most ({@link ConnectionsByAddress}), whichever's client holds
 * more. Never one of a client holding fewer than the newcomer's does with it: a client at its
 * share takes turns only with those holding as many. When none can go, the new one is refused.
 * The one closed is noted as ended by the cap first ({@link noteServerEnding},
 * `connection_cap`): serving nothing, it may still carry a call at work that waits on its client
 * (a body trickling in), which is then logged as cut by the server, not as left by its client.
 * Connections that never finish a handshake cost nothing to open (no certificate, no
 * cryptography), and those that finish one and send nothing cost little more: from a few
 * addresses, either held the whole cap. Now a client gets in while they are held.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { gateConnections } from '@fluxguard/core/adapter';
 * gateConnections(server, {
 *   maxPerAddress: 7_000,
 *   maxConnections: 14_000,
 *   audit,
 *   transport: 'http',
 *   isIdle: (socket) => !answering.has(socket),
 * });
 * ```
 */
export function gateConnections(server: NetServer, options: GateConnectionsOptions): GatedConnections {
  const { gate, admitClient, heldByClient } = buildConnectionGate(options);
  const { maxConnections, isIdle, endingKey } = options;
  // Without TLS, a connection is past its handshake from the start: only `isIdle` can free one.
  const tls = server instanceof TlsServer;
  /** Connections admitted and not closed by the gate, that have not closed yet. */
  let open = 0;
  /** Admitted connections whose TLS handshake has not completed, by client key (TCP sockets). */
  const waiting = new ConnectionsByAddress<Socket>();
  /** Admitted connections past their handshake, by client key (TCP sockets), when `isIdle` is given. */
  const past = new ConnectionsByAddress<Socket>();
  /** The TLS socket of each connection of `past` on a TLS port. */
  const secured = new WeakMap<Socket, TLSSocket>();
  /** Bytes each connection of `past` had received when the gate last looked at it. */
  const readWhenLooked = new WeakMap<Socket, number>();
  /** Whether the last search found no connection it could close, a moment ago. */
  let noneFound = false;
  const closedByGate = new WeakSet<Socket>();
  /** Every connection admitted that has not closed yet (TCP sockets). */
  const admitted = new Set<Socket>();
  /** The TLS socket of each admitted connection past its handshake, on a TLS port. */
  const tlsOf = new WeakMap<Socket, TLSSocket>();
  // While no connection could make room, Node refuses past the cap itself, before any socket
  // object is made: a flood at the cap costs what it cost before the gate closed any.
  const capNode = (): void => {
    if (maxConnections === undefined) return;
    const roomToMake = !noneFound && (waiting.size > 0 || past.size > 0);
    server.maxConnections = roomToMake ? maxConnections + CLOSING_HEADROOM : maxConnections;
  };
  const idle = (socket: Socket): boolean => {
    try {
      return isIdle?.(socket) === true;
    } catch {
      // Called from the server's connection event: a throw would end the process.
      return false;
    }
  };
  // Serving nothing: taken at once when it has received nothing since the gate last looked at
  // it, else only if its client has no such connection. A request whose head is still arriving,
  // or one received and not yet read, is not taken for silence while a silent one can go; and a
  // client that trickles bytes (a slow header, HTTP/2 pings) to look busy still can go.
  const judge = (tcp: Socket): Judgement => {
    const socket = secured.get(tcp) ?? tcp;
    if (!idle(socket)) return 'skip';
    const read = socket.bytesRead;
    if (readWhenLooked.get(socket) === read) return 'take';
    readWhenLooked.set(socket, read);
    return 'if-must';
  };
  const enterPast = (tcp: Socket, key: string, socket: Socket): void => {
    readWhenLooked.set(socket, socket.bytesRead);
    past.add(tcp, key);
    if (past.size === 1) capNode();
  };
  // Noted on whatever its calls are told by (its TLS socket, its TCP socket, `endingKey`'s), so
  // that a call at work on it is logged as cut by the server, not as left by its client.
  const noteEnding = (tcp: Socket, reason: ServerEndReason): void => {
    const secure = tlsOf.get(tcp);
    if (secure !== undefined) noteServerEnding(secure, reason);
    noteServerEnding(tcp, reason);
    let key: object | undefined;
    try {
      key = endingKey?.(secure ?? tcp);
    } catch {
      // Called from the server's connection event: a throw would end the process.
    }
    if (key !== undefined) noteServerEnding(key, reason);
  };
  const pause = (): void => {
    noneFound = true;
    capNode();
    setTimeout(() => {
      noneFound = false;
      capNode();
    }, NOTHING_TO_CLOSE_PAUSE_MS).unref();
  };
  /**
   * Closes a connection in its handshake or one serving nothing, of the client holding the most,
   * to admit one of the client `key`: whether one was closed. Never one of a client holding
   * fewer than `key` does with the new one: a client at its share cannot push out one that
   * holds a connection or two, only take turns with those holding as many.
   */
  const makeRoom = (key: string): boolean => {
    if (noneFound || (waiting.size === 0 && past.size === 0)) return false;
    const handshaking = waiting.busiest();
    const silent = past.size === 0 ? undefined : past.busiest(judge);
    if (handshaking === undefined && silent === undefined) {
      pause();
      return false;
    }
    const handshakingKey = handshaking === undefined ? undefined : waiting.addressOf(handshaking);
    const silentKey = silent === undefined ? undefined : past.addressOf(silent);
    const closeSilent =
      silentKey !== undefined &&
      (handshakingKey === undefined || heldByClient(silentKey) > heldByClient(handshakingKey));
    const victim = closeSilent ? silent : handshaking;
    const victimKey = closeSilent ? silentKey : handshakingKey;
    if (victim === undefined || victimKey === undefined) return false;
    if (victimKey !== key && heldByClient(victimKey) < heldByClient(key)) return false;
    if (closeSilent) {
      past.delete(victim);
      gate.closedIdle(victim.remoteAddress);
    } else {
      waiting.delete(victim);
      gate.closedInHandshake(victim.remoteAddress);
    }
    closedByGate.add(victim);
    open -= 1;
    capNode();
    // Serving nothing may still mean a call at work waiting on its client (a body trickling in).
    noteEnding(victim, 'connection_cap');
    (secured.get(victim) ?? victim).destroy();
    return true;
  };
  capNode();
  server.prependListener('connection', (socket: Socket) => {
    const key = peerClientKey(socket.remoteAddress) ?? '';
    const release = admitClient(key);
    if (release === undefined) {
      socket.destroy();
      return;
    }
    if (maxConnections !== undefined && open >= maxConnections && !makeRoom(key)) {
      release();
      gate.refusedOverall();
      socket.destroy();
      return;
    }
    open += 1;
    admitted.add(socket);
    if (tls) {
      waiting.add(socket, key);
      if (waiting.size === 1) capNode();
    } else if (isIdle !== undefined) enterPast(socket, key, socket);
    socket.once('close', () => {
      admitted.delete(socket);
      if (!closedByGate.has(socket)) open -= 1;
      if (waiting.delete(socket) !== undefined && waiting.size === 0) capNode();
      if (past.delete(socket) !== undefined && past.size === 0) capNode();
      release();
    });
  });
  if (tls) {
    server.on('secureConnection', (socket: TLSSocket) => {
      const tcp = tcpOf(socket);
      if (admitted.has(tcp)) tlsOf.set(tcp, socket);
      // Undefined: closed by the gate since.
      const key = waiting.delete(tcp);
      if (key === undefined) return;
      if (waiting.size === 0) capNode();
      if (isIdle === undefined) return;
      secured.set(tcp, socket);
      enterPast(tcp, key, socket);
    });
  }
  server.on('drop', () => {
    gate.refusedOverall();
  });
  // A handshake refused (a revoked or unknown certificate in strict mode, a timeout, a client
  // that speaks no TLS) makes no request or call, and so no line of its own.
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Closed by the gate above, and written as such.
    if (!closedByGate.has(tcpOf(socket))) gate.handshakeFailed(err.code ?? 'unknown', remoteAddressOf(socket));
    socket.destroy();
  });
  return Object.freeze({
    ...gate,
    destroyAll() {
      for (const tcp of [...admitted]) {
        noteEnding(tcp, 'server_shutdown');
        // Its TLS socket first, which an HTTP/2 session or an HTTP parser sits on.
        tlsOf.get(tcp)?.destroy();
        tcp.destroy();
      }
    },
  });
}

/** The TCP socket a TLS socket of a server wraps (`_parent`, which Node keeps), or the socket itself. */
function tcpOf(socket: Socket): Socket {
  return (socket as Socket & { readonly _parent?: Socket | null })._parent ?? socket;
}
