// Sessions Node's HTTP/2 layer ends on the client's account (a flood, metadata past its limits,
// a protocol error) make no call: fluxguard writes `http2.session_refused` for them, folded as
// the connection refusals are, so that a flood of them is one line and never silent.
import { once } from 'node:events';
import { connect as connectHttp2, constants, type OutgoingHttpHeaders } from 'node:http2';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { FLAG, FRAME, PREFACE, h2Frame } from '@fluxguard/test-support/http2-frames';
import { DEFAULT_MAX_HEADER_FIELDS } from './server-credentials.js';
import { fluxguardInterceptors, secureServerOptions } from './index.js';
import type { Json } from './testing/harness.js';
import { createTestPki, startSecureServer, unary, waitFor, type SecureServer, type TestPki } from './testing/tls.js';

const WINDOW_UPDATE = 0x8;

let pki: TestPki;

beforeAll(async () => {
  pki = await createTestPki();
});

afterAll(async () => {
  await pki.cleanup();
});

/** A server with fluxguard's credentials and its own captured audit log, on the file's PKI. */
function start(): Promise<SecureServer> {
  return startSecureServer((audit) => fluxguardInterceptors({ audit, timeouts: false }), {
    pki,
    serverOptions: secureServerOptions(),
  });
}

const refused = (lines: () => Json[]): Json[] => lines().filter((l) => l.event === 'http2.session_refused');

/** A raw HTTP/2 client over TLS: its preface and SETTINGS sent (and the server's acknowledged). */
async function rawSession(port: number): Promise<{ socket: TLSSocket; closed: Promise<void> }> {
  const socket = connect({
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ALPNProtocols: ['h2'],
    ca: pki.ca.certPem,
  });
  socket.on('error', () => undefined);
  const closed = once(socket, 'close').then(() => undefined);
  closed.catch(() => undefined);
  await once(socket, 'secureConnect');
  // Read (and drop) what the server sends: a paused socket never sees the server close it.
  socket.resume();
  socket.write(Buffer.concat([PREFACE, h2Frame(FRAME.SETTINGS, 0, 0), h2Frame(FRAME.SETTINGS, FLAG.ACK, 0)]));
  return { socket, closed };
}

/** Two WINDOW_UPDATEs that take the connection's window past 2^31 - 1: a FLOW_CONTROL_ERROR. */
function windowOverflow(): Buffer {
  const increment = Buffer.alloc(4);
  increment.writeUInt32BE(0x7fffffff);
  return Buffer.concat([h2Frame(WINDOW_UPDATE, 0, 0, increment), h2Frame(WINDOW_UPDATE, 0, 0, increment)]);
}

describe('sessions refused by the HTTP/2 layer', () => {
  it('writes metadata past what nghttp2 reads (more CONTINUATION frames than it takes) as headers_too_large', async () => {
    const secure = await start();
    const client = secure.client();
    try {
      const metadata = new Metadata();
      // 200 KB of metadata: grpc-js's client writes it as a HEADERS frame and a dozen CONTINUATIONs.
      for (let i = 0; i < 100; i++) metadata.set(`x-pad-${String(i)}`, 'p'.repeat(2_000));
      metadata.set('x-secret', 'never-logged-value');
      const outcome = await unary(client, 'Public', metadata);
      expect(outcome.status.code).not.toBe(Status.OK);
      await waitFor(() => refused(secure.lines).length > 0);
      expect(refused(secure.lines)).toEqual([
        expect.objectContaining({
          level: 40,
          transport: 'grpc',
          reason: 'http2_refused',
          refusals: { headers_too_large: 1 },
          addresses: ['127.0.0.1'],
        }),
      ]);
      expect(JSON.stringify(secure.lines())).not.toContain('never-logged-value');
      expect(JSON.stringify(secure.lines())).not.toContain('x-pad');
    } finally {
      await secure.close();
    }
  });

  it('writes a SETTINGS flood nghttp2 ends the session for as flood', async () => {
    const secure = await start();
    try {
      const raw = await rawSession(secure.server.port);
      raw.socket.write(Buffer.concat(Array.from({ length: 20_000 }, () => h2Frame(FRAME.SETTINGS, 0, 0))));
      await waitFor(() => refused(secure.lines).length > 0);
      raw.socket.destroy();
      expect(refused(secure.lines)).toEqual([
        expect.objectContaining({ refusals: { flood: 1 }, addresses: ['127.0.0.1'] }),
      ]);
    } finally {
      await secure.close();
    }
  });

  it('writes a flow-control error as flow_control_error', async () => {
    const secure = await start();
    try {
      const raw = await rawSession(secure.server.port);
      raw.socket.write(windowOverflow());
      await waitFor(() => refused(secure.lines).length > 0);
      raw.socket.destroy();
      expect(refused(secure.lines)).toEqual([expect.objectContaining({ refusals: { flow_control_error: 1 } })]);
    } finally {
      await secure.close();
    }
  });

  it('folds a flood of refused sessions: one line at once, the rest counted for the summary', async () => {
    const secure = await start();
    try {
      const clients = await Promise.all(Array.from({ length: 40 }, () => rawSession(secure.server.port)));
      for (const raw of clients) raw.socket.write(windowOverflow());
      // Every session refused: the server closed each connection.
      await waitFor(() => clients.every((raw) => raw.socket.destroyed));
      await waitFor(() => refused(secure.lines).length > 0);
      // One line says so until the interval ends: the rest are counted for its summary.
      expect(refused(secure.lines)).toHaveLength(1);
      expect(refused(secure.lines)[0]).toMatchObject({ refusals: { flow_control_error: 1 } });
      expect(secure.lines().length).toBeLessThan(5);
      for (const raw of clients) raw.socket.destroy();
    } finally {
      await secure.close();
    }
  });
});

describe('streams Node resets as they open', () => {
  /** Metadata of more header fields than Node reads: it resets the stream, and no call exists. */
  const tooManyEntries = (): Metadata => {
    const metadata = new Metadata();
    for (let i = 0; i <= DEFAULT_MAX_HEADER_FIELDS; i++) metadata.set(`x-e${String(i)}`, 'v');
    return metadata;
  };

  it('writes one followed by a call on its connection as stream_reset', async () => {
    const secure = await start();
    const client = secure.client();
    try {
      const reset = await unary(client, 'Public', tooManyEntries());
      expect(reset.status.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(reset.status.details).toBe('Bandwidth exhausted or memory limit exceeded');
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      await waitFor(() => refused(secure.lines).length > 0);
      expect(refused(secure.lines)).toEqual([
        expect.objectContaining({
          transport: 'grpc',
          reason: 'http2_refused',
          refusals: { stream_reset: 1 },
          addresses: ['127.0.0.1'],
        }),
      ]);
      expect(JSON.stringify(secure.lines())).not.toContain('x-e1');
    } finally {
      await secure.close();
    }
  });

  it('writes one that is the last of its connection as the connection closes', async () => {
    const secure = await start();
    try {
      const session = connectHttp2(`https://localhost:${String(secure.server.port)}`, { ca: pki.ca.certPem });
      session.on('error', () => undefined);
      const headers: OutgoingHttpHeaders = { ':method': 'POST', ':path': '/any', 'content-type': 'application/grpc' };
      for (let i = 0; i <= DEFAULT_MAX_HEADER_FIELDS; i++) headers[`x-e${String(i)}`] = 'v';
      const stream = session.request(headers);
      stream.on('error', () => undefined);
      stream.resume();
      await new Promise((resolve) => stream.once('close', resolve));
      expect(stream.rstCode).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
      // No later stream shows the gap: it is found as the session goes.
      session.destroy();
      await waitFor(() => refused(secure.lines).length > 0);
      expect(refused(secure.lines)).toEqual([
        expect.objectContaining({ refusals: { stream_reset: 1 }, addresses: ['127.0.0.1'] }),
      ]);
    } finally {
      await secure.close();
    }
  });

  it('folds a flood of them, the server answering all along (bounded: 200 calls)', async () => {
    const secure = await start();
    const client = secure.client();
    try {
      const metadata = tooManyEntries();
      const startedAt = performance.now();
      const outcomes = await Promise.all(Array.from({ length: 200 }, () => unary(client, 'Public', metadata)));
      // Node's resets: ENHANCE_YOUR_CALM, and under a flood some INTERNAL_ERROR (grpc-js:
      // "Received RST_STREAM with code 2"); never a call.
      const codes = new Set(outcomes.map((outcome) => outcome.status.code));
      expect([...codes].every((code) => code === Status.RESOURCE_EXHAUSTED || code === Status.INTERNAL)).toBe(true);
      expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
      expect(performance.now() - startedAt).toBeLessThan(10_000);
      await waitFor(() => refused(secure.lines).length > 0);
      // One line at once; the rest are counted for the summary at the end of the interval.
      expect(refused(secure.lines)).toEqual([expect.objectContaining({ refusals: { stream_reset: 1 } })]);
      expect(secure.lines().length).toBeLessThan(5);
    } finally {
      await secure.close();
    }
  });

  it('writes nothing for a connection whose calls all reached grpc-js', async () => {
    const secure = await start();
    const client = secure.client();
    try {
      for (let i = 0; i < 3; i++) expect((await unary(client, 'Public')).status.code).toBe(Status.OK);
    } finally {
      await secure.close();
    }
    expect(refused(secure.lines)).toEqual([]);
  });
});
