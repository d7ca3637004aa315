// A header sent twice must be refused, not silently resolved to one value. HTTP/1.1 already
// refuses two Authorization headers; over HTTP/2, Node keeps only the first `authorization` of a
// gRPC request before grpc-js sees it, so an admin token followed by a reader token acted as the
// admin. nghttp sends both (Node's own client refuses to), as an attacker would.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/clients.js';
import { rawHttps } from './support/raw-https.js';
import {
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

/**
 * A gRPC request to `method` of the ArtifactStore sent by nghttp with `headers` as written
 * (`-H` each), and `options` before the URL (a client certificate, a body); what it printed.
 * Asynchronous: the server under test runs in this process.
 */
async function nghttpGrpc(
  port: number,
  method: string,
  headers: readonly string[],
  options: readonly string[] = [],
): Promise<string> {
  const args = [
    '-v',
    ...options,
    ...[':method: POST', 'content-type: application/grpc', 'te: trailers', ...headers].flatMap((h) => ['-H', h]),
    `https://localhost:${String(port)}/fluxguard.example.v1.ArtifactStore/${method}`,
  ];
  const { stdout, error } = await new Promise<{ stdout: string; error: Error | undefined }>((resolve) => {
    execFile('nghttp', args, { encoding: 'utf8', timeout: 10_000 }, (failed, out) => {
      // nghttp exits non-zero for a failed request; what matters is what it printed.
      resolve({ stdout: out, error: failed !== null && out === '' ? failed : undefined });
    });
  });
  expect(error, 'nghttp must be installed (scripts/ensure-tools.mjs installs nghttp2-client)').toBeUndefined();
  return stdout;
}

describe('two authorization entries on a gRPC request', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('grpc', world);
  });
  afterAll(async () => {
    await t.close();
  });

  it.each([
    ['admin first', ['artifacts.admin', 'artifacts.reader'], ' '],
    ['reader first', ['artifacts.reader', 'artifacts.admin'], ' '],
    // grpc-js drops a value with a tab: the admin token alone was read, and acted on.
    ['the second with a tab grpc-js drops', ['artifacts.admin', 'artifacts.reader'], '\t'],
  ])(
    'are refused as unauthenticated, whatever their values (%s), and nothing is deleted',
    async (order, roles, gap) => {
      const path = `dup/${order.replaceAll(' ', '-')}.txt`;
      expect((await t.client.upload(path, sha256('x'), [Buffer.from('x')])).ok).toBe(true);
      const tokens = await Promise.all(roles.map((role) => world.token('mallory', [role])));
      // DeleteArtifactRequest { path }: field 1, a length-delimited string, in a 5-byte gRPC frame.
      const message = Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(path)]), Buffer.from(path)]);
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
      const body = join(world.base, 'delete.bin');
      writeFileSync(body, frame);
      const { valid } = world.pki.clients;
      const certFile = join(world.base, 'client.crt');
      const keyFile = join(world.base, 'client.key');
      writeFileSync(certFile, valid.cert);
      writeFileSync(keyFile, valid.key);
      const stdout = await nghttpGrpc(
        t.port,
        'DeleteArtifact',
        tokens.map((token, i) => `authorization: Bearer${i === 0 ? ' ' : gap}${token}`),
        [`--cert=${certFile}`, `--key=${keyFile}`, '-d', body],
      );
      // Both entries went out on the wire...
      expect(stdout.match(/authorization: Bearer/g)?.length).toBe(2);
      // ...and the call was refused UNAUTHENTICATED (16), before any handler ran.
      expect(stdout).toMatch(/grpc-status: 16/);
      expect(t.log.lines.some((l) => l.reason === 'multiple_authorization')).toBe(true);
      expect((await t.client.get(path)).ok).toBe(true);
    },
  );
});

describe('one authorization entry grpc-js would drop', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('grpc', world);
  });
  afterAll(async () => {
    await t.close();
  });

  it('is refused as a malformed credential, which brute-force protection counts, not as none', async () => {
    // grpc-js drops a value with a tab: the call read as one without any credential
    // (`missing_token`), a failure the brute-force protection does not count.
    const token = await world.token('mallory', ['artifacts.reader']);
    // Twice: the second after a call whose value grpc-js kept, and after one it would drop.
    for (const header of [
      `authorization: Bearer ${token}`,
      `authorization: Bearer\t${token}`,
      `authorization: Bearer\t${token}`,
    ]) {
      const stdout = await nghttpGrpc(t.port, 'ListArtifacts', [header]);
      expect(stdout).toMatch(header.includes('\t') ? /grpc-status: 16/ : /grpc-status: \d+/);
      const requestId = /x-request-id: (\S+)/.exec(stdout)?.[1];
      const line = t.log.lines.find((l) => l.requestId === requestId);
      if (header.includes('\t')) expect(line).toMatchObject({ reason: 'malformed_authorization' });
      else expect(line?.reason).not.toBe('malformed_authorization');
    }
  });
});

describe('two Authorization headers on an HTTP request', () => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport('http', world);
  });
  afterAll(async () => {
    await t.close();
  });

  it('are refused as unauthenticated too', async () => {
    const [admin, reader] = await Promise.all([
      world.token('mallory', ['artifacts.admin']),
      world.token('mallory', ['artifacts.reader']),
    ]);
    const head = await rawHttps(
      t.port,
      world,
      `DELETE /v1/artifacts/dup/x.txt HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${admin}\r\nAuthorization: Bearer ${reader}\r\nConnection: close\r\n\r\n`,
    );
    expect(head).toMatch(/^HTTP\/1\.1 401 /);
    expect(t.log.lines.some((l) => l.reason === 'multiple_authorization')).toBe(true);
  });

  it('refuses two Repr-Digest headers on an upload rather than check against the first, and keeps nothing', async () => {
    const token = await world.token('e2e-admin', ['artifacts.admin']);
    const digest = (text: string) => `sha-256=:${Buffer.from(sha256(text), 'hex').toString('base64')}:`;
    const head = await rawHttps(
      t.port,
      world,
      `PUT /v1/artifacts/dup/digest.txt HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n` +
        `Repr-Digest: ${digest('x')}\r\nRepr-Digest: ${digest('y')}\r\n` +
        'Content-Type: application/octet-stream\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx',
    );
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toContain('"field":"Repr-Digest"');
    expect((await t.client.get('dup/digest.txt')).status).toBe(t.client.statusOf({ code: 'not_found' }));
  });
});
