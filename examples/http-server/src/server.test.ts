import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLogger } from '@fluxguard/core';
import { reprDigestOf } from '@fluxguard/example-artifact-store';
import { startHttpServer, type StartedHttpServer } from './server.js';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** node:http sends the path exactly as given (fetch would normalize `%2e%2e` away). */
function rawGet(port: number, path: string, method = 'GET'): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('reference HTTP server', () => {
  const base = mkdtempSync(join(tmpdir(), 'fluxguard-http-'));
  const dataDir = join(base, 'data');
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
  let server: StartedHttpServer;

  beforeAll(async () => {
    server = await startHttpServer({ port: 0, dataDir, audit, maxArtifactBytes: 1024, requestTimeoutMs: 1500 });
  });

  afterAll(async () => {
    await server.close();
    rmSync(base, { recursive: true, force: true });
  });

  async function put(path: string, content: string, digest = reprDigestOf(sha(content))): Promise<Response> {
    return fetch(`${server.url}/v1/artifacts/${path}`, {
      method: 'PUT',
      headers: { 'repr-digest': digest, 'content-type': 'application/octet-stream' },
      body: content,
    });
  }

  it('answers health publicly, with the API security headers', async () => {
    const res = await fetch(`${server.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    expect(res.headers.get('x-request-id')).toBeTruthy();
    expect(res.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
    expect(res.headers.get('x-powered-by')).toBeNull();
  });

  it('uploads, reads, lists and deletes an artifact', async () => {
    const created = await put('models/v1/a.bin', 'hello world');
    expect(created.status).toBe(201);
    expect(await created.json()).toEqual({ path: 'models/v1/a.bin', sha256: sha('hello world'), size: 11 });
    await put('other/b.txt', 'b');

    const got = await fetch(`${server.url}/v1/artifacts/models/v1/a.bin`);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.headers.get('repr-digest')).toBe(reprDigestOf(sha('hello world')));
    expect(await got.text()).toBe('hello world');

    const listed = await fetch(`${server.url}/v1/artifacts?prefix=models/`);
    expect(await listed.json()).toEqual([{ path: 'models/v1/a.bin', sha256: sha('hello world'), size: 11 }]);
    const all = await fetch(`${server.url}/v1/artifacts`);
    expect(((await all.json()) as { path: string }[]).map((i) => i.path)).toEqual(['models/v1/a.bin', 'other/b.txt']);

    const deleted = await fetch(`${server.url}/v1/artifacts/models/v1/a.bin`, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    const gone = await fetch(`${server.url}/v1/artifacts/models/v1/a.bin`);
    expect(gone.status).toBe(404);
    expect(gone.headers.get('content-type')).toBe('application/problem+json');
    expect(await gone.json()).toMatchObject({ code: 'not_found' });
  });

  it('streams a chunked upload without Content-Length', async () => {
    const parts = ['chunk-1|', 'chunk-2|', 'chunk-3'];
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(new TextEncoder().encode(p));
        controller.close();
      },
    });
    const res = await fetch(`${server.url}/v1/artifacts/streamed.bin`, {
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
    expect((await fetch(`${server.url}/v1/artifacts/mismatch.bin`)).status).toBe(404);
    expect(readdirSync(dataDir).filter((n) => n.includes('mismatch'))).toEqual([]);
  });

  it.each([
    ['missing', undefined],
    ['malformed', 'sha-256=:not-base64:'],
    ['another algorithm only', 'sha-512=:AAAA:'],
  ])('refuses a %s Repr-Digest naming the header', async (_label, digest) => {
    const res = await fetch(`${server.url}/v1/artifacts/x.bin`, {
      method: 'PUT',
      headers: digest === undefined ? {} : { 'repr-digest': digest },
      body: 'x',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'Repr-Digest' });
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
    const streamed = await fetch(`${server.url}/v1/artifacts/big2.bin`, {
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
    const res = await rawGet(server.port, path);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ code: 'invalid_argument', field: 'path' });
    expect(res.body).not.toMatch(/passwd|\.\./);
  });

  it('refuses a repeated prefix parameter', async () => {
    const res = await fetch(`${server.url}/v1/artifacts?prefix=a&prefix=b`);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', field: 'prefix' });
  });

  it('turns a file-system failure into a generic 500 with a request id; the log has the cause', async () => {
    mkdirSync(join(dataDir, 'adir.bin'), { recursive: true });
    const res = await fetch(`${server.url}/v1/artifacts/adir.bin`);
    expect(res.status).toBe(500);
    const requestId = res.headers.get('x-request-id');
    expect(requestId).toBeTruthy();
    const body = await res.text();
    const everything = `${res.statusText}\n${[...res.headers.entries()].join('\n')}\n${body}`;
    expect(everything).not.toContain(base);
    expect(everything).not.toMatch(/EISDIR|errno|\bat [^\s]+ \(|node:internal/);
    expect(JSON.parse(body)).toEqual({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      detail: 'An internal error occurred.',
      code: 'internal',
      requestId,
    });
    const line = logOf(requestId);
    expect(line).toContain('EISDIR');
    expect(line).toContain('"operation":"GET /v1/artifacts/*path"');
    expect(line).toMatch(/\bat [^\s]+ \(|node:internal/);
  });

  it('answers an unknown route or method with a 404 problem', async () => {
    for (const [method, path] of [
      ['GET', '/v2/anything'],
      ['POST', '/v1/artifacts/x.bin'],
      ['GET', '/V1/ARTIFACTS/x.bin'],
    ] as const) {
      const res = await rawGet(server.port, path, method);
      expect(res.status).toBe(404);
      expect(res.headers['content-type']).toBe('application/problem+json');
      expect(res.body).not.toMatch(/Cannot|<html|anything/i);
    }
  });

  it('drops a client that sends its headers too slowly', async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(server.port, '127.0.0.1', () => {
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
});
