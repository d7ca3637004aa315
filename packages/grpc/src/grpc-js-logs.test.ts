// grpc-js's own log lines, routed to the audit logger: a client that makes grpc-js log on every
// call (metadata values it drops) gets a bounded number of short lines, not 140 KB a call.
import { once } from 'node:events';
import { connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { setLogger } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, routeGrpcJsLogs } from './index.js';
import { captureAudit, startServer, testService, unaryAnswering, type Started } from './testing/harness.js';

const audit = captureAudit();
let started: Started;

beforeAll(async () => {
  routeGrpcJsLogs({ audit: audit.audit, maxLinesPerInterval: 5, intervalMs: 60_000 });
  started = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
    addService(server, testService, unaryAnswering({ ok: true }));
  });
});

afterAll(async () => {
  await started.close();
  setLogger(console);
});

describe('routeGrpcJsLogs', () => {
  // First: the flood below uses up the interval's lines.
  it('names a dropped metadata entry but never its values (a cookie, an API key)', async () => {
    const session = connect(`http://${started.address}`);
    session.on('error', () => undefined);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': testService.Unary.path,
        'content-type': 'application/grpc',
        te: 'trailers',
        cookie: 'session=SECRETMARK-cookie\u00e9',
        'x-api-key': 'SECRETMARK-key\u00e9',
      });
      stream.on('error', () => undefined);
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]));
      stream.resume();
      await once(stream, 'close');
    } finally {
      session.close();
    }
    const texts = audit
      .lines()
      .filter((line) => line.event === 'grpc-js.log')
      .map((line) => String(line.text));
    expect(texts).toEqual([
      expect.stringMatching(/^Failed to add metadata entry cookie: its value is withheld/),
      expect.stringMatching(/^Failed to add metadata entry x-api-key: its value is withheld/),
    ]);
    expect(JSON.stringify(audit.lines())).not.toContain('SECRETMARK');
  });

  it('keeps a flood of dropped metadata entries to a few short lines, and nothing on the console', async () => {
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const session = connect(`http://${started.address}`);
    session.on('error', () => undefined);
    try {
      // 20 calls of 30 entries each with bytes grpc-js refuses in a text value (é in latin1),
      // one of them quoting a token: grpc-js logs each entry, every value quoted.
      const bad = '\u00e9'.repeat(2000);
      for (let call = 0; call < 20; call++) {
        const headers: Record<string, string> = {
          ':method': 'POST',
          ':path': testService.Unary.path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'x-token': `${bad} Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln`,
        };
        for (let i = 0; i < 30; i++) headers[`x-e${String(i)}`] = bad;
        const stream = session.request(headers);
        stream.on('error', () => undefined);
        stream.end(Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]));
        stream.resume();
        await once(stream, 'close');
      }
    } finally {
      session.close();
    }
    const lines = audit.lines().filter((line) => line.event === 'grpc-js.log');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(String(line.text).length).toBeLessThanOrEqual(300);
    expect(JSON.stringify(audit.lines())).not.toContain('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln');
    expect(consoleError).not.toHaveBeenCalled();
    consoleError.mockRestore();
  });

  it('refuses bad options at start-up', () => {
    expect(() => {
      routeGrpcJsLogs({ audit: audit.audit, intervalMs: 0 });
    }).toThrow('"intervalMs" must be a whole number of at least 1');
    expect(() => {
      routeGrpcJsLogs({ audit: audit.audit, maxLines: 3 } as never);
    }).toThrow(/maxLines/);
  });
});
