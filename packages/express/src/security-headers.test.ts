import { request } from 'node:http';
import express, { type RequestHandler } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, createAuditLogger } from '@fluxguard/core';
import { fluxguard } from './fluxguard.js';
import { helmetFor, recordHeaderWrites, securityHeaders, type SecurityHeadersOptions } from './security-headers.js';
import { serve, type Served } from './testing/tls.js';

/** The raw header lines of an answer (names as sent, in order), without the clock's `Date`. */
async function rawHeaders(port: number, path: string): Promise<string[][]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        const lines: string[][] = [];
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
          const name = res.rawHeaders[i] ?? '';
          if (name.toLowerCase() !== 'date') lines.push([name, res.rawHeaders[i + 1] ?? '']);
        }
        resolve(lines);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const CASES: readonly (SecurityHeadersOptions | undefined)[] = [
  undefined,
  {},
  { hstsMaxAgeSeconds: 0 },
  { hstsMaxAgeSeconds: 63_072_000, hstsIncludeSubDomains: false },
  { hstsPreload: true },
  { hstsMaxAgeSeconds: 63_072_000, hstsPreload: true },
  { crossOriginResourcePolicy: 'same-site' },
  { crossOriginResourcePolicy: 'cross-origin', hstsMaxAgeSeconds: 1 },
];

describe('securityHeaders: HSTS preload', () => {
  it.each([
    { hstsIncludeSubDomains: false, hstsPreload: true },
    { hstsMaxAgeSeconds: 300, hstsPreload: true },
    { hstsMaxAgeSeconds: 0, hstsPreload: true },
  ])('refuses %j, which the preload list refuses', (options) => {
    expect(() => securityHeaders(options)).toThrow(
      /"hstsPreload" needs "hstsIncludeSubDomains" and "hstsMaxAgeSeconds"/,
    );
  });
});

describe('securityHeaders, recorded once from helmet', () => {
  let served: Served;
  beforeAll(async () => {
    const app = express();
    const ok: RequestHandler = (_req, res) => {
      res.json({ ok: true });
    };
    // Express's own X-Powered-By is set on every route: both sides must remove it.
    CASES.forEach((options, index) => {
      app.get(`/ours/${String(index)}`, securityHeaders(options), ok);
      app.get(`/helmet/${String(index)}`, helmetFor(options), ok);
    });
    const audit = createAuditLogger({ level: 'silent' });
    CASES.forEach((options, index) => {
      const { before } = fluxguard({ audit, securityHeaders: options, timeouts: false });
      const withoutId: RequestHandler = (_req, res) => {
        res.removeHeader('x-request-id');
        res.json({ ok: true });
      };
      app.get(`/before/${String(index)}`, before, withoutId);
    });
    served = await serve(app);
  });
  afterAll(async () => {
    await served.close();
  });

  it.each(CASES.map((options, index) => [options === undefined ? 'no options' : JSON.stringify(options), index]))(
    'sends the same header lines as helmet, in the same order, for %s',
    async (_label, index) => {
      const ours = await rawHeaders(served.port, `/ours/${String(index)}`);
      const theirs = await rawHeaders(served.port, `/helmet/${String(index)}`);
      expect(ours).toEqual(theirs);
      expect(await rawHeaders(served.port, `/before/${String(index)}`)).toEqual(theirs);
      expect(ours.some(([name]) => name?.toLowerCase() === 'x-powered-by')).toBe(false);
    },
  );

  it('sends the documented defaults', async () => {
    const lines = await rawHeaders(served.port, '/ours/0');
    expect(lines.slice(0, 8)).toEqual([
      ['Content-Security-Policy', "default-src 'none';frame-ancestors 'none'"],
      ['Cross-Origin-Resource-Policy', 'same-origin'],
      ['Referrer-Policy', 'no-referrer'],
      ['Strict-Transport-Security', 'max-age=31536000; includeSubDomains'],
      ['X-Content-Type-Options', 'nosniff'],
      ['X-Frame-Options', 'DENY'],
      ['X-Permitted-Cross-Domain-Policies', 'none'],
      ['X-XSS-Protection', '0'],
    ]);
  });
});

describe('recordHeaderWrites', () => {
  it('records sets and removals in order', () => {
    const writes = recordHeaderWrites((_req, res, next) => {
      res.setHeader('A-One', '1');
      res.removeHeader('X-Gone');
      res.setHeader('B-Two', '2');
      next();
    });
    expect(writes).toEqual([
      ['A-One', '1'],
      ['X-Gone', undefined],
      ['B-Two', '2'],
    ]);
  });

  it.each<[string, RequestHandler]>([
    [
      'reads the request',
      (req, res, next) => {
        res.setHeader('X-Path', req.url);
        next();
      },
    ],
    [
      'uses another response method',
      (_req, res, next) => {
        res.appendHeader('X-One', '1');
        next();
      },
    ],
    [
      'sets a header that is not a string',
      (_req, res, next) => {
        res.setHeader('X-List', ['a', 'b']);
        next();
      },
    ],
    [
      'passes an error',
      (_req, _res, next) => {
        next(new Error('nonce failed'));
      },
    ],
    [
      'calls next later',
      (_req, _res, next) => {
        setImmediate(next);
      },
    ],
  ])('refuses, at construction, a handler that %s', (_label, handler) => {
    expect(() => recordHeaderWrites(handler)).toThrow(ConfigurationError);
  });
});
