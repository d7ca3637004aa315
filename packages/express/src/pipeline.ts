import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Request, RequestHandler } from 'express';
import {
  ConfigurationError,
  SecurityError,
  type CallInfo,
  type CertificateIdentity,
  type Control,
  type HeaderReader,
} from '@fluxguard/core';
import {
  createPipeline,
  type CallState,
  type Pipeline,
  httpOperation,
  identityFromTlsSocket,
  isIdentityCurrent,
} from '@fluxguard/core/adapter';
import { requireState, setOperationLabel } from './context.js';
import { peerOf } from './error-handler.js';

/**
 * The one Express pipeline: a middleware that runs `controls` (ordered by stage) on every
 * request. It builds the request's `CallInfo` once (shared with any other pipeline middleware
 * of the request), runs every start hook before the request goes on, and passes a refusal to
 * `next(err)` for the fluxguard error handler. Release callbacks run once when the response
 * closes, however it ends. With message hooks, every body chunk is handed to them as it
 * arrives, before any body parser or handler reads it; a refusal answers at once (413, 400, ...)
 * and the rest of the body is dropped.
 *
 * Every fluxguard middleware (`authorize`, `jwtAuth`, `rbac`, `mtls`) is this with its controls;
 * `fluxguard().before` ends with this for the whole list. Mount it after `fluxguard().before`.
 * When a control matches operation paths (RBAC), the app must route case-sensitively
 * (`app.set('case sensitive routing', true)`): a request to an app that does not is refused with
 * a 500 and a log line saying so.
 *
 * @throws ConfigurationError for an invalid control.
 *
 * @example
 * ```ts
 * import { controls, fluxguard } from '@fluxguard/express';
 * const { before, after } = fluxguard({ audit });
 * app.use(before, controls('limits', [oneAtATime]));
 * ```
 */
export function controls(owner: string, list: readonly Control[]): RequestHandler {
  const pipeline = createPipeline(owner, list);
  return function fluxguardControls(req, res, next) {
    const state = requireState(req, owner);
    if (pipeline.matchesOperation && !req.app.enabled('case sensitive routing')) {
      throw new ConfigurationError(
        `${owner}: the app must route case-sensitively, as its rules match paths: app.set('case sensitive routing', true)`,
      );
    }
    const info = callInfoOf(req, state);
    const label = pipeline.operationLabel(info.operation);
    if (label !== undefined) setOperationLabel(req, label);
    const proceed = (): void => {
      // The request ended (the client left, or a deadline answered it) while a hook waited.
      if (state.finished || res.headersSent) return;
      if (pipeline.hasMessageHooks) inspectBody(req, pipeline, info, state);
      next();
    };
    const pending = pipeline.start(info, state);
    if (pending === undefined) proceed();
    else {
      pending.then(proceed, (error: unknown) => {
        next(error);
      });
    }
  };
}

/**
 * Hands every body chunk to the message hooks as the HTTP parser delivers it (Node pushes each
 * into the request stream), so that sizes are enforced while streaming, whoever reads the
 * body. A refused chunk and everything after it never reach the stream.
 */
function inspectBody(req: IncomingMessage, pipeline: Pipeline, info: CallInfo, state: CallState): void {
  const push = req.push.bind(req);
  let refused = false;
  req.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (refused) return false;
    if (chunk !== null) {
      try {
        pipeline.message(chunk, info, state);
      } catch (error) {
        refused = true;
        state.end(asSecurityError(error));
        return false;
      }
    }
    return push(chunk, encoding);
  };
}

function asSecurityError(error: unknown): SecurityError {
  return error instanceof SecurityError ? error : new SecurityError('internal', { cause: error });
}

const callInfos = new WeakMap<IncomingMessage, CallInfo>();

function callInfoOf(req: Request, state: CallState): CallInfo {
  let info = callInfos.get(req);
  if (info === undefined) {
    info = buildCallInfo(req, state);
    callInfos.set(req, info);
  }
  return info;
}

function buildCallInfo(req: Request, state: CallState): CallInfo {
  return Object.freeze({
    transport: 'http',
    // The concrete path as the router matches it (mount path included), not a route pattern:
    // the controls run before routing, and rules are matched against it.
    operation: httpOperation(req.method, `${req.baseUrl}${req.path}`),
    requestId: state.requestId,
    peerAddress: peerOf(req),
    peerCertificate: getClientCertificate(req),
    headers: headerReader(req),
    // Getters: a control may tighten the deadline, and the signal is created only when read.
    get deadline(): number | undefined {
      return state.deadline;
    },
    get signal(): AbortSignal {
      return state.signal;
    },
  });
}

/** Case-insensitive, read-only view of the request headers; repeated headers stay separate. */
function headerReader(req: IncomingMessage): HeaderReader {
  // `headersDistinct`, not `headers`: Node keeps only the first of two Authorization headers
  // in `headers`, and the verifier must see both to refuse the request.
  const distinct = req.headersDistinct;
  return {
    get: (name) => distinct[name.toLowerCase()]?.[0],
    getAll: (name) => distinct[name.toLowerCase()] ?? [],
  };
}

// Identity is a property of the connection, not of the request: read and parse the peer
// certificate once per TLS socket. `null` records "no verified certificate on this socket".
const socketIdentities = new WeakMap<TLSSocket, CertificateIdentity | null>();

/**
 * The verified client certificate of the request's connection, or `undefined` when there is
 * none: a plain-HTTP socket, no certificate, a certificate the TLS stack did not verify
 * (per-operation mode lets such a handshake complete, and Node still reports the subject an
 * untrusted self-signed certificate claims: it is never read), or one that has expired since
 * the connection was made. Cached per connection.
 *
 * The cache assumes the peer certificate of a connection never changes: `createSecureServer`
 * disables TLS renegotiation; disable it on a server of your own too
 * (`server.on('secureConnection', (s) => s.disableRenegotiation())`).
 *
 * @throws SecurityError `unauthenticated` when a verified certificate cannot be parsed.
 *
 * @example
 * ```ts
 * import { getClientCertificate } from '@fluxguard/express';
 * app.get('/v1/whoami', (req, res) => {
 *   res.json({ spiffeId: getClientCertificate(req)?.spiffeId ?? null });
 * });
 * ```
 */
export function getClientCertificate(req: IncomingMessage): CertificateIdentity | undefined {
  const socket: unknown = req.socket;
  if (!(socket instanceof TLSSocket)) return undefined;
  let identity = socketIdentities.get(socket);
  if (identity === undefined) {
    identity = identityFromTlsSocket(socket) ?? null;
    socketIdentities.set(socket, identity);
  }
  // A keep-alive connection may outlive its client certificate.
  return identity !== null && isIdentityCurrent(identity) ? identity : undefined;
}
