import { once } from 'node:events';
import { rename, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import express, { type Express } from 'express';
import { fetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError } from '@fluxguard/core';
import { createTlsSettings } from '@fluxguard/core/adapter';
import { createMtlsAgent, createSecureServer, fluxguard, getClientCertificate } from './index.js';
import {
  CLIENT_SPIFFE_ID,
  agentFor,
  captureAudit,
  clientTlsOptions,
  createTestPki,
  listen,
  serverCertificateOf,
  type TestPki,
} from './testing/tls.js';

/** Set by Node from the `maxHeaderSize` option; not in @types/node's Server type. */
function maxHeaderSizeOf(server: object): unknown {
  return (server as { maxHeaderSize?: unknown }).maxHeaderSize;
}

/** Requests the `/effect` route carried out (a DELETE, say). */
const effects: string[] = [];

function helloApp(audit: ReturnType<typeof captureAudit>['audit']): Express {
  const app = express();
  const { before, after } = fluxguard({ audit });
  app.use(before);
  app.get('/hello', (req, res) => {
    res.json({ spiffeId: getClientCertificate(req)?.spiffeId ?? null });
  });
  app.put('/drain', async (req, res) => {
    res.json({ bytes: (await text(req)).length });
  });
  app.put('/early', (_req, res) => {
    res.json({ early: true });
  });
  app.delete('/effect', (req, res) => {
    effects.push(req.fluxguard.requestId);
    res.status(204).end();
  });
  // Answers after a while, its body unread: a request whose body goes wrong while it works.
  app.put('/slow', async (req, res) => {
    // A cancelled request's abort reaches the error handler, which writes its line.
    await sleep(300, undefined, { signal: req.fluxguard.signal });
    effects.push(req.fluxguard.requestId);
    res.json({ slow: true });
  });
  app.use(after);
  return app;
}

/** A bare TLS handshake with the client certificate: resolves with the protocol, or rejects. */
function clientHandshake(port: number, pki: TestPki, options: ConnectionOptions = {}): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const socket = connect({ ...clientTlsOptions(port, pki), ...options }, () => {
      resolve(socket.getProtocol());
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

describe('createSecureServer: strict client certificates', () => {
  let pki: TestPki;
  let served: Awaited<ReturnType<typeof listen>>;
  const { audit, lines } = captureAudit();
  const agents: Agent[] = [];
  const agent = (a: Agent): Agent => {
    agents.push(a);
    return a;
  };

  beforeAll(async () => {
    pki = await createTestPki();
    served = await listen(
      createSecureServer(helloApp(audit), {
        audit,
        tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, clientCertificates: 'strict' },
      }),
    );
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await served.close();
    await pki.remove();
  });

  it('fails the handshake without a client certificate', async () => {
    await expect(fetch(`${served.url}/hello`, { dispatcher: agent(agentFor(pki.ca.certPem)) })).rejects.toThrow();
  });

  it('fails the handshake with a certificate of another CA', async () => {
    await expect(
      fetch(`${served.url}/hello`, { dispatcher: agent(agentFor(pki.ca.certPem, pki.stranger)) }),
    ).rejects.toThrow();
  });

  it('fails the handshake with an expired or not-yet-valid certificate', async () => {
    for (const validity of ['expired', 'not-yet-valid'] as const) {
      const cert = await pki.ca.issueClientCertificate({ spiffeId: CLIENT_SPIFFE_ID, validity });
      await expect(
        fetch(`${served.url}/hello`, { dispatcher: agent(agentFor(pki.ca.certPem, cert)) }),
      ).rejects.toThrow();
    }
  });

  it('serves a client with a valid certificate, through createMtlsAgent and undici fetch', async () => {
    const dispatcher = agent(createMtlsAgent({ ca: pki.ca.certPem, cert: pki.client.certPem, key: pki.client.keyPem }));
    const res = await fetch(`${served.url}/hello`, { dispatcher });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ spiffeId: CLIENT_SPIFFE_ID });
  });

  it("works with Node's global fetch too", async () => {
    const dispatcher = agent(createMtlsAgent({ ca: pki.ca.certPem, cert: pki.client.certPem, key: pki.client.keyPem }));
    // Node's bundled undici (6, 7 or 8) types its own Dispatcher; at run time it takes undici 7's Agent.
    const init = { dispatcher } as unknown as RequestInit;
    const res = await globalThis.fetch(`${served.url}/hello`, init);
    expect(res.status).toBe(200);
  });

  it('negotiates TLS 1.3 and refuses TLS 1.1', async () => {
    const version = await clientHandshake(served.port, pki);
    expect(version).toBe('TLSv1.3');
    await expect(
      clientHandshake(served.port, pki, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }),
    ).rejects.toThrow();
  });

  it('refuses a client that verifies the server against another CA', async () => {
    const dispatcher = agent(
      createMtlsAgent({ ca: pki.other.certPem, cert: pki.client.certPem, key: pki.client.keyPem }),
    );
    await expect(fetch(`${served.url}/hello`, { dispatcher })).rejects.toThrow();
  });

  /** A TLS connection to the server with the client certificate. */
  function clientConnection(onConnect?: () => void): TLSSocket {
    return connect(clientTlsOptions(served.port, pki), onConnect);
  }

  /**
   * Sends raw bytes on a TLS connection with the client certificate; resolves with all that
   * comes back. With `closeAfter`, the client then closes its side after that many ms.
   */
  function raw(bytes: string, closeAfter?: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = clientConnection(() => {
        socket.write(bytes);
        if (closeAfter !== undefined) setTimeout(() => socket.end(), closeAfter);
      });
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        answer += chunk;
      });
      socket.on('close', () => {
        resolve(answer);
      });
      socket.on('error', closeAfter === undefined ? reject : () => undefined);
    });
  }

  it.each([
    [
      'a malformed header line',
      'GET /hello HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n',
      400,
      'invalid_argument',
      'malformed_request',
    ],
    [
      'two different Content-Length headers',
      'POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
      400,
      'invalid_argument',
      'malformed_request',
    ],
    [
      'a request head over 16 KiB',
      `GET /hello HTTP/1.1\r\nHost: x\r\nauthorization: Bearer ${'a'.repeat(20_000)}\r\n\r\n`,
      431,
      'payload_too_large',
      'request_head_too_large',
    ],
    [
      'an Expect other than 100-continue',
      'POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\n',
      417,
      'invalid_argument',
      'expectation_unsupported',
    ],
    [
      'an Expect of 100-continue and another expectation (Node meets the first and ignores the rest)',
      'POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, foo\r\nContent-Length: 5\r\n\r\n',
      417,
      'invalid_argument',
      'expectation_unsupported',
    ],
    [
      'an Expect naming 100-continue inside another token',
      'POST /hello HTTP/1.1\r\nHost: x\r\nExpect: x;100-continue\r\nContent-Length: 5\r\n\r\n',
      417,
      'invalid_argument',
      'expectation_unsupported',
    ],
    ['an HTTP/1.1 request without Host', 'GET /hello HTTP/1.1\r\n\r\n', 400, 'invalid_argument', 'malformed_request'],
    [
      'two Host lines (Node keeps the first, a proxy may route by the last)',
      'GET /hello HTTP/1.1\r\nHost: localhost\r\nhost: elsewhere.example\r\n\r\n',
      400,
      'invalid_argument',
      'malformed_request',
    ],
    [
      'a request line without a version (Node serves it as HTTP/0.9)',
      'GET /hello\r\nHost: x\r\n\r\n',
      400,
      'invalid_argument',
      'malformed_request',
    ],
    [
      'a request line saying HTTP/2.0',
      'GET /hello HTTP/2.0\r\nHost: x\r\n\r\n',
      400,
      'invalid_argument',
      'malformed_request',
    ],
    [
      'a CONNECT request (a tunnel)',
      'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n',
      404,
      'not_found',
      'route_not_found',
    ],
  ])('answers %s with a request id, problem+json and an audit line', async (_label, bytes, status, code, reason) => {
    const answer = await raw(bytes);
    expect(answer.startsWith(`HTTP/1.1 ${String(status)} `)).toBe(true);
    const requestId = /^x-request-id: (.+)$/im.exec(answer)?.[1]?.trim();
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(answer).toMatch(/^content-type: application\/problem\+json$/im);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
    expect(body).toMatchObject({ status, code, requestId });
    expect(lines().find((line) => line.requestId === requestId)).toMatchObject({ reason, code });
    // Node's error carries the raw request: none of it reaches the log.
    expect(JSON.stringify(lines())).not.toContain('aaaaaaaaaaaaaaaa');
  });

  it.each([
    ['GET /hello HTTP/1.1\r\n\r\n', 'host_missing'],
    ['GET /hello HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n', 'host_repeated'],
    // A Host that is not a host and a port (RFC 9112 section 3.2), which Node served.
    ['GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.1\r\nHost: evil.example/x\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.1\r\nHost: user@a\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.1\r\nHost: [::1\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.1\r\nHost: a:99999\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.1\r\nHost: a%20b\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/1.0\r\nHost: a?b\r\n\r\n', 'host_invalid'],
    ['GET /hello HTTP/2.0\r\nHost: a\r\n\r\n', 'version_unsupported'],
    // A request target has no fragment: Node served `/admin#/public` as `/admin`.
    ['GET /hello#/public HTTP/1.1\r\nHost: a\r\n\r\n', 'target_malformed'],
    ['GET * HTTP/1.1\r\nHost: a\r\n\r\n', 'target_malformed'],
    ['GET ftp://a/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'target_malformed'],
    ['GET http://user@a/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'target_malformed'],
    // The server must take the target's host, where a proxy in front may have routed by the header.
    ['GET http://elsewhere.example/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'host_mismatch'],
    ['GET https://a:444/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'host_mismatch'],
    ['GET http://a:443/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'host_mismatch'],
    ['GET http://a/hello HTTP/1.1\r\nHost: a/b\r\n\r\n', 'host_invalid'],
    ['GET http://a/hello HTTP/1.1\r\nHost: b@a\r\n\r\n', 'host_invalid'],
    ['GET http://a./hello HTTP/1.1\r\nHost: a..\r\n\r\n', 'host_mismatch'],
    // Routed by Express as the path `%2Dexample/hello`: a host is letters, digits, `.`, `-`, `_`.
    ['GET http://a%2Dexample/hello HTTP/1.1\r\nHost: a-example\r\n\r\n', 'target_malformed'],
    ['GET http://a!b/hello HTTP/1.1\r\nHost: a!b\r\n\r\n', 'target_malformed'],
    ['GET http://a:99999/hello HTTP/1.1\r\nHost: a\r\n\r\n', 'target_malformed'],
  ])('names the fault of the head %j in its audit line', async (bytes, fault) => {
    const answer = await raw(bytes);
    expect(answer.startsWith('HTTP/1.1 400 ')).toBe(true);
    const requestId = /^x-request-id: (.+)$/im.exec(answer)?.[1]?.trim();
    expect(lines().find((line) => line.requestId === requestId)).toMatchObject({ detail: { headFault: fault } });
  });

  it('answers Expect: 100-continue only once the application reads the body', async () => {
    // Answered without reading the body: no invitation to send it comes first.
    const early = await raw('PUT /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n', 300);
    expect(early.startsWith('HTTP/1.1 200 ')).toBe(true);
    expect(early).not.toContain('100 Continue');
    // Read by its handler: invited, then served.
    const drained = await new Promise<string>((resolve, reject) => {
      let answer = '';
      const socket = clientConnection(() => {
        socket.write('PUT /drain HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
      });
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        if (answer === '' && chunk.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) socket.write('hello');
        answer += chunk;
        if (answer.includes('"bytes":5')) {
          socket.destroy();
          resolve(answer);
        }
      });
      socket.on('error', reject);
    });
    expect(drained.startsWith('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ')).toBe(true);
  });

  it('serves an absolute target whose host is the Host header’s, and OPTIONS *', async () => {
    for (const [target, host] of [
      ['https://A.example:8443/hello', 'a.example:8443'],
      ['https://a.example:443/hello', 'a.example'],
      ['https://a.example/hello', 'a.example:443'],
      ['https://[::1]:8443/hello?x=1', '[::1]:8443'],
      // Two spellings of one host: the root's trailing dot, an empty port, IPv6 in full.
      ['https://a.example./hello', 'a.example'],
      ['https://a.example/hello', 'a.example.'],
      ['https://a.example:/hello', 'a.example'],
      ['https://[0:0:0:0:0:0:0:1]:8443/hello', '[::1]:8443'],
    ]) {
      const absolute = await raw(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 300);
      expect(absolute.startsWith('HTTP/1.1 200 '), target).toBe(true);
      expect(absolute).toContain('"spiffeId":"spiffe://fluxguard.dev/client"');
    }
    // Any host and port RFC 3986 allows in `Host`, beside an origin-form target.
    for (const host of ['a.example:8443', '[::1]', 'a_b~c!$&()*+,;=.example', 'a%2Db', 'a.example:']) {
      const origin = await raw(`GET /hello HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 300);
      expect(origin.startsWith('HTTP/1.1 200 '), host).toBe(true);
    }
    const asterisk = await raw('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n', 300);
    expect(asterisk).not.toMatch(/^HTTP\/1\.1 400 /);
  });

  it('serves an HTTP/1.0 request without Host, which HTTP/1.0 allows', async () => {
    const answer = await raw('GET /hello HTTP/1.0\r\n\r\n');
    expect(answer.startsWith('HTTP/1.1 200 ')).toBe(true);
    expect(answer).toContain('"spiffeId":"spiffe://fluxguard.dev/client"');
    // With an absolute target, whose host is then the only one.
    const absolute = await raw('GET https://a.example/hello HTTP/1.0\r\n\r\n');
    expect(absolute.startsWith('HTTP/1.1 200 ')).toBe(true);
    expect(absolute).toContain('"spiffeId":"spiffe://fluxguard.dev/client"');
  });

  it.each([
    ['while its handler reads the body', '/drain', '', ['request.cancelled']],
    // A served request writes no line; a refusal made here would have come before the close.
    ['after its answer', '/early', 'HTTP/1.1 200 ', []],
  ])(
    'records a client that closes its side mid-body %s as that request only, not as a malformed one',
    async (_label, path, answerStart, events) => {
      const before = lines().length;
      const answer = await raw(`PUT ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc`, 50);
      expect(answer.startsWith(answerStart)).toBe(true);
      expect(answer).not.toContain(' 400 ');
      // The connection is closed once the close is handled, so no line of it can come later.
      // (What the body's reader throws then is a debug line, without an event.)
      await expect
        .poll(() =>
          lines()
            .slice(before)
            .filter((line) => Number(line.level) >= 30)
            .map((line) => line.event),
        )
        .toEqual(events);
    },
  );

  it('records a malformed request pipelined behind one being answered, which no answer can follow', async () => {
    const before = lines().length;
    const answer = await raw(
      'GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n',
    );
    expect(answer.startsWith('HTTP/1.1 200 ')).toBe(true);
    expect(answer).not.toContain(' 400 ');
    await expect
      .poll(() =>
        lines()
          .slice(before)
          .filter((line) => line.event === 'request.denied'),
      )
      .toMatchObject([{ event: 'request.denied', reason: 'malformed_request', code: 'invalid_argument' }]);
  });

  it.each([
    // Node's parser refuses it only once the body begins, after the handler has run.
    ['does not end in chunked', 'Transfer-Encoding: gzip\r\n\r\n'],
    // Node undoes no coding but chunked: the handler read gzip bytes as the body.
    ['has a coding before chunked', 'Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
    [
      'has a coding before chunked, on lines of its own',
      'Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
  ])('refuses a Transfer-Encoding that %s before any handler runs', async (_kind, rest) => {
    const before = effects.length;
    const answer = await raw(`DELETE /effect HTTP/1.1\r\nHost: x\r\n${rest}`);
    expect(answer.startsWith('HTTP/1.1 400 ')).toBe(true);
    const requestId = /^x-request-id: (.+)$/im.exec(answer)?.[1]?.trim();
    expect(lines().find((line) => line.requestId === requestId)).toMatchObject({
      reason: 'malformed_request',
      detail: { headFault: 'transfer_coding_unsupported' },
    });
    expect(effects.length).toBe(before);
  });

  it.each([
    ['Host: x', 'transfer_coding_unsupported'],
    // Refused for its Host first: the bytes after it are as unframed.
    ['Host: a b', 'host_invalid'],
  ])(
    'writes one line for a Transfer-Encoding that does not end in chunked, followed by bytes (%s)',
    async (host, fault) => {
      // Node's parser refuses the bytes after such a head once the head is answered: they are
      // that request's unframeable body, not a second request pipelined behind it.
      const before = lines().length;
      const answer = await raw(`DELETE /effect HTTP/1.1\r\n${host}\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n`);
      expect(answer.startsWith('HTTP/1.1 400 ')).toBe(true);
      const requestId = /^x-request-id: (.+)$/im.exec(answer)?.[1]?.trim();
      const refusals = lines()
        .slice(before)
        .filter((line) => line.reason === 'malformed_request');
      expect(refusals).toEqual([expect.objectContaining({ requestId, detail: { headFault: fault } })]);
    },
  );

  it('serves a Transfer-Encoding of chunked alone', async () => {
    // Chunked last is what HTTP/1.1 asks for.
    const chunked = await raw('DELETE /effect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 200);
    expect(chunked.startsWith('HTTP/1.1 204 ')).toBe(true);
  });

  it('writes no 400 that would pass for the answer of a request still at work, and records both', async () => {
    // A malformed chunk in the body of a request whose handler is at work: a 400 written now was
    // read as that request's answer while the handler carried it out.
    const before = lines().length;
    const answer = await raw('PUT /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    expect(answer).not.toContain(' 400 ');
    await expect
      .poll(() => lines().slice(before))
      .toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            reason: 'malformed_request',
            detail: expect.objectContaining({ answered: 'no: behind a request in flight' }) as unknown,
          }),
          expect.objectContaining({ event: 'request.cancelled' }),
        ]),
      );
  });

  /** The lines since `before` of what Node's parser refused (they carry its `parserCode`). */
  const parserRefusalsSince = (before: number): ReturnType<typeof lines> =>
    lines()
      .slice(before)
      .filter((line) => (line.detail as { parserCode?: unknown } | undefined)?.parserCode !== undefined);

  it('logs chunk extensions past Node’s limit as such, not as a request head too large', async () => {
    const before = lines().length;
    await raw(
      `PUT /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=${'b'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`,
    );
    await expect
      .poll(() => parserRefusalsSince(before))
      .toMatchObject([
        {
          event: 'request.denied',
          code: 'payload_too_large',
          reason: 'chunk_extensions_too_large',
          detail: { parserCode: 'HPE_CHUNK_EXTENSIONS_OVERFLOW' },
        },
      ]);
  });

  it('logs requests pipelined past what Node holds for one connection as too many, not as malformed', async () => {
    // Node stops reading a connection whose answers wait behind too many requests, and refuses
    // what arrives meanwhile: well-formed requests, over a budget of the server's.
    const before = lines().length;
    const answer = await raw('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(700));
    expect(answer).not.toContain(' 400 ');
    await expect
      .poll(() => parserRefusalsSince(before))
      .toMatchObject([
        {
          event: 'request.denied',
          code: 'rate_limited',
          reason: 'too_many_pipelined',
          detail: { parserCode: 'HPE_PAUSED', answered: 'no: behind a request in flight' },
        },
      ]);
  });

  it.each([
    ['malformed bytes', 'GET /hello HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n', 'malformed_request'],
    ['a CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 'route_not_found'],
  ])('logs a request at work cut for %s pipelined behind it as cut by the server', async (_label, behind, refused) => {
    const before = lines().length;
    const answer = await raw(`PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n${behind}`);
    expect(answer).toBe('');
    await expect
      .poll(() =>
        lines()
          .slice(before)
          .filter((line) => line.event === 'request.cancelled' || line.reason === refused),
      )
      .toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            reason: refused,
            detail: expect.objectContaining({ answered: 'no: behind a request in flight' }) as unknown,
          }),
          expect.objectContaining({ event: 'request.cancelled', reason: 'pipelined_refused' }),
        ]),
      );
  });

  it('closes the connection of an answered request whose body goes on trickling in', async () => {
    // Node reads and drops the rest of an answered request's body for as long as the request
    // timeout allows (15 minutes on the reference server), under no deadline.
    const socket = clientConnection();
    socket.on('error', () => undefined);
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    const closed = new Promise((resolve) => socket.on('close', resolve));
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    socket.write('PUT /early HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nfirst bytes');
    const trickle = setInterval(() => socket.write('x'), 200);
    try {
      const outcome = await Promise.race([closed.then(() => 'closed'), sleep(15_000).then(() => 'open')]);
      expect(outcome).toBe('closed');
    } finally {
      clearInterval(trickle);
      socket.destroy();
    }
    expect(answer.startsWith('HTTP/1.1 200 ')).toBe(true);
  }, 20_000);

  it('still answers a request head cut short by the client closing its side as malformed', async () => {
    const answer = await raw('PUT /drain HTTP/1.1\r\nHost: x\r\nContent-Le', 50);
    expect(answer.startsWith('HTTP/1.1 400 ')).toBe(true);
    // Found by its request id: lines of earlier tests (a folded handshake count) may land meanwhile.
    const requestId = /^x-request-id: (.+)$/im.exec(answer)?.[1]?.trim();
    expect(requestId).toBeTruthy();
    await expect
      .poll(() => lines().filter((line) => line.requestId === requestId))
      .toMatchObject([{ event: 'request.denied', reason: 'malformed_request' }]);
  });
});

describe('createSecureServer: limits', () => {
  let pki: TestPki;
  const { audit } = captureAudit();

  beforeAll(async () => {
    pki = await createTestPki();
  });

  afterAll(async () => {
    await pki.remove();
  });

  const tls = (): Parameters<typeof createSecureServer>[1]['tls'] => ({
    certFile: pki.certFile,
    keyFile: pki.keyFile,
    caFile: pki.caFile,
    clientCertificates: 'per-operation',
  });

  it('sets timeouts tighter than Node and a 16 KiB header limit by default', async () => {
    const server = createSecureServer(helloApp(audit), { audit, tls: tls() });
    expect(server.headersTimeout).toBe(10_000);
    expect(server.requestTimeout).toBe(30_000);
    expect(server.keepAliveTimeout).toBe(5_000);
    expect(maxHeaderSizeOf(server)).toBe(16_384);
    const served = await listen(server);
    const dispatcher = agentFor(pki.ca.certPem);
    try {
      const res = await fetch(`${served.url}/hello`, { dispatcher, headers: { 'x-big': 'a'.repeat(20_000) } });
      expect(res.status).toBe(431);
    } finally {
      await dispatcher.close();
      await served.close();
    }
  });

  it('ends at closeAllConnections a connection still before its handshake, which would hold close() otherwise', async () => {
    // Accepted before close(), its handshake done after the shutdown's grace, then a request head
    // trickled byte by byte: Node's own closeAllConnections never saw it, and close() waited.
    const server = createSecureServer(helloApp(audit), { audit, tls: tls(), handshakeTimeoutMs: 60_000 });
    const served = await listen(server);
    const raw = createConnection({ host: '127.0.0.1', port: served.port });
    await once(raw, 'connect');
    const rawClosed = once(raw, 'close');
    const serverClosed = new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
    await sleep(100);
    server.closeAllConnections();
    await rawClosed;
    await serverClosed;
    // The client sees its connection end: a handshake now has nothing to talk to.
    expect(raw.destroyed).toBe(true);
  });

  it('takes overrides, and keeps the headers timeout within the request timeout', () => {
    const server = createSecureServer(helloApp(audit), {
      audit,
      tls: createTlsSettings(tls()),
      requestTimeoutMs: 4000,
      keepAliveTimeoutMs: 1000,
      maxHeaderSize: 8192,
    });
    expect(server.requestTimeout).toBe(4000);
    expect(server.headersTimeout).toBe(4000);
    expect(server.keepAliveTimeout).toBe(1000);
    expect(maxHeaderSizeOf(server)).toBe(8192);
  });

  it('refuses bad options at construction', () => {
    const app = helloApp(audit);
    expect(() => createSecureServer(app, { audit, tls: tls(), requestTimeoutMs: 0 })).toThrow(ConfigurationError);
    expect(() => createSecureServer(app, { audit, tls: tls(), headersTimeoutMs: 40_000 })).toThrow(/headersTimeoutMs/);
    expect(() => createSecureServer(app, { audit, tls: tls(), maxHeadersSize: 1 } as never)).toThrow(
      /did you mean "maxHeaderSize"/,
    );
    expect(() => createSecureServer(app, { tls: tls() } as never)).toThrow(/audit/);
    expect(() => createSecureServer(app, { audit } as never)).toThrow(/tls/);
    expect(() => createSecureServer(app, { audit, tls: { ...tls(), keyFile: join(pki.dir, 'missing.key') } })).toThrow(
      ConfigurationError,
    );
    expect(() => createSecureServer(app, { audit, tls: createTlsSettings(tls()), reload: true })).toThrow(/reload/);
    // Named as the option it was given as, not as createTlsSettings, which the caller never called.
    expect(() => createSecureServer(app, { audit, tls: {} as never })).toThrow(
      /^createSecureServer: "tls": "clientCertificates" is required/,
    );
    expect(() => createSecureServer(app, { audit, tls: { ...tls(), certFiel: 'x' } as never })).toThrow(
      /^createSecureServer: "tls": unknown option "certFiel" \(did you mean "certFile"\?\)/,
    );
  });
});

describe('createSecureServer: certificate reload', () => {
  let pki: TestPki;
  let served: Awaited<ReturnType<typeof listen>>;
  const { audit, lines } = captureAudit();

  beforeAll(async () => {
    pki = await createTestPki();
    served = await listen(
      createSecureServer(helloApp(audit), {
        audit,
        tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile, clientCertificates: 'per-operation' },
        reloadIntervalMs: 50,
      }),
    );
  });

  afterAll(async () => {
    await served.close();
    await pki.remove();
  });

  async function waitForFingerprint(expected: string): Promise<string> {
    let seen = '';
    for (let i = 0; i < 100; i++) {
      seen = (await serverCertificateOf(served.port, pki.ca.certPem)).fingerprint256.replaceAll(':', '').toLowerCase();
      if (seen === expected) return seen;
      await sleep(50);
    }
    return seen;
  }

  async function replace(file: string, contents: string): Promise<void> {
    // Written aside and renamed into place, as certificate tools do.
    await writeFile(`${file}.new`, contents, { mode: 0o600 });
    await rename(`${file}.new`, file);
  }

  it('serves a renewed certificate to new connections without a restart, and keeps it when a broken one follows', async () => {
    expect(await waitForFingerprint(pki.server.fingerprint256)).toBe(pki.server.fingerprint256);

    const renewed = await pki.ca.issueServerCertificate();
    await replace(pki.keyFile, renewed.keyPem);
    await replace(pki.certFile, renewed.certPem);
    expect(await waitForFingerprint(renewed.fingerprint256)).toBe(renewed.fingerprint256);
    expect(lines().some((l) => l.event === 'tls.reloaded' && l.certFingerprint256 === renewed.fingerprint256)).toBe(
      true,
    );

    // A broken certificate: the last good material stays, and the failure is logged.
    await replace(pki.certFile, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
    for (let i = 0; i < 100 && !lines().some((l) => l.event === 'tls.reload_failed'); i++) await sleep(50);
    expect(lines().some((l) => l.event === 'tls.reload_failed')).toBe(true);
    const still = await serverCertificateOf(served.port, pki.ca.certPem);
    expect(still.fingerprint256.replaceAll(':', '').toLowerCase()).toBe(renewed.fingerprint256);

    // And a client is still served after the reload, with its certificate verified.
    const dispatcher = agentFor(pki.ca.certPem, pki.client);
    try {
      const res = await fetch(`${served.url}/hello`, { dispatcher });
      expect(await res.json()).toEqual({ spiffeId: CLIENT_SPIFFE_ID });
    } finally {
      await dispatcher.close();
    }
  });
});

describe('createMtlsAgent options', () => {
  let pki: TestPki;

  beforeAll(async () => {
    pki = await createTestPki();
  });

  afterAll(async () => {
    await pki.remove();
  });

  it('reads files and refuses bad material at construction', async () => {
    const certFile = join(pki.dir, 'client.crt');
    const keyFile = join(pki.dir, 'client.key');
    await writeFile(certFile, pki.client.certPem);
    await writeFile(keyFile, pki.client.keyPem, { mode: 0o600 });
    await createMtlsAgent({ caFile: pki.caFile, certFile, keyFile }).close();
    await createMtlsAgent({ caFile: pki.caFile }).close();

    expect(() => createMtlsAgent({ certFile, keyFile })).toThrow(/"caFile" or "ca" is required/);
    expect(() => createMtlsAgent({ caFile: pki.caFile, certFile })).toThrow(/together/);
    expect(() => createMtlsAgent({ caFile: pki.caFile, ca: pki.ca.certPem })).toThrow(/not both/);
    expect(() => createMtlsAgent({ caFile: join(pki.dir, 'nope.crt') })).toThrow(/cannot read "caFile"/);
    expect(() => createMtlsAgent({ ca: 'not a certificate' })).toThrow(/no PEM certificate/);
    expect(() => createMtlsAgent({ ca: pki.ca.certPem, cert: pki.client.certPem, key: pki.stranger.keyPem })).toThrow(
      /does not match/,
    );
    expect(() => createMtlsAgent({ ca: pki.ca.certPem, rejectUnauthorized: false } as never)).toThrow(
      /unknown option "rejectUnauthorized"/,
    );
    expect(() => createMtlsAgent({ ca: pki.ca.certPem, headersTimeoutMs: -1 })).toThrow(/headersTimeoutMs/);
  });

  it('refuses an IP address as the server name, which Node 25 and later refuse at every connection', async () => {
    for (const servername of ['127.0.0.1', '::1', '203.0.113.7']) {
      expect(() => createMtlsAgent({ ca: pki.ca.certPem, servername })).toThrow(
        /"servername" must be a host name, not an IP address/,
      );
    }
    await createMtlsAgent({ ca: pki.ca.certPem, servername: 'localhost' }).close();
  });

  it('refuses a blank server name, which no certificate would match', () => {
    for (const servername of ['', ' ', '\t']) {
      expect(() => createMtlsAgent({ ca: pki.ca.certPem, servername })).toThrow(
        /^createMtlsAgent: "servername" must be a host name$/,
      );
    }
  });
});
