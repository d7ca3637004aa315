import type { CallInfo, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { isJwtVerifier, settledLookupOf, type JwtVerifier } from '../jwt/verifier.js';
import {
  compileCertificateRoles,
  mergePrincipals,
  principalFromCertificate,
  type IdentityRule,
} from '../mtls/identity-rules.js';
import { isIdentityCurrent } from '../mtls/peer-identity.js';
import { resolveOptions } from '../options/resolve-options.js';
import type { CallContext } from '../pipeline/call-context.js';
import { markAuthentication, type Control } from '../pipeline/control.js';
import type { CompiledRbac } from '../rbac/rbac.js';

/**
 * Options of {@link createAuthenticator}.
 *
 * @example
 * ```ts
 * import { createJwtVerifier, type AuthenticatorOptions } from '@fluxguard/core';
 * const options: AuthenticatorOptions = {
 *   jwt: createJwtVerifier({ issuer: 'https://id.example.com', audience: 'artifacts', jwksUrl: 'https://id.example.com/jwks' }),
 *   certificateRoles: [{ spiffeId: 'spiffe://example.org/backup', roles: ['artifacts.reader'] }],
 * };
 * ```
 */
export interface AuthenticatorOptions {
  /**
   * Verifies bearer tokens: a verifier of `createJwtVerifier` (any other object is refused, even
   * one with `authenticate()`). Omitted: no token is ever accepted (a certificate-only service).
   */
  readonly jwt?: JwtVerifier | undefined;
  /**
   * Rules mapping a verified client certificate to roles, so that a caller with a certificate
   * and no token is authenticated (`authenticatedBy: 'mtls'`). Omitted: a certificate alone
   * never authenticates a caller (it may still meet an RBAC `certificate` requirement).
   */
  readonly certificateRoles?: readonly IdentityRule[] | undefined;
  /**
   * When given, operations these rules mark `public` are not authenticated at all (a token sent
   * there is not even read), as {@link createGuard} does. Only its `isPublic` is used.
   */
  readonly rbac?: CompiledRbac | undefined;
}

/**
 * The authentication step of one call: who the caller is, never whether it may proceed. It is
 * the {@link Control} of the `authentication` stage: its `onStart` records the principal on the
 * call's context.
 *
 * @example
 * ```ts
 * import type { Authenticator } from '@fluxguard/core';
 * async function whoIs(authenticator: Authenticator, call: CallInfo) {
 *   return (await authenticator.authenticate(call))?.subject ?? 'anonymous';
 * }
 * ```
 */
export interface Authenticator extends Control {
  /**
   * The verified caller, or `undefined` when the call carries no credential this
   * authenticator accepts (no token, and no certificate that `certificateRoles` maps). A token
   * that is sent and invalid always throws `SecurityError` `unauthenticated` (or `unavailable`
   * when a key or revocation store cannot answer): a bad credential is never ignored.
   */
  authenticate(call: CallInfo): Promise<Principal | undefined>;
}

interface ResolvedAuthenticatorOptions {
  readonly jwt: JwtVerifier | undefined;
  readonly certificateRoles: readonly IdentityRule[] | undefined;
  readonly rbac?: CompiledRbac | undefined;
}

const NO_HEADERS: readonly string[] = Object.freeze([]);

const DEFAULTS: Readonly<ResolvedAuthenticatorOptions> = Object.freeze({
  jwt: undefined,
  certificateRoles: undefined,
  rbac: undefined,
});

/**
 * A call whose peer certificate is still valid now. A connection outlives the check of its
 * handshake: a certificate that has expired since (or is not yet valid) identifies nobody, on
 * every call of a long-lived connection.
 *
 * @internal
 */
export function withCurrentCertificate(call: CallInfo): CallInfo {
  return call.peerCertificate === undefined || isIdentityCurrent(call.peerCertificate)
    ? call
    : new WithoutPeerCertificate(call);
}

/**
 * `call` without its peer certificate. Read through, not copied: an adapter's call reads its
 * request id, peer and signal through getters, which a spread (`{ ...call }`) leaves out, and
 * the audit line of a call refused then named neither its request nor its peer.
 */
class WithoutPeerCertificate implements CallInfo {
  readonly #call: CallInfo;
  readonly peerCertificate = undefined;

  constructor(call: CallInfo) {
    this.#call = call;
  }

  get transport(): CallInfo['transport'] {
    return this.#call.transport;
  }

  get operation(): string {
    return this.#call.operation;
  }

  get requestId(): string {
    return this.#call.requestId;
  }

  get peerAddress(): string | undefined {
    return this.#call.peerAddress;
  }

  get peerCertificateError(): string | undefined {
    return this.#call.peerCertificateError;
  }

  get headers(): CallInfo['headers'] {
    return this.#call.headers;
  }

  get deadline(): number | undefined {
    return this.#call.deadline;
  }

  get signal(): AbortSignal {
    return this.#call.signal;
  }
}

/** @internal Validates already-resolved options; `factory` names the caller in errors. */
export function authenticatorFrom(options: ResolvedAuthenticatorOptions, factory: string): Authenticator {
  const { jwt, rbac } = options;
  if (jwt !== undefined && !isJwtVerifier(jwt)) {
    throw new ConfigurationError(`${factory}: "jwt" must be the result of createJwtVerifier()`);
  }
  if (rbac !== undefined && typeof (rbac as Partial<CompiledRbac> | null)?.isPublic !== 'function') {
    throw new ConfigurationError(`${factory}: "rbac" must be the result of compileRbac()`);
  }
  const certificateRoles =
    options.certificateRoles === undefined
      ? undefined
      : compileCertificateRoles(options.certificateRoles, `${factory}.certificateRoles`);

  // The call's `authorization` headers, read once per call, when there is a verifier for them.
  const authorizationOf = (call: CallInfo): readonly string[] =>
    jwt === undefined ? NO_HEADERS : call.headers.getAll('authorization');
  // Without a token: only a certificate that a rule maps to roles authenticates alone; any other
  // verified certificate still meets an RBAC `certificate` requirement, checked by the rule itself.
  const withoutToken = (call: CallInfo): Principal | undefined =>
    certificateRoles !== undefined && certificateRoles(call.peerCertificate).length > 0
      ? principalFromCertificate(call.peerCertificate, certificateRoles)
      : undefined;

  async function authenticate(received: CallInfo): Promise<Principal | undefined> {
    if (rbac?.isPublic(received.operation) === true) return undefined;
    const call = withCurrentCertificate(received);
    return jwt === undefined || authorizationOf(call).length === 0
      ? withoutToken(call)
      : mergePrincipals(await jwt.authenticate(call), call.peerCertificate);
  }

  // A token the verifier's cache settles (the steady state of a client that reuses its token)
  // is taken synchronously: no promise, and the pipeline goes on in the same tick.
  const settled = jwt === undefined ? undefined : settledLookupOf(jwt);

  return markAuthentication(
    Object.freeze({
      name: 'authentication',
      stage: 'authentication',
      authenticate,
      onStart: (received: CallInfo, context: CallContext): Promise<void> | undefined => {
        if (rbac?.isPublic(received.operation) === true) return undefined;
        const call = withCurrentCertificate(received);
        // Without a token the caller is known at once (anonymous, or a mapped certificate): a
        // flood of anonymous calls is refused without a promise.
        const authorization = authorizationOf(call);
        if (jwt === undefined || authorization.length === 0) {
          const principal = withoutToken(call);
          if (principal !== undefined) context.setPrincipal(principal);
          return undefined;
        }
        // One header can be settled now; several are refused by `authenticate`.
        const [only] = authorization;
        const known = authorization.length === 1 && only !== undefined ? settledPrincipal(only, call) : undefined;
        if (known !== undefined) {
          context.setPrincipal(known);
          return undefined;
        }
        return jwt.authenticate(call).then((verified) => {
          context.setPrincipal(mergePrincipals(verified, call.peerCertificate));
        });
      },
    }),
  );

  /** The principal of a token the verifier settles without waiting (see `settledLookupOf`). */
  function settledPrincipal(authorization: string, call: CallInfo): Principal | undefined {
    const principal = settled?.(authorization);
    return principal === undefined ? undefined : mergePrincipals(principal, call.peerCertificate);
  }
}

/**
 * Creates the authentication step of {@link createGuard}, usable alone: a bearer token is
 * verified when one is sent (and merged with a verified client certificate:
 * `authenticatedBy: 'both'`); without a token, a verified, still-valid certificate that
 * `certificateRoles` maps authenticates alone (`mtls`); otherwise the caller is anonymous
 * (`undefined`). A token that is sent and fails is refused even where a certificate would have
 * done. It decides nothing about access: pair it with {@link createAuthorizer}.
 *
 * @throws ConfigurationError for unknown options, a `jwt` that is not a verifier, or bad
 *   `certificateRoles` (the error names the rule and field).
 *
 * @example
 * ```ts
 * import { createAuthenticator, createJwtVerifier } from '@fluxguard/core';
 * const authenticator = createAuthenticator({
 *   jwt: createJwtVerifier({ issuer: 'https://id.example.com', audience: 'artifacts', jwksUrl: 'https://id.example.com/jwks' }),
 * });
 * const principal = await authenticator.authenticate(call); // undefined: anonymous; throws on a bad token
 * ```
 */
export function createAuthenticator(options: AuthenticatorOptions = {}): Authenticator {
  return authenticatorFrom(resolveOptions('createAuthenticator', DEFAULTS, options), 'createAuthenticator');
}
