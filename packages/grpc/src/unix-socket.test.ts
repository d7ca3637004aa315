// grpc-js names the peer of a Unix socket `unknown`: limits by client address skipped every
// call, so a peer rate limit on a server behind a local proxy did nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Metadata, Server, ServerCredentials, credentials, status as Status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { createRateLimit } from '@fluxguard/core';
import { addService, fluxguardInterceptors } from './index.js';
import { callKind, captureAudit, testService, unaryAnswering } from './testing/harness.js';

const audit = captureAudit();
const dir = mkdtempSync(join(tmpdir(), 'fluxguard-unix-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A server with a peer rate limit of 3 calls, on a Unix socket; two clients of it. */
async function serveOnSocket(name: string, trustedProxies: readonly string[]) {
  const limits = createRateLimit({
    trustedProxies,
    rules: [{ name: 'per-peer', key: 'peer', points: 3, durationSeconds: 60 }],
  });
  const server = new Server({
    interceptors: fluxguardInterceptors({ audit: audit.audit, controls: limits.controls }),
  });
  addService(server, testService, unaryAnswering({ ok: true }));
  const address = `unix:${join(dir, name)}`;
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error) => {
      if (error) reject(error);
      else resolve();
    });
  });
  // Two clients, two connections.
  const first = new Client(address, credentials.createInsecure());
  const second = new Client(address, credentials.createInsecure());
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

async function codes(calls: readonly (readonly [Client, string | undefined])[]): Promise<Status[]> {
  const answers: Status[] = [];
  for (const [client, forwardedFor] of calls) {
    const metadata = new Metadata();
    if (forwardedFor !== undefined) metadata.set('x-forwarded-for', forwardedFor);
    answers.push((await callKind(client, 'unary', {}, metadata)).status.code);
  }
  return answers;
}

describe('a server on a Unix socket', () => {
  it('counts every client of the socket as one', async () => {
    const { first, second, close } = await serveOnSocket('shared.sock', []);
    try {
      const calls = [first, second, first, second].map((client) => [client, '198.51.100.1'] as const);
      expect(await codes(calls)).toEqual([Status.OK, Status.OK, Status.OK, Status.RESOURCE_EXHAUSTED]);
    } finally {
      await close();
    }
  });

  it('counts each client the proxy on the socket names, once "unix" is a trusted proxy', async () => {
    const { first, second, close } = await serveOnSocket('proxied.sock', ['unix']);
    try {
      const one = [first, second, first, second].map((client) => [client, '198.51.100.1'] as const);
      expect(await codes(one)).toEqual([Status.OK, Status.OK, Status.OK, Status.RESOURCE_EXHAUSTED]);
      expect(await codes([[first, '203.0.113.7']])).toEqual([Status.OK]);
    } finally {
      await close();
    }
  });
});
