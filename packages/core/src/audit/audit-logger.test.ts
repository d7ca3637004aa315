import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { SecurityError } from '../errors/security-error.js';
import { createAuditLogger } from './audit-logger.js';
import { scrubSecrets } from './redaction.js';

function capture(): { lines: Record<string, unknown>[]; destination: Writable } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { lines, destination };
}

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl';

describe('createAuditLogger', () => {
  it('writes the documented event schema', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const denied = {
      event: 'request.denied',
      outcome: 'denied',
      reason: 'missing_role',
      operation: '/fluxguard.example.v1.ArtifactStore/DeleteArtifact',
      peer: '127.0.0.1:5000',
      subject: 'alice',
      requestId: 'r-1',
      transport: 'grpc',
    } as const;
    audit.record(denied);
    // Every field of the event comes out as it went in, under pino's own fields.
    expect(lines[0]).toMatchObject({ level: 40, name: 'fluxguard', msg: 'request.denied', ...denied });
    expect(typeof lines[0]?.time).toBe('string');
  });

  it('redacts credentials wherever they sit in a line', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    audit.logger.info({
      authorization: `Bearer ${TOKEN}`,
      headers: { authorization: `Bearer ${TOKEN}`, cookie: 'sid=abc', 'x-api-key': 'k-123' },
      metadata: { nested: { password: 'hunter2', privateKey: '-----BEGIN PRIVATE KEY-----' } },
      body: { token: TOKEN, client_secret: 's3cr3t' },
    });
    const text = JSON.stringify(lines);
    for (const secret of [TOKEN, 'sid=abc', 'k-123', 'hunter2', 'BEGIN PRIVATE KEY', 's3cr3t']) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('[REDACTED]');
  });

  it('logs the full internal cause of a failure but returns only the public error', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const fsError = Object.assign(new Error("EISDIR: illegal operation on a directory, read '/srv/data/dir'"), {
      code: 'EISDIR',
      path: '/srv/data/dir',
    });
    const pub = audit.recordFailure(fsError, {
      operation: 'GET /v1/artifacts/*path',
      requestId: 'r-9',
      transport: 'http',
    });
    expect(pub).toMatchObject({ code: 'internal', httpStatus: 500, requestId: 'r-9' });
    expect(JSON.stringify(pub)).not.toContain('/srv/data');
    expect(lines[0]).toMatchObject({
      level: 50,
      event: 'request.failed',
      outcome: 'error',
      reason: 'unhandled_error',
      requestId: 'r-9',
      code: 'internal',
    });
    const err = lines[0]?.err as Record<string, unknown>;
    expect(err.message).toContain('/srv/data/dir');
    expect(err.stack).toContain('audit-logger.test.ts');
    expect(err.code).toBe('EISDIR');
  });

  it('records a refusal as a denial with its reason', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    audit.recordFailure(new SecurityError('unauthenticated', { reason: 'token_expired' }), {
      operation: 'GET /v1/artifacts',
      requestId: 'r-3',
    });
    expect(lines[0]).toMatchObject({
      level: 40,
      event: 'request.denied',
      outcome: 'denied',
      reason: 'token_expired',
      code: 'unauthenticated',
    });
  });

  it('names the subject a refusal concerns, when the error knows it', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    audit.recordFailure(new SecurityError('permission_denied', { reason: 'missing_role', subject: 'bob' }), {
      operation: 'DELETE /v1/artifacts/*path',
      requestId: 'r-5',
    });
    expect(lines[0]).toMatchObject({ subject: 'bob', reason: 'missing_role' });
  });

  it('scrubs tokens and private keys from error messages and causes', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const cause = new Error(`upstream refused Bearer ${TOKEN}`);
    audit.recordFailure(new Error(`bad key -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----`, { cause }), {
      operation: 'x',
      requestId: 'r-4',
    });
    const text = JSON.stringify(lines);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain('MIIE');
  });

  it('refuses a bad level and a misspelt option at construction', () => {
    expect(() => createAuditLogger({ level: 'loud' as never })).toThrow(/"level" must be one of/);
    expect(() => createAuditLogger({ levle: 'info' } as never)).toThrow(/did you mean "level"/);
  });
});

describe('scrubSecrets', () => {
  it('leaves ordinary text alone', () => {
    expect(scrubSecrets('artifact a/b.txt not found')).toBe('artifact a/b.txt not found');
  });
  it('removes a compact JWT and a bearer credential', () => {
    expect(scrubSecrets(`t=${TOKEN}`)).toBe('t=[REDACTED]');
    expect(scrubSecrets('Authorization: Bearer abc.def')).toBe('Authorization: Bearer [REDACTED]');
  });
});

describe('recordFailure under a flood of refusals', () => {
  const context = { operation: 'GET /v1/x', peer: '127.0.0.1:5000', requestId: 'r-9', transport: 'http' } as const;

  it('writes an expected refusal as one short line: no stack, its cause on one scrubbed line', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const cause = new Error(`JWSSignatureVerificationFailed for token ${TOKEN}`);
    audit.recordFailure(new SecurityError('unauthenticated', { reason: 'malformed_token', cause }), context);
    const line = lines[0] ?? {};
    expect(line).toMatchObject({
      event: 'request.denied',
      outcome: 'denied',
      reason: 'malformed_token',
      code: 'unauthenticated',
    });
    expect(line.err).toBeUndefined();
    expect(line.cause).toMatch(/^Error: JWSSignatureVerificationFailed for token /);
    expect(JSON.stringify(line)).not.toContain(TOKEN);
    expect(JSON.stringify(line)).not.toMatch(/\n\s+at /);
    expect(JSON.stringify(line).length).toBeLessThan(600);
  });

  it('keeps the full cause, stack included, of an unexpected failure', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    audit.recordFailure(new Error('EISDIR: illegal operation on a directory'), context);
    expect(lines[0]).toMatchObject({ event: 'request.failed', outcome: 'error', code: 'internal' });
    expect(JSON.stringify(lines[0]?.err)).toMatch(/EISDIR.*\\n\s+at /);
  });

  it('builds refusals without a stack trace (their cost under a flood), and leaves other errors theirs', () => {
    expect(new SecurityError('permission_denied').stack).not.toMatch(/\n\s+at /);
    expect(new Error('x').stack).toMatch(/\n\s+at /);
  });
});
