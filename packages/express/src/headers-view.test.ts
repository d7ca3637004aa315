// What a control sees of an HTTP request's headers: every line as the client sent it, names
// compared without case, a repeated header as separate values (two Authorization headers
// must both be seen, where Node's `headers` keeps only the first).
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import type { Control, HeaderReader } from '@fluxguard/core';
import { fluxguard } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const seen: { get: unknown; getAll: unknown; missing: unknown; auth: unknown; entries: unknown }[] = [];

const recorder: Control = {
  name: 'recorder',
  stage: 'caller-limit',
  onStart(call) {
    const headers: HeaderReader = call.headers;
    seen.push({
      get: headers.get('X-TAG'),
      getAll: headers.getAll('x-tag'),
      missing: headers.getAll('x-missing'),
      auth: headers.getAll('Authorization'),
      entries: [...(headers.entries?.() ?? [])].filter(([name]) => name.startsWith('x-t') || name === 'authorization'),
    });
    return undefined;
  },
};

let served: Served;
beforeAll(async () => {
  const app = express();
  const { before, after } = fluxguard({ audit: captureAudit().audit, controls: [recorder] });
  app.use(before);
  app.get('/echo', (_req, res) => {
    res.json({ ok: true });
  });
  app.use(after);
  served = await serve(app);
});
afterAll(async () => {
  await served.close();
});

/** Sends a request with exactly these header lines, and reads the status line. */
async function rawRequest(lines: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(served.port, '127.0.0.1', () => {
      socket.write(['GET /echo HTTP/1.1', 'Host: localhost', 'Connection: close', ...lines, '', ''].join('\r\n'));
    });
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => {
      resolve(data.split('\r\n')[0] ?? '');
    });
    socket.on('error', reject);
  });
}

describe('the headers a control sees on HTTP', () => {
  it('are every line as sent, names without case, repeats kept apart', async () => {
    const status = await rawRequest(['X-Tag: one', 'x-TAG: two', 'Authorization: Bearer a', 'authorization: Bearer b']);
    expect(status).toBe('HTTP/1.1 200 OK');
    expect(seen.at(-1)).toEqual({
      get: 'one',
      getAll: ['one', 'two'],
      missing: [],
      auth: ['Bearer a', 'Bearer b'],
      entries: [
        ['x-tag', 'one'],
        ['x-tag', 'two'],
        ['authorization', 'Bearer a'],
        ['authorization', 'Bearer b'],
      ],
    });
  });

  it('has nothing for a name the request does not carry, and one value for one line', async () => {
    await rawRequest(['X-Tag: only']);
    expect(seen.at(-1)).toMatchObject({ get: 'only', getAll: ['only'], missing: [], auth: [] });
  });
});
