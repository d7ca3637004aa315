// grpc-js's own log lines, routed to the audit logger: a client that makes grpc-js log on every
// call (metadata values it drops) gets a bounded number of short lines, not 140 KB a call.
import { connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Metadata, experimental, logVerbosity, setLogger } from '@grpc/grpc-js';
import { addService, fluxguardInterceptors, routeGrpcJsLogs } from './index.js';
import {
  captureAudit,
  rawUnaryStatus,
  startServer,
  testService,
  unaryAnswering,
  type Started,
} from './testing/harness.js';

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

/**
 * One unary call per entry of `calls`, one after another on one HTTP/2 connection, each with
 * those metadata entries besides the call's own headers (written raw: a grpc-js client would
 * refuse the values these tests send).
 */
async function callsWith(
  calls: readonly Readonly<Record<string, string | string[]>>[],
  address = started.address,
): Promise<void> {
  const session = connect(`http://${address}`);
  session.on('error', () => undefined);
  try {
    for (const entries of calls) await rawUnaryStatus(session, entries);
  } finally {
    session.close();
  }
}

describe('routeGrpcJsLogs', () => {
  // First: the flood below uses up the interval's lines.
  it('names a dropped metadata entry but never its values (a cookie, an API key)', async () => {
    // A key of 122 characters: a pattern bounded at 100 once let its line, values and all, through.
    const longKey = `x-${'k'.repeat(120)}`;
    await callsWith([
      {
        cookie: 'session=SECRETMARK-cookie\u00e9',
        'x-api-key': 'SECRETMARK-key\u00e9',
        [longKey]: 'SECRETMARK-long\u00e9',
      },
    ]);
    const texts = audit
      .lines()
      .filter((line) => line.event === 'grpc-js.log')
      .map((line) => String(line.text));
    expect(texts).toEqual([
      expect.stringMatching(/^Failed to add metadata entry cookie: its value is withheld/),
      expect.stringMatching(/^Failed to add metadata entry x-api-key: its value is withheld/),
      `Failed to add metadata entry x-${'k'.repeat(98)}...: its value is withheld (bytes grpc-js does not accept)`,
    ]);
    expect(JSON.stringify(audit.lines())).not.toContain('SECRETMARK');
  });

  it('keeps a flood of dropped metadata entries to a few short lines, and nothing on the console', async () => {
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    // 20 calls of 30 entries each with bytes grpc-js refuses in a text value (é in latin1),
    // one of them quoting a token: grpc-js logs each entry, every value quoted.
    const bad = '\u00e9'.repeat(2000);
    const entries: Record<string, string> = { 'x-token': `${bad} Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln` };
    for (let i = 0; i < 30; i++) entries[`x-e${String(i)}`] = bad;
    await callsWith(Array.from({ length: 20 }, () => entries));
    const lines = audit.lines().filter((line) => line.event === 'grpc-js.log');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(String(line.text).length).toBeLessThanOrEqual(300);
    expect(JSON.stringify(audit.lines())).not.toContain('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln');
    expect(consoleError).not.toHaveBeenCalled();
    consoleError.mockRestore();
  });

  it("still writes the server's own lines once clients have used up theirs", () => {
    // After the flood above: grpc-js's own logging call, as its server makes it when a new
    // secure context fails. It has a budget apart from the lines clients cause.
    experimental.log(logVerbosity.ERROR, 'Failed to set secure context with error bad key');
    const texts = audit
      .lines()
      .filter((line) => line.event === 'grpc-js.log')
      .map((line) => String(line.text));
    expect(texts).toHaveLength(6);
    expect(texts.at(-1)).toBe('Failed to set secure context with error bad key');
  });

  it('drops the entries grpc-js would drop before grpc-js reads them, as it drops them, without building its errors', async () => {
    const seen: Record<string, unknown>[] = [];
    const server = await startServer(fluxguardInterceptors({ audit: audit.audit }), (s) => {
      addService(s, testService, {
        ...unaryAnswering({}),
        Unary: (call, callback) => {
          seen.push({ ...call.metadata.getMap(), cookies: call.metadata.get('set-cookie') });
          callback(null, {});
        },
      });
    });
    // grpc-js builds an error, stack and all, for each entry it refuses as it adds it.
    const add = vi.spyOn(Metadata.prototype, 'add');
    try {
      await callsWith(
        [
          {
            'x-kept': 'plain',
            'x-refused': 'caf\u00e9',
            // Node joins a repeated header into one value, but for `set-cookie`: fluxguard hands
            // its values on apart, and grpc-js keeps those before the first it refuses.
            'x-repeated': ['first', 'caf\u00e9'],
            'set-cookie': ['first=1', 'second=caf\u00e9', 'third=3'],
            'x!key': 'value',
            'x-data-bin': Buffer.from('bytes').toString('base64'),
          },
        ],
        server.address,
      );
      const refused = add.mock.calls.filter(([key, value]) => key === 'x!key' || /[^ -~]/.test(String(value)));
      expect(refused).toEqual([]);
    } finally {
      add.mockRestore();
      await server.close();
    }
    // As grpc-js alone keeps them: a repeated key's values up to the first it refuses.
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({
      'x-kept': 'plain',
      'x-repeated': 'first',
      cookies: ['first=1'],
      'x-data-bin': Buffer.from('bytes'),
    });
    for (const key of ['x-refused', 'x!key']) expect(seen[0]).not.toHaveProperty(key);
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
