// grpc-js names the peer of a Unix socket `unknown`: limits by client address skipped every
// call, so a peer rate limit on a server behind a local proxy did nothing. Counted as one client
// now, or, with "unix" a trusted proxy, by the client the proxy names.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Metadata, Server, ServerCredentials, credentials, status as Status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { createRateLimit } from '@fluxguard/core';
import { safePeer } from './context.js';
import { addService, fluxguardInterceptors } from './index.js';
import { callKind, captureAudit, testService, unaryAnswering } from './testing/harness.js';
import { clientFor, createTestPki, perOperationCredentials, type TestPki } from './testing/tls.js';

const audit = captureAudit();
const dir = mkdtempSync(join(tmpdir(), 'fluxguard-unix-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

let pki: TestPki | undefined;
afterAll(async () => {
  await pki?.cleanup();
});

/**
 * A server with a peer rate limit of 3 calls trusting `trustedProxies`, on a Unix socket
 * (`name`), or on TCP at 127.0.0.1 when `name` is undefined; two clients of it. With `tls`, over
 * TLS with fluxguard's credentials.
 */
async function serveOn(name: string | undefined, trustedProxies: readonly string[], tls = false) {
  const limits = createRateLimit({
    trustedProxies,
    rules: [{ name: 'per-peer', key: 'peer', points: 3, durationSeconds: 60 }],
  });
  const server = new Server({
    interceptors: fluxguardInterceptors({ audit: audit.audit, controls: limits.controls }),
  });
  addService(server, testService, unaryAnswering({ ok: true }));
  if (tls) pki ??= await createTestPki();
  const port = await new Promise<number>((resolve, reject) => {
    const bind = name === undefined ? '127.0.0.1:0' : `unix:${join(dir, name)}`;
    const serverCredentials =
      tls && pki !== undefined ? perOperationCredentials(pki, audit.audit) : ServerCredentials.createInsecure();
    server.bindAsync(bind, serverCredentials, (error, bound) => {
      if (error) reject(error);
      else resolve(bound);
    });
  });
  const address = name === undefined ? `127.0.0.1:${String(port)}` : `unix:${join(dir, name)}`;
  // Two clients, two connections.
  const client = () =>
    tls && pki !== undefined
      ? clientFor(address, { ca: pki.ca.certPem })
      : new Client(address, credentials.createInsecure());
  const first = client();
  const second = client();
  const close = () => {
    first.close();
    second.close();
    return new Promise<void>((resolve) => {
      server.tryShutdown(() => {
        resolve();
      });
    });
  };
  return { first, second, close };
}

/** The status of each call in turn, each with the `x-forwarded-for` given. */
async function codes(calls: readonly (readonly [Client, string | undefined])[]): Promise<Status[]> {
  const answers: Status[] = [];
  for (const [client, forwardedFor] of calls) {
    const metadata = new Metadata();
    if (forwardedFor !== undefined) metadata.set('x-forwarded-for', forwardedFor);
    answers.push((await callKind(client, 'unary', {}, metadata)).status.code);
  }
  return answers;
}

const LIMITED = [Status.OK, Status.OK, Status.OK, Status.RESOURCE_EXHAUSTED];

describe('a server on a Unix socket', () => {
  it('counts every client of the socket as one, whatever they forward', async () => {
    const { first, second, close } = await serveOn('shared.sock', []);
    try {
      const calls = [first, second, first, second].map((client, i) => [client, `198.51.100.${String(i)}`] as const);
      expect(await codes(calls)).toEqual(LIMITED);
    } finally {
      await close();
    }
  });

  it('counts each client the proxy on the socket names, once "unix" is a trusted proxy', async () => {
    const { first, second, close } = await serveOn('proxied.sock', ['unix']);
    try {
      const one = [first, second, first, second].map((client) => [client, '198.51.100.1'] as const);
      expect(await codes(one)).toEqual(LIMITED);
      expect(await codes([[first, '203.0.113.7']])).toEqual([Status.OK]);
      // Nothing the proxy wrote: those calls share one key still.
      expect(await codes([first, second, first, second].map((client) => [client, undefined] as const))).toEqual(
        LIMITED,
      );
    } finally {
      await close();
    }
  });

  it('counts each client the proxy names over TLS on the socket too', async () => {
    const { first, second, close } = await serveOn('tls.sock', ['unix'], true);
    try {
      const one = [first, second, first, second].map((client) => [client, '198.51.100.1'] as const);
      expect(await codes(one)).toEqual(LIMITED);
      expect(await codes([[second, '203.0.113.7']])).toEqual([Status.OK]);
    } finally {
      await close();
    }
  });

  it('never takes a TCP client for the proxy on a socket', async () => {
    const { first, second, close } = await serveOn(undefined, ['unix']);
    try {
      const calls = [first, second, first, second].map((client, i) => [client, `198.51.100.${String(i)}`] as const);
      expect(await codes(calls)).toEqual(LIMITED);
    } finally {
      await close();
    }
  });

  it('knows a socket by the mark its connections are given, even one named like an address', () => {
    const peerOf = (localAddress: string | undefined, remoteAddress?: string) =>
      safePeer({ getConnectionInfo: () => ({ localAddress, localPort: 0, remoteAddress, remotePort: undefined }) });
    // A socket path may read as an IP address (`unix:10.9.8.7`, relative); the mark cannot.
    expect(peerOf('unix:10.9.8.7')).toBe('unix');
    expect(peerOf('unix:/run/app.sock')).toBe('unix');
    // A TCP connection whose client reset it: no peer, and no mark.
    expect(peerOf('127.0.0.1')).toBe('unknown');
    expect(peerOf(undefined)).toBe('unknown');
    expect(peerOf('/run/app.sock')).toBe('unknown');
    expect(peerOf('unix:/run/app.sock', '203.0.113.9')).toBe('203.0.113.9');
  });
});
