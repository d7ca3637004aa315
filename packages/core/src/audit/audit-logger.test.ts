import { spawn, spawnSync } from 'node:child_process';
import { closeSync, createWriteStream, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { createAuditLogger } from './audit-logger.js';
import { causeLine, scrubSecrets } from './redaction.js';
import { brokenDestination, captureLines } from '@fluxguard/test-support/log-lines';
import { captureWarnings } from '@fluxguard/test-support/warnings';

const capture = captureLines;

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

  it('escapes what acts on a reader of the log: C1 controls, line separators, bidi overrides', () => {
    // A raw line, as a terminal or a line-splitting reader gets it.
    const raw: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        raw.push(chunk.toString('utf8'));
        done();
      },
    });
    const unsafe = 'eve\u2028{"forged":1}\u0085\u009b31m\u202egnp.exe\u200b';
    const audit = createAuditLogger({ destination });
    audit.recordFailure(new SecurityError('permission_denied', { reason: 'missing_role', subject: unsafe }), {
      operation: 'x',
      requestId: 'r-6',
    });
    audit.recordFailure(new Error(`unknown method /a\u009d\u0085b`), { operation: 'x', requestId: 'r-7' });
    audit.logger.info({ event: 'app.note', field: unsafe }, 'note');
    const text = raw.join('');
    expect(text).not.toMatch(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u200b]/);
    // Each line is still one JSON object, and the subject reads as the escapes.
    const lines = text
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toHaveLength(3);
    expect(lines[0]?.subject).toBe('eve\\u2028{"forged":1}\\u0085\\u009b31m\\u202egnp.exe\\u200b');
    // Through the application's own pino logger too, for the fields fluxguard writes.
    const { lines: shared, destination: sharedOut } = capture();
    const through = createAuditLogger({ logger: pino(sharedOut) });
    through.recordFailure(new SecurityError('permission_denied', { reason: 'missing_role', subject: unsafe }), {
      operation: 'x',
      requestId: 'r-8',
    });
    expect(JSON.stringify(shared[0]?.subject)).not.toMatch(/[\u0085\u009b\u2028]/);
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
    // pino's own refusal, as every other option's: a ConfigurationError that says what to give.
    for (const make of [
      () => createAuditLogger({ redact: ['a..b'] }),
      () => createAuditLogger({ logger: pino({ level: 'silent' }), redact: ['a..b'] }),
    ]) {
      expect(make).toThrow(ConfigurationError);
      expect(make).toThrow(/^createAuditLogger: pino refused the options: a "redact" path it cannot read/);
    }
  });

  it('refuses a destination that cannot be written and a blank name: every line would be lost, or unnamed', () => {
    for (const destination of [{}, 1, 'audit.log', null]) {
      expect(() => createAuditLogger({ destination: destination as never })).toThrow(
        /^createAuditLogger: "destination" must be a writable stream \(an object with write\(\)\)$/,
      );
    }
    for (const name of ['', ' ', 7, {}]) {
      expect(() => createAuditLogger({ name: name as never })).toThrow(/"name" must be a non-empty string/);
    }
  });
});

describe('causeLine (the cause kept in a line, as the Redis store outage line keeps it)', () => {
  it('scrubs before it cuts: a token or a password near the cut leaves nothing of itself', () => {
    const padding = 'x'.repeat(280);
    expect(causeLine(new Error(`${padding} ${TOKEN}`))).toBe(`Error: ${padding} [REDACTED]`);
    expect(causeLine(new TypeError('connect to redis://:hunter2@cache:6379 failed'))).toBe(
      'TypeError: connect to redis://[REDACTED]@cache:6379 failed',
    );
    expect(causeLine(new Error('y'.repeat(400)))).toHaveLength(300);
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
  it("removes a URL's user and password and secret query values, and keeps the rest of the URL", () => {
    expect(scrubSecrets('Invalid URL https://admin:s3cret@[bad/x')).toBe('Invalid URL https://[REDACTED]@[bad/x');
    expect(scrubSecrets('base https://h.test/loc?access_token=abc&to=x;key=k&sig=s#f')).toBe(
      'base https://h.test/loc?access_token=[REDACTED]&to=x;key=[REDACTED]&sig=[REDACTED]#f',
    );
    expect(scrubSecrets('see https://h.test/a?monkey=1 and mailto:a@b.test')).toBe(
      'see https://h.test/a?monkey=1 and mailto:a@b.test',
    );
    expect(scrubSecrets('s3 https://b.test/o?X-Amz-Signature=abc&X-Amz-Credential=AKIA&x=1')).toBe(
      's3 https://b.test/o?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]&x=1',
    );
  });
  it('removes a password that made its URL unparsable: with a "@", "/", "?" or "#" in it', () => {
    // These are the URLs whose parse error quotes them; the first pattern stopped at the first `@`.
    for (const password of ['S3cret@PassG', 'S3cret/x', 'S3cret?x', 'S3cret#x']) {
      const url = `redis://:${password}@[::1:6379`;
      expect(scrubSecrets(url), password).toBe('redis://[REDACTED]@[::1:6379');
      expect(scrubSecrets(`Invalid URL ${url} then more`), password).toBe(
        'Invalid URL redis://[REDACTED]@[::1:6379 then more',
      );
    }
    // A line that starts with a URL keeps what follows it.
    expect(scrubSecrets('https://id.example/jwks.json: fetch failed; contact ops@example.com')).toBe(
      'https://id.example/jwks.json: fetch failed; contact ops@example.com',
    );
  });
  it("removes the whole user and password of the URL Node's parse error keeps, spaces included", () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    let parseError: unknown;
    try {
      new URL('redis://:S3cret PassH@[::1:6379');
    } catch (error) {
      parseError = error;
    }
    audit.recordFailure(parseError, { operation: 'start', peer: '-', requestId: 'r-url', transport: 'http' });
    const text = JSON.stringify(lines);
    expect(text).toContain('redis://[REDACTED]@[::1:6379');
    expect(text).not.toContain('S3cret');
    expect(text).not.toContain('PassH');
  });
  it('cuts error text past 16 KiB before scrubbing it, and scrubs what it keeps', () => {
    // Error text may quote what a client sent; nothing that long helps a reader of the log.
    const long = `token ${TOKEN} ${'a://'.repeat(250_000)}`;
    const scrubbed = scrubSecrets(long);
    expect(scrubbed.length).toBeLessThan(16_400);
    expect(scrubbed.endsWith('…[cut]')).toBe(true);
    expect(scrubbed.startsWith('token [REDACTED] a://')).toBe(true);
  });
  it('leaves no part of a token that the 16 KiB cut falls within', () => {
    // The cut falls in the claims: what is left has one dot, which no pattern reads as a token.
    const [header = '', claims = ''] = TOKEN.split('.');
    const text = `${'x'.repeat(16_384 - 3 - header.length - 1 - 4)} t=${TOKEN} and more`;
    const scrubbed = scrubSecrets(text);
    expect(scrubbed).not.toContain(header);
    expect(scrubbed).not.toContain(claims.slice(0, 4));
    expect(scrubbed.endsWith(' …[cut]')).toBe(true);
    // A cut between runs keeps all it can.
    expect(scrubSecrets(`${'y '.repeat(8_192)}rest`)).toBe(`${'y '.repeat(8_192)}…[cut]`);
  });
  it('removes a private key cut short, with what follows it', () => {
    const cut = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg';
    expect(scrubSecrets(`open '${cut}'`)).toBe(`open '[REDACTED]`);
    expect(scrubSecrets(`a ${cut}\n-----END PRIVATE KEY----- b`)).toBe('a [REDACTED] b');
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

describe('recordFailure folding repeated refusals', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const badSignature = () => new SecurityError('unauthenticated', { reason: 'bad_signature' });
  const from = (peer: string, i: number) =>
    ({
      operation: 'POST /v1/login',
      peer: `${peer}:${String(40_000 + i)}`,
      requestId: `r-${String(i)}`,
      transport: 'http',
    }) as const;
  const named = (lines: Record<string, unknown>[], event: string) => lines.filter((l) => l.event === event);

  it('logs the first refusals in full and folds the rest of a flood into one line per interval', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 100 } });
    // Each connection of the flood has its own port: still one client.
    for (let i = 0; i < 105; i++) {
      const pub = audit.recordFailure(badSignature(), from('203.0.113.9', i));
      // Folding changes the log only, never the answer.
      expect(pub.code).toBe('unauthenticated');
    }
    expect(named(lines, 'request.denied')).toHaveLength(5);
    expect(named(lines, 'request.denied.folded')).toHaveLength(0);

    await sleep(250);
    const folded = named(lines, 'request.denied.folded');
    expect(folded).toHaveLength(1);
    expect(folded[0]).toMatchObject({
      level: 40,
      outcome: 'denied',
      reason: 'bad_signature',
      code: 'unauthenticated',
      peer: '203.0.113.9',
      transport: 'http',
      operation: 'POST /v1/login',
      count: 100,
      intervalMs: 100,
      firstRequestId: 'r-5',
      lastRequestId: 'r-104',
    });
    expect(lines).toHaveLength(6);

    // A new interval starts afresh: the next refusal is written in full.
    audit.recordFailure(badSignature(), from('203.0.113.9', 200));
    expect(named(lines, 'request.denied')).toHaveLength(6);
  });

  it('names every operation the folded refusals were for, not only the last, up to eight', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 100 } });
    const denied = () => new SecurityError('permission_denied', { reason: 'missing_role' });
    const at = (operation: string, i: number) => ({ ...from('203.0.113.10', i), operation });
    for (let i = 0; i < 50; i++) audit.recordFailure(denied(), at('PUT /v1/artifacts/*path', i));
    for (let i = 50; i < 55; i++) audit.recordFailure(denied(), at('DELETE /v1/artifacts/*path', i));
    audit.recordFailure(denied(), at('PUT /v1/artifacts/*path', 55));
    await sleep(250);
    expect(named(lines, 'request.denied.folded')[0]).toMatchObject({
      operation: 'PUT /v1/artifacts/*path',
      operations: ['PUT /v1/artifacts/*path', 'DELETE /v1/artifacts/*path'],
      count: 51,
    });
    expect(named(lines, 'request.denied.folded')[0]?.moreOperations).toBeUndefined();

    for (let i = 0; i < 30; i++) audit.recordFailure(denied(), at(`GET /v1/op${String(i)}`, 100 + i));
    await sleep(250);
    const bounded = named(lines, 'request.denied.folded')[1];
    expect(bounded?.operations).toHaveLength(8);
    expect(bounded).toMatchObject({ count: 25, moreOperations: true });
  });

  it('folds each peer and each reason on its own', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 100 } });
    for (let i = 0; i < 20; i++) audit.recordFailure(badSignature(), from('203.0.113.9', i));
    for (let i = 0; i < 20; i++) audit.recordFailure(badSignature(), from('198.51.100.1', i));
    for (let i = 0; i < 20; i++) {
      audit.recordFailure(new SecurityError('unauthenticated', { reason: 'token_expired' }), from('203.0.113.9', i));
    }
    const denied = named(lines, 'request.denied');
    expect(denied).toHaveLength(15);
    expect(denied.filter((l) => l.reason === 'bad_signature' && l.peer === '198.51.100.1:40000')).toHaveLength(1);
    expect(denied.filter((l) => l.reason === 'token_expired')).toHaveLength(5);

    await sleep(250);
    const folded = named(lines, 'request.denied.folded').map((l) => [l.peer, l.reason, l.count]);
    expect(folded).toEqual(
      expect.arrayContaining([
        ['203.0.113.9', 'bad_signature', 15],
        ['198.51.100.1', 'bad_signature', 15],
        ['203.0.113.9', 'token_expired', 15],
      ]),
    );
    expect(folded).toHaveLength(3);
  });

  it('folds the addresses of one IPv6 /64 as one client, as rate limits count them', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 100 } });
    // A client rotating through its /64, as any IPv6 host can, one address per refusal.
    for (let i = 0; i < 200; i++) {
      audit.recordFailure(badSignature(), { ...from('x', i), peer: `[2001:db8:0:7::${i.toString(16)}]:443` });
    }
    expect(named(lines, 'request.denied')).toHaveLength(5);
    await sleep(250);
    expect(named(lines, 'request.denied.folded').map((l) => [l.peer, l.count])).toEqual([
      ['2001:db8:0:7:0:0:0:0/64', 195],
    ]);
  });

  it('bounds what it remembers under a flood from many addresses, folding beyond by reason alone', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 100, maxLines: 20_000 } });
    // 10,000 addresses, each of its own /64, fill the table; the next 100 fold together.
    for (let i = 0; i < 10_100; i++) {
      const peer = `2001:db8:${(i >> 8).toString(16)}:${(i & 0xff).toString(16)}::1`;
      audit.recordFailure(badSignature(), { ...from('x', i), peer: `[${peer}]:443` });
    }
    expect(named(lines, 'request.denied')).toHaveLength(10_005);
    await sleep(250);
    expect(named(lines, 'request.denied.folded').map((l) => [l.peer, l.count])).toEqual([['*', 95]]);
  });

  it('writes at most maxLines full lines an interval from all clients together, then folds each from its first', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: 200, maxLines: 100 } });
    // 1,000 addresses of their own /64s, 3 refusals each: under `after` each, 3,000 lines before.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 1_000; i++) {
        const peer = `2001:db8:${(i >> 8).toString(16)}:${(i & 0xff).toString(16)}::1`;
        audit.recordFailure(badSignature(), { ...from('x', round * 1_000 + i), peer: `[${peer}]:443` });
      }
    }
    expect(named(lines, 'request.denied')).toHaveLength(100);
    await sleep(450);
    const folded = named(lines, 'request.denied.folded');
    // Each client is counted whole: its written lines and its folded count add up to its 3 refusals.
    expect(folded.reduce((sum, line) => sum + Number(line.count), 0)).toBe(3_000 - 100);
    expect(folded).toHaveLength(1_000);
    expect(folded[999]).toMatchObject({ peer: '2001:db8:3:e7:0:0:0:0/64', count: 3 });
    // The next interval writes again.
    audit.recordFailure(badSignature(), from('203.0.113.9', 1));
    expect(named(lines, 'request.denied')).toHaveLength(101);
  });

  it('never folds a server fault: every store outage refusal is written', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 1, intervalMs: 100 } });
    for (let i = 0; i < 20; i++) {
      audit.recordFailure(
        new SecurityError('unavailable', { reason: 'ratelimit_store_unavailable' }),
        from('203.0.113.9', i),
      );
    }
    expect(named(lines, 'request.failed')).toHaveLength(20);
  });

  it('writes one short line, no stack, for each call a backend outage fails, naming the deepest cause', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const redisError = Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:6379'), { name: 'ReplyError' });
    const storeError = new Error('the rate-limit store failed', { cause: redisError });
    for (const reason of ['ratelimit_store_unavailable', 'denylist_unavailable', 'jwks_unavailable'] as const) {
      audit.recordFailure(new SecurityError('unavailable', { reason, cause: storeError }), from('203.0.113.9', 1));
    }
    const written = named(lines, 'request.failed');
    expect(written.map((line) => line.reason)).toEqual([
      'ratelimit_store_unavailable',
      'denylist_unavailable',
      'jwks_unavailable',
    ]);
    for (const line of written) {
      expect(line).toMatchObject({ level: 50, outcome: 'error', code: 'unavailable' });
      expect(line.cause).toBe('ReplyError: connect ECONNREFUSED 10.1.2.3:6379');
      expect(JSON.stringify(line)).not.toContain('    at ');
      expect(JSON.stringify(line).length).toBeLessThan(600);
    }
  });

  it('writes and folds the refusals a client brings about as refusals, though their codes are the server’s', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 2, intervalMs: 100 } });
    for (const reason of [
      'concurrency_limit',
      'inbound_idle',
      'request_timeout',
      'answer_unread',
      'request_unfinished',
    ] as const) {
      const code = reason === 'concurrency_limit' ? 'unavailable' : 'deadline_exceeded';
      for (let i = 0; i < 5; i++) audit.recordFailure(new SecurityError(code, { reason }), from('203.0.113.9', i));
    }
    expect(named(lines, 'request.failed')).toHaveLength(0);
    expect(named(lines, 'request.denied').map((l) => [l.reason, l.level])).toEqual([
      ['concurrency_limit', 40],
      ['concurrency_limit', 40],
      ['inbound_idle', 40],
      ['inbound_idle', 40],
      ['request_timeout', 40],
      ['request_timeout', 40],
      ['answer_unread', 40],
      ['answer_unread', 40],
      ['request_unfinished', 40],
      ['request_unfinished', 40],
    ]);
    await sleep(250);
    expect(named(lines, 'request.denied.folded').map((l) => l.count)).toEqual([3, 3, 3, 3, 3]);
    // The same codes for other reasons stay server faults.
    audit.recordFailure(
      new SecurityError('deadline_exceeded', { reason: 'deadline_exceeded' }),
      from('203.0.113.9', 9),
    );
    expect(named(lines, 'request.failed')).toHaveLength(1);
  });

  it('writes an application refusal the client brought about as a refusal when it says so', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: false });
    audit.recordFailure(
      new SecurityError('unavailable', { reason: 'app.answer_budget', clientCaused: true }),
      from('203.0.113.9', 1),
    );
    audit.recordFailure(new SecurityError('unavailable', { reason: 'app.answer_budget' }), from('203.0.113.9', 2));
    expect(named(lines, 'request.denied').map((l) => [l.reason, l.level, l.outcome])).toEqual([
      ['app.answer_budget', 40, 'denied'],
    ]);
    // Without the mark the same refusal is the server's: an error line.
    expect(named(lines, 'request.failed').map((l) => [l.reason, l.level, l.outcome])).toEqual([
      ['app.answer_budget', 50, 'error'],
    ]);
  });

  it('folds the lines of calls a client leaves while their handlers work, apart from its refusals', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 3, intervalMs: 100 } });
    for (let i = 0; i < 40; i++) {
      audit.recordCancelled({ ...from('203.0.113.9', i), subject: 'svc-a' }, i % 2 === 0 ? 'AbortError' : undefined);
    }
    // Refusals of the same client keep their own count.
    for (let i = 0; i < 3; i++) audit.recordFailure(badSignature(), from('203.0.113.9', 100 + i));
    const cancelled = named(lines, 'request.cancelled');
    expect(cancelled).toHaveLength(3);
    expect(cancelled[0]).toMatchObject({
      level: 30,
      outcome: 'cancelled',
      subject: 'svc-a',
      requestId: 'r-0',
      transport: 'http',
      error: 'AbortError',
    });
    expect(cancelled[1]).not.toHaveProperty('error');
    expect(JSON.stringify(cancelled[0])).not.toContain('    at ');
    expect(named(lines, 'request.denied')).toHaveLength(3);

    await sleep(250);
    expect(named(lines, 'request.cancelled.folded')).toEqual([
      expect.objectContaining({
        level: 30,
        outcome: 'cancelled',
        peer: '203.0.113.9',
        subject: 'svc-a',
        operation: 'POST /v1/login',
        count: 37,
        firstRequestId: 'r-3',
        lastRequestId: 'r-39',
      }),
    ]);
    expect(named(lines, 'request.denied.folded')).toHaveLength(0);
  });

  it('says why the server cut a call, and folds those cuts apart from calls their clients left', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 3, intervalMs: 100 } });
    // A shutdown cutting 20 calls of one client, a revocation cutting 5, the client leaving 5.
    for (let i = 0; i < 20; i++) audit.recordCancelled(from('203.0.113.9', i), 'AbortError', 'server_shutdown');
    for (let i = 20; i < 25; i++) audit.recordCancelled(from('203.0.113.9', i), undefined, 'trust_revoked');
    for (let i = 25; i < 30; i++) audit.recordCancelled(from('203.0.113.9', i));
    const cancelled = named(lines, 'request.cancelled');
    expect(cancelled.map((l) => l.reason)).toEqual([
      'server_shutdown',
      'server_shutdown',
      'server_shutdown',
      'trust_revoked',
      'trust_revoked',
      'trust_revoked',
      undefined,
      undefined,
      undefined,
    ]);
    expect(cancelled[0]).toMatchObject({ level: 30, outcome: 'cancelled', error: 'AbortError', requestId: 'r-0' });
    expect(cancelled[6]).not.toHaveProperty('reason');

    await sleep(250);
    const folded = named(lines, 'request.cancelled.folded');
    expect(folded).toEqual([
      expect.objectContaining({ reason: 'server_shutdown', count: 17, firstRequestId: 'r-3', lastRequestId: 'r-19' }),
      expect.objectContaining({ reason: 'trust_revoked', count: 2, firstRequestId: 'r-23', lastRequestId: 'r-24' }),
      expect.objectContaining({ outcome: 'cancelled', count: 2, firstRequestId: 'r-28', lastRequestId: 'r-29' }),
    ]);
    expect(folded[2]).not.toHaveProperty('reason');
  });

  it('writes every refusal and cancelled call with foldRefusals: false', async () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: false });
    for (let i = 0; i < 105; i++) audit.recordFailure(badSignature(), from('203.0.113.9', i));
    for (let i = 0; i < 105; i++) audit.recordCancelled(from('203.0.113.9', i));
    await sleep(150);
    expect(named(lines, 'request.denied')).toHaveLength(105);
    expect(named(lines, 'request.cancelled')).toHaveLength(105);
    expect(lines.filter((l) => String(l.event).endsWith('.folded'))).toHaveLength(0);
  });

  it.each([
    [{ after: 0, intervalMs: 1_000 }, /"foldRefusals.after" must be a whole number of at least 1/],
    [{ after: 5, intervalMs: 10 }, /"foldRefusals.intervalMs" must be a whole number of ms, from 100 to 2147483647/],
    [true, /"foldRefusals" must be false or \{ after, intervalMs, maxLines \}/],
    [{ after: 5, maxLines: 0 }, /"foldRefusals.maxLines" must be a whole number of at least 1/],
    // A misspelt key was read as no key: folding stayed on at its defaults.
    [{ after: 5, disabled: true }, /"foldRefusals": unknown option "disabled"/],
  ])('refuses foldRefusals %o', (foldRefusals, message) => {
    expect(() => createAuditLogger({ foldRefusals: foldRefusals as never })).toThrow(message);
  });

  it('keeps the default of a folding key left out or given as undefined', async () => {
    const { destination, lines } = capture();
    const audit = createAuditLogger({ destination, foldRefusals: { after: 5, intervalMs: undefined } as never });
    // Folded after 5 in the default 10 s interval: nothing flushed within this test's time.
    for (let i = 0; i < 8; i++) audit.recordFailure(badSignature(), from('203.0.113.9', i));
    await sleep(150);
    expect(named(lines, 'request.denied')).toHaveLength(5);
    expect(() => createAuditLogger({ foldRefusals: { intervalMs: 5_000 } })).not.toThrow();
  });
});

describe('createAuditLogger with the service’s own pino logger', () => {
  const refusal = () => new SecurityError('unauthenticated', { reason: 'missing_token' });
  const where = { operation: 'GET /v1/items/:id', requestId: 'r-shared', transport: 'http' } as const;

  it('writes through a child of it: one destination, the parent’s bindings, fluxguard’s name and redaction', () => {
    const { lines, destination } = capture();
    const parent = pino({ level: 'info', base: { service: 'orders' } }, destination);
    const audit = createAuditLogger({ logger: parent });
    parent.info({ authorization: 'kept by the parent' }, 'the service’s own line');
    audit.logger.info({ req: { headers: { authorization: `Bearer ${TOKEN}` } } }, 'through fluxguard');
    audit.recordFailure(refusal(), where);

    expect(lines[0]).toMatchObject({ service: 'orders', msg: 'the service’s own line' });
    expect(lines[1]).toMatchObject({ service: 'orders', name: 'fluxguard', msg: 'through fluxguard' });
    expect(JSON.stringify(lines[1])).not.toContain(TOKEN);
    // An expected refusal: one short line, no error object and no stack.
    expect(lines[2]).toMatchObject({
      service: 'orders',
      name: 'fluxguard',
      event: 'request.denied',
      reason: 'missing_token',
    });
    expect(lines[2]).not.toHaveProperty('err');
    expect(JSON.stringify(lines[2])).not.toMatch(/\bat \w/);
  });

  it('writes no cause that only repeats the public text (a fluxguard error wrapping another)', () => {
    const { lines, destination } = capture();
    const audit = createAuditLogger({ destination });
    const wrapped = new SecurityError('unauthenticated', {
      reason: 'missing_token',
      cause: new SecurityError('unauthenticated'),
    });
    audit.recordFailure(wrapped, where);
    expect(lines[0]).toMatchObject({ reason: 'missing_token' });
    expect(lines[0]).not.toHaveProperty('cause');
    expect(JSON.stringify(lines[0]).match(/Authentication is required/g) ?? []).toHaveLength(0);
  });

  it('follows the parent’s level unless given one', () => {
    const { lines, destination } = capture();
    const parent = pino({ level: 'error' }, destination);
    createAuditLogger({ logger: parent }).recordFailure(refusal(), where);
    expect(lines).toHaveLength(0);
    createAuditLogger({ logger: parent, level: 'warn' }).recordFailure(refusal(), where);
    expect(lines).toHaveLength(1);
  });

  it('refuses a logger with a destination, or something that is not a pino logger', () => {
    const { destination } = capture();
    expect(() => createAuditLogger({ logger: pino(), destination })).toThrow(
      /give "logger" or "destination", not both/,
    );
    expect(() => createAuditLogger({ logger: console as never })).toThrow(/"logger" must be a pino logger/);
  });
});

describe('createAuditLogger with a destination that throws', () => {
  const where = {
    operation: 'GET /v1/items',
    peer: '198.51.100.7:4000',
    requestId: 'r-lost',
    transport: 'http',
  } as const;

  function throwingDestination(): { destination: { write(line: string): void }; calls: () => number } {
    let calls = 0;
    return {
      destination: {
        write: (line: string) => {
          calls += 1;
          throw Object.assign(new Error(`disk full while writing ${line}`), { code: 'ENOSPC' });
        },
      },
      calls: () => calls,
    };
  }

  it('answers a refusal as it would have, and warns of the lost lines without their content', async () => {
    const { destination, calls } = throwingDestination();
    const audit = createAuditLogger({ destination });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const refused = new SecurityError('unauthenticated', { reason: 'missing_token', subject: 'alice' });
      const answer = audit.recordFailure(refused, where);
      expect(answer).toEqual(
        createAuditLogger({ destination: captureLines().destination }).recordFailure(refused, where),
      );
      expect(answer).toMatchObject({ code: 'unauthenticated', requestId: 'r-lost' });
      // Every way of writing a line is covered, not only recordFailure.
      expect(audit.recordFailure(new Error('boom'), where)).toMatchObject({ code: 'internal', requestId: 'r-lost' });
      audit.record({ event: 'rbac.shadow_denied', outcome: 'allowed', operation: 'GET /v1/items', requestId: 'r-2' });
      audit.recordCancelled(where);
      audit.logger.warn({ token: TOKEN }, 'the application’s own line');
      expect(calls()).toBe(5);

      await captured.settled();
      // One warning for the five lines: at most one a minute.
      expect(captured.warnings).toHaveLength(1);
      const [message] = captured.messages();
      expect(message).toMatch(/failed to write 1 audit line\(s\) \(Error ENOSPC\)/);
      for (const secret of ['disk full', 'alice', 'r-lost', 'missing_token', TOKEN]) {
        expect(message).not.toContain(secret);
      }
    } finally {
      captured.stop();
    }
  });

  it('answers a refusal as it would have through the application’s own logger too', async () => {
    const { destination, calls } = throwingDestination();
    // pino gives a child no hooks of its own: the audit logger's answers are guarded instead.
    const audit = createAuditLogger({ logger: pino({}, destination) });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const refused = new SecurityError('unauthenticated', { reason: 'missing_token', subject: 'alice' });
      expect(audit.recordFailure(refused, where)).toEqual(
        createAuditLogger({ destination: captureLines().destination }).recordFailure(refused, where),
      );
      expect(audit.recordFailure(new Error('boom'), where)).toMatchObject({ code: 'internal', requestId: 'r-lost' });
      audit.record({ event: 'rbac.shadow_denied', outcome: 'allowed', operation: 'GET /v1/items', requestId: 'r-2' });
      audit.recordCancelled(where);
      expect(calls()).toBe(4);
      await captured.settled();
      expect(captured.warnings).toHaveLength(1);
      expect(captured.messages()[0]).not.toMatch(/disk full|alice|r-lost/);
    } finally {
      captured.stop();
    }
  });

  it('warns again after a minute, with the count of lines lost since', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({ destination: throwingDestination().destination });
      for (let i = 0; i < 3; i++) audit.recordFailure(new SecurityError('permission_denied'), where);
      vi.advanceTimersByTime(60_000);
      audit.recordFailure(new SecurityError('permission_denied'), where);
      await captured.settled();
      expect(captured.messages().map((m) => /write (\d+) audit/.exec(m)?.[1])).toEqual(['1', '3']);
    } finally {
      captured.stop();
      vi.useRealTimers();
    }
  });

  it('tells the lines lost after a warning at the end of its minute, though no line is lost later', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({ destination: throwingDestination().destination, foldRefusals: false });
      // A burst, as a full backlog drops: the first warning can only count its first line.
      for (let i = 0; i < 1000; i++) audit.recordFailure(new SecurityError('permission_denied'), where);
      vi.advanceTimersByTime(60_000);
      await captured.settled();
      expect(captured.messages().map((m) => /write (\d+) audit/.exec(m)?.[1])).toEqual(['1', '999']);
    } finally {
      captured.stop();
      vi.useRealTimers();
    }
  });
});

// A stream fails after `write` returned: it emits 'error' later, which without a listener ends
// the process. Real streams: a file that cannot be opened, a Writable whose disk refuses.
describe('createAuditLogger with a destination that fails later, as a stream does', () => {
  const where = { operation: 'GET /v1/items', requestId: 'r-lost', transport: 'http' } as const;
  // Not events.once: it rejects on the 'error' the stream emits first.
  const closed = (stream: Writable): Promise<void> =>
    new Promise((resolve) => {
      stream.once('close', resolve);
    });
  const refusal = (): SecurityError => new SecurityError('unauthenticated', { reason: 'missing_token' });

  it('warns of a file it cannot open instead of ending the process', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fluxguard-audit-'));
    const destination = createWriteStream(join(dir, 'missing', 'audit.log'));
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({ destination });
      expect(audit.recordFailure(refusal(), where)).toMatchObject({ code: 'unauthenticated', requestId: 'r-lost' });
      await closed(destination);
      await captured.settled();
      expect(captured.messages()).toHaveLength(1);
      expect(captured.messages()[0]).toMatch(/failed to write 1 audit line\(s\) \(Error ENOENT\)/);
      expect(captured.messages()[0]).not.toContain(dir);
    } finally {
      captured.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('counts the lines a stream its error destroyed drops, and warns of them a minute later', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let writes = 0;
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        writes += 1;
        done(Object.assign(new Error(`disk refused ${chunk.toString('utf8')}`), { code: 'EIO' }));
      },
    });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({ destination, foldRefusals: false });
      audit.recordFailure(refusal(), where);
      await closed(destination);
      for (let i = 0; i < 3; i++) {
        expect(audit.recordFailure(refusal(), where)).toMatchObject({ code: 'unauthenticated' });
      }
      vi.advanceTimersByTime(60_000);
      audit.recordFailure(refusal(), where);
      await captured.settled();
      expect(writes).toBe(1);
      expect(captured.messages().map((m) => /write (\d+) audit line\(s\) \((.*?)\)/.exec(m)?.slice(1))).toEqual([
        ['1', 'Error EIO'],
        ['4', 'Error EIO'],
      ]);
      expect(captured.messages().join('\n')).not.toMatch(/disk refused|r-lost|missing_token/);
    } finally {
      captured.stop();
      vi.useRealTimers();
    }
  });
});

describe('createAuditLogger with one destination stream for many loggers', () => {
  it('adds one error listener to the stream, and each logger reports the failure', async () => {
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const every = captureWarnings();
    try {
      const { destination, stream } = brokenDestination('later');
      // One logger per tenant, say: a listener each passed Node's limit of ten.
      const audits = Array.from({ length: 12 }, () => createAuditLogger({ destination }));
      expect(stream?.listenerCount('error')).toBe(1);
      audits[0]?.recordFailure(new SecurityError('permission_denied'), {
        operation: 'GET /v1/items',
        requestId: 'r-shared',
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
      await captured.settled();
      expect(captured.messages()).toHaveLength(12);
      expect(captured.messages()[0]).toMatch(/\(Error ECONNRESET\)/);
      expect(every.warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      captured.stop();
      every.stop();
    }
  });
});

describe('createAuditLogger and a failing stream of pino’s', () => {
  const where = { operation: 'GET /v1/items', requestId: 'r-pino', transport: 'http' } as const;

  it('counts one failure once, though pino emits it a second time', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const dir = await mkdtemp(join(tmpdir(), 'fluxguard-audit-'));
    try {
      const destination = pino.destination({ dest: join(dir, 'audit.log'), sync: true });
      createAuditLogger({ destination });
      destination.emit('error', Object.assign(new Error('i/o error'), { code: 'EIO' }));
      vi.advanceTimersByTime(61_000);
      await captured.settled();
      expect(captured.messages()).toHaveLength(1);
      expect(captured.messages()[0]).toMatch(/failed to write 1 audit line\(s\) \(Error EIO\)/);
    } finally {
      captured.stop();
      vi.useRealTimers();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('warns at once when the clock went back past the last warning', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({ destination: brokenDestination('throw').destination });
      audit.recordFailure(new SecurityError('permission_denied'), where);
      // An NTP step back of an hour: waiting for the clock to pass the last warning held the next one.
      vi.setSystemTime(Date.now() - 3_600_000);
      audit.recordFailure(new SecurityError('permission_denied'), where);
      await captured.settled();
      expect(captured.messages().map((m) => /write (\d+) audit/.exec(m)?.[1])).toEqual(['1', '1']);
    } finally {
      captured.stop();
      vi.useRealTimers();
    }
  });

  it('counts every line after EPIPE as lost: pino then drops them all, destroying nothing', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] });
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    const dir = await mkdtemp(join(tmpdir(), 'fluxguard-audit-'));
    try {
      const destination = pino.destination({ dest: join(dir, 'audit.log'), sync: true });
      const audit = createAuditLogger({ destination });
      destination.emit('error', Object.assign(new Error('broken pipe'), { code: 'EPIPE' }));
      for (let i = 0; i < 3; i++) audit.recordFailure(new SecurityError('permission_denied'), where);
      vi.advanceTimersByTime(61_000);
      await captured.settled();
      expect(captured.messages().map((m) => /write (\d+) audit/.exec(m)?.[1])).toEqual(['1', '3']);
    } finally {
      captured.stop();
      vi.useRealTimers();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps the folded lines’ timer from ending the process when the application’s logger throws', async () => {
    const captured = captureWarnings('FLUXGUARD_AUDIT_WRITE_FAILED');
    try {
      const audit = createAuditLogger({
        logger: pino({}, brokenDestination('throw').destination),
        foldRefusals: { after: 1, intervalMs: 100, maxLines: 10 },
      });
      for (let i = 0; i < 5; i++) audit.recordFailure(new SecurityError('permission_denied'), where);
      // The folded line is written by the interval's timer: a throw there was uncaught.
      await new Promise((resolve) => setTimeout(resolve, 250));
      await captured.settled();
      expect(captured.messages()).toHaveLength(1);
    } finally {
      captured.stop();
    }
  });
});

/** The built core, for child processes (they run without the test runner's TypeScript). */
const core = fileURLToPath(new URL('../index.ts', import.meta.url)).replace(/\/src\/(.*)\.ts$/, '/dist/$1.js');

describe('createAuditLogger folding refusals when the process stops', () => {
  // A flood just before a deploy's SIGTERM: the interval's timer is unref'd, and its counts
  // were never written.
  it.each([
    ['process.exit()', 'setTimeout(() => process.exit(0), 50);'],
    ['its work done', ''],
  ])('writes the counts of the last interval at exit: %s', (_how, then) => {
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { createAuditLogger, SecurityError } from ${JSON.stringify(core)};
         const audit = createAuditLogger({ foldRefusals: { after: 50, intervalMs: 60_000 } });
         globalThis.audit = audit;
         const refusal = new SecurityError('unauthenticated', { reason: 'bad_signature' });
         for (let i = 0; i < 300; i++) {
           audit.recordFailure(refusal, { operation: 'GET /v1/x', requestId: 'r-' + i, peer: '203.0.113.9:' + (4000 + i), transport: 'http' });
         }
         ${then}`,
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(child.status).toBe(0);
    const lines = child.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const named = (event: string) => lines.filter((line) => line.event === event);
    expect(named('request.denied')).toHaveLength(50);
    expect(named('request.denied.folded')).toEqual([
      expect.objectContaining({ count: 250, peer: '203.0.113.9', firstRequestId: 'r-50', lastRequestId: 'r-299' }),
    ]);
  });
});

describe('createAuditLogger writing the folded counts at exit', () => {
  // The folded line was handed to the thread pool at exit, and a process that ends with its
  // work done does not wait for the pool: now and then (2 runs in 60) the line never came.
  // The pool's one thread is kept busy here, so that only a line written during exit is there
  // when the process's last exit listener looks.
  it('writes them before the exit listeners are done, not in a write the thread pool may never run', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fluxguard-audit-'));
    const out = openSync(join(dir, 'stdout.log'), 'w');
    try {
      const child = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { fstatSync } from 'node:fs';
           import { pbkdf2 } from 'node:crypto';
           import { createAuditLogger, SecurityError } from ${JSON.stringify(core)};
           const audit = createAuditLogger({ foldRefusals: { after: 5, intervalMs: 60_000 } });
           globalThis.audit = audit;
           const refusal = new SecurityError('unauthenticated', { reason: 'bad_signature' });
           for (let i = 0; i < 20; i++) {
             audit.recordFailure(refusal, { operation: 'GET /v1/x', requestId: 'r-' + i, peer: '203.0.113.9:4000', transport: 'http' });
           }
           await new Promise((resolve) => setTimeout(resolve, 100));
           process.on('exit', () => { process.stderr.write(String(fstatSync(1).size)); });
           pbkdf2('x', 'y', 1_000_000, 32, 'sha256', () => {});
           process.exit(0);`,
        ],
        {
          encoding: 'utf8',
          timeout: 20_000,
          stdio: ['ignore', out, 'pipe'],
          env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
        },
      );
      expect(child.status).toBe(0);
      const written = await readFile(join(dir, 'stdout.log'), 'utf8');
      expect(written).toContain('"event":"request.denied.folded"');
      expect(Number(child.stderr)).toBe(Buffer.byteLength(written));
    } finally {
      closeSync(out);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('createAuditLogger on a stream that outlives its loggers', () => {
  it('keeps none of them alive', () => {
    const child = spawnSync(
      process.execPath,
      [
        '--expose-gc',
        '--input-type=module',
        '-e',
        `import { PassThrough } from 'node:stream';
         import { createAuditLogger } from ${JSON.stringify(core)};
         const shared = new PassThrough();
         shared.resume();
         let collected = 0;
         const registry = new FinalizationRegistry(() => { collected += 1; });
         for (let i = 0; i < 200; i++) registry.register(createAuditLogger({ destination: shared }).logger, i);
         for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 20)); }
         // The stream still has its listener, and an error on it still ends nothing.
         shared.emit('error', new Error('late'));
         process.stdout.write(String(collected) + ' ' + String(shared.listenerCount('error')));`,
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    const [collected, listeners] = child.stdout.trim().split(' ').map(Number);
    expect(collected).toBeGreaterThan(190);
    expect(listeners).toBe(1);
    expect(child.status).toBe(0);
  });
});

describe('createAuditLogger writing to standard output on a full disk', () => {
  // /dev/full refuses every write with ENOSPC, as a full disk does (Linux, where CI runs).
  it('warns instead of ending the process (pino writes fd 1 after write returned), and ends when its work is done', () => {
    const full = openSync('/dev/full', 'w');
    try {
      // At exit pino flushed fd 1 again, and sonic-boom retried ENOSPC for ever: it hung there.
      const child = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { createAuditLogger, SecurityError } from ${JSON.stringify(core)};
           const audit = createAuditLogger();
           audit.recordFailure(new SecurityError('unauthenticated', { reason: 'missing_token' }), { operation: 'x', requestId: 'r-1' });
           setTimeout(() => { process.stderr.write('still serving\\n'); }, 300);`,
        ],
        { stdio: ['ignore', full, 'pipe'], timeout: 10_000, encoding: 'utf8' },
      );
      expect(child.stderr).toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED.*\(Error ENOSPC\)/);
      expect(child.stderr).toContain('still serving');
      expect(child.status).toBe(0);
    } finally {
      closeSync(full);
    }
  });
});

describe('createAuditLogger writing to standard output that nobody reads', () => {
  // A stalled log shipper: every line waits in memory, and a flood of refusals from many
  // addresses (folding off here, as many addresses make it) grew that without bound.
  it('holds at most 16 MiB of unwritten lines, and warns of the lines it drops', async () => {
    const child = spawn(
      process.execPath,
      [
        '--expose-gc',
        '--input-type=module',
        '-e',
        `import { createAuditLogger, SecurityError } from ${JSON.stringify(core)};
         const audit = createAuditLogger({ foldRefusals: false });
         globalThis.gc();
         const before = process.memoryUsage().heapUsed;
         const refusal = new SecurityError('unauthenticated', { reason: 'missing_token' });
         const filler = 'x'.repeat(200);
         // About 40 MiB of lines, far past what the pipe (64 KiB) takes while nobody reads it.
         for (let i = 0; i < 100_000; i++) {
           audit.recordFailure(refusal, { operation: 'GET /v1/' + filler, requestId: 'r-' + i, peer: '10.0.' + (i % 250) + '.1:4000' });
         }
         globalThis.gc();
         const grown = (process.memoryUsage().heapUsed - before) / 1048576;
         setTimeout(() => process.stderr.write('grown ' + grown.toFixed(1) + '\\n'), 50);`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    // Standard output is held open and never read; standard error is.
    let stderr = '';
    child.stderr.setEncoding('utf8');
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`no answer from the child: ${stderr}`));
        }, 20_000);
        child.stderr.on('data', (chunk: string) => {
          stderr += chunk;
          if (/grown [\d.]+\n/.test(stderr)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    } finally {
      // Not an exit: at exit the audit log waits a second for the pipe nobody reads.
      child.kill('SIGKILL');
    }
    const grown = Number(/grown ([\d.]+)/.exec(stderr)?.[1]);
    expect(grown).toBeLessThan(24);
    expect(stderr).toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED.*\(Error ERR_AUDIT_BACKLOG_FULL\)/);
    expect(stderr).not.toMatch(/missing_token|r-\d/);
  }, 30_000);
});
