// Abusive HTTP/2 clients against a gRPC port: streams opened and reset in a tight loop (rapid
// reset, CVE-2023-44487) and more concurrent streams than allowed. Each is bounded in count
// and time; the server must stay up and keep serving a real client.
import { connect as http2Connect, constants, type ClientHttp2Session } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { fluxguardInterceptors, secureServerOptions } from './index.js';
import { op, startSecureServer, unary, type SecureServer } from './testing/tls.js';

const MAX_STREAMS = 20;

let secure: SecureServer;

beforeAll(async () => {
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit }), {
    serverOptions: secureServerOptions({ maxConcurrentStreams: MAX_STREAMS }),
  });
});

afterAll(() => secure.close());

function session(): ClientHttp2Session {
  const s = http2Connect(`https://${secure.server.address}`, { ca: secure.pki.ca.certPem, servername: 'localhost' });
  s.on('error', () => undefined);
  return s;
}

const GRPC_HEADERS = {
  ':method': 'POST',
  ':path': op('Public'),
  'content-type': 'application/grpc',
  te: 'trailers',
};

async function realCall(): Promise<number> {
  const client = secure.client();
  try {
    return (await unary(client, 'Public')).status.code;
  } finally {
    client.close();
  }
}

describe('abusive HTTP/2 clients on the gRPC port', () => {
  it('survives a rapid-reset loop (bounded: 20,000 streams or 5 s) and keeps serving', async () => {
    const attacker = session();
    let opened = 0;
    let goaway = false;
    attacker.on('goaway', () => {
      goaway = true;
    });
    const rssBefore = process.memoryUsage().rss;
    const until = Date.now() + 5_000;
    await new Promise<void>((resolve) => {
      const burst = (): void => {
        for (let i = 0; i < 200 && !attacker.closed && !attacker.destroyed && !goaway; i++) {
          try {
            const stream = attacker.request(GRPC_HEADERS);
            stream.on('error', () => undefined);
            stream.close(constants.NGHTTP2_CANCEL);
            opened += 1;
          } catch {
            break;
          }
        }
        if (opened >= 20_000 || Date.now() > until || attacker.closed || attacker.destroyed || goaway) resolve();
        else setImmediate(burst);
      };
      burst();
    });
    attacker.destroy();
    const growthMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    console.log(
      `rapid reset: ${String(opened)} streams opened and reset, GOAWAY: ${String(goaway)}, RSS growth ${growthMb.toFixed(1)} MB`,
    );
    expect(growthMb).toBeLessThan(256);
    expect(await realCall()).toBe(Status.OK);
  });

  it('survives a ping flood without data (bounded: 10,000 pings or 5 s) and keeps serving', async () => {
    const attacker = http2Connect(`https://${secure.server.address}`, {
      ca: secure.pki.ca.certPem,
      servername: 'localhost',
      maxOutstandingPings: 100_000,
    });
    attacker.on('error', () => undefined);
    await new Promise<void>((resolve) =>
      attacker.once('connect', () => {
        resolve();
      }),
    );
    let sent = 0;
    let answered = 0;
    const until = Date.now() + 5_000;
    while (sent < 10_000 && Date.now() < until && !attacker.closed && !attacker.destroyed) {
      try {
        attacker.ping(() => {
          answered += 1;
        });
        sent += 1;
      } catch {
        break;
      }
      if (sent % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    console.log(
      `ping flood: ${String(sent)} pings sent, ${String(answered)} answered, session closed: ${String(attacker.closed || attacker.destroyed)}`,
    );
    attacker.destroy();
    expect(sent).toBeGreaterThan(0);
    expect(await realCall()).toBe(Status.OK);
  });

  it('refuses streams beyond the concurrent-stream limit of a connection, and keeps serving others', async () => {
    const attacker = session();
    const streams = Array.from({ length: MAX_STREAMS * 3 }, () => {
      const stream = attacker.request(GRPC_HEADERS, { endStream: false });
      stream.on('error', () => undefined);
      return stream;
    });
    // Wait for the server's answer to each: refused ones are reset, held ones stay open.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const refused = streams.filter((stream) => stream.rstCode === constants.NGHTTP2_REFUSED_STREAM).length;
    console.log(`concurrent streams: ${String(streams.length)} opened, ${String(refused)} refused by the server`);
    expect(refused).toBeGreaterThanOrEqual(streams.length - MAX_STREAMS);
    expect(await realCall()).toBe(Status.OK);
    attacker.destroy();
  });
});
