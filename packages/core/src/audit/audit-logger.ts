import { pino, type DestinationStream, type Level, type Logger } from 'pino';
import { ConfigurationError, isFluxguardError } from '../errors/fluxguard-error.js';
import { isSecurityError, type SecurityErrorReason } from '../errors/security-error.js';
import { toPublicError, type PublicError } from '../errors/public-error.js';
import type { SecurityErrorCode } from '../errors/codes.js';
import { resolveOptions } from '../options/resolve-options.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { REDACTED, REDACTED_PATHS, causeLine, escapeLogText, scrubDeep } from './redaction.js';
import { wholeNumber } from '../options/whole-number.js';
import { peerClientKey } from '../ratelimit/client-address.js';
import { listenWeakly, type ListenerTarget } from '../events/listen-weakly.js';
import { isStalledOutput, standardOutput } from './standard-output.js';
import type { ServerEndReason } from '../transport/server-ending.js';

/**
 * The `reason` of an audit line: a {@link SecurityErrorReason} (RBAC's `rbac.shadow_denied`
 * lines carry an `RbacReason`, part of it); the error code itself for a `SecurityError` that
 * names no reason; `unhandled_error` for anything thrown that is not a `SecurityError`; on a
 * `request.cancelled` line, a {@link ServerEndReason} when the server itself ended the call's
 * connection (`server_shutdown`, `trust_revoked`, `write_stalled`, `request_timeout`,
 * `connection_cap`, `pipelined_refused`).
 *
 * @example
 * ```ts
 * import type { AuditReason } from '@fluxguard/core';
 * const serverFaults: AuditReason[] = ['unhandled_error', 'jwks_unavailable', 'internal'];
 * ```
 */
export type AuditReason = SecurityErrorReason | SecurityErrorCode | 'unhandled_error' | ServerEndReason;

/**
 * One audit log line. Field names are stable; dashboards and alerts may rely on them.
 *
 * | field | meaning |
 * | --- | --- |
 * | `event` | what happened: `request.denied`, `request.failed`, `request.cancelled` (the first and the last folded past a flood as `….folded` with a `count`), or a control's own (`rbac.shadow_denied`, ...); start-up and background lines (`rbac.shadow_mode`, `jwt.jwks_refresh_failed`) carry only `event` and their own fields |
 * | `outcome` | `allowed`, `denied` (a control refused the call), `error` (the server failed), or `cancelled` on fluxguard's `request.cancelled` lines (the call ended while the handler worked: its client left, or the server cut its connection; a call a control refused is `denied` even when its client left while the control was deciding, and one its client left before any handler ran, not refused, has no line) |
 * | `reason` | a short machine reason ({@link AuditReason}: `token_expired`, `path_traversal`, `unhandled_error`, `app.…`); on `request.cancelled` lines only when the server cut the call's connection: `server_shutdown` (the end of a shutdown's grace), `trust_revoked` (a TLS trust reload no longer accepts the client's certificate), `write_stalled` (the client took none of the bytes waiting in its connection for the write-stall limit: a reader that stopped, as in a slow-reader attack), `request_timeout` (an HTTPS request at work whose body had not all come by the server's request timeout), `connection_cap` (the port at its `maxConnections` closed the connection, serving nothing but a call that waited on its client, to let a new client in) or `pipelined_refused` (HTTPS: the server closed the connection for what its client pipelined behind the request at work, refused unanswered: malformed bytes, a `CONNECT`, more requests at once than Node holds), none when the client left on its own |
 * | `operation` | gRPC `/pkg.Service/Method` or HTTP `METHOD /route/:pattern` |
 * | `peer` | the remote address |
 * | `subject` | the authenticated principal's subject, when known |
 * | `requestId` | the id returned to the client in `x-request-id` |
 * | `transport` | `grpc` or `http` |
 * | `code` | the public error code sent to the client |
 * | `detail` | the refusal's own facts, e.g. a rate limit's `rule` and `key` kind (never a raw token) |
 * | `err` | the full internal cause (message, stack, errno, path), secrets scrubbed; never sent to a client |
 *
 * @example
 * ```ts
 * import type { AuditEvent } from '@fluxguard/core';
 * const event: AuditEvent = { event: 'request.denied', outcome: 'denied', reason: 'missing_role',
 *   operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact', requestId: 'r-1', transport: 'grpc' };
 * audit.record(event);
 * ```
 */
export interface AuditEvent {
  /**
   * What happened: `request.denied`, `request.failed`, or a control's own event
   * (`rbac.shadow_denied`, ...); also the line's message.
   */
  readonly event: string;
  /**
   * `allowed`, `denied` (a control refused the call) or `error` (the server failed); sets the
   * level: `info`, `warn`, `error`.
   */
  readonly outcome: 'allowed' | 'denied' | 'error';
  /** A short machine reason ({@link AuditReason}), e.g. `token_expired`. */
  readonly reason?: AuditReason | undefined;
  /** gRPC `/pkg.Service/Method`; HTTP `METHOD /route/:pattern` (`METHOD <unmatched>` when no route or rule matched). */
  readonly operation: string;
  /** The remote address, `host:port` (`[v6]:port`). */
  readonly peer?: string | undefined;
  /** The authenticated principal's subject, when known. */
  readonly subject?: string | undefined;
  /** The id returned to the client in `x-request-id`. */
  readonly requestId: string;
  /** The transport the call arrived on. */
  readonly transport?: 'grpc' | 'http' | undefined;
  /** The public error code sent to the client (in a shadow-mode line, the one enforce mode would send). */
  readonly code?: SecurityErrorCode | undefined;
  /**
   * How long the call took, in milliseconds, when the writer of the line measured it; fluxguard's
   * own lines leave it out.
   */
  readonly durationMs?: number | undefined;
  /** A refusal's own facts (`SecurityError.auditFields`), e.g. a rate limit's `rule` and `key`. */
  readonly detail?: Readonly<Record<string, string | number>> | undefined;
}

/**
 * Where a failure happened: the fields of {@link AuditEvent} that an adapter knows.
 *
 * @example
 * ```ts
 * import type { FailureContext } from '@fluxguard/core/adapter';
 * const context: FailureContext = { operation: 'GET /v1/artifacts/*path', peer: '203.0.113.9:51234', requestId, transport: 'http' };
 * const answer = audit.recordFailure(error, context); // logged in full; answer is what the client sees
 * ```
 */
export type FailureContext = Pick<AuditEvent, 'operation' | 'peer' | 'subject' | 'requestId' | 'transport'>;

/**
 * Options of {@link createAuditLogger}.
 *
 * @example
 * ```ts
 * import type { AuditLoggerOptions } from '@fluxguard/core';
 * const options: AuditLoggerOptions = { level: 'warn', name: 'artifact-store', redact: ['req.headers.cookie'] };
 * ```
 */
export interface AuditLoggerOptions {
  /** Minimum level written. Default `info`. */
  readonly level?: Level | 'silent';
  /**
   * Where lines go. Default: standard output, written asynchronously (and flushed at exit),
   * holding at most 16 MiB of lines its reader has not taken yet: while a log shipper stalls,
   * lines past that are dropped, counted as lost and reported as below (`ERR_AUDIT_BACKLOG_FULL`),
   * rather than held in memory without bound. A stalled standard output never keeps the process
   * from ending: at exit it has one second without progress to take what is left, and the bytes
   * it did not take are reported on standard error with the code below. Not with `logger`.
   *
   * A `write` that throws loses that line, and nothing else: a refusal keeps its status, code
   * and request id, and the call goes on as if the line had been written. The loss is reported
   * as a process warning with code `FLUXGUARD_AUDIT_WRITE_FAILED`: at most one a minute per
   * audit logger, with the count of lines lost since the previous one (those lost within its
   * minute are told when the minute ends) and the error's name and `code`, never the line or the
   * error's message, which may quote it.
   *
   * A stream that fails later (a file it cannot open, a full disk, a reset socket) emits
   * 'error', which with no listener ends the process: the audit logger attaches one 'error'
   * listener to the destination (and to the standard-output stream it makes when none is
   * given) that reports the loss the same way. That listener is also the stream's only one
   * unless the application adds its own, so such errors of a stream given here no longer end
   * the process: listen to it to act on them. A Node stream its error destroyed drops whatever
   * it is given next; those lines count as lost too, so the warning goes on each minute until
   * the service is restarted with a working destination.
   */
  readonly destination?: DestinationStream | undefined;
  /**
   * An existing pino logger (the application's, or pino-http's `logger`) to write through, so
   * that a service keeps one logger and one destination: fluxguard writes through a child of it
   * with its own `name`, redaction and error serializer; the parent's level applies unless
   * `level` is given. Not with `destination`.
   */
  readonly logger?: Logger | undefined;
  /** The `name` field of every line. Default `fluxguard`. */
  readonly name?: string;
  /** Extra pino redaction paths, on top of the built-in credential paths. */
  readonly redact?: readonly string[];
  /**
   * Folding of repeated refusals, so that a flood costs little CPU and disk: within each
   * `intervalMs`, the first `after` refusals with one reason from one peer address (and
   * subject) are logged in full; the rest are counted and written as one
   * `request.denied.folded` line when the interval ends. Calls their clients left while the
   * handler worked (`request.cancelled`) fold the same way, into `request.cancelled.folded`;
   * those the server cut (a shutdown, a revoked certificate, a stall) fold by their
   * `reason` on their own, so a shutdown that cuts 500 calls of one client writes 50 lines and
   * one folded line with `reason: 'server_shutdown'` and a count of 450. `maxLines` bounds the lines written in full
   * in one interval, all clients together: past it, each client's refusals are counted into its
   * folded line from the first, so that a flood spread over many addresses (any IPv6 host has
   * a /48 of /64s) writes at most `maxLines` full lines and one folded line per client (at most
   * 10,000) an interval. `false` logs every refusal and every cancelled call.
   * Default `{ after: 50, intervalMs: 10_000, maxLines: 10_000 }`: an ordinary client never reaches it.
   *
   * @example
   * ```ts
   * createAuditLogger({ foldRefusals: { after: 20, intervalMs: 60_000, maxLines: 5_000 } });
   * ```
   */
  readonly foldRefusals?:
    | {
        readonly after?: number | undefined;
        readonly intervalMs?: number | undefined;
        readonly maxLines?: number | undefined;
      }
    | false;
}

/**
 * Writes audit events and failures; one per application, shared by both adapters.
 *
 * @example
 * ```ts
 * import { createAuditLogger, type AuditLogger } from '@fluxguard/core';
 * const audit: AuditLogger = createAuditLogger();
 * audit.logger.info({ artifacts: 3 }, 'store opened'); // the application's own line, same redaction
 * ```
 */
export interface AuditLogger {
  /** The underlying pino logger, for the application's own lines (same redaction). */
  readonly logger: Logger;
  /** Writes one audit event: `warn` for denials, `error` for errors, `info` otherwise. */
  record(event: AuditEvent, err?: unknown): void;
  /**
   * Logs a failure with its full cause and returns the public error for the client: the one
   * place where "what happened" and "what the client sees" are decided, for both transports.
   */
  recordFailure(err: unknown, context: FailureContext): PublicError;
  /**
   * Writes the short `request.cancelled` line (`info`, outcome `cancelled`, no stack) of a call
   * that ended while its handler worked. `error`, when given, becomes the line's `error` field
   * (a name, such as `AbortError`); fluxguard's adapters give none: they write the line when the
   * cut is noticed, before the handler has done anything with it, and what it throws afterwards
   * goes to a debug line with the error. `endedBy` says the server cut the call's connection
   * itself, and why (the line's `reason`: {@link ServerEndReason}); without it, the client left.
   * Folded as refusals are (`request.cancelled.folded`), by `reason` too: a client leaves calls
   * at will, and a shutdown cuts every call in flight at once.
   */
  recordCancelled(context: FailureContext, error?: string, endedBy?: ServerEndReason): void;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const FOLD_DEFAULTS = Object.freeze({ after: 50, intervalMs: 10_000, maxLines: 10_000 });

const DEFAULTS: Readonly<Required<Omit<AuditLoggerOptions, 'destination' | 'logger'>>> = Object.freeze({
  level: 'info',
  name: 'fluxguard',
  redact: Object.freeze([]),
  foldRefusals: FOLD_DEFAULTS,
});

/**
 * Refusals with a server-side code that the client brings about: a caller over its share of
 * the calls in flight, a stream that stalls, a request never finished or not sent whole by the
 * deadline (or only just before it), an answer not read by it, a deadline the client chose
 * itself. They are written (and folded) like any other refusal, not as errors with a stack:
 * any client can make them at will.
 */
const CLIENT_CAUSED: ReadonlySet<string> = new Set([
  'concurrency_limit',
  'inbound_idle',
  'request_timeout',
  'answer_unread',
  'request_unfinished',
  'request_late',
  'client_deadline',
]);

/**
 * Server faults that only say a backend is down: the same for every call while it lasts, and
 * the cause says which. Each call still gets its line (its request id finds it), but a short
 * one: no stack, the cause as one scrubbed line. An outage under load wrote 1.4 KB a call.
 */
const BACKEND_DOWN: ReadonlySet<string> = new Set([
  'denylist_unavailable',
  'ratelimit_store_unavailable',
  'jwks_unavailable',
]);

/**
 * A subject as a line may hold it: escaped as the lines of fluxguard's own logger are, so that a
 * line written through the application's logger (`logger`, whose writes fluxguard does not see)
 * is too.
 */
function safeSubject(subject: string | undefined): string | undefined {
  return subject === undefined ? undefined : escapeLogText(subject);
}

/** Distinct peers and reasons folded at once; beyond, refusals fold by reason alone. */
const MAX_FOLDED_KEYS = 10_000;

/** Distinct operations a folded line names. */
const MAX_FOLDED_OPERATIONS = 8;

/** A pino logger made by `make`; pino's own refusal (a `redact` path it cannot read) as a ConfigurationError. */
function pinoOrRefuse(make: () => Logger): Logger {
  try {
    return make();
  } catch (cause) {
    throw new ConfigurationError(
      'createAuditLogger: pino refused the options: a "redact" path it cannot read (paths are written as `req.headers.cookie`, `body["x-key"]`, `*.secret`)',
      { cause },
    );
  }
}

/**
 * Creates the audit logger (pino) that redacts authorization headers, cookies, tokens,
 * passwords and private keys, and scrubs tokens and keys from error text.
 *
 * @example
 * ```ts
 * import { createAuditLogger } from '@fluxguard/core';
 * const audit = createAuditLogger({ level: 'info' });
 * audit.record({ event: 'request.denied', outcome: 'denied', reason: 'token_expired',
 *   operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact', requestId: 'r-1' });
 *
 * // Or through the service's own pino logger (one destination, one level):
 * import { pino } from 'pino';
 * const shared = createAuditLogger({ logger: pino() });
 * ```
 */
export function createAuditLogger(options?: AuditLoggerOptions): AuditLogger {
  const opts = resolveOptions('createAuditLogger', DEFAULTS, options, ['destination', 'logger']);
  if (!(LEVELS as readonly string[]).includes(opts.level)) {
    throw new ConfigurationError(`createAuditLogger: "level" must be one of ${LEVELS.join(', ')}`);
  }
  if (!Array.isArray(opts.redact) || !opts.redact.every((p) => typeof p === 'string')) {
    throw new ConfigurationError('createAuditLogger: "redact" must be an array of pino paths');
  }
  if (typeof opts.name !== 'string' || opts.name.trim() === '') {
    throw new ConfigurationError('createAuditLogger: "name" must be a non-empty string');
  }
  // Else pino took it, and every line was lost at run time with only a process warning.
  const given = options?.destination as { readonly write?: unknown } | null | undefined;
  if (given !== undefined && typeof given?.write !== 'function') {
    throw new ConfigurationError('createAuditLogger: "destination" must be a writable stream (an object with write())');
  }
  const redact = { paths: [...REDACTED_PATHS, ...opts.redact], censor: REDACTED };
  const serializers = { err: (err: unknown) => scrubDeep(pino.stdSerializers.err(err as Error)) };
  const parent = options?.logger;
  const lineLost = writeFailureReporter();
  /** The stream the lines go to, and the 'error' it emitted (see watchStreamErrors). */
  let stream: unknown;
  let streamFailed: { error: unknown } | undefined;
  let logger: Logger;
  if (parent === undefined) {
    const destination = options?.destination ?? standardOutput(lineLost);
    logger = pinoOrRefuse(() =>
      pino(
        {
          name: opts.name,
          level: opts.level,
          timestamp: pino.stdTimeFunctions.isoTime,
          redact,
          serializers,
          hooks: {
            // Every field of every line, whatever put it there: see escapeLogText.
            streamWrite: escapeLogText,
            // A destination that throws would otherwise turn the refusal being logged into a
            // 500 / INTERNAL; every line goes through here, the controls' own lines included.
            logMethod(args, method) {
              // A Node stream is destroyed by its error and then drops every line it is given
              // without a word (pino's own streams, after EPIPE, are made to): those lines are
              // lost too, and the warning must go on saying so.
              if (streamFailed !== undefined && dropsEveryLine(stream, streamFailed.error)) {
                lineLost(streamFailed.error);
                return;
              }
              try {
                method.apply(this, args);
              } catch (error) {
                lineLost(error);
              }
            },
          },
        },
        destination,
      ),
    );
    // Undefined only when something replaced `process.stdout.write`: pino writes through it.
    stream = destination;
    // Watched for as long as this logger lives (the stream may outlive it: one per tenant).
    watchStreamErrors(stream, logger, (error) => {
      // pino's own listener on its streams emits an error again once it has seen it: one loss.
      // A stalled standard output loses nothing: it is tried again.
      if (streamFailed?.error === error || isStalledOutput(error)) return;
      streamFailed = { error };
      lineLost(error);
    });
  } else {
    if (!isPinoLogger(parent)) {
      throw new ConfigurationError('createAuditLogger: "logger" must be a pino logger (pino() or a child of one)');
    }
    if (options?.destination !== undefined) {
      throw new ConfigurationError(
        'createAuditLogger: give "logger" or "destination", not both (lines go where the logger writes)',
      );
    }
    logger = pinoOrRefuse(() =>
      parent.child(
        { name: opts.name },
        { redact, serializers, ...(options?.level === undefined ? {} : { level: opts.level }) },
      ),
    );
  }

  function record(event: AuditEvent, err?: unknown): void {
    const line = err === undefined ? { ...event } : { ...event, err: asError(err) };
    if (event.outcome === 'error') logger.error(line, event.event);
    else if (event.outcome === 'denied') logger.warn(line, event.event);
    else logger.info(line, event.event);
  }

  const fold = createFolding(logger, opts.foldRefusals, lineLost);

  function recordFailure(err: unknown, context: FailureContext): PublicError {
    const publicError = toPublicError(err, context.requestId);
    const isServerFault =
      (publicError.code === 'internal' ||
        publicError.code === 'unavailable' ||
        publicError.code === 'deadline_exceeded') &&
      !(isSecurityError(err) && (err.clientCaused || (err.reason !== undefined && CLIENT_CAUSED.has(err.reason))));
    if (!isServerFault && isSecurityError(err)) {
      // An expected refusal (no token, no permission, a bad argument): its code and reason say
      // it all. No stack, and the cause only as one scrubbed line: a flood of refusals must
      // cost little CPU and disk.
      if (fold?.('request.denied', err.reason ?? err.code, context, publicError.code) === true) return publicError;
      logger.warn(
        {
          ...context,
          subject: safeSubject(context.subject ?? err.subject),
          event: 'request.denied',
          outcome: 'denied',
          reason: err.reason ?? err.code,
          code: publicError.code,
          ...(err.auditFields === undefined ? {} : { detail: err.auditFields }),
          // A fluxguard error as the cause says only the public text again: its reason is the line's.
          ...(err.cause instanceof Error && !isFluxguardError(err.cause) ? { cause: causeLine(err.cause) } : {}),
        },
        'request.denied',
      );
      return publicError;
    }
    if (isServerFault && isSecurityError(err) && err.reason !== undefined && BACKEND_DOWN.has(err.reason)) {
      logger.error(
        {
          ...context,
          subject: safeSubject(context.subject ?? err.subject),
          event: 'request.failed',
          outcome: 'error',
          reason: err.reason,
          code: publicError.code,
          ...(err.cause instanceof Error ? { cause: causeLine(innermost(err.cause)) } : {}),
        },
        'request.failed',
      );
      return publicError;
    }
    record(
      {
        ...context,
        subject: safeSubject(context.subject ?? (isSecurityError(err) ? err.subject : undefined)),
        event: isServerFault ? 'request.failed' : 'request.denied',
        outcome: isServerFault ? 'error' : 'denied',
        reason: isSecurityError(err) ? (err.reason ?? err.code) : 'unhandled_error',
        code: publicError.code,
        ...(isSecurityError(err) && err.auditFields !== undefined ? { detail: err.auditFields } : {}),
      },
      err,
    );
    return publicError;
  }

  function recordCancelled(context: FailureContext, error?: string, endedBy?: ServerEndReason): void {
    if (fold?.('request.cancelled', endedBy, context, undefined) === true) return;
    logger.info(
      {
        ...context,
        subject: safeSubject(context.subject),
        event: 'request.cancelled',
        outcome: 'cancelled',
        ...(endedBy === undefined ? {} : { reason: endedBy }),
        ...(error === undefined ? {} : { error }),
      },
      'request.cancelled',
    );
  }

  // Through the application's logger the hook above is not there (a pino child takes no
  // hooks): a refusal still keeps its answer when that logger's destination throws.
  return Object.freeze({
    logger,
    record: (event: AuditEvent, err?: unknown): void => {
      try {
        record(event, err);
      } catch (error) {
        lineLost(error);
      }
    },
    recordFailure: (err: unknown, context: FailureContext): PublicError => {
      try {
        return recordFailure(err, context);
      } catch (error) {
        lineLost(error);
        return toPublicError(err, context.requestId);
      }
    },
    recordCancelled: (context: FailureContext, error?: string, endedBy?: ServerEndReason): void => {
      try {
        recordCancelled(context, error, endedBy);
      } catch (thrown) {
        lineLost(thrown);
      }
    },
  });
}

/** The shortest time between two `FLUXGUARD_AUDIT_WRITE_FAILED` warnings of one audit logger. */
const WRITE_FAILURE_WARNING_MS = 60_000;

/** A name or errno code as an error carries it, e.g. `TypeError`, `ENOSPC`; nothing else is shown. */
const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]{0,39}$/;

/**
 * Counts the lines a destination failed to write and reports them as a process warning, at most
 * once per {@link WRITE_FAILURE_WARNING_MS}: a failing disk must not become a flood of warnings.
 * The error's message is left out, as a destination's error may quote the line it was given.
 */
function writeFailureReporter(): (error: unknown) => void {
  let lost = 0;
  /** The error of the first line lost since the last warning: the one the warning names. */
  let first: unknown;
  let warnedAt: number | undefined;
  let pending: ReturnType<typeof setTimeout> | undefined;
  const warn = (): void => {
    clearTimeout(pending);
    pending = undefined;
    warnedAt = Date.now();
    const { name, code } = (typeof first === 'object' && first !== null ? first : {}) as {
      name?: unknown;
      code?: unknown;
    };
    const kind = [name, code].filter((part) => typeof part === 'string' && IDENTIFIER.test(part)).join(' ');
    process.emitWarning(
      `createAuditLogger: the destination failed to write ${String(lost)} audit line(s)${kind === '' ? '' : ` (${kind})`}; they are lost, and calls are answered as if they had been written`,
      { code: 'FLUXGUARD_AUDIT_WRITE_FAILED' },
    );
    lost = 0;
    first = undefined;
  };
  return (error) => {
    if (lost === 0) first = error;
    lost += 1;
    const now = Date.now();
    // A clock that went back past the last warning says nothing of how long it has been.
    if (warnedAt === undefined || now < warnedAt || now - warnedAt >= WRITE_FAILURE_WARNING_MS) {
      warn();
      return;
    }
    // The lines lost after a warning are told at the end of its minute, not only when another
    // line is lost after that: a burst (a full backlog drops thousands at once) was reported as
    // one line. Unreferenced: the warning keeps no process alive.
    pending ??= setTimeout(warn, warnedAt + WRITE_FAILURE_WARNING_MS - now);
    pending.unref();
  };
}

/**
 * A stream fails after `write` returned (a file that cannot be opened, a full disk, a socket
 * reset): it emits 'error', and an 'error' without a listener ends the process. One listener per
 * stream turns that into a lost line for each audit logger writing to it, reported as a throwing
 * `write` is. It is attached to the destination given, and to the standard-output stream
 * {@link standardOutput} makes: not to `process.stdout` itself (given as the destination, or
 * written by pino when something replaced its `write`), which is the application's, nor to the
 * stream of the application's own `logger`. The loggers are held weakly, through their pino
 * logger (`owner`): a stream that outlives them (one logger per tenant on one file) keeps none
 * of them alive, and its listener stays, so that its errors still end nothing.
 */
function watchStreamErrors(stream: unknown, owner: object, report: (error: unknown) => void): void {
  if (stream === process.stdout) return;
  const emitter = stream as Partial<ListenerTarget> | null;
  if (typeof emitter?.on !== 'function') return;
  listenWeakly(emitter as ListenerTarget, 'error', owner, report);
}

/**
 * Whether a stream that emitted `error` now drops whatever it is given: a destroyed Node stream,
 * or a stream of pino's after EPIPE (pino makes its `write` do nothing, and destroys nothing).
 */
function dropsEveryLine(stream: unknown, error: unknown): boolean {
  if ((stream as { destroyed?: unknown }).destroyed === true) return true;
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'EPIPE';
}

function isPinoLogger(value: unknown): value is Logger {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<Logger>).child === 'function' &&
    typeof (value as Partial<Logger>).warn === 'function' &&
    typeof (value as Partial<Logger>).level === 'string'
  );
}

/** The lines that fold: refusals, and calls their clients left while the handler worked. */
type FoldedEvent = 'request.denied' | 'request.cancelled';

interface Folded {
  count: number;
  /** How many of `count` were written in full. */
  written: number;
  readonly event: FoldedEvent;
  /**
   * A refusal's reason and public code; a cancelled call has no code, and a reason only when the
   * server cut its connection (part of the key: a shutdown's cut is never counted as clients
   * leaving, nor the other way round).
   */
  readonly reason: AuditReason | undefined;
  readonly code: SecurityErrorCode | undefined;
  readonly peer: string | undefined;
  readonly subject: string | undefined;
  readonly transport: FailureContext['transport'];
  operation: string;
  /** The distinct operations of the folded refusals, at most {@link MAX_FOLDED_OPERATIONS}. */
  readonly operations: string[];
  /** Whether more distinct operations were folded than `operations` holds. */
  moreOperations: boolean;
  firstRequestId: string | undefined;
  lastRequestId: string | undefined;
}

/** Whether one line was folded (counted, not written): see {@link createFolding}. */
type RefusalFold = (
  event: FoldedEvent,
  reason: AuditReason | undefined,
  context: FailureContext,
  code: SecurityErrorCode | undefined,
) => boolean;

/**
 * The folding of {@link AuditLoggerOptions.foldRefusals}: returns a function that says whether
 * one line was folded (counted, not written). Counts are flushed by one timer per interval, and
 * at the process's exit.
 */
function createFolding(logger: Logger, option: unknown, lineLost: (error: unknown) => void): RefusalFold | undefined {
  if (option === false) return undefined;
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError('createAuditLogger: "foldRefusals" must be false or { after, intervalMs, maxLines }');
  }
  checkKnownKeys(option, ['after', 'intervalMs', 'maxLines'], 'createAuditLogger: "foldRefusals"', 'option');
  // A key left out, or given as undefined, keeps its default.
  const partial = option as { after?: unknown; intervalMs?: unknown; maxLines?: unknown };
  const given = {
    after: partial.after ?? FOLD_DEFAULTS.after,
    intervalMs: partial.intervalMs ?? FOLD_DEFAULTS.intervalMs,
    maxLines: partial.maxLines ?? FOLD_DEFAULTS.maxLines,
  };
  const after = wholeNumber(given.after, 'createAuditLogger: "foldRefusals.after"');
  const intervalMs = wholeNumber(given.intervalMs, 'createAuditLogger: "foldRefusals.intervalMs"', {
    min: 100,
    unit: 'ms',
  });
  const maxLines = wholeNumber(given.maxLines, 'createAuditLogger: "foldRefusals.maxLines"', { min: 1 });
  let counts = new Map<string, Folded>();
  // Lines written in full this interval, all keys together.
  let written = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const flush = (): void => {
    timer = undefined;
    const folded = counts;
    counts = new Map();
    written = 0;
    for (const entry of folded.values()) {
      if (entry.count === entry.written) continue;
      const cancelled = entry.event === 'request.cancelled';
      // From a timer: a throw here (the application's logger, which has no hook of ours) would
      // end the process.
      try {
        logger[cancelled ? 'info' : 'warn'](
          {
            event: `${entry.event}.folded`,
            outcome: cancelled ? 'cancelled' : 'denied',
            reason: entry.reason,
            code: entry.code,
            peer: entry.peer,
            subject: safeSubject(entry.subject),
            transport: entry.transport,
            operation: entry.operation,
            operations: entry.operations,
            ...(entry.moreOperations ? { moreOperations: true } : {}),
            count: entry.count - entry.written,
            intervalMs,
            firstRequestId: entry.firstRequestId,
            lastRequestId: entry.lastRequestId,
          },
          `${entry.event}.folded`,
        );
      } catch (error) {
        lineLost(error);
      }
    }
  };

  const folds: RefusalFold = (event, reason, context, code) => {
    // One client: its address without the port (each connection has its own port), an IPv6
    // one by its /64 as rate limits count it, so that a client rotating through the addresses
    // of its prefix is one client here too.
    const peer = context.peer === undefined ? undefined : (peerClientKey(context.peer) ?? context.peer);
    const kind = `${event}\u0000${reason ?? ''}`;
    let key = `${kind}\u0000${peer ?? ''}\u0000${context.subject ?? ''}`;
    if (counts.size >= MAX_FOLDED_KEYS && !counts.has(key)) key = `${kind}\u0000*`;
    let entry = counts.get(key);
    if (entry === undefined) {
      const wide = key.endsWith('\u0000*');
      entry = {
        count: 0,
        written: 0,
        event,
        reason,
        code,
        peer: wide ? '*' : peer,
        subject: wide ? undefined : safeSubject(context.subject),
        transport: context.transport,
        operation: context.operation,
        operations: [],
        moreOperations: false,
        firstRequestId: undefined,
        lastRequestId: undefined,
      };
      counts.set(key, entry);
      if (timer === undefined) {
        timer = setTimeout(flush, intervalMs);
        timer.unref();
      }
    }
    entry.count += 1;
    if (entry.written < after && written < maxLines) {
      entry.written += 1;
      written += 1;
      return false;
    }
    entry.operation = context.operation;
    // Each operation the folded refusals were for, not only the last: 50 PUTs then 5 DELETEs
    // folded into a line that named PUT alone.
    if (!entry.operations.includes(context.operation)) {
      if (entry.operations.length < MAX_FOLDED_OPERATIONS) entry.operations.push(context.operation);
      else entry.moreOperations = true;
    }
    entry.firstRequestId ??= context.requestId;
    entry.lastRequestId = context.requestId;
    return true;
  };
  // The counts of the last interval at a stop (a deploy's SIGTERM): the timer is unref'd, and a
  // flood just before it left no trace. Before the stream's own exit flush, which writes them out.
  listenWeakly(
    process,
    'exit',
    folds,
    () => {
      if (counts.size > 0) flush();
    },
    { first: true, callFirst: true },
  );
  return folds;
}

/**
 * An error on one short line for a log: its type and scrubbed message, and its deepest cause's
 * when it has one, no stack.
 *
 * @internal
 */
export function errorLine(err: Error): string {
  const deepest = innermost(err);
  return deepest === err ? causeLine(err) : `${causeLine(err)} (${causeLine(deepest)})`;
}

/** The deepest `Error` of a cause chain (a store's own error wraps the client's), at most 5 down. */
function innermost(cause: Error): Error {
  let deepest = cause;
  for (let i = 0; i < 5 && deepest.cause instanceof Error; i++) deepest = deepest.cause;
  return deepest;
}

function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : 'non-error value thrown', { cause: err });
}
