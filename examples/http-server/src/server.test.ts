import { once } from 'node:events';
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '@fluxguard/core';
import { createMtlsAgent } from '@fluxguard/express';
import {
  loadReferenceSecurity,
  reprDigestOf,
  signDevToken,
  type ReferenceSecurity,
} from '@fluxguard/example-artifact-store';
import { startHttpServer, type StartedHttpServer } from './server.js';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

interface ClientMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** node:https sends the path exactly as given (fetch would normalize `%2e%2e` away). */
function rawGet(
  port: number,
  path: string,
  tls: ClientMaterial,
  headers: Record<string, string>,
  method = 'GET',
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, method, headers, ...tls, servername: 'localhost' },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Bytes this process has read through system calls (files and sockets): Linux's `rchar`. */
function bytesReadByThisProcess(): number {
  const line = readFileSync('/proc/self/io', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('rchar:'));
  return Number(line?.slice('rchar:'.length).trim());
}

describe('reference HTTP server', () => {
  const base = mkdtempSync(join(tmpdir(), 'fluxguard-http-'));
  const dataDir = join(base, 'data');
  const devDir = join(base, 'dev');
  const logLines: string[] = [];
  const audit = createAuditLogger({
    destination: {
      write(line: string) {
        logLines.push(line);
      },
    },
  });
  const logOf = (requestId: string | null): string =>
    logLines.find((l) => requestId !== null && l.includes(`"requestId":"${requestId}"`)) ?? '';
  let security: ReferenceSecurity;
  let server: StartedHttpServer;
  let tls: ClientMaterial;
  let withCert: ReturnType<typeof createMtlsAgent>;
  let withoutCert: ReturnType<typeof createMtlsAgent>;
  const tokens = new Map<string, string>();

  /** A development token for alice with these roles (cached: signing reads the key file). */
  async function tokenFor(roles: string): Promise<string> {
    let token = tokens.get(roles);
    if (token === undefined) {
      token = await signDevToken({ devDir, subject: 'alice', roles: roles === '' ? [] : roles.split(',') });
      tokens.set(roles, token);
    }
    return token;
  }

  /** A request with the development client certificate and, unless `roles` is null, a token. */
  async function call(
    path: string,
    init: RequestInit & { roles?: string | null; certificate?: boolean } = {},
  ): Promise<Response> {
    const { roles = 'artifacts.admin', certificate = true, headers, ...rest } = init;
    const all = new Headers(headers);
    if (roles !== null) all.set('authorization', `Bearer ${await tokenFor(roles)}`);
    // Node 20's fetch takes the undici 7 Agent of createMtlsAgent at run time; its bundled
    // types name an older Dispatcher.
    const dispatcher = (certificate ? withCert : withoutCert) as unknown as NonNullable<RequestInit['dispatcher']>;
    return fetch(`${server.url}${path}`, { ...rest, headers: all, dispatcher });
  }

  beforeAll(async () => {
    // An empty environment: the default policy file and development material created in devDir.
    security = await loadReferenceSecurity({ devDir, audit, env: {} });
    server = await startHttpServer({
      port: 0,
      dataDir,
      security,
      audit,
      maxArtifactBytes: 1024,
      requestTimeoutMs: 1500,
    });
    tls = {
      ca: readFileSync(join(devDir, 'ca.crt')),
      cert: readFileSync(join(devDir, 'client.crt')),
      key: readFileSync(join(devDir, 'client.key')),
    };
    withCert = createMtlsAgent({
      caFile: join(devDir, 'ca.crt'),
      certFile: join(devDir, 'client.crt'),
      keyFile: join(devDir, 'client.key'),
    });
    withoutCert = createMtlsAgent({ caFile: join(devDir, 'ca.crt') });
  });

  afterAll(async () => {
    await withCert.close();
    await withoutCert.close();
    await server.close();
    await security.close();
    rmSync(base, { recursive: true, force: true });
  });

  async function put(path: string, content: string, digest = reprDigestOf(sha(content))): Promise<Response> {
    return call(`/v1/artifacts/${path}`, {
      method: 'PUT',
      headers: { 'repr-digest': digest, 'content-type': 'application/octet-stream' },
      body: content,
    });
  }

  it('serves HTTPS only, at an https:// URL', () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('requires the security settings (no insecure fallback)', async () => {
    await expect(startHttpServer({ port: 0, dataDir } as never)).rejects.toThrow(/security/);
  });

  it('answers health publicly, without certificate or token, with the API security headers', async () => {
    const res = await call('/healthz', { roles: null, certificate: false });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    expect(res.headers.get('x-request-id')).toBeTruthy();
    expect(res.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('strict-transport-security')).toContain('max-age=');
  });

  it('uploads, reads, lists and deletes an artifact', async () => {
    const created = await put('models/v1/a.bin', 'hello world');
    expect(created.status).toBe(201);
    expect(await created.json()).toEqual({ path: 'models/v1/a.bin', sha256: sha('hello world'), size: 11 });
    await put('other/b.txt', 'b');

    const got = await call('/v1/artifacts/models/v1/a.bin');
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.headers.get('repr-digest')).toBe(reprDigestOf(sha('hello world')));
    expect(await got.text()).toBe('hello world');

    const listed = await call('/v1/artifacts?prefix=models/');
    expect(await listed.json()).toEqual([{ path: 'models/v1/a.bin', sha256: sha('hello world'), size: 11 }]);
    const all = await call('/v1/artifacts');
    expect(((await all.json()) as { path: string }[]).map((i) => i.path)).toEqual(['models/v1/a.bin', 'other/b.txt']);

    const deleted = await call('/v1/artifacts/models/v1/a.bin', { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    const gone = await call('/v1/artifacts/models/v1/a.bin');
    expect(gone.status).toBe(404);
    expect(gone.headers.get('content-type')).toBe('application/problem+json');
    expect(await gone.json()).toMatchObject({ code: 'not_found' });
  });

  it('answers HEAD with the headers of GET without reading the artifact', async () => {
    // Written in place: larger than this server's upload limit, so that a read shows.
    const size = 16 * 1024 * 1024;
    mkdirSync(join(dataDir, 'head'), { recursive: true });
    writeFileSync(join(dataDir, 'head', 'big.bin'), Buffer.alloc(size, 7));
    // The first answer hashes the file once (the digest is kept); HEADs after it read nothing.
    const first = await call('/v1/artifacts/head/big.bin', { method: 'HEAD' });
    expect(first.status).toBe(200);
    const before = bytesReadByThisProcess();
    for (let i = 0; i < 4; i++) {
      const res = await call('/v1/artifacts/head/big.bin', { method: 'HEAD' });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-length')).toBe(String(size));
      expect(res.headers.get('repr-digest')).toBe(first.headers.get('repr-digest'));
      expect(await res.text()).toBe('');
    }
    // Four reads of the file would be 64 MiB.
    expect(bytesReadByThisProcess() - before).toBeLessThan(size / 4);
    const got = await call('/v1/artifacts/head/big.bin');
    expect((await got.arrayBuffer()).byteLength).toBe(size);
  });

  it('streams a chunked upload without Content-Length', async () => {
    const parts = ['chunk-1|', 'chunk-2|', 'chunk-3'];
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(new TextEncoder().encode(p));
        controller.close();
      },
    });
    const res = await call('/v1/artifacts/streamed.bin', {
      method: 'PUT',
      headers: { 'repr-digest': reprDigestOf(sha(parts.join(''))) },
      body,
      duplex: 'half',
    });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ size: parts.join('').length });
  });

  it('refuses a checksum mismatch and keeps nothing', async () => {
    const res = await put('mismatch.bin', 'actual bytes', reprDigestOf(sha('other bytes')));
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'sha256' });
    expect((await call('/v1/artifacts/mismatch.bin')).status).toBe(404);
    expect(readdirSync(dataDir).filter((n) => n.includes('mismatch'))).toEqual([]);
  });

  it.each([
    ['missing', undefined],
    ['malformed', 'sha-256=:not-base64:'],
    ['another algorithm only', 'sha-512=:AAAA:'],
  ])('refuses a %s Repr-Digest naming the header', async (_label, digest) => {
    const res = await call('/v1/artifacts/x.bin', {
      method: 'PUT',
      headers: digest === undefined ? {} : { 'repr-digest': digest },
      body: 'x',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'Repr-Digest' });
  });

  it.each(['gzip', 'br', 'GZIP, identity'])(
    'refuses a body sent with Content-Encoding: %s, which would be kept unread as sent',
    async (coding) => {
      const pickle = gzipSync(Buffer.from("cos\nsystem\n(S'id'\ntR."));
      const res = await call('/v1/artifacts/coded.bin', {
        method: 'PUT',
        headers: { 'repr-digest': reprDigestOf(sha(pickle)), 'content-encoding': coding },
        body: pickle,
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'content-encoding' });
      expect(readdirSync(dataDir).filter((n) => n.includes('coded'))).toEqual([]);
    },
  );

  it('takes Content-Encoding: identity', async () => {
    const res = await call('/v1/artifacts/identity.bin', {
      method: 'PUT',
      headers: { 'repr-digest': reprDigestOf(sha('plain')), 'content-encoding': 'identity' },
      body: 'plain',
    });
    expect(res.status).toBe(201);
  });

  it('refuses an artifact over the limit, by Content-Length or while streaming, and keeps nothing', async () => {
    const big = 'x'.repeat(2048);
    const declared = await put('big.bin', big);
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ code: 'payload_too_large' });

    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(big));
        controller.close();
      },
    });
    const streamed = await call('/v1/artifacts/big2.bin', {
      method: 'PUT',
      headers: { 'repr-digest': reprDigestOf(sha(big)) },
      body,
      duplex: 'half',
    });
    expect(streamed.status).toBe(413);
    expect(readdirSync(dataDir).filter((n) => n.includes('big'))).toEqual([]);
  });

  it.each([
    ['an encoded traversal', '/v1/artifacts/%2e%2e/%2e%2e/etc/passwd'],
    ['a plain traversal', '/v1/artifacts/a/../../etc/passwd'],
    ['an encoded slash', '/v1/artifacts/a%2F..%2F..%2Fetc%2Fpasswd'],
    ['an encoded backslash', '/v1/artifacts/..%5C..%5Cetc%5Cpasswd'],
    ['a NUL byte', '/v1/artifacts/a%00.bin'],
    ['a hidden file', '/v1/artifacts/.upload-x'],
  ])('refuses %s with 400 naming the path field', async (_label, path) => {
    const res = await rawGet(server.port, path, tls, { authorization: `Bearer ${await tokenFor('artifacts.reader')}` });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ code: 'invalid_argument', field: 'path' });
    expect(res.body).not.toMatch(/passwd|\.\./);
  });

  it('refuses a repeated prefix parameter', async () => {
    const res = await call('/v1/artifacts?prefix=a&prefix=b');
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'query.prefix' });
  });

  it('turns a file-system failure into a generic 500 with a request id; the log has the cause', async () => {
    // A socket file: opening it fails (ENXIO), a failure no client can cause through the API.
    const socket = createServer().listen(join(dataDir, 'asock.bin'));
    await once(socket, 'listening');
    const res = await call('/v1/artifacts/asock.bin').finally(() => {
      socket.close();
    });
    expect(res.status).toBe(500);
    const requestId = res.headers.get('x-request-id');
    expect(requestId).toBeTruthy();
    const body = await res.text();
    const everything = `${res.statusText}\n${[...res.headers.entries()].join('\n')}\n${body}`;
    expect(everything).not.toContain(base);
    expect(everything).not.toMatch(/ENXIO|errno|\bat [^\s]+ \(|node:internal/);
    expect(JSON.parse(body)).toEqual({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      detail: 'An internal error occurred.',
      code: 'internal',
      requestId,
    });
    const line = logOf(requestId);
    expect(line).toContain('ENXIO');
    expect(line).toContain('"operation":"GET /v1/artifacts/*path"');
    expect(line).toMatch(/\bat [^\s]+ \(|node:internal/);
  });

  it('denies a route or method no rule names, whoever asks, without echoing it', async () => {
    const admin = `Bearer ${await tokenFor('artifacts.admin')}`;
    for (const [method, path] of [
      ['GET', '/v2/anything'],
      ['PATCH', '/v1/artifacts/x.bin'],
      ['GET', '/V1/ARTIFACTS/x.bin'],
    ] as const) {
      const res = await rawGet(server.port, path, tls, { authorization: admin }, method);
      expect(res.status).toBe(403);
      expect(res.headers['content-type']).toBe('application/problem+json');
      expect(res.body).not.toMatch(/Cannot|<html|anything/i);
    }
  });

  it('reads /v1/artifacts/ as /v1/artifacts, as its rules do: the list, under the list rule', async () => {
    // The app routes non-strictly: fluxguard refuses strict routing, under which a path with a
    // trailing slash could reach another route than the one whose rule decided it.
    const res = await call('/v1/artifacts/', { roles: 'artifacts.reader' });
    expect(res.status).toBe(200);
    expect(Array.isArray(await res.json())).toBe(true);
    expect((await call('/v1/artifacts/', { roles: null })).status).toBe(401);
  });

  it('drops a client that sends its headers too slowly', async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: server.port, ca: tls.ca, servername: 'localhost' }, () => {
        socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
      });
      let data = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        data += chunk;
      });
      socket.on('close', () => {
        resolve(data);
      });
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  describe('authentication and authorization (policy/artifact-store.policy.json)', () => {
    beforeAll(async () => {
      expect((await put('matrix/seed.txt', 'seed')).status).toBe(201);
    });

    const digest = reprDigestOf(sha('m'));
    const operations = {
      get: { method: 'GET', path: '/v1/artifacts/matrix/seed.txt' },
      head: { method: 'HEAD', path: '/v1/artifacts/matrix/seed.txt' },
      list: { method: 'GET', path: '/v1/artifacts?prefix=matrix/' },
      put: { method: 'PUT', path: '/v1/artifacts/matrix/new.txt' },
      delete: { method: 'DELETE', path: '/v1/artifacts/matrix/none.txt' },
    } as const;
    // Every role against every operation. DELETE of a missing artifact: 404 once authorized.
    const matrix: [string, Record<keyof typeof operations, number>][] = [
      ['artifacts.reader', { get: 200, head: 200, list: 200, put: 403, delete: 403 }],
      ['artifacts.writer', { get: 200, head: 200, list: 200, put: 201, delete: 403 }],
      ['artifacts.admin', { get: 200, head: 200, list: 200, put: 201, delete: 404 }],
      ['', { get: 403, head: 403, list: 403, put: 403, delete: 403 }],
      ['other.role', { get: 403, head: 403, list: 403, put: 403, delete: 403 }],
    ];
    it.each(matrix)('role "%s" gets the statuses of the policy', async (roles, expected) => {
      const seen: Record<string, number> = {};
      for (const [name, op] of Object.entries(operations)) {
        const res = await call(op.path, {
          method: op.method,
          roles,
          ...(op.method === 'PUT' ? { headers: { 'repr-digest': digest }, body: 'm' } : {}),
        });
        await res.arrayBuffer();
        seen[name] = res.status;
      }
      expect(seen).toEqual(expected);
    });

    it('refuses a request without a token with 401 and a bare Bearer challenge', async () => {
      const res = await call('/v1/artifacts/matrix/seed.txt', { roles: null });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.json()).toMatchObject({ code: 'unauthenticated' });
    });

    it('refuses a bad token with error="invalid_token"', async () => {
      const token = await tokenFor('artifacts.admin');
      const res = await call('/v1/artifacts/matrix/seed.txt', {
        roles: null,
        headers: { authorization: `Bearer ${token.slice(0, -3)}xyz` },
      });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    });

    it('never reads a token from the query string', async () => {
      const token = await tokenFor('artifacts.admin');
      const res = await call(`/v1/artifacts/matrix/seed.txt?access_token=${token}`, { roles: null });
      expect(res.status).toBe(401);
    });

    it('needs the client certificate as well as the role (the policy asks for both)', async () => {
      const res = await call('/v1/artifacts/matrix/seed.txt', { certificate: false, roles: 'artifacts.admin' });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ code: 'permission_denied' });
    });

    it('ignores headers that look like a principal', async () => {
      const res = await call('/v1/artifacts/matrix/seed.txt', {
        roles: null,
        headers: {
          'x-fluxguard-principal': JSON.stringify({ subject: 'root', roles: ['artifacts.admin'] }),
          'x-user': 'root',
          'x-roles': 'artifacts.admin',
        },
      });
      expect(res.status).toBe(401);
    });

    it('logs each denial once, with the reason and the request id, never the token', async () => {
      const token = await tokenFor('artifacts.reader');
      const res = await call('/v1/artifacts/matrix/seed.txt', {
        method: 'DELETE',
        roles: 'artifacts.reader',
        headers: { 'x-request-id': 'deny-reader-delete' },
      });
      expect(res.status).toBe(403);
      const line = logOf('deny-reader-delete');
      expect(line).toContain('"reason":"missing_role"');
      expect(line).toContain('"operation":"DELETE /v1/artifacts/*path"');
      expect(line).toContain('"subject":"alice"');
      expect(line).not.toContain(token);
    });
  });
});
