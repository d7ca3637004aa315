import { describe, expect, it } from 'vitest';
import { ERROR_CODES, GrpcStatusCode, codeFromGrpcStatus, isSecurityErrorCode } from './codes.js';
import {
  ConfigurationError,
  FLUXGUARD_ERROR_BRAND,
  FluxguardError,
  isConfigurationError,
  isFluxguardError,
} from './fluxguard-error.js';
import type * as BaseModule from './fluxguard-error.js';
import { toPublicError } from './public-error.js';
import { SecurityError, isSecurityError } from './security-error.js';
import type * as SecurityModule from './security-error.js';

type ErrorModules = typeof BaseModule & typeof SecurityModule;

/**
 * The error classes of a second instance of these modules, as when an install tree holds two
 * copies of `@fluxguard/core`: a query string makes the module loader evaluate the files again,
 * so the classes are new objects with prototypes of their own.
 */
async function secondCopy(): Promise<ErrorModules> {
  const base = './fluxguard-error.js?second-copy';
  const security = './security-error.js?second-copy';
  const [a, b] = (await Promise.all([import(/* @vite-ignore */ base), import(/* @vite-ignore */ security)])) as [
    typeof BaseModule,
    typeof SecurityModule,
  ];
  return { ...a, ...b };
}

describe('error table', () => {
  it.each([
    ['invalid_argument', GrpcStatusCode.INVALID_ARGUMENT, 400],
    ['unauthenticated', GrpcStatusCode.UNAUTHENTICATED, 401],
    ['permission_denied', GrpcStatusCode.PERMISSION_DENIED, 403],
    ['not_found', GrpcStatusCode.NOT_FOUND, 404],
    ['payload_too_large', GrpcStatusCode.RESOURCE_EXHAUSTED, 413],
    ['rate_limited', GrpcStatusCode.RESOURCE_EXHAUSTED, 429],
    ['deadline_exceeded', GrpcStatusCode.DEADLINE_EXCEEDED, 504],
    ['unavailable', GrpcStatusCode.UNAVAILABLE, 503],
    ['internal', GrpcStatusCode.INTERNAL, 500],
  ] as const)('maps %s to gRPC %i and HTTP %i', (code, grpc, http) => {
    expect(ERROR_CODES[code].grpcStatus).toBe(grpc);
    expect(ERROR_CODES[code].httpStatus).toBe(http);
  });

  it('is frozen so no module can remap a code at run time', () => {
    expect(Object.isFrozen(ERROR_CODES)).toBe(true);
    expect(Object.isFrozen(ERROR_CODES.internal)).toBe(true);
  });

  it('recognises codes and nothing inherited from Object', () => {
    expect(isSecurityErrorCode('not_found')).toBe(true);
    expect(isSecurityErrorCode('toString')).toBe(false);
    expect(isSecurityErrorCode(42)).toBe(false);
  });

  it('keeps reviewed gRPC statuses and turns the rest into internal', () => {
    expect(codeFromGrpcStatus(GrpcStatusCode.NOT_FOUND)).toBe('not_found');
    expect(codeFromGrpcStatus(GrpcStatusCode.PERMISSION_DENIED)).toBe('permission_denied');
    expect(codeFromGrpcStatus(GrpcStatusCode.UNKNOWN)).toBe('internal');
    expect(codeFromGrpcStatus(GrpcStatusCode.DATA_LOSS)).toBe('internal');
    expect(codeFromGrpcStatus(999)).toBe('internal');
  });
});

describe('SecurityError', () => {
  it('has one base class, a stable code and the neutral text by default', () => {
    const err = new SecurityError('permission_denied', { reason: 'missing_role' });
    expect(err).toBeInstanceOf(FluxguardError);
    expect(err.code).toBe('permission_denied');
    expect(err.message).toBe('Permission denied.');
    expect(err.reason).toBe('missing_role');
    expect(err.name).toBe('SecurityError');
  });

  it("takes fluxguard's own reasons and `app.` ones; the compiler refuses any other", () => {
    expect(new SecurityError('not_found', { reason: 'app.artifact_missing' }).reason).toBe('app.artifact_missing');
    // @ts-expect-error a misspelt reason is a type error, not a new reason (tsc -b checks this file)
    expect(new SecurityError('unauthenticated', { reason: 'token_expird' }).reason).toBe('token_expird');
  });

  it('keeps the cause for the log', () => {
    const cause = new Error('ENOENT: /srv/secret/path');
    expect(new SecurityError('not_found', { cause }).cause).toBe(cause);
  });

  it('drops a field name that could carry input back to the client', () => {
    const err = new SecurityError('invalid_argument', { details: { field: '<script>alert(1)</script>' } });
    expect(err.details).toBeUndefined();
    expect(new SecurityError('invalid_argument', { details: { field: 'header.sha256' } }).details).toEqual({
      field: 'header.sha256',
    });
  });

  it('rounds retry-after up and drops nonsense', () => {
    expect(new SecurityError('rate_limited', { details: { retryAfterSeconds: 1.2 } }).details).toEqual({
      retryAfterSeconds: 2,
    });
    expect(new SecurityError('rate_limited', { details: { retryAfterSeconds: Number.NaN } }).details).toBeUndefined();
  });
});

describe('ConfigurationError', () => {
  it('is a FluxguardError with its own code', () => {
    const err = new ConfigurationError('bad');
    expect(err).toBeInstanceOf(FluxguardError);
    expect(err.code).toBe('invalid_configuration');
  });
});

describe('the brand of a second copy of core', () => {
  it('is a different class, so the prototype chain alone would call its errors foreign', async () => {
    const other = await secondCopy();
    expect(other.SecurityError).not.toBe(SecurityError);
    const foreign = new other.SecurityError('not_found');
    // What a plain `instanceof` sees: this is why the adapters test the brand.
    expect(Function.prototype[Symbol.hasInstance].call(SecurityError, foreign)).toBe(false);
    expect(Object.getPrototypeOf(foreign)).not.toBe(SecurityError.prototype);
  });

  it('is recognised by the helpers, instanceof and toPublicError', async () => {
    const other = await secondCopy();
    const foreign = new other.SecurityError('not_found', { reason: 'app.missing' });
    expect(isSecurityError(foreign)).toBe(true);
    expect(isFluxguardError(foreign)).toBe(true);
    expect(isConfigurationError(foreign)).toBe(false);
    expect(foreign).toBeInstanceOf(SecurityError);
    expect(foreign).toBeInstanceOf(FluxguardError);
    expect(foreign).not.toBeInstanceOf(ConfigurationError);
    expect(toPublicError(foreign, 'r-3')).toMatchObject({ code: 'not_found', httpStatus: 404, grpcStatus: 5 });

    const misconfigured = new other.ConfigurationError('bad');
    expect(isConfigurationError(misconfigured)).toBe(true);
    expect(misconfigured).toBeInstanceOf(ConfigurationError);
    expect(isSecurityError(misconfigured)).toBe(false);
    // The second copy's ConfigurationError extends the second copy's FluxguardError: the brand,
    // not the prototype chain, makes it one of ours.
    expect(Function.prototype[Symbol.hasInstance].call(FluxguardError, misconfigured)).toBe(false);
    expect(misconfigured).toBeInstanceOf(FluxguardError);
    expect(isFluxguardError(misconfigured)).toBe(true);
    expect(toPublicError(misconfigured, 'r-4').code).toBe('internal');
  });

  it('works both ways: the second copy recognises this copy', async () => {
    const other = await secondCopy();
    expect(other.isSecurityError(new SecurityError('permission_denied'))).toBe(true);
    expect(new ConfigurationError('bad')).toBeInstanceOf(other.ConfigurationError);
  });

  it('leaves the subclasses of an application to the prototype chain', () => {
    class ArtifactMissing extends SecurityError {}
    expect(new ArtifactMissing('not_found')).toBeInstanceOf(ArtifactMissing);
    expect(new SecurityError('not_found')).not.toBeInstanceOf(ArtifactMissing);
  });

  it('is not enumerable and trusts no code outside the table', () => {
    const err = new SecurityError('not_found');
    expect(Object.keys(err)).not.toContain(FLUXGUARD_ERROR_BRAND);
    expect(JSON.stringify(Object.assign({}, err))).not.toMatch(/security/);
    const unknownCode = Object.assign(Object.create(SecurityError.prototype) as object, { code: 'teapot' });
    expect(isSecurityError(unknownCode)).toBe(false);
    expect(toPublicError(unknownCode, 'r-5').code).toBe('internal');
    expect(isSecurityError({ code: 'not_found' })).toBe(false);
  });
});

describe('toPublicError', () => {
  it('keeps a SecurityError code, message and safe details', () => {
    const pub = toPublicError(new SecurityError('invalid_argument', { details: { field: 'path' } }), 'r-1');
    expect(pub).toMatchObject({
      code: 'invalid_argument',
      message: 'The request is invalid.',
      details: { field: 'path' },
      grpcStatus: 3,
      httpStatus: 400,
      requestId: 'r-1',
    });
  });

  it.each([
    ['inbound_idle', 408, 'Request Timeout'],
    ['request_unfinished', 408, 'Request Timeout'],
    ['client_deadline', 504, 'Gateway Timeout'],
    [undefined, 504, 'Gateway Timeout'],
  ] as const)(
    'answers a deadline with reason %s HTTP %i: the client too slow is not a server fault',
    (reason, http, title) => {
      const pub = toPublicError(new SecurityError('deadline_exceeded', { reason }), 'r-6');
      expect(pub).toMatchObject({ code: 'deadline_exceeded', grpcStatus: 4, httpStatus: http, title });
      expect(pub.message).toBe('The request took too long.');
      // A reason of another code changes nothing.
      expect(toPublicError(new SecurityError('unavailable', { reason: 'inbound_idle' }), 'r-7').httpStatus).toBe(503);
    },
  );

  it.each([
    [
      'an errno error',
      Object.assign(new Error("EISDIR: illegal operation on a directory, read '/srv/data/x'"), {
        errno: -21,
        code: 'EISDIR',
        path: '/srv/data/x',
      }),
    ],
    ['a library error', new TypeError('Cannot read properties of undefined (reading "x")')],
    ['a string', 'secret-db-password'],
    ['null', null],
    ['an object with a code of ours', { code: 'not_found', message: '/etc/passwd' }],
  ])('turns %s into the generic internal error', (_label, thrown) => {
    const pub = toPublicError(thrown, 'r-2');
    expect(pub.code).toBe('internal');
    expect(pub.message).toBe('An internal error occurred.');
    expect(pub.details).toBeUndefined();
    expect(JSON.stringify(pub)).not.toMatch(/srv|EISDIR|passwd|secret|undefined \(reading/);
  });
});
