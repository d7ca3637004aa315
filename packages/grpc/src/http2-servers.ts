import type { Http2Server, Http2SecureServer, Http2Session, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { Server as TlsServer, type DetailedPeerCertificate, type PeerCertificate, type TLSSocket } from 'node:tls';
import { experimental, logVerbosity, type Server, type ServerCredentials } from '@grpc/grpc-js';
import {
  connectionBudget,
  createTrustRecheck,
  defaultConnectionsPerAddress,
  gateConnections,
  isUnixSocketConnection,
  isValidHostField,
  noteServerEnding,
  type ConnectionGate,
  type GatedConnections,
} from '@fluxguard/core/adapter';
import { ConfigurationError } from '@fluxguard/core';
import {
  CLOSING_GRACE_OPTION,
  DEFAULT_CLOSING_GRACE_MS,
  DEFAULT_MAX_HEADER_FIELDS,
  DEFAULT_WRITE_STALL_MS,
  MAX_CONNECTIONS_OPTION,
  MAX_HEADER_FIELDS_OPTION,
  MAX_PER_ADDRESS_OPTION,
  WRITE_STALL_OPTION,
  auditOfCredentials,
  whenTrustChanges,
} from './server-credentials.js';
import { UNIX_LOCAL_ADDRESS } from './context.js';

/**
 * Headers that Node's HTTP/2 layer keeps only the first of when a request repeats them, without
 * a word: two `authorization` entries would reach grpc-js, and every interceptor, as one token
 * (the first), so a request carrying an admin token and a reader token would act as whichever
 * the client put first.
 */
const SINGLE_VALUE_SECURITY_HEADERS: ReadonlySet<string> = new Set(['authorization']);
// Every request's header names are scanned: only those of a length above are lowercased. A
// table indexed by length, read once per name: a Set look-up per name cost more than the rest.
const SINGLE_VALUE_NAME_LENGTHS = new Uint8Array(
  1 + Math.max(...[...SINGLE_VALUE_SECURITY_HEADERS].map((n) => n.length)),
);
for (const name of SINGLE_VALUE_SECURITY_HEADERS) SINGLE_VALUE_NAME_LENGTHS[name.length] = 1;

const revealed = new WeakSet<object>();

type CreateHttp2Server = (credentials: ServerCredentials) => Http2Server | Http2SecureServer;

/**
 * Hardens the HTTP/2 servers grpc-js makes for `server` (one per `bindAsync`), which grpc-js
 * otherwise keeps to itself:
 * - a cap on the connections held at once (`maxConnections` of `secureServerOptions`, else 70 %
 *   of the open-file limit): a flood of connections meets a refused connection, not a process
 *   out of file descriptors; and a share of it per client address (`maxConnectionsPerAddress`,
 *   else half), so that one client cannot hold the whole cap; refusals logged when the
 *   credentials are fluxguard's;
 * - the peer certificate of a connection read once: grpc-js's `getAuthContext()` calls
 *   `getPeerCertificate()` on every call, which builds the whole certificate object each time
 *   (about a sixth of the CPU of a mutual-TLS gRPC server); a connection's certificate never
 *   changes (HTTP/2 forbids renegotiation), so each TLS socket answers from its first answer;
 * - a connection the server has closed dropped `closingGraceMs` after it ended its side, if the
 *   client has not closed the other side by then: Node waits for the client for ever, so clients
 *   that stop reading kept their connections, and filled the cap above; and a session the server
 *   closes gracefully dropped `closingGraceMs` after its last call, if it has not closed by
 *   then (a header block left open held it until the keepalive);
 * - a connection whose client takes none of what waits in its socket for `maxWriteStallMs`
 *   dropped: those bytes stay in the process past the end of every call, and Node never
 *   finishes closing a session whose writes are stuck (neither the idle limit nor a failed
 *   keepalive reaches the socket's end, so the grace above never starts);
 * - a `grpc-timeout` not in the spec's form (at most eight digits and a unit) refused as one
 *   grpc-js cannot read, where grpc-js read `-1S` as one second and nine digits as none; and
 *   one longer than about 24.8 days handed on as that, where grpc-js's 32-bit integer wrapped it
 *   into a few milliseconds or less (a 30-day deadline failed the call at once);
 * - a repeated security header made visible again: every value
 *   reaches the metadata, so the JWT authenticator refuses the request (`multiple_authorization`)
 *   exactly as the Express adapter refuses two `Authorization` headers; and any other repeated
 *   header handed on as its values, where Node joined them into one (`a, b`), so controls read
 *   the first value and the header limits count each, as on HTTP;
 * - a metadata entry grpc-js would drop (a key it does not accept, a text value past printable
 *   ASCII) taken out before grpc-js reads it, as grpc-js drops it and with the line it writes,
 *   but without the error and stack grpc-js builds for each (120 such entries made a call cost
 *   2 ms of CPU before any interceptor ran);
 * - up to `maxHeaderFields` of `secureServerOptions` header fields read per request, where Node reset a
 *   stream of more than 128 before any JavaScript saw it: the header limits refuse such a call
 *   with a request id and an audit line, where nothing was logged; and binary (`-bin`) metadata
 *   that grpc-js would split on its commas into more entries than that counted before it does,
 *   and the call refused `RESOURCE_EXHAUSTED` (one header of commas cost 100 ms of CPU);
 * - an `:authority` that is no host and optional port (`u@a`, `[::1`, `a:99999`, which nghttp2
 *   lets through to `call.getHost()`) refused before grpc-js builds the call, as the Express
 *   adapter refuses such a `Host`;
 * - `forceShutdown()` ending every connection of its ports, where grpc-js ends only the HTTP/2
 *   sessions it knows: a late handshake followed by a trickled preface held the port open past it;
 * - the calls `forceShutdown()`, a trust reload (a revoked certificate), a stalled write or the
 *   connection cap (closing a connection whose calls all wait on their client) cuts logged with
 *   why (`reason` `server_shutdown`, `trust_revoked`, `write_stalled` or `connection_cap` on
 *   their `request.cancelled` line), not as calls their clients left;
 *
 * It wraps grpc-js's
 * `createHttp2Server` (called by `bindAsync`) to read each request's raw header list before
 * grpc-js builds its metadata; `addService` installs it, so a server whose services fluxguard
 * registers is covered. With a grpc-js that has no such method it does nothing (the adapter
 * checks the grpc-js version it supports at start-up).
 *
 * @internal
 */
export function hardenHttp2Servers(server: Pick<Server, 'addService'>): void {
  if (revealed.has(server)) return;
  // A port bound before the first addService has its HTTP/2 server made already, unhardened:
  // its connections would run without every item above, and nothing would say so.
  const bound = (server as { http2Servers?: unknown }).http2Servers;
  if (bound instanceof Map && bound.size > 0) {
    throw new ConfigurationError(
      'addService: the server is bound already, so its port runs without the connection limits and HTTP/2 checks addService installs: call addService before bindAsync',
    );
  }
  revealed.add(server);
  const target = server as unknown as { createHttp2Server?: CreateHttp2Server };
  const original = target.createHttp2Server;
  if (typeof original !== 'function') return;
  const ports = new Set<Port>();
  destroyAllAtForceShutdown(server, ports);
  Object.defineProperty(server, 'createHttp2Server', {
    configurable: true,
    writable: true,
    value(this: unknown, credentials: ServerCredentials) {
      const http2Server = original.call(this, credentials);
      const options = (this as { options?: Record<string, unknown> }).options;
      const maxHeaderFields = allowMoreHeaderPairs(
        http2Server,
        positiveOption(options?.[MAX_HEADER_FIELDS_OPTION]) ?? DEFAULT_MAX_HEADER_FIELDS,
      );
      const maxConnections = positiveOption(options?.[MAX_CONNECTIONS_OPTION]) ?? connectionBudget();
      const audit = auditOfCredentials(credentials);
      // Each client address its share of the port, counted from the TCP connection on; at the
      // cap, a connection still in its TLS handshake, else one serving nothing (no call open, or
      // every call still waiting for its client to send), makes room.
      const gate = gateConnections(http2Server, {
        maxPerAddress:
          positiveOption(options?.[MAX_PER_ADDRESS_OPTION]) ?? defaultConnectionsPerAddress(maxConnections),
        maxConnections,
        audit,
        transport: 'grpc',
        isIdle: idleTest(this),
        // A call is told by its session: one at work on a connection the cap closes is logged
        // with `reason: 'connection_cap'`, not as one its client left.
        endingKey: sessionOf,
      });
      if (audit !== undefined) noteRefusedSessions(http2Server, gate);
      // Sessions made under a CA bundle or CRL a reload has changed are sent away (GOAWAY: their
      // calls finish, new ones go to a new connection, verified under the new trust); those
      // whose certificate the new trust refuses (revoked) are cut, their calls with them.
      const sessions = new Set<Http2Session>();
      const port: Port = { gate, sessions };
      ports.add(port);
      http2Server.once('close', () => ports.delete(port));
      const graceMs = positiveOption(options?.[CLOSING_GRACE_OPTION]) ?? DEFAULT_CLOSING_GRACE_MS;
      http2Server.on('session', (session: Http2Session) => {
        sessions.add(session);
        noteSessionOfSocket(session);
        session.once('close', () => sessions.delete(session));
        dropWhenClosingStalls(session, graceMs);
      });
      const stopListening = whenTrustChanges(credentials, (material) => {
        const stillTrusted = createTrustRecheck(material);
        const connections = sessions.size;
        let revoked = 0;
        for (const session of sessions) {
          if (stillTrusted(session.socket as TLSSocket)) session.close();
          else {
            revoked += 1;
            // Noted first: its calls are logged as cut by the server, not as left by the client.
            noteServerEnding(session, 'trust_revoked');
            session.destroy();
          }
        }
        auditOfCredentials(credentials)?.logger.info(
          { event: 'tls.connections_closed', connections, revoked },
          'tls.connections_closed',
        );
      });
      if (stopListening !== undefined) http2Server.once('close', stopListening);
      const stallMs = positiveOption(options?.[WRITE_STALL_OPTION]) ?? DEFAULT_WRITE_STALL_MS;
      // First, before grpc-js's own listener reads the header object.
      http2Server.prependListener('stream', streamListener(maxHeaderFields));
      if (http2Server instanceof TlsServer) {
        http2Server.on('secureConnection', (socket: TLSSocket) => {
          noteSocketPath(http2Server, socket);
          rememberPeerCertificate(socket);
          dropAfterClosing(socket, graceMs);
          dropWhenWritesStall(socket, stallMs);
        });
      } else {
        http2Server.on('connection', (socket: Socket) => {
          noteSocketPath(http2Server, socket);
          dropAfterClosing(socket, graceMs);
          dropWhenWritesStall(socket, stallMs);
        });
      }
      return http2Server;
    },
  });
}

/** One port of a hardened server: its connection gate, and the HTTP/2 sessions open on it. */
interface Port {
  readonly gate: GatedConnections;
  readonly sessions: ReadonlySet<Http2Session>;
}

/**
 * Raises the header fields Node reads per request on `http2Server`'s sessions (its own default,
 * 128, reset a call of about 120 metadata entries before any JavaScript saw it: no request id,
 * no audit line, where the header limits refuse 101 with both) to `maxFields`
 * (`maxHeaderFields` of `secureServerOptions`), unless they were set. Node reads the options a
 * server was made with as it makes each session, and offers no other way to change this one
 * (`updateSettings` takes only the SETTINGS sent to clients): the stored options are found by
 * their symbol's name. A Node that stores them otherwise keeps its own limit. Returns the
 * bound that holds: a `maxHeaderListPairs` already set below `maxFields` is the lower one.
 */
function allowMoreHeaderPairs(http2Server: Http2Server | Http2SecureServer, maxFields: number): number {
  const key = Object.getOwnPropertySymbols(http2Server).find((symbol) => symbol.description === 'options');
  const options: unknown = key === undefined ? undefined : (http2Server as unknown as Record<symbol, unknown>)[key];
  if (typeof options !== 'object' || options === null) return maxFields;
  const stored = options as { maxHeaderListPairs?: unknown };
  if (stored.maxHeaderListPairs === undefined) {
    stored.maxHeaderListPairs = maxFields;
    return maxFields;
  }
  const set = positiveOption(stored.maxHeaderListPairs);
  return set === undefined ? maxFields : Math.min(set, maxFields);
}

/**
 * Makes `forceShutdown()` of `server` end every connection of its ports, not only those with an
 * HTTP/2 session grpc-js knows: a connection still in its TLS handshake, or past it and before
 * its session (or with one made after the shutdown began), is no session of grpc-js's. One
 * accepted before the shutdown whose handshake ended after the grace, then trickled its HTTP/2
 * preface a byte at a time, kept the port open, and the process with it, about 16 s past
 * `forceShutdown()`. Every session is noted as ended by the shutdown first, for the calls it
 * still carries.
 */
function destroyAllAtForceShutdown(server: object, ports: ReadonlySet<Port>): void {
  const forceShutdown = (server as { forceShutdown?: unknown }).forceShutdown;
  if (typeof forceShutdown !== 'function') return;
  Object.defineProperty(server, 'forceShutdown', {
    configurable: true,
    writable: true,
    value(this: unknown, ...args: unknown[]) {
      // Before grpc-js destroys them: the calls still open on them are logged as cut by the
      // shutdown (`reason: 'server_shutdown'`), not as left by their clients.
      for (const { sessions } of ports) for (const session of sessions) noteServerEnding(session, 'server_shutdown');
      // grpc-js's first: its sessions get their GOAWAY before their sockets go.
      const result: unknown = Reflect.apply(forceShutdown, this, args);
      for (const { gate } of [...ports]) gate.destroyAll();
      return result;
    },
  });
}

/**
 * Gives a connection of a Unix socket a local address, `unix:` and the socket's path (Node
 * reports none): grpc-js hands each call its connection's `localAddress`, and a call with one of
 * `unix:` came through the socket (`safePeer`); a path alone could read as an IP address (a
 * socket named `10.9.8.7`). Decided as the connection is accepted, by its handle, so a TCP client
 * that resets early, whose address is unreadable too, never passes for the proxy on a socket.
 */
function noteSocketPath(http2Server: Http2Server | Http2SecureServer, socket: Socket): void {
  if (!isUnixSocketConnection(socket)) return;
  const path = http2Server.address();
  const localAddress = `${UNIX_LOCAL_ADDRESS}${typeof path === 'string' ? path : ''}`;
  Object.defineProperty(socket, 'localAddress', { value: localAddress, enumerable: true });
}

/** The session of a connection, kept on its socket (TLS, or TCP without TLS). */
const SESSION_OF_SOCKET = Symbol('fluxguard.session');

/**
 * Keeps `session` on its socket. Node hands out a session's socket only behind a proxy, which
 * passes a property set on it to the socket itself: the gate and the write-stall drop ask by
 * the socket ({@link sessionOf}).
 */
function noteSessionOfSocket(session: Http2Session): void {
  try {
    (session.socket as unknown as Record<symbol, unknown>)[SESSION_OF_SOCKET] = session;
  } catch {
    // A session whose socket is gone already: nothing is left to close.
  }
}

/** The HTTP/2 session on `socket` (its TLS socket, or its TCP socket without TLS), if it has one yet. */
function sessionOf(socket: Socket): Http2Session | undefined {
  return (socket as unknown as Record<symbol, Http2Session | undefined>)[SESSION_OF_SOCKET];
}

/**
 * Whether a connection of `grpcServer` serves nothing: no call open, read from the count grpc-js
 * keeps per session for its idle limit (`grpc.max_connection_idle_ms`, which
 * `secureServerOptions` always sets), or every call open still waiting for its client to finish
 * sending ({@link everyCallWaitsOnItsClient}). Nothing more is counted per call: the streams are
 * looked at only here, at the cap. A connection with no session serves nothing either (TLS
 * without HTTP/2 offered: Node answers it with a 403 and holds it until its client closes, or
 * `unknownProtocolTimeout`). A session grpc-js does not count is taken as busy, and with a
 * grpc-js that keeps no such count this is `undefined`: the gate then closes no connection past
 * its handshake.
 */
function idleTest(grpcServer: unknown): ((socket: Socket) => boolean) | undefined {
  const counts = (grpcServer as { sessionIdleTimeouts?: unknown }).sessionIdleTimeouts;
  if (!(counts instanceof Map)) return undefined;
  const byIdleLimit = counts as Map<Http2Session, { readonly activeStreams?: unknown }>;
  return (socket) => {
    const session = sessionOf(socket);
    if (session === undefined) return true;
    const activeStreams = byIdleLimit.get(session)?.activeStreams;
    return activeStreams === 0 || (typeof activeStreams === 'number' && everyCallWaitsOnItsClient(session));
  };
}

/** A session with more calls open than this is taken as busy without looking at them. */
const STREAMS_LOOKED_AT = 128;

/** The symbol Node keeps a session's state under (its open streams among it); `null`: none found. */
let sessionStateKey: symbol | null | undefined;

/**
 * Whether every call open on `session` still waits for its client: the client has not finished
 * sending (no end of stream), and nothing has been answered (no headers sent) or the answer has
 * been handed on in full. A call opened and never sent its message, an upload left hanging, or
 * one answered whose client never ends it, serves nothing while it holds the connection: two
 * addresses opening a public call on each of their connections every 200 ms kept the whole cap
 * busy and every other client out. A call the client has finished sending is being served (its
 * handler runs, or its answer is still on its way), and one with an answer under way while its
 * client still sends is being answered. The streams are Node's own list, read by the symbol it
 * keeps them under; where that is not found, a session is taken as busy.
 */
function everyCallWaitsOnItsClient(session: Http2Session): boolean {
  if (sessionStateKey === undefined) {
    sessionStateKey = Object.getOwnPropertySymbols(session).find((key) => key.description === 'state') ?? null;
  }
  if (sessionStateKey === null) return false;
  const streams = (session as unknown as Record<symbol, { readonly streams?: unknown } | undefined>)[sessionStateKey]
    ?.streams as ReadonlyMap<unknown, ServerHttp2Stream> | undefined;
  if (typeof streams?.values !== 'function' || typeof streams.size !== 'number') return false;
  if (streams.size === 0 || streams.size > STREAMS_LOOKED_AT) return false;
  for (const stream of streams.values()) {
    // Set as the client's end of stream arrives, before the call's reader has read up to it. A
    // call its client has sent whole is being served, or its answer is still on its way.
    const ended = (stream as unknown as { readonly _readableState?: { readonly ended?: unknown } })._readableState
      ?.ended;
    if (ended !== false) return false;
    // Answered in full while its client has not ended it: open until the client does, or a
    // second after the status. Calls answered at once (refused, past their deadline)
    // and opened again every 200 ms kept every connection holding some, and so busy.
    if (stream.writableFinished) continue;
    // An answer under way to a client still sending (a bidirectional stream).
    if (stream.headersSent) return false;
  }
  return true;
}

/** nghttp2's error numbers (`errno` of Node's `ERR_HTTP2_ERROR`) that say what the client did. */
const NGHTTP2_ERR_FLOW_CONTROL = -524;
const NGHTTP2_ERR_HEADER_COMP = -523;
const NGHTTP2_ERR_CALLBACK_FAILURE = -902;
const NGHTTP2_ERR_FLOODED = -904;
const NGHTTP2_ERR_TOO_MANY_CONTINUATIONS = -905;

/**
 * What a session error says the client did, or `undefined` for an error that is no refusal (the
 * client's own GOAWAY, a reset socket): the kinds of `http2.session_refused`.
 */
function refusalKind(err: NodeJS.ErrnoException): string | undefined {
  if (err.code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return 'invalid_frames';
  if (err.code !== 'ERR_HTTP2_ERROR') return undefined;
  return REFUSAL_KINDS.get(err.errno ?? 0) ?? 'protocol_error';
}

const REFUSAL_KINDS: ReadonlyMap<number, string> = new Map([
  [NGHTTP2_ERR_FLOODED, 'flood'],
  // A header block in more CONTINUATION frames than nghttp2 reads: metadata past ~140 KB.
  [NGHTTP2_ERR_TOO_MANY_CONTINUATIONS, 'headers_too_large'],
  // Node's own limits, enforced from nghttp2's callbacks: streams refused past
  // `maxSessionRejectedStreams` (a session over `maxSessionMemory`), invalid frames.
  [NGHTTP2_ERR_CALLBACK_FAILURE, 'enhance_your_calm'],
  [NGHTTP2_ERR_FLOW_CONTROL, 'flow_control_error'],
  [NGHTTP2_ERR_HEADER_COMP, 'compression_error'],
]);

/**
 * Writes a line (`http2.session_refused`, through the gate's folding) for each session Node's
 * HTTP/2 layer ends on the client's account: it answers with a GOAWAY and the session's `error`,
 * and no call ever exists, so no other line would say that a client flooded the port or sent
 * metadata past the limits; and, counted as `stream_reset`, each stream Node reset as it opened
 * ({@link noteStreamsResetUnseen}). Listeners per session (its address is read as it opens: by
 * the time of the error Node has let go of the socket); one comparison per call.
 */
function noteRefusedSessions(http2Server: Http2Server | Http2SecureServer, gate: ConnectionGate): void {
  http2Server.on('session', (session: Http2Session) => {
    const address = session.socket.remoteAddress;
    session.on('error', (err: NodeJS.ErrnoException) => {
      const kind = refusalKind(err);
      if (kind !== undefined) gate.sessionRefused(kind, address);
    });
    noteStreamsResetUnseen(session, (count) => {
      gate.sessionRefused(STREAM_RESET, address, count);
    });
  });
}

/** The kind of `http2.session_refused` that counts streams Node reset before any call existed. */
const STREAM_RESET = 'stream_reset';
/** Most streams one gap is counted as: a client may number its first stream anywhere up to 2^31. */
const MOST_RESETS_COUNTED = 1_000;

/**
 * Counts the streams of `session` Node's HTTP/2 layer reset as they opened (more header fields
 * than `maxHeaderFields` of `secureServerOptions`, a header HTTP/2 forbids, streams past the session's
 * limits), which Node reports in no event: no stream object exists for them. A client numbers
 * its streams 1, 3, 5, ...: a stream handed on past the next number expected, or, as the session
 * goes, a last stream whose headers Node began to read (`state.lastProcStreamID`) past the last
 * handed on (a header block left open included), is a run of such streams. A number the client skipped is counted too: one whose
 * stream it reset before sending its headers (a rapid-reset loop does), which HTTP/2 allows
 * and no client sends as a habit. One comparison per stream, the state read once.
 */
function noteStreamsResetUnseen(session: Http2Session, note: (count: number) => void): void {
  let expected = 1;
  session.on('stream', (stream: ServerHttp2Stream) => {
    const id = stream.id ?? 0;
    if (id > expected) note(Math.min((id - expected) / 2, MOST_RESETS_COUNTED));
    if (id >= expected) expected = id + 2;
  });
  let checked = false;
  // `byRefusal`: a session Node ends on the client's account (a header block past nghttp2's
  // limits, say) ends the stream it was reading with it, and that is the session's refusal.
  const check = (byRefusal: boolean): void => {
    if (checked) return;
    checked = true;
    const last = lastStreamRead(session);
    if (last === undefined) return;
    // After the `stream` events Node has queued for streams it read (emitted on the next tick).
    process.nextTick(() => {
      const unseen = (last - expected) / 2 + (byRefusal ? 0 : 1);
      if (unseen > 0) note(Math.min(unseen, MOST_RESETS_COUNTED));
    });
  };
  // Node ends a session through `destroy`, or, when its socket closes first, on its own: the
  // socket's `close`, heard before Node's listener lets the session's state go.
  const destroy = session.destroy.bind(session);
  session.destroy = (...args: Parameters<Http2Session['destroy']>) => {
    const [error] = args;
    check(error instanceof Error && refusalKind(error) !== undefined);
    destroy(...args);
  };
  try {
    session.socket.prependListener('close', () => {
      check(false);
    });
  } catch {
    // A session whose socket is gone already: `destroy` is the one way left.
  }
}

/** The id of the last stream whose headers Node began to read on `session`; `undefined` once it is gone. */
function lastStreamRead(session: Http2Session): number | undefined {
  try {
    const id: unknown = (session.state as { lastProcStreamID?: unknown }).lastProcStreamID;
    return typeof id === 'number' && id > 0 ? id : undefined;
  } catch {
    return undefined;
  }
}

/** A whole number above 0 set by `secureServerOptions`, or `undefined` (the default applies). */
function positiveOption(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/**
 * Destroys `session`, once it was asked to close gracefully (the idle limit, shutdown, a trust
 * change), when a check every `graceMs` finds it still open with no stream open. Node finishes a
 * graceful close only once nghttp2 has nothing more to read: a client that sent the start of a
 * header block (HEADERS without END_HEADERS) and nothing more kept its connection after the
 * GOAWAY until the keepalive dropped it, two minutes on. A stream still open is a call that may
 * finish: it is waited for. The streams are counted only then, from Node's own record of them:
 * counting each stream as it opened and closed cost about 2 % of a gRPC call. Where that record
 * is not found (another Node), nothing is destroyed.
 */
function dropWhenClosingStalls(session: Http2Session, graceMs: number): void {
  const close = session.close.bind(session);
  session.close = (callback?: () => void) => {
    const check = (): void => {
      if (session.destroyed) return;
      const open = openStreams(session);
      if (open === 0) session.destroy();
      else if (open !== undefined) setTimeout(check, graceMs).unref();
    };
    setTimeout(check, graceMs).unref();
    close(callback);
  };
}

/** The streams Node holds open (and about to open) for `session`; `undefined` where it does not say. */
function openStreams(session: Http2Session): number | undefined {
  const key = Object.getOwnPropertySymbols(session).find((symbol) => symbol.description === 'state');
  const state = (key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key]) as
    { streams?: { size?: unknown }; pendingStreams?: { size?: unknown } } | undefined;
  // Node's own Map and Set (from its primordials): not instances of this realm's.
  const streams = state?.streams?.size;
  const pending = state?.pendingStreams?.size;
  return typeof streams === 'number' && typeof pending === 'number' ? streams + pending : undefined;
}

/**
 * Destroys `socket` `graceMs` after the server ends its side, unless the client has closed it by
 * then. An HTTP/2 session that closes gracefully (idle limit, shutdown) ends its socket once its
 * streams are done and then waits for the client's end, with no limit: a client that reads
 * nothing more and never closes kept the descriptor for good. The one place that step is seen
 * is the socket's `end`, so that method is wrapped on this socket alone.
 */
function dropAfterClosing(socket: Socket, graceMs: number): void {
  const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
  let armed = false;
  socket.end = (...args: unknown[]) => {
    if (!armed && !socket.destroyed) {
      armed = true;
      const timer = setTimeout(() => socket.destroy(), graceMs);
      timer.unref();
      socket.once('close', () => {
        clearTimeout(timer);
      });
    }
    return end(...args);
  };
}

/**
 * Destroys `socket` once bytes have waited in it for `stallMs` with none of them taken: checked
 * every half of `stallMs`, it is dropped when two checks in a row found bytes waiting and
 * nothing flushed between them. A client reading slowly flushes some between checks and keeps
 * its connection; one whose answers wait in HTTP/2 flow control (its window closed) has nothing
 * waiting in the socket, and its calls end by their deadlines. The calls a dropped connection
 * still carried are logged with `reason: 'write_stalled'`: a reader that stopped is a sign of a
 * slow-reader attack, which a client that hung up is not.
 */
function dropWhenWritesStall(socket: Socket, stallMs: number): void {
  let waitingBefore = false;
  let flushedBefore = 0;
  const timer = setInterval(
    () => {
      // HTTP/2 writes go from the session to the socket's native handle, past its JS buffer:
      // what waits is in the handle's write queue. What Node counts as written includes both.
      const queued = socket.writableLength + writeQueueSize(socket);
      const waiting = queued > 0;
      const flushed = socket.bytesWritten - queued;
      if (waiting && waitingBefore && flushed === flushedBefore) {
        // Noted first, on the session its calls are told by: those still at work are logged as
        // cut by the server (`reason: 'write_stalled'`), not as left by their client.
        const session = sessionOf(socket);
        if (session !== undefined) noteServerEnding(session, 'write_stalled');
        socket.destroy();
      }
      waitingBefore = waiting;
      flushedBefore = flushed;
    },
    Math.max(1, Math.floor(stallMs / 2)),
  );
  timer.unref();
  socket.once('close', () => {
    clearInterval(timer);
  });
}

/** Bytes the socket's native handle holds, not yet taken by the kernel; 0 where Node does not say. */
function writeQueueSize(socket: Socket): number {
  const size = (socket as Socket & { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize;
  return typeof size === 'number' && size > 0 ? size : 0;
}

/**
 * Makes `getPeerCertificate()` (the form without the issuer chain, which grpc-js asks for)
 * answer from its first result on this socket. The object is frozen: grpc-js hands it to every
 * call's `getAuthContext()`, and no call may change what the next one sees.
 */
function rememberPeerCertificate(socket: TLSSocket): void {
  const original = socket.getPeerCertificate.bind(socket);
  let first: PeerCertificate | undefined;
  const remembered = (detailed?: boolean): PeerCertificate | DetailedPeerCertificate => {
    if (detailed === true) return original(true);
    first ??= Object.freeze(original(false));
    return first;
  };
  socket.getPeerCertificate = remembered as TLSSocket['getPeerCertificate'];
}

/** A `grpc-timeout` as the gRPC spec writes it: at most eight digits, then the unit. */
const GRPC_TIMEOUT = /^\d{1,8}[HMSmun]$/;
/** A text metadata value grpc-js keeps: printable ASCII and spaces. */
const GRPC_JS_TEXT_VALUE = /^[ -~]*$/;
/** What a security header's value grpc-js would drop is handed on as: a bearer value that is no token (`malformed_authorization`). */
const UNREADABLE_VALUE = 'Bearer (unreadable)';
/** What a `grpc-timeout` of another form is handed on as: no digits, so grpc-js refuses it. */
const MALFORMED_TIMEOUT = 'malformed';
/**
 * The longest `grpc-timeout` grpc-js reads as it is: it turns the timeout into a 32-bit integer
 * of milliseconds, so a longer one (a 30-day deadline, `2592000S`) wrapped into a few ms or a
 * negative number and the call failed at once. A longer one is handed on as this (about 24.8
 * days), which the timeouts control's `maxMs` brings down as it brings down any long deadline.
 */
const LONGEST_TIMEOUT = '2147483S';
const LONGEST_TIMEOUT_MS = 2_147_483_000;
/** Milliseconds per `grpc-timeout` unit; the others (`m`, `u`, `n`) cannot pass the longest in eight digits. */
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = Object.freeze({ H: 3_600_000, M: 60_000, S: 1_000 });

/** Whether a well-formed `grpc-timeout` is past what grpc-js reads without wrapping. */
function wrapsInGrpcJs(timeout: string): boolean {
  const unitMs = TIMEOUT_UNIT_MS[timeout[timeout.length - 1] ?? ''];
  return unitMs !== undefined && Number(timeout.slice(0, -1)) * unitMs > LONGEST_TIMEOUT_MS;
}

/** A metadata key grpc-js keeps (`:` leads the pseudo-headers it passes over). */
const GRPC_JS_KEY = /^[:0-9a-z_.-]+$/;

/** The `stream` listener of a port whose requests carry at most `maxHeaderFields` header fields. */
function streamListener(
  maxHeaderFields: number,
): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders?: readonly string[]) => void {
  return (_stream, headers, _flags, rawHeaders) => {
    onStream(headers, rawHeaders, maxHeaderFields);
  };
}

function onStream(
  headers: IncomingHttpHeaders,
  rawHeaders: readonly string[] | undefined,
  maxHeaderFields: number,
): void {
  // grpc-js reads the timeout with an unanchored pattern into an integer that wraps: `-1S` was
  // one second and nine digits none at all. Another form is refused as grpc-js refuses one it
  // cannot read (INVALID_ARGUMENT naming the header), instead of setting some other deadline.
  const timeout = headers['grpc-timeout'];
  if (timeout !== undefined) {
    if (typeof timeout !== 'string' || !GRPC_TIMEOUT.test(timeout)) headers['grpc-timeout'] = MALFORMED_TIMEOUT;
    else if (wrapsInGrpcJs(timeout)) headers['grpc-timeout'] = LONGEST_TIMEOUT;
  }
  // grpc-js hands `:authority` to `call.getHost()` as it came; nghttp2 checks its characters
  // only, which lets `u@a`, `[::1` and `a:99999` through. Refused as the Express adapter refuses
  // such a `Host`, before grpc-js builds anything of the call.
  const authority = headers[':authority'];
  if (typeof authority === 'string' && !isValidHostField(authority)) {
    noteHeadersFault(headers, 'authority_invalid');
    return;
  }
  if (!Array.isArray(rawHeaders)) {
    dropWhatGrpcJsDrops(headers, false);
    noteTooManyBinaryValues(headers, maxHeaderFields);
    return;
  }
  handOnSecurityHeaders(headers, rawHeaders);
  if (hasRepeatedNames(rawHeaders)) handOnRepeatedHeaders(headers, rawHeaders);
  // The raw list is an array, read faster than the headers object's keys: it tells whether there
  // is anything to drop or any binary value to count, and the object is walked only then.
  const found = scanForGrpcJs(rawHeaders);
  if ((found & GRPC_JS_DROPS) !== 0) dropWhatGrpcJsDrops(headers, true);
  if ((found & BINARY_VALUES) !== 0) noteTooManyBinaryValues(headers, maxHeaderFields);
}

/**
 * What {@link onStream} found that grpc-js's content-type check, which runs next in the same
 * `stream` event, is to refuse before grpc-js builds the call's metadata
 * ({@link takeHeadersFault}): binary values past the header fields Node reads
 * ({@link binaryValuesOver}), or an `:authority` that is no host and port.
 *
 * @internal
 */
export type HeadersFault = 'too_many_binary_values' | 'authority_invalid';

/**
 * The headers of the stream being handed to grpc-js, when they have a {@link HeadersFault}, and
 * which. Compared by identity: one comparison a call, where counting there walked the headers
 * object's keys (about 0.8 µs a call).
 */
let faultyHeaders: IncomingHttpHeaders | undefined;
let faultOfHeaders: HeadersFault = 'too_many_binary_values';

function noteHeadersFault(headers: IncomingHttpHeaders, fault: HeadersFault): void {
  faultyHeaders = headers;
  faultOfHeaders = fault;
}

/** Binary values past `max`, the header fields Node reads: more entries than a request may carry. */
function noteTooManyBinaryValues(headers: IncomingHttpHeaders, max: number): void {
  if (binaryValuesOver(headers, max)) noteHeadersFault(headers, 'too_many_binary_values');
}

/**
 * The {@link HeadersFault} of `headers`, those of the stream grpc-js is checking, if any: the
 * call is to be refused before grpc-js builds its metadata.
 *
 * @internal
 */
export function takeHeadersFault(headers: IncomingHttpHeaders): HeadersFault | undefined {
  if (faultyHeaders !== headers) return undefined;
  faultyHeaders = undefined;
  return faultOfHeaders;
}

/**
 * Whether grpc-js would make more than `max` entries of the binary (`-bin`) metadata of
 * `headers`. grpc-js splits a custom binary value on its commas and decodes each piece into an
 * entry of its own, before any interceptor runs: 60 KB of commas in one header, sent with no
 * credential, cost about 100 ms of CPU a call, and the header limits refused the call only then.
 * Counted as grpc-js splits: a value of each repeated header whole, a `grpc-` one never split.
 */
function binaryValuesOver(headers: IncomingHttpHeaders, max: number): boolean {
  let count = 0;
  for (const name of Object.keys(headers)) {
    if (!name.endsWith('-bin')) continue;
    const value = headers[name];
    if (Array.isArray(value)) count += value.length;
    else if (typeof value === 'string') {
      count += 1;
      if (!name.startsWith('grpc-')) {
        for (let at = value.indexOf(','); at !== -1 && count <= max; at = value.indexOf(',', at + 1)) count += 1;
      }
    }
    if (count > max) return true;
  }
  return false;
}

/** Headers at most this many names long are compared pair by pair; longer lists go through a set. */
const PAIRWISE_NAMES = 24;

/**
 * Whether a name comes more than once in `rawHeaders`. A call has a dozen headers, compared pair
 * by pair (counting the header object's names cost four times as much); a long list through a
 * set, so that 128 names cost no 8,000 comparisons.
 */
function hasRepeatedNames(rawHeaders: readonly string[]): boolean {
  if (rawHeaders.length > 2 * PAIRWISE_NAMES) {
    const names = new Set<string>();
    for (let i = 0; i < rawHeaders.length; i += 2) names.add(String(rawHeaders[i]));
    return names.size * 2 < rawHeaders.length;
  }
  for (let i = 2; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    for (let j = 0; j < i; j += 2) if (rawHeaders[j] === name) return true;
  }
  return false;
}

/**
 * Repeated headers left joined: grpc-js reads the first value of its own (`grpc-timeout`,
 * `grpc-encoding`), and joined a repeated one is refused as unreadable, as it should be; cookie
 * crumbs are one cookie header, joined with `; ` as HTTP/2 says. (`-bin` values are split again
 * by grpc-js, each on its commas.)
 */
const KEPT_JOINED: ReadonlySet<string> = new Set(['grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding', 'cookie']);

/**
 * Hands on each value of a repeated header that Node joined into one (`x-api-key: a` and
 * `x-api-key: b` as `a, b`), as the values they were: grpc-js keeps a joined
 * text value whole, so every control read `a, b` where the Express adapter reads `a`. A rate
 * limit keyed by `x-api-key` counted a new key on every call that added a second value, and
 * the header limits counted one entry where HTTP counts each. Headers Node keeps the first of
 * (`content-type`, `user-agent`) are left as Node gives them, and so are those of
 * {@link KEPT_JOINED} and binary ones; `authorization` has been handed on already
 * ({@link handOnSecurityHeaders}).
 */
function handOnRepeatedHeaders(headers: IncomingHttpHeaders, rawHeaders: readonly string[]): void {
  const valuesOf = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = String(rawHeaders[i]).toLowerCase();
    if (name.charCodeAt(0) === 58 || KEPT_JOINED.has(name) || name.endsWith('-bin') || isSecurityHeader(name)) continue;
    const values = valuesOf.get(name);
    if (values === undefined) valuesOf.set(name, [String(rawHeaders[i + 1])]);
    else values.push(String(rawHeaders[i + 1]));
  }
  for (const [name, values] of valuesOf) {
    if (values.length < 2) continue;
    const given = headers[name];
    // Kept as the first value alone: one of the headers Node takes once.
    if (given === values[0]) continue;
    (headers as Record<string, string | string[]>)[name] = values;
  }
}

/**
 * The entry `i` of `rawHeaders` as a string. Node gives strings: the check keeps the call to
 * `String()`, which the compiler does not inline, off the path of every header of every call.
 */
function entryAt(rawHeaders: readonly string[], i: number): string {
  const entry: unknown = rawHeaders[i];
  return typeof entry === 'string' ? entry : String(entry);
}

/** {@link scanForGrpcJs}: grpc-js would drop an entry. */
const GRPC_JS_DROPS = 1;
/** {@link scanForGrpcJs}: there may be binary values to count. */
const BINARY_VALUES = 2;

/**
 * What `rawHeaders` holds that must be seen to before grpc-js reads the headers object, as
 * {@link GRPC_JS_DROPS} and {@link BINARY_VALUES} bits: an entry grpc-js would drop (its security
 * headers aside, handed on already), a binary (`-bin`) entry. Once an entry to drop is found the
 * rest is not read, and may hold binary entries.
 */
function scanForGrpcJs(rawHeaders: readonly string[]): number {
  let found = 0;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = entryAt(rawHeaders, i);
    if (name.charCodeAt(0) === 58) continue;
    if (!grpcJsKeys.test(name)) return GRPC_JS_DROPS | BINARY_VALUES;
    if (isSecurityHeader(name)) continue;
    if (name.endsWith('-bin')) found = BINARY_VALUES;
    else if (!grpcJsTextValues.test(entryAt(rawHeaders, i + 1))) return GRPC_JS_DROPS | BINARY_VALUES;
  }
  return found;
}

/** Strings at most this long are remembered by a {@link RecentMatches}. */
const LONGEST_REMEMBERED = 64;
/** How many strings a {@link RecentMatches} remembers. */
const MOST_REMEMBERED = 8;

/**
 * The last few short strings that a pattern matched. A client sends the same headers on every
 * call, and comparing a name or value with those of the calls before costs a fraction of testing
 * it again (a test was about 400 instructions, five of them on a plain call); only strings that
 * matched are kept, and an equal string matches alike. Short ones only: a long value compared
 * with each kept one of its length could cost more than the test.
 */
class RecentMatches {
  readonly #pattern: RegExp;
  readonly #kept: string[] = new Array<string>(MOST_REMEMBERED).fill('');
  #next = 0;

  constructor(pattern: RegExp) {
    this.#pattern = pattern;
  }

  /** Whether the pattern matches `value`. */
  test(value: string): boolean {
    const kept = this.#kept;
    // The empty places hold '', which is never looked for: an empty string's test costs nothing.
    if (value !== '') for (const known of kept) if (known === value) return true;
    if (!this.#pattern.test(value)) return false;
    if (value.length <= LONGEST_REMEMBERED && value !== '') {
      kept[this.#next] = value;
      this.#next = (this.#next + 1) % kept.length;
    }
    return true;
  }
}

const grpcJsKeys = new RecentMatches(GRPC_JS_KEY);
const grpcJsTextValues = new RecentMatches(GRPC_JS_TEXT_VALUE);

/** A security header's name, in lower case: {@link handOnSecurityHeaders} has read its values. */
function isSecurityHeader(name: string): boolean {
  return SINGLE_VALUE_NAME_LENGTHS[name.length] === 1 && SINGLE_VALUE_SECURITY_HEADERS.has(name);
}

/** Whether grpc-js keeps `value` under `key`, a key it accepts: any binary value, text of printable ASCII. */
function grpcJsKeeps(key: string, value: string): boolean {
  return key.endsWith('-bin') || GRPC_JS_TEXT_VALUE.test(value);
}

/**
 * Takes out of `headers` the entries grpc-js would drop as it builds the call's metadata (a key
 * it does not accept, a text value with a byte past printable ASCII), as it drops them: a key
 * whole, the values of a repeated one from the first it refuses. grpc-js builds an error, stack
 * and all, for each and logs it quoting the values: 120 such entries, under 1 KB sent without
 * any credential, cost 2 ms of CPU a call before any interceptor ran. Each is logged here, once
 * per key as grpc-js does, without its values.
 */
function dropWhatGrpcJsDrops(headers: IncomingHttpHeaders, securityChecked: boolean): void {
  for (const key of Object.keys(headers)) {
    if (key.charCodeAt(0) === 58) continue;
    // Each value of these was read once already, and is one grpc-js keeps: a bearer token is
    // the longest value of a call, and a second reading of it was about 1 % of a call's work.
    if (securityChecked && isSecurityHeader(key)) continue;
    const values = headers[key];
    // How many of its values grpc-js keeps; undefined: all of them.
    let kept: number | undefined;
    if (!GRPC_JS_KEY.test(key)) kept = 0;
    else if (values === undefined) kept = undefined;
    else if (typeof values === 'string') kept = grpcJsKeeps(key, values) ? undefined : 0;
    else {
      const refused = values.findIndex((value) => !grpcJsKeeps(key, value));
      kept = refused === -1 ? undefined : refused;
    }
    if (kept === undefined) continue;
    if (kept === 0) Reflect.deleteProperty(headers, key);
    else (headers as Record<string, string[]>)[key] = (values as string[]).slice(0, kept);
    experimental.log(
      logVerbosity.ERROR,
      `Failed to add metadata entry ${key}: its value is withheld (bytes grpc-js does not accept)`,
    );
  }
}

/**
 * The last single security header value grpc-js keeps: a client sends the same token call after
 * call, and comparing with it costs a fraction of testing every character of a token again.
 */
let lastKeptValue = '';

/**
 * A security header sent more than once, or with a value grpc-js would drop, is handed on so
 * that the authenticator refuses it: see {@link hardenHttp2Servers}.
 */
function handOnSecurityHeaders(headers: IncomingHttpHeaders, rawHeaders: readonly string[]): void {
  // Almost every call has one such header: it is kept aside, and a map made only for a second.
  let firstName: string | undefined;
  let firstValue = '';
  let repeated: Map<string, string[]> | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const rawName = entryAt(rawHeaders, i);
    // Past the table's end the read is `undefined`: not one of the names.
    if (SINGLE_VALUE_NAME_LENGTHS[rawName.length] !== 1) continue;
    const name = rawName.toLowerCase();
    if (!SINGLE_VALUE_SECURITY_HEADERS.has(name)) continue;
    const value = entryAt(rawHeaders, i + 1);
    if (firstName === undefined) {
      firstName = name;
      firstValue = value;
      continue;
    }
    repeated ??= new Map([[firstName, [firstValue]]]);
    const values = repeated.get(name) ?? [];
    values.push(value);
    repeated.set(name, values);
  }
  if (firstName === undefined) return;
  // grpc-js adds every value of an array to the metadata: the authenticator sees them all. A
  // value grpc-js would drop (a tab, a byte past ASCII) is handed on as one it keeps: dropped,
  // the other value alone was read, while a proxy that takes the last read the dropped one;
  // and a single one read as no credential at all (`missing_token`), which brute-force
  // protection does not count.
  if (repeated === undefined) {
    if (firstValue === lastKeptValue) {
      // The same string as the last call's: later reads compare it by reference (the token cache's).
      (headers as Record<string, string>)[firstName] = lastKeptValue;
    } else if (GRPC_JS_TEXT_VALUE.test(firstValue)) lastKeptValue = firstValue;
    else (headers as Record<string, string>)[firstName] = UNREADABLE_VALUE;
    return;
  }
  for (const [name, values] of repeated) {
    if (values.length > 1) {
      (headers as Record<string, string | string[]>)[name] = values.map((value) =>
        GRPC_JS_TEXT_VALUE.test(value) ? value : UNREADABLE_VALUE,
      );
    } else if (!GRPC_JS_TEXT_VALUE.test(values[0] ?? '')) {
      (headers as Record<string, string | string[]>)[name] = UNREADABLE_VALUE;
    }
  }
}
