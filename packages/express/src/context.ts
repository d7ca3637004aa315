import type { IncomingMessage, ServerResponse } from 'node:http';
import { SecurityError, type AuthenticationMethod, type Principal } from '@fluxguard/core';

/**
 * What fluxguard knows about one HTTP request, available to every later middleware and
 * handler as `req.fluxguard`.
 *
 * - `requestId`: the id sent back in `x-request-id` and written to every log line.
 * - `signal`: aborted when the client goes away before the response has finished; pass it to
 *   any long operation (file system, database, outgoing fetch) so that it stops early.
 * - `principal`: the verified caller, `undefined` until an authentication middleware of
 *   fluxguard has accepted a credential (it calls {@link setPrincipal}).
 *
 * The object is attached by {@link requestId} as a non-writable, non-configurable property:
 * `req.fluxguard = ...` and `req.fluxguard.principal = ...` both throw (and fail to compile).
 * Nothing in it is ever read from a client header.
 *
 * @example
 * ```ts
 * app.get('/v1/me', (req, res) => {
 *   const { requestId, principal } = req.fluxguard;
 *   res.json({ requestId, subject: principal?.subject ?? null });
 * });
 * ```
 */
export interface FluxguardRequestContext {
  readonly requestId: string;
  readonly signal: AbortSignal;
  readonly principal: Principal | undefined;
}

declare global {
  // Express documents declaration merging on its global namespace as the way to type new
  // request properties; a module augmentation of express-serve-static-core would need that
  // package to be resolvable from every consumer.
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /**
       * fluxguard's per-request context; present once `requestId()` (or `fluxguard().before`)
       * has run. See {@link FluxguardRequestContext}.
       */
      readonly fluxguard: FluxguardRequestContext;
    }
  }
}

const AUTHENTICATION_METHODS: readonly AuthenticationMethod[] = ['jwt', 'mtls', 'both'];

/**
 * The context object. Frozen: its own fields never change; the principal lives in a private
 * field that only {@link setPrincipal} can write, so no other code can swap it by assignment.
 */
class RequestContext implements FluxguardRequestContext {
  readonly requestId: string;
  readonly signal: AbortSignal;
  #principal: Principal | undefined;

  constructor(requestId: string, signal: AbortSignal) {
    this.requestId = requestId;
    this.signal = signal;
    Object.freeze(this);
  }

  get principal(): Principal | undefined {
    return this.#principal;
  }

  static assignPrincipal(context: RequestContext, principal: Principal): void {
    context.#principal = principal;
  }
}

const PROPERTY = 'fluxguard';

/**
 * The fluxguard context of a request, or `undefined` when `requestId()` has not run on it.
 * Package-internal (not exported from the package index).
 *
 * @internal
 */
export function contextOf(req: IncomingMessage): FluxguardRequestContext | undefined {
  const value: unknown = Object.getOwnPropertyDescriptor(req, PROPERTY)?.value;
  return value instanceof RequestContext ? value : undefined;
}

/**
 * Package-internal (not exported from the package index): attaches the context to `req` once. A second call (the middleware mounted twice, or in an app
 * and a sub-app) returns the existing context rather than creating a second id.
 *
 * @internal
 */
export function attachContext(req: IncomingMessage, res: ServerResponse, requestId: string): FluxguardRequestContext {
  const existing = contextOf(req);
  if (existing !== undefined) return existing;
  const controller = new AbortController();
  // 'close' fires both when the response has been sent and when the connection dies first;
  // only the second is a client that went away.
  res.once('close', () => {
    if (!res.writableFinished) {
      controller.abort(new SecurityError('unavailable', { reason: 'client_disconnected' }));
    }
  });
  const context = new RequestContext(requestId, controller.signal);
  // Throws if something else already defined a non-configurable `fluxguard` on this request:
  // better a 500 than a context we did not build.
  Object.defineProperty(req, PROPERTY, {
    value: context,
    enumerable: false,
    writable: false,
    configurable: false,
  });
  return context;
}

// The RBAC rule pattern that applied to a request, set by `authorize()`: a bounded label for
// the audit line of a request refused before routing (the raw path is never logged).
const operationLabels = new WeakMap<IncomingMessage, string>();

/**
 * Package-internal: records the operation label (a rule pattern such as
 * `DELETE /v1/artifacts/*path`) of a request that has not been routed yet.
 *
 * @internal
 */
export function setOperationLabel(req: IncomingMessage, label: string): void {
  operationLabels.set(req, label);
}

/**
 * Package-internal: the label set by {@link setOperationLabel}, if any.
 *
 * @internal
 */
export function operationLabelOf(req: IncomingMessage): string | undefined {
  return operationLabels.get(req);
}

/**
 * Records the verified caller of a request. This is the only way to set
 * `req.fluxguard.principal`; fluxguard's authentication middleware (JWT, mTLS) call it after
 * verifying a credential, and a custom authenticator may call it the same way. It must never
 * be called with anything a client merely claimed (a header, a query parameter).
 *
 * The principal is copied and frozen (with its `roles` and `scopes`), so later code cannot
 * grant itself a role by mutating it. A later call replaces it, e.g. a JWT middleware that
 * upgrades an mTLS identity to `authenticatedBy: 'both'`.
 *
 * Throws when `requestId()` has not run on this request (fail closed: the error handler turns
 * this into a 500) or when `principal` is malformed.
 *
 * @example
 * ```ts
 * import { SecurityError } from '@fluxguard/core';
 * import { setPrincipal } from '@fluxguard/express';
 *
 * app.use(async (req, _res, next) => {
 *   const token = req.get('authorization')?.replace(/^Bearer /, '');
 *   if (token === undefined) throw new SecurityError('unauthenticated', { reason: 'missing_token' });
 *   const claims = await verifyToken(token, req.fluxguard.signal); // throws SecurityError on failure
 *   setPrincipal(req, { subject: claims.sub, roles: claims.roles, scopes: [], claims,
 *     certificate: undefined, authenticatedBy: 'jwt' });
 *   next();
 * });
 * ```
 */
export function setPrincipal(req: IncomingMessage, principal: Principal): void {
  const context = contextOf(req);
  if (!(context instanceof RequestContext)) {
    throw new Error('setPrincipal: the fluxguard requestId() middleware has not run on this request');
  }
  RequestContext.assignPrincipal(context, freezePrincipal(principal));
}

function freezePrincipal(principal: Principal): Principal {
  // Also checked at run time: callers may be plain JavaScript.
  const raw: Partial<Record<keyof Principal, unknown>> = principal;
  if (
    typeof raw.subject !== 'string' ||
    raw.subject === '' ||
    !isStringArray(raw.roles) ||
    !isStringArray(raw.scopes) ||
    typeof raw.claims !== 'object' ||
    raw.claims === null ||
    !AUTHENTICATION_METHODS.includes(raw.authenticatedBy as AuthenticationMethod)
  ) {
    throw new TypeError('setPrincipal: principal is malformed');
  }
  return Object.freeze({
    subject: principal.subject,
    roles: Object.freeze([...principal.roles]),
    scopes: Object.freeze([...principal.scopes]),
    claims: Object.isFrozen(principal.claims) ? principal.claims : Object.freeze({ ...principal.claims }),
    certificate: principal.certificate,
    authenticatedBy: principal.authenticatedBy,
  });
}

function isStringArray(value: unknown): value is readonly string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}
