import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import {
  ConfigurationError,
  type AuditLogger,
  type ReloadOptions,
  type TlsMaterial,
  type TlsSettingsOptions,
} from '@fluxguard/core';
import type { Application } from 'express';
import {
  assertAuditLogger,
  connectionBudget,
  createReloadingTlsSettings,
  createTrustRecheck,
  checkConnectionsPerAddress,
  defaultConnectionsPerAddress,
  gateConnections,
  noteServerEnding,
  trustChanged,
  resolveOptions,
  type TlsSettings,
  MAX_TIMER_MS,
  wholeNumber,
} from '@fluxguard/core/adapter';
import {
  answerClientError,
  answerConnect,
  answerExpectationFailed,
  answerMalformedHead,
  headFault,
} from './client-error.js';
import { misplacedMiddleware } from './app-routing.js';
import { continueWhenRead } from './request-body.js';

/**
 * Options of {@link createSecureServer}. Times are in milliseconds. `reload` and
 * `reloadIntervalMs` (`ReloadOptions` of `@fluxguard/core`): watch the files `tls` names and
 * serve renewed material to new connections without a restart; default on when `tls` names files.
 *
 * @example
 * ```ts
 * const options: SecureServerOptions = {
 *   audit,
 *   tls: { certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt', clientCertificates: 'per-operation' },
 *   requestTimeoutMs: 60_000,
 * };
 * ```
 */
export interface SecureServerOptions extends ReloadOptions {
  /**
   * The options of `createTlsSettings` (`@fluxguard/core`), or settings it already built. Only
   * options naming files (`certFile`, `keyFile`, `caFile`, optional `crlFile`) can be reloaded.
   */
  readonly tls: TlsSettingsOptions | TlsSettings;
  /** Where reloads (`tls.reloaded`) and reload failures (`tls.reload_failed`) are logged. */
  readonly audit: AuditLogger;
  /** Time to receive the request headers. Default 10 000 (at most `requestTimeoutMs`). Node 20: 60 000. */
  readonly headersTimeoutMs?: number | undefined;
  /** Time to receive the whole request, body included. Default 30 000. Node 20: 300 000. */
  readonly requestTimeoutMs?: number | undefined;
  /** Idle time of a keep-alive connection between requests. Default 5000. */
  readonly keepAliveTimeoutMs?: number | undefined;
  /** How often the two request timeouts above are enforced. Default 1000. Node: 30 000. */
  readonly connectionsCheckingIntervalMs?: number | undefined;
  /** Largest request head (request line and headers), in bytes. Default 16 384. */
  readonly maxHeaderSize?: number | undefined;
  /**
   * A connection whose TLS handshake has not completed this long after it opened is closed
   * (before the handshake, no HTTP timeout applies). Default 10 000. Node: 120 000.
   */
  readonly handshakeTimeoutMs?: number | undefined;
  /**
   * Connections held at once, so that a flood meets a clean refusal instead of `EMFILE` deep in
   * a handler. At the cap, a connection still in its TLS handshake, or one writing no answer,
   * is closed to make room for a new one (the oldest of the client address holding the most:
   * such connections cost an attacker little, and held the cap from two addresses); when none
   * can go, the new one is closed at once. Default: 70 % of the process's open-file limit
   * (Linux `/proc/self/limits`), else 10 000.
   */
  readonly maxConnections?: number | undefined;
  /**
   * Connections one client address (an IPv6 client by its /64) may hold at once; one more is
   * closed at once. Default: half of `maxConnections`, at least 16: one client holding the
   * whole cap, and reopening what the server closed, shut out everyone. Behind a load balancer
   * whose connections all come from one address, raise it. Refusals are logged
   * (`connection.refused`, at most one line per 10 s).
   */
  readonly maxConnectionsPerAddress?: number | undefined;
}

interface ResolvedOptions {
  readonly tls: TlsSettingsOptions | TlsSettings | undefined;
  readonly audit: AuditLogger | undefined;
  readonly reload: boolean | undefined;
  readonly reloadIntervalMs: number | undefined;
  readonly headersTimeoutMs: number | undefined;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly connectionsCheckingIntervalMs: number;
  readonly maxHeaderSize: number;
  readonly handshakeTimeoutMs: number;
  readonly maxConnections: number | undefined;
  readonly maxConnectionsPerAddress: number | undefined;
}

const DEFAULTS: ResolvedOptions = Object.freeze({
  tls: undefined,
  audit: undefined,
  reload: undefined,
  reloadIntervalMs: undefined,
  headersTimeoutMs: undefined,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  connectionsCheckingIntervalMs: 1_000,
  maxHeaderSize: 16_384,
  handshakeTimeoutMs: 10_000,
  maxConnections: undefined,
  maxConnectionsPerAddress: undefined,
});

const HEADERS_TIMEOUT_MS = 10_000;
const FACTORY = 'createSecureServer';

function positiveInteger(value: unknown, name: string, max = MAX_TIMER_MS): number {
  return wholeNumber(value, `${FACTORY}: "${name}"`, { max });
}

/**
 * An HTTPS server for an Express app (or any request listener) with fluxguard's TLS settings
 * (`createTlsSettings` of `@fluxguard/core`: TLS 1.2 minimum, 1.3 preferred, AEAD suites,
 * client certificates requested and verified against the CA bundle, optional CRL; `strict`
 * or `per-operation` client certificates), slow-client limits tighter than Node's defaults,
 * a 16 KiB request-head limit, TLS renegotiation disabled, and reload without restart: when
 * `tls` names files, a renewed certificate, key, CA bundle or CRL written to disk is served to
 * new connections within about two intervals (`setSecureContext` with the complete settings,
 * so ciphers, minimum version and CRL survive the reload); a broken set keeps the last good
 * material and logs `tls.reload_failed`. The watcher stops when the server closes. What Node's
 * parser refuses before any request exists, an HTTP/1.1 request without `Host` and a `CONNECT`
 * request are answered with Node's status (404 for `CONNECT`, as an unknown route) plus a
 * request id, a problem+json body and an audit line. Its `closeAllConnections()` (at the end of
 * a shutdown's grace) ends every connection, those still in their TLS handshake included: one
 * that finished its handshake later could otherwise hold `close()` for as long as it trickled
 * a request head.
 *
 * Options are checked now: a missing or mismatched file throws `ConfigurationError`.
 * The server is returned unbound: call `listen`.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { createAuditLogger } from '@fluxguard/core';
 * import { createSecureServer } from '@fluxguard/express';
 *
 * const audit = createAuditLogger();
 * const app = express();
 * const server = createSecureServer(app, {
 *   audit,
 *   tls: { certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt', clientCertificates: 'per-operation' },
 * });
 * server.listen(8443, '127.0.0.1');
 * ```
 */
export function createSecureServer(app: RequestListener, options: SecureServerOptions): Server {
  const o = resolveOptions<ResolvedOptions>(FACTORY, DEFAULTS, options);
  if (typeof app !== 'function')
    throw new ConfigurationError(`${FACTORY}: "app" must be a request listener (an Express app)`);
  // An Express app served as it is (not `wrap(app)`): a route before fluxguard's `before`, or
  // `after` without it, would be served without the controls.
  if (typeof (app as { enabled?: unknown }).enabled === 'function') {
    const misplaced = misplacedMiddleware(app as unknown as Application, FACTORY);
    if (misplaced !== undefined) throw misplaced;
  }
  assertAuditLogger(o.audit, FACTORY);
  const audit = o.audit;
  if (typeof o.tls !== 'object') {
    throw new ConfigurationError(`${FACTORY}: "tls" is required (createTlsSettings options or settings)`);
  }
  const requestTimeout = positiveInteger(o.requestTimeoutMs, 'requestTimeoutMs');
  const headersTimeout =
    o.headersTimeoutMs === undefined
      ? Math.min(HEADERS_TIMEOUT_MS, requestTimeout)
      : positiveInteger(o.headersTimeoutMs, 'headersTimeoutMs', requestTimeout);
  const keepAliveTimeout = positiveInteger(o.keepAliveTimeoutMs, 'keepAliveTimeoutMs');
  const connectionsCheckingInterval = positiveInteger(o.connectionsCheckingIntervalMs, 'connectionsCheckingIntervalMs');
  const maxHeaderSize = positiveInteger(o.maxHeaderSize, 'maxHeaderSize', 1 << 20);
  const handshakeTimeout = positiveInteger(o.handshakeTimeoutMs, 'handshakeTimeoutMs');
  const firstRequestTimeout = headersTimeout + connectionsCheckingInterval + 500;
  const maxConnections =
    o.maxConnections === undefined ? connectionBudget() : positiveInteger(o.maxConnections, 'maxConnections');
  const maxPerAddress =
    o.maxConnectionsPerAddress === undefined
      ? defaultConnectionsPerAddress(maxConnections)
      : positiveInteger(o.maxConnectionsPerAddress, 'maxConnectionsPerAddress', Number.MAX_SAFE_INTEGER);
  checkConnectionsPerAddress(`${FACTORY}: "maxConnectionsPerAddress"`, maxPerAddress, o.maxConnections);

  const tls = createReloadingTlsSettings(o.tls, {
    audit: o.audit,
    reload: o.reload,
    reloadIntervalMs: o.reloadIntervalMs,
    where: FACTORY,
    // Node rebuilds the whole context from these: never bare key and certificate. Called from a
    // timer, once the server exists.
    onUpdate: (contextOptions, material) => {
      const before = tls.current;
      server.setSecureContext(contextOptions);
      if (trustChanged(before, material)) closeUnderOldTrust(material);
    },
  });
  // Connections and the answer each is writing, to close those made under a CA bundle or CRL
  // that has since changed: a connection keeps the certificate it was verified with.
  const connections = new Set<TLSSocket>();
  const answering = new WeakMap<object, ServerResponse>();
  // Still-trusted connections whose next answer says `connection: close`. Read per request only
  // while it holds one: a server that never reloads pays a size check.
  const closeAfterNextAnswer = new Set<object>();
  /** The answer `socket` is writing now, or `undefined` when it writes none (idle). */
  const answerInProgress = (socket: object): ServerResponse | undefined => {
    const res = answering.get(socket);
    return res === undefined || res.writableFinished ? undefined : res;
  };
  const closeUnderOldTrust = (material: TlsMaterial): void => {
    const stillTrusted = createTrustRecheck(material);
    const made = connections.size;
    let revoked = 0;
    for (const socket of connections) {
      // Revoked, or no longer issued by a CA of the bundle: its answer is cut off too.
      if (!stillTrusted(socket)) {
        revoked += 1;
        // Noted first: the request cut with it is logged as the server's cut, not its client's.
        noteServerEnding(socket, 'trust_revoked');
        socket.destroy();
        continue;
      }
      // Still trusted: not closed at a moment its client cannot see coming, which races the
      // request it may be sending (a reset; a POST is not retried, RFC 9112 section 9.3.1). Its
      // answer whose head is not written yet, else its next one, says `connection: close` and
      // Node closes it after that answer, as a GOAWAY does on gRPC; one left idle ends at the
      // keep-alive timeout its answers announced. Closed at all because a new handshake is the
      // full check of the new trust: the recheck settles revocation and the path to a CA only.
      // One an `upgrade` listener took over (a WebSocket) has no next answer: it is ended, as
      // before, and its protocol has its own way to reconnect.
      const res = answerInProgress(socket);
      if ((socket as { parser?: unknown }).parser === null) socket.end();
      else if (res !== undefined && !res.headersSent) res.setHeader('connection', 'close');
      else closeAfterNextAnswer.add(socket);
    }
    // `connections`: every connection made under the old trust; `revoked`: those cut now. The
    // others close after their next answer or at the keep-alive timeout, as on gRPC.
    audit.logger.info({ event: 'tls.connections_closed', connections: made, revoked }, 'tls.connections_closed');
  };
  const server = createServer(
    {
      ...tls.settings.serverOptions,
      // The material the watcher read first: the files may have changed since createTlsSettings.
      ...tls.settings.secureContextOptions(tls.current),
      maxHeaderSize,
      headersTimeout,
      requestTimeout,
      connectionsCheckingInterval,
      handshakeTimeout,
      // Checked below instead, so that the refusal has a request id and an audit line.
      requireHostHeader: false,
    },
    (req, res) => {
      const fault = headFault(req);
      if (fault === undefined) app(req, res);
      else answerMalformedHead(req, res, audit, fault);
    },
  );
  server.keepAliveTimeout = keepAliveTimeout;
  // Each client address its share of the connections, counted from the TCP connection on; at
  // the cap, a connection still in its TLS handshake, else one serving nothing (no answer being
  // written, or a request whose body its client has not finished sending), makes room.
  const gated = gateConnections(server, {
    maxPerAddress,
    maxConnections,
    audit,
    transport: 'http',
    isIdle: (socket) => {
      // Node lets go of a connection an `upgrade` listener took over (a WebSocket): the
      // application's own, never taken for idle.
      if ((socket as { parser?: unknown }).parser === null) return false;
      const res = answerInProgress(socket);
      return res === undefined || waitsOnItsClient(res);
    },
  });
  // Node's `closeAllConnections` reaches only connections that finished their handshake: one
  // accepted before `close()` that shook hands after the grace then trickled a request head held
  // the process for as long as it liked, as `close()` stops Node's header and request timeouts.
  // The gate holds every connection from its accept on, so it ends them all, first: it notes
  // each as ended by the shutdown before destroying it, so that the requests they carry are
  // logged as cut (`reason: 'server_shutdown'`), not as left by their clients.
  const closeHttpConnections = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    gated.destroyAll();
    closeHttpConnections();
  };
  server.on('secureConnection', (socket: TLSSocket) => {
    connections.add(socket);
    socket.once('close', () => {
      connections.delete(socket);
      closeAfterNextAnswer.delete(socket);
    });
    // TLS 1.2 client-initiated renegotiation costs the server a handshake each time, and could
    // present another certificate on a connection whose identity is already cached.
    socket.disableRenegotiation();
    // Node's header timeout starts with the first byte of a request: a connection that sends
    // none would be held for ever. It gets the headers timeout to start one, plus Node's check
    // interval, so that Node's own 408 still answers a request that started and stalled.
    socket.setTimeout(firstRequestTimeout, () => {
      socket.destroy();
    });
  });
  server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    // The first request has come: from here on Node's own request and keep-alive timeouts apply.
    if (req.socket.timeout) req.socket.setTimeout(0);
    // The last answer of each connection (one map entry, no listener, per request).
    answering.set(req.socket, res);
    if (closeAfterNextAnswer.size !== 0 && closeAfterNextAnswer.delete(req.socket))
      res.setHeader('connection', 'close');
  });
  // What Node's parser refuses before any request exists gets a request id and an audit line.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    answerClientError(err, socket, audit);
  });
  // `Expect: 100-continue` is met when the application reads the body, after the controls: a
  // request refused on its head is answered without the client sending its body first. Node
  // takes any value that names `100-continue` among other words (`100-continue, foo`) for it;
  // an expectation it cannot meet is refused (RFC 9110 section 10.1.1), as one without it is.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.expect?.trim().toLowerCase() !== '100-continue') {
      answerExpectationFailed(req, res, audit);
      return;
    }
    continueWhenRead(req, res);
    server.emit('request', req, res);
  });
  // So does an `Expect` Node cannot meet (Node's own answer is a bare 417).
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    answerExpectationFailed(req, res, audit);
  });
  // And a tunnel request, which Node would drop without a word.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    answerConnect(req, socket, audit);
  });
  server.once('close', () => {
    tls.close();
  });
  return server;
}

/**
 * Whether the request `res` answers still waits for its client: nothing answered yet, and a
 * body the client has not finished sending. A body that never comes (declared and not sent,
 * or trickled) serves nothing while it holds the connection, as a call whose message never
 * comes does on gRPC. One that expects `100-continue` waits on the server until the `100` is
 * written (Node's `_sent100`, set by `writeContinue`): until then the controls run on its head.
 */
function waitsOnItsClient(res: ServerResponse): boolean {
  if (res.headersSent) return false;
  const req = res.req as IncomingMessage | undefined;
  if (req === undefined || req.complete) return false;
  return req.headers.expect === undefined || (res as { _sent100?: unknown })._sent100 === true;
}
