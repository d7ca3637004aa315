import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, credentials as grpcCredentials, makeGenericClientConstructor, type Client } from '@grpc/grpc-js';
import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { createE2eEnvironment, type E2eEnvironment } from './support/servers.js';

/**
 * The README's examples are tests: each snippet is a file here, typechecked with the rest,
 * run against real TLS, and quoted verbatim by the README (so the two cannot drift apart).
 */

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const snippet = (name: string): string => readFileSync(new URL(`./readme/${name}`, import.meta.url), 'utf8');

let world: E2eEnvironment;
let cwd: string;
let readerToken: string;
let clientCert: { cert: Buffer; key: Buffer };
let ca: Buffer;

beforeAll(async () => {
  world = await createE2eEnvironment();
  const dir = join(world.base, 'readme');
  mkdirSync(join(dir, 'certs'), { recursive: true });
  const authority = await createDevCertificateAuthority();
  const server = await authority.issueServerCertificate();
  const client = await authority.issueClientCertificate({ spiffeId: 'spiffe://example.org/ns/prod/sa/reader' });
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  writeFileSync(join(dir, 'certs', 'ca.crt'), authority.certPem);
  writeFileSync(join(dir, 'certs', 'server.crt'), server.certPem);
  writeFileSync(join(dir, 'certs', 'server.key'), server.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, 'certs', 'jwt-public.pem'), await exportSPKI(publicKey));
  readerToken = await new SignJWT({ roles: ['items.reader'] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://id.example.com')
    .setAudience('inventory')
    .setSubject('alice')
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(privateKey);
  ca = Buffer.from(authority.certPem);
  clientCert = { cert: Buffer.from(client.certPem), key: Buffer.from(client.keyPem) };
  writeFileSync(join(dir, 'inventory.proto'), snippet('inventory.proto'));
  cwd = process.cwd();
  process.chdir(dir);
  process.env.PORT = '0';
});

afterAll(() => {
  process.chdir(cwd);
  world.cleanup();
});

describe('README: Express', () => {
  it('quotes the example file verbatim', () => {
    expect(README).toContain(snippet('express-server.ts'));
  });

  it('runs: a client certificate always, health public, items need a reader, problem+json otherwise', async () => {
    const { server } = (await import('./readme/express-server.js')) as { server: Server };
    if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
    const base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect(await get(base, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
      expect(await get(base, '/v1/items/42', readerToken)).toMatchObject({
        status: 200,
        body: { id: '42', reader: 'alice' },
      });
      const anonymous = await get(base, '/v1/items/42');
      expect(anonymous).toMatchObject({ status: 401, type: 'application/problem+json' });
      expect(anonymous.challenge).toBe('Bearer');
      // 'strict': a client without a certificate is refused in the handshake, a reader token or not.
      await expect(get(base, '/v1/items/42', readerToken, { certificate: false })).rejects.toMatchObject({
        code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
      });
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('README: rate limits', () => {
  it('quotes the example file verbatim', () => {
    expect(README).toContain(snippet('rate-limits.ts'));
  });

  it('runs: 3 reads a minute then 429 with its retry hint; failed authentications block the address', async () => {
    const { server } = (await import('./readme/rate-limits.js')) as { server: Server };
    if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
    const base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      for (let i = 0; i < 3; i++) expect((await get(base, '/v1/items/42', readerToken)).status).toBe(200);
      const limited = await get(base, '/v1/items/42', readerToken);
      expect(limited).toMatchObject({ status: 429, type: 'application/problem+json', body: { code: 'rate_limited' } });
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      expect(limited.headers['ratelimit-policy']).toBe('"per-peer";q=100;w=1, "reads";q=3;w=60');
      expect(limited.headers.ratelimit).toMatch(/"reads";r=0;t=\d+$/);
      // Five forged tokens, then even the valid one is refused from this address.
      for (let i = 0; i < 5; i++) expect((await get(base, '/v1/items/42', `${readerToken}x`)).status).toBe(401);
      const blocked = await get(base, '/v1/items/42', readerToken);
      expect(blocked.status).toBe(429);
      // Refused before authentication, so before the per-subject rule counted anything.
      expect(blocked.headers.ratelimit).not.toContain('"reads"');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('README: one logger', () => {
  it('quotes the example file verbatim', () => {
    expect(README).toContain(snippet('shared-logger.ts'));
  });

  it('runs: fluxguard writes through a child of the service logger, with its bindings and its level', async () => {
    const { logger, audit } = await import('./readme/shared-logger.js');
    expect(audit.logger.bindings()).toEqual({ service: 'orders', name: 'fluxguard' });
    expect(audit.logger.level).toBe(logger.level);
  });
});

describe('README: gRPC', () => {
  it('quotes the example file verbatim', () => {
    expect(README).toContain(snippet('grpc-server.ts'));
    expect(README).toContain(snippet('inventory.proto'));
  });

  it('runs: a reader gets the item, no token is UNAUTHENTICATED, no client certificate no connection', async () => {
    const example = (await import('./readme/grpc-server.js')) as { port: Promise<number>; stop: () => void };
    const port = await example.port;
    try {
      const Items = makeGenericClientConstructor({}, 'Items');
      const credentials = grpcCredentials.createSsl(ca, clientCert.key, clientCert.cert);
      const client = new Items(`localhost:${port}`, credentials);
      const call = (token: string | undefined, through: Client = client) =>
        new Promise<{ code: number; details?: string; value?: Buffer }>((resolve) => {
          const md = new Metadata();
          if (token !== undefined) md.set('authorization', `Bearer ${token}`);
          through.makeUnaryRequest(
            '/inventory.v1.Items/GetItem',
            (request: Buffer) => request,
            (b: Buffer) => b,
            Buffer.from([0x0a, 0x02, 0x34, 0x32]), // GetItemRequest { id: "42" }
            md,
            { deadline: Date.now() + 5_000 },
            (err, value) => {
              resolve(
                err ? { code: err.code, details: err.details } : { code: 0, ...(value === undefined ? {} : { value }) },
              );
            },
          );
        });
      const allowed = await call(readerToken);
      expect(allowed.code).toBe(0);
      // Item { id: "42", reader: "alice" }
      expect(allowed.value?.toString('hex')).toBe(
        Buffer.from([0x0a, 0x02, 0x34, 0x32, 0x12, 0x05, ...Buffer.from('alice')]).toString('hex'),
      );
      expect((await call(undefined)).code).toBe(16);
      client.close();
      // 'strict': without a client certificate there is no connection, a reader token or not.
      const anonymousClient = new Items(`localhost:${port}`, grpcCredentials.createSsl(ca));
      const refused = await call(readerToken, anonymousClient);
      anonymousClient.close();
      expect(refused.code).toBe(14);
      expect(refused.details).toMatch(/certificate required/i);
    } finally {
      example.stop();
    }
  });
});

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly type: string | undefined;
  readonly challenge: string | undefined;
  readonly body: unknown;
}

function get(base: string, path: string, token?: string, { certificate = true } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${base}${path}`,
      {
        ca,
        ...(certificate ? clientCert : {}),
        servername: 'localhost',
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            type: res.headers['content-type']?.split(';')[0],
            challenge: res.headers['www-authenticate'],
            body: JSON.parse(text) as unknown,
          });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}
