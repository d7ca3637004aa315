import type { RequestListener } from 'node:http';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import express from 'express';
import {
  SecurityError,
  TIMEOUT_DEFAULTS,
  createAuditLogger,
  createHeaderLimits,
  type AuditLogger,
  type Control,
  type Guard,
  type UrlGuard,
} from '@fluxguard/core';
import { createSecureServer, fluxguard, jsonBody, validate } from '@fluxguard/express';
import type { ArtifactStore } from '@fluxguard/example-artifact-store';
import {
  openReferenceStore,
  IMPORT_BODY,
  LIST_QUERY,
  parseReprDigest,
  reprDigestOf,
  type ArtifactInfo,
  type ReferenceServerOptions,
} from '@fluxguard/example-artifact-store';

/**
 * Options of {@link startHttpServer}.
 *
 * @example
 * ```ts
 * const security = await loadReferenceSecurity({ devDir: '.fluxguard/dev', audit });
 * const options: HttpServerOptions = { port: 0, dataDir: '/tmp/artifacts', security, audit };
 * ```
 */
export interface HttpServerOptions extends ReferenceServerOptions {
  /** Port; `0` picks a free one. Default 8443. */
  readonly port?: number;
  /**
   * Node's limit on receiving a whole request, body included, in ms. Default: the policy's
   * longest deadline (`timeouts.maxMs`, 15 minutes by default), so that the policy's deadlines
   * and idle limits decide, each with its problem+json answer and an audit line; the headers must still arrive
   * within 10 s.
   */
  readonly requestTimeoutMs?: number;
}

/**
 * A running reference HTTP server.
 *
 * @example
 * ```ts
 * const server: StartedHttpServer = await startHttpServer({ port: 0, dataDir, security });
 * console.log(server.url); // https://127.0.0.1:40123
 * await server.close();
 * ```
 */
export interface StartedHttpServer {
  readonly port: number;
  /** Base URL, e.g. `https://127.0.0.1:8443`. */
  readonly url: string;
  /** Stops accepting connections, lets requests in flight finish (at most 5 s), then resolves. */
  close(): Promise<void>;
}

/**
 * Options of {@link createApp}.
 *
 * @example
 * ```ts
 * const options: AppOptions = { store: new ArtifactStore({ dataDir }), audit, guard: security.guard('http', HTTP_OPERATIONS) };
 * ```
 */
export interface AppOptions {
  readonly store: ArtifactStore;
  readonly audit: AuditLogger;
  /** Authenticates and authorizes every request (`createGuard` of @fluxguard/core). Required. */
  readonly guard: Guard;
  /** More controls, in the same pipeline as the guard's (the reference server passes its concurrency limit). */
  readonly controls?: readonly Control[];
  /** Refuses a PUT whose `Content-Length` is larger, before reading it. */
  readonly maxArtifactBytes?: number;
  /** Fetches the URLs of imports (`createUrlGuard` of @fluxguard/core). Without it, imports are refused. */
  readonly urlGuard?: UrlGuard;
}

const SHUTDOWN_GRACE_MS = 5_000;

/**
 * The operations the app serves, as RBAC names them: the policy's HTTP rules are checked
 * against them at start-up (a rule naming nothing served stops the server; a route no rule
 * names is logged, and denied).
 *
 * @example
 * ```ts
 * const guard = security.guard('http', HTTP_OPERATIONS); // createGuardFromPolicy with these served operations
 * ```
 */
export const HTTP_OPERATIONS: readonly string[] = Object.freeze([
  'GET /healthz',
  'GET /v1/artifacts',
  'GET /v1/artifacts/*path',
  'PUT /v1/artifacts/*path',
  'DELETE /v1/artifacts/*path',
  'POST /v1/artifacts/*path',
]);

/**
 * What {@link createApp} builds.
 *
 * @example
 * ```ts
 * const { app, listener }: ArtifactStoreApp = createApp({ store, audit, guard });
 * createSecureServer(listener, { audit, tls: security.tls }).listen(8443);
 * // `app` served on its own (in a test, say) refuses an unauthenticated call just the same.
 * ```
 */
export interface ArtifactStoreApp {
  /** The Express app, guarded on its own by fluxguard's `before`. */
  readonly app: express.Express;
  /** `app` behind `fluxguard().wrap`: the same answers, for less work per request. Serve this. */
  readonly listener: RequestListener;
}

/**
 * The ArtifactStore HTTP API as an Express app, behind fluxguard's baseline (request ids,
 * security headers, problem+json errors) and the guard (token, client certificate, RBAC rule
 * of each request, before any route runs).
 *
 * - `GET /healthz`: `{"status":"ok"}`, public.
 * - `GET /v1/artifacts?prefix=`: JSON array of `{path, sha256, size}`.
 * - `GET /v1/artifacts/{path}`: the raw bytes, with `Repr-Digest` (RFC 9530).
 * - `PUT /v1/artifacts/{path}`: raw body streamed to the store; `Repr-Digest` required;
 *   201 with `{path, sha256, size}`.
 * - `DELETE /v1/artifacts/{path}`: 204.
 *
 * Returns the app and `listener`, the app behind `fluxguard().wrap`: serve the listener. The
 * app is guarded on its own as well (its first middleware is fluxguard's `before`), only with
 * a little more work per request.
 *
 * @example
 * ```ts
 * const guard = security.guard('http', HTTP_OPERATIONS);
 * const { listener } = createApp({ store: new ArtifactStore({ dataDir: '/srv/artifacts' }), audit, guard });
 * createSecureServer(listener, { audit, tls: security.tls }).listen(8443);
 * ```
 */
export function createApp(options: AppOptions): ArtifactStoreApp {
  const { store, audit, maxArtifactBytes, urlGuard } = options;
  // This app must never run without authentication and authorization.
  const guardOption: unknown = options.guard; // plain JavaScript callers too
  if (typeof guardOption !== 'object' || guardOption === null || !Array.isArray((guardOption as Guard).controls)) {
    throw new TypeError('createApp: "guard" is required');
  }
  const guard = fluxguard({
    audit,
    guard: options.guard,
    ...(options.controls === undefined ? {} : { controls: options.controls }),
  });
  const app = express();
  app.disable('x-powered-by');
  // RBAC matches the concrete path: routing must agree with it, letter for letter.
  app.set('case sensitive routing', true);
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use(guard.before);

  app.get('/healthz', (_req, res) => {
    res.set('cache-control', 'no-store').json({ status: 'ok' });
  });

  app.get('/v1/artifacts', validate({ query: LIST_QUERY }), async (req, res) => {
    // Validated: at most one of each, a string. Express 5 parses req.query again on each read.
    const { prefix, startAfter } = req.query as { prefix?: string; startAfter?: string };
    const items: ArtifactInfo[] = [];
    const listing = store.list(prefix ?? '', req.fluxguard.signal, startAfter ?? '');
    for await (const info of listing) {
      items.push({ path: info.path, sha256: info.sha256, size: info.size });
    }
    const last = items.at(-1);
    if (listing.truncated && last !== undefined) {
      // More may follow: the next listing starts after the last path of this one.
      const next = new URLSearchParams({ ...(prefix === undefined ? {} : { prefix }), startAfter: last.path });
      res.set('link', `</v1/artifacts?${next.toString()}>; rel="next"`);
    }
    res.json(items);
  });

  app.get('/v1/artifacts/*path', async (req, res) => {
    const { signal } = req.fluxguard;
    // Streamed: the server holds what the client has not taken yet, not the whole artifact.
    const artifact = await store.open(artifactPath(req.params.path), signal);
    res.status(200);
    res.set({
      'content-type': 'application/octet-stream',
      'content-length': String(artifact.size),
      // Never rendered by a browser, whatever the bytes are.
      'content-disposition': 'attachment',
      'repr-digest': reprDigestOf(artifact.sha256),
    });
    // Express routes HEAD here and Node drops the body of its answer: piping would read the
    // whole file for nothing (one reader's HEADs read 3.3 GB in 8 s for 0 bytes sent).
    if (req.method === 'HEAD') {
      artifact.content.destroy();
      res.end();
      return;
    }
    // When the client leaves or the deadline cuts the answer off, the failure goes on to the
    // error handler too: it writes one short line for a client that left (none for an answer
    // the deadline already logged), and it tells the concurrency limit the handler has stopped.
    // A handler that returned quietly held its slot for holdForHandlerMs instead.
    await pipeline(artifact.content, res);
  });

  app.put('/v1/artifacts/*path', async (req, res) => {
    const path = artifactPath(req.params.path);
    const expected = parseReprDigest(req.get('repr-digest'));
    const declared = Number(req.get('content-length'));
    if (maxArtifactBytes !== undefined && declared > maxArtifactBytes) {
      throw new SecurityError('payload_too_large', { reason: 'app.artifact_too_large' });
    }
    // The bytes are stored as sent and served back without a coding: a gzip body would be
    // kept as gzip, its content (a pickle, say) never read by the upload check.
    const coding = req.get('content-encoding')?.trim().toLowerCase();
    if (coding !== undefined && coding !== '' && coding !== 'identity') {
      throw new SecurityError('invalid_argument', {
        reason: 'body_encoding_unsupported',
        details: { field: 'content-encoding' },
      });
    }
    // The body is streamed into the store (no body parser): it hashes and writes chunk by
    // chunk, and renames into place only once the digest matches.
    const info = await store.put(path, expected, bodyChunks(req, req.fluxguard.signal), req.fluxguard.signal);
    res.status(201).json({ path: info.path, sha256: info.sha256, size: info.size });
  });

  app.delete('/v1/artifacts/*path', async (req, res) => {
    await store.delete(artifactPath(req.params.path));
    res.status(204).end();
  });

  // POST /v1/artifacts/{path}:import with {"url", "sha256"}: the URL is the client's, fetched
  // through the guard (https, no private address, checked redirects, bounded) once the path and
  // digest have passed, then stored like an upload, digest and content checked.
  app.post(
    '/v1/artifacts/*path',
    // The request message's limit of gRPC (the policy's `maxMessageBytes`): what one transport
    // takes to the schema, the other does too, and both refuse it alike.
    jsonBody({ limit: '16kb', maxDepth: 2, maxKeys: 4 }),
    validate({ body: IMPORT_BODY }),
    async (req, res) => {
      const segments = req.params.path as unknown as string[];
      const last = segments.at(-1) ?? '';
      if (!last.endsWith(':import') || urlGuard === undefined) {
        throw new SecurityError('not_found', { reason: 'route_not_found' });
      }
      const path = artifactPath([...segments.slice(0, -1), last.slice(0, -':import'.length)]);
      const { url, sha256 } = req.body as { url: string; sha256: string };
      const { signal } = req.fluxguard;
      const info = await store.putFetched(
        path,
        sha256,
        async () => (await urlGuard.open(url, { signal })).body,
        signal,
      );
      res.status(201).json({ path: info.path, sha256: info.sha256, size: info.size });
    },
  );

  app.use(guard.after);
  return { app, listener: guard.wrap(app) };
}

/**
 * Starts the reference HTTPS server: TLS and client certificates from `security.tls` (reloaded
 * from disk when renewed), the policy's HTTP rules (checked against the routes at start-up),
 * JWT and certificate roles, and timeouts tighter than Node's (`createSecureServer`).
 *
 * @example
 * ```ts
 * const audit = createAuditLogger();
 * const security = await loadReferenceSecurity({ devDir: '.fluxguard/dev', audit });
 * const server = await startHttpServer({ port: 0, dataDir: '/tmp/artifacts', security, audit });
 * console.log(server.url); // https://127.0.0.1:40123
 * await server.close();
 * await security.close();
 * ```
 */
export async function startHttpServer(options: HttpServerOptions): Promise<StartedHttpServer> {
  const { security } = options;
  // Plain JavaScript callers too: no security, no server (never an unauthenticated fallback).
  if (typeof security !== 'object' || typeof security.guard !== 'function') {
    throw new TypeError('startHttpServer: "security" is required (loadReferenceSecurity)');
  }
  const host = options.host ?? '127.0.0.1';
  const audit = options.audit ?? createAuditLogger();
  const guard = security.guard('http', HTTP_OPERATIONS);
  const { uncovered } = guard.rbac.checkServed(HTTP_OPERATIONS);
  if (uncovered.length > 0) {
    audit.logger.warn({ operations: uncovered }, 'no RBAC rule names these routes: every call to them is denied');
  }
  const store = await openReferenceStore(options, audit);
  const { listener } = createApp({
    store,
    audit,
    guard,
    controls: [createHeaderLimits(), security.concurrency],
    urlGuard: security.urlGuard,
    ...(options.maxArtifactBytes === undefined ? {} : { maxArtifactBytes: options.maxArtifactBytes }),
  });
  const requestTimeoutMs = options.requestTimeoutMs ?? security.policy.timeouts?.maxMs ?? TIMEOUT_DEFAULTS.maxMs;
  const { connections } = security;
  const server = createSecureServer(listener, {
    audit,
    tls: security.tls,
    reload: true,
    requestTimeoutMs,
    // A connection that has not sent a request's headers within the idle time is closed (the
    // gRPC port closes one without a call after the same time).
    headersTimeoutMs: Math.min(connections.idleMs, requestTimeoutMs),
    handshakeTimeoutMs: connections.handshakeTimeoutMs,
    maxConnections: connections.maxConnections,
    maxConnectionsPerAddress: connections.maxConnectionsPerAddress,
  });
  const port = await listen(server, options.port ?? 8443, host);
  let closing: Promise<void> | undefined;
  return Object.freeze({
    port,
    url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () => (closing ??= shutdown(server)),
  });
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function shutdown(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const force = setTimeout(() => {
      server.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    force.unref();
    server.close((err) => {
      clearTimeout(force);
      if (err === undefined) resolve();
      else reject(err);
    });
    server.closeIdleConnections();
  });
}

/**
 * The artifact path from the `*path` wildcard: Express gives its segments already
 * percent-decoded. A segment that decoded to something holding `/` (`a%2Fb`) is refused rather
 * than silently turned into two segments; `..`, `.` and the rest are refused by the store's
 * path resolver.
 */
function artifactPath(segments: unknown): string {
  if (
    !Array.isArray(segments) ||
    segments.length === 0 ||
    !segments.every((s): s is string => typeof s === 'string' && !s.includes('/'))
  ) {
    throw new SecurityError('invalid_argument', { details: { field: 'path' }, reason: 'app.bad_path_segment' });
  }
  return segments.join('/');
}

/**
 * The request body as binary chunks. When the store stops early (digest or size refused), the
 * request is left undestroyed so that the refusal can still be sent; Node discards the rest of
 * the body, within the server's request timeout.
 */
async function* bodyChunks(req: express.Request, signal: AbortSignal): AsyncIterable<Uint8Array> {
  const chunks: AsyncIterator<unknown> = req.iterator({ destroyOnReturn: false });
  // A stalled client sends no next chunk: the request's signal (its deadline, its idle limit)
  // ends the wait, so the store removes its temporary file at once.
  const aborted = new Promise<never>((_resolve, reject) => {
    signal.addEventListener(
      'abort',
      () => {
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });
  aborted.catch(() => undefined);
  signal.throwIfAborted();
  for (;;) {
    const next = await Promise.race([chunks.next(), aborted]);
    if (next.done === true) return;
    if (!(next.value instanceof Uint8Array)) throw new TypeError('request body yielded a non-binary chunk');
    yield next.value;
  }
}
