// grpc-js names the peer of a Unix socket `unknown`: limits by client address skipped every
// call, so a peer rate limit on a server behind a local proxy did nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Server, ServerCredentials, credentials, status as Status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { createRateLimit } from '@fluxguard/core';
import { addService, fluxguardInterceptors } from './index.js';
import { callKind, captureAudit, testService, unaryAnswering } from './testing/harness.js';

const audit = captureAudit();
const dir = mkdtempSync(join(tmpdir(), 'fluxguard-unix-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('a server on a Unix socket', () => {
  it('counts every client of the socket as one', async () => {
    const limits = createRateLimit({ rules: [{ name: 'per-peer', key: 'peer', points: 3, durationSeconds: 60 }] });
    const server = new Server({
      interceptors: fluxguardInterceptors({ audit: audit.audit, controls: limits.controls }),
    });
    addService(server, testService, unaryAnswering({ ok: true }));
    const address = `unix:${join(dir, 'grpc.sock')}`;
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(address, ServerCredentials.createInsecure(), (error) => {
        if (error) reject(error);
        else resolve();
      });
    });
    // Two clients, two connections: one count all the same.
    const first = new Client(address, credentials.createInsecure());
    const second = new Client(address, credentials.createInsecure());
    const clients = [first, second];
    try {
      const codes: Status[] = [];
      for (const client of [first, second, first, second])
        codes.push((await callKind(client, 'unary', {})).status.code);
      expect(codes).toEqual([Status.OK, Status.OK, Status.OK, Status.RESOURCE_EXHAUSTED]);
    } finally {
      for (const client of clients) client.close();
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          resolve();
        });
      });
    }
  });
});
