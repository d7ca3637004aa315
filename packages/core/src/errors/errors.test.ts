import { describe, expect, it } from 'vitest';
import { ERROR_CODES, GrpcStatusCode, codeFromGrpcStatus, isSecurityErrorCode } from './codes.js';
import { ConfigurationError, FluxguardError } from './fluxguard-error.js';
import { toPublicError } from './public-error.js';
import { SecurityError } from './security-error.js';

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
