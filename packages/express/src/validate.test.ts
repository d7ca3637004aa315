// Validation of real HTTP requests with zod schemas (Standard Schema): the field path and the
// rule come back, never the value; a JSON body too deep, too wide or carrying a prototype key is
// refused before any handler or schema sees it, and Object.prototype is untouched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { z } from 'zod';
import { ConfigurationError } from '@fluxguard/core';
import { fluxguard, jsonBody, validate } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

const audit = captureAudit();
let served: Served;
let handled = 0;

beforeAll(async () => {
  const app = express();
  app.set('case sensitive routing', true);
  const { before, after } = fluxguard({ audit: audit.audit });
  app.use(before);
  app.post(
    '/v1/items/:id',
    jsonBody({ limit: '16kb', maxDepth: 8, maxKeys: 50 }),
    validate({
      params: z.object({ id: z.string().regex(/^\d+$/, 'must be digits') }),
      query: z.object({ dryRun: z.enum(['yes', 'no']).optional() }),
      body: z.object({ name: z.string().max(10), tags: z.array(z.string().max(5)).default([]) }),
    }),
    (req, res) => {
      handled += 1;
      res.json({ id: req.params.id, body: req.body as unknown });
    },
  );
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

async function post(
  path: string,
  body: string | Buffer,
  contentType = 'application/json',
): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
  const res = await fetch(`${served.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body,
  });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as Record<string, unknown>, text };
}

describe('validate() and jsonBody()', () => {
  it('passes a valid request, the schema output (defaults) replacing the body', async () => {
    const res = await post('/v1/items/42?dryRun=no', '{"name":"bolt"}');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ id: '42', body: { name: 'bolt', tags: [] } });
  });

  it.each([
    ['a path parameter', '/v1/items/4x2', '{"name":"bolt"}', 'params.id', 'must be digits'],
    ['a query parameter', '/v1/items/1?dryRun=SECRETVALUE', '{"name":"bolt"}', 'query.dryRun', undefined],
    ['a nested body field', '/v1/items/1', '{"name":"bolt","tags":["ok","SECRETVALUE"]}', 'body.tags[1]', undefined],
    ['a body field of the wrong type', '/v1/items/1', '{"name":12345678901}', 'body.name', undefined],
  ])('refuses %s with 400 naming the field, never the value', async (_label, path, body, field, rule) => {
    const before = handled;
    const res = await post(path, body);
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: 'invalid_argument', field });
    expect(res.text).not.toContain('SECRETVALUE');
    expect(res.text).not.toContain('12345678901');
    if (rule !== undefined) expect(res.json.detail).toContain(rule);
    expect(handled).toBe(before);
    const line = audit.lines().find((l) => l.requestId === res.json.requestId);
    expect(line).toMatchObject({ reason: 'schema_mismatch' });
  });

  it.each([
    ['a __proto__ key', '{"name":"x","__proto__":{"polluted":true}}', 'json_forbidden_key'],
    ['an escaped __proto__ key', '{"name":"x","\\u005f_proto__":{"polluted":true}}', 'json_forbidden_key'],
    [
      'a nested constructor.prototype',
      '{"name":"x","a":{"constructor":{"prototype":{"polluted":true}}}}',
      'json_forbidden_key',
    ],
    ['a key given twice', '{"name":"x","name":"admin"}', 'json_duplicate_key'],
    ['a document nested 9 deep', `{"name":"x","a":${'['.repeat(8)}${']'.repeat(8)}}`, 'json_too_deep'],
    [
      'a document with 51 keys',
      JSON.stringify(Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${String(i)}`, i]))),
      'json_too_many_keys',
    ],
  ])('refuses %s before any handler or schema sees it', async (_label, body, reason) => {
    const before = handled;
    const res = await post('/v1/items/1', body);
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect(handled).toBe(before);
    expect(audit.lines().find((l) => l.requestId === res.json.requestId)).toMatchObject({ reason });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  /** `text` in UTF-16, big-endian; Node has only the little-endian codec. */
  const utf16be = (text: string): Buffer => Buffer.from(text, 'utf16le').swap16();

  it.each([
    ['UTF-16BE', 'utf-16be', utf16be('{"name":"x","name":"admin"}')],
    ['UTF-16LE', 'utf-16le', Buffer.from('{"name":"x","name":"admin"}', 'utf16le')],
    ['UTF-16 with a byte-order mark', 'utf-16', Buffer.from('\ufeff{"name":"x","name":"admin"}', 'utf16le')],
  ])('refuses a body in %s, whose keys the check could not read', async (_label, charset, body) => {
    const before = handled;
    const res = await post('/v1/items/1', body, `application/json; charset=${charset}`);
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: 'invalid_argument', field: 'body' });
    expect(handled).toBe(before);
    const line = audit.lines().find((l) => l.requestId === res.json.requestId);
    expect(line).toMatchObject({ reason: 'body_charset_unsupported' });
  });

  it.each(['utf-8', 'UTF-8'])('takes a body with charset=%s', async (charset) => {
    const res = await post('/v1/items/7', '{"name":"bolt"}', `application/json; charset=${charset}`);
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ id: '7', body: { name: 'bolt', tags: [] } });
  });

  it('counts braces inside strings as text, not nesting', async () => {
    const res = await post('/v1/items/1', JSON.stringify({ name: '{['.repeat(20) }));
    expect(res.status).toBe(400);
    // Refused by the schema (name longer than 10), not by the depth limit.
    expect(res.json).toMatchObject({ field: 'body.name' });
  });

  it('refuses bad options when the middleware is made', () => {
    expect(() => validate({})).toThrow('validate: give a schema');
    expect(() => validate({ body: {} as never })).toThrow('must be a Standard Schema');
    expect(() => validate({ bodyy: z.object({}) } as never)).toThrow('did you mean "body"');
    for (const limit of ['lots', -1, 0, 1.5, '10 parsecs']) {
      expect(() => jsonBody({ limit })).toThrow(ConfigurationError);
      expect(() => jsonBody({ limit })).toThrow('jsonBody: "limit" must be a whole number of bytes');
    }
    // A size that means no body at all, or no limit at all.
    expect(() => jsonBody({ limit: '0kb' })).toThrow('jsonBody: "limit" (0kb) must be a whole number of bytes');
    expect(() => jsonBody({ limit: '999999999999gb' })).toThrow('jsonBody: "limit" (999999999999gb) must be a whole');
    for (const limit of [1, 65_536, '100kb', '1.5mb', '512 B', '0.5kb'])
      expect(() => jsonBody({ limit })).not.toThrow();
  });
});
