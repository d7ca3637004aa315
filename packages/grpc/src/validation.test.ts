// Message validation with zod schemas (Standard Schema) on real gRPC calls of every kind: a
// message the schema refuses ends the call INVALID_ARGUMENT with the field path in
// x-fluxguard-field and the rule in the details, never the value, before the handler sees it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import { z } from 'zod';
import { createInputLimits, createMessageValidation } from '@fluxguard/core';
import { FIELD_METADATA_KEY, addService, controls, fluxguardInterceptors } from './index.js';
import {
  KINDS,
  callKind,
  captureAudit,
  metadataValue,
  startServer,
  testService,
  visibleText,
  type Json,
  type Started,
} from './testing/harness.js';

const audit = captureAudit();
const schema = z.object({
  name: z.string().max(8),
  items: z.array(z.object({ qty: z.number().int().min(1) })).optional(),
});
const validation = createMessageValidation({ rules: [{ operation: '/fluxguard.test.v1.Test/*', schema }] });
let started: Started;
let handled = 0;

beforeAll(async () => {
  const echo = (message: Json): Json => {
    handled += 1;
    return message;
  };
  started = await startServer(fluxguardInterceptors({ audit: audit.audit, controls: [validation] }), (server) => {
    addService(server, testService, {
      Unary: (call) => echo(call.request),
      ClientStream: async (call) => {
        let last: Json = {};
        for await (const message of call) last = echo(message as Json);
        return last;
      },
      ServerStream: (call) => {
        call.write(echo(call.request));
        call.end();
      },
      Bidi: (call) => {
        call.on('data', (message: Json) => call.write(echo(message)));
        call.on('end', () => call.end());
      },
    });
  });
});

afterAll(async () => {
  await started.close();
});

describe('createMessageValidation over gRPC', () => {
  it.each(KINDS)('passes a valid %s message', async (kind) => {
    const outcome = await callKind(started.client, kind, { name: 'bolt' });
    expect(outcome.status.code).toBe(Status.OK);
  });

  it.each(KINDS)('refuses an invalid %s message naming the field, never the value', async (kind) => {
    const before = handled;
    const outcome = await callKind(started.client, kind, { name: 'bolt', items: [{ qty: 1 }, { qty: -77777 }] });
    expect(outcome.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(metadataValue(outcome.status.metadata, FIELD_METADATA_KEY)).toBe('message.items[1].qty');
    expect(outcome.status.details).toMatch(/^The request is invalid: message\.items\[1\]\.qty/);
    expect(visibleText(outcome)).not.toContain('77777');
    expect(handled).toBe(before);
  });

  it.each(KINDS)("hands the handler of a %s call the schema's output, as validate() does on HTTP", async (kind) => {
    // The message as sent reached the handler: keys the schema strips (a `role` the caller
    // chose) included, so one schema cleaned on HTTP what it only checked on gRPC.
    const outcome = await callKind(started.client, kind, { name: 'bolt', role: 'admin', items: [{ qty: 2, x: 1 }] });
    expect(outcome.status.code).toBe(Status.OK);
    expect(outcome.messages).toEqual([{ name: 'bolt', items: [{ qty: 2 }] }]);
  });

  it("keeps a message's size on the wire with the schema's output, for the input limits of a later pipeline", async () => {
    // The output is a new object: without the size, the limits behind refused every call
    // (`message_size_unknown`).
    const behind = await startServer(
      [
        ...fluxguardInterceptors({ audit: audit.audit, controls: [validation] }),
        controls('behind', [createInputLimits({ maxMessageBytes: 64 })]),
      ],
      (server) => {
        addService(server, testService, {
          Unary: (call) => call.request,
          ClientStream: async (call) => {
            let last: Json = {};
            for await (const message of call) last = message as Json;
            return last;
          },
          ServerStream: (call) => {
            call.write(call.request);
            call.end();
          },
          Bidi: (call) => {
            call.on('data', (message: Json) => call.write(message));
            call.on('end', () => call.end());
          },
        });
      },
    );
    try {
      for (const kind of KINDS) {
        const served = await callKind(behind.client, kind, { name: 'bolt', role: 'admin' });
        expect(served.status.code, kind).toBe(Status.OK);
        expect(served.messages, kind).toEqual([{ name: 'bolt' }]);
        const large = await callKind(behind.client, kind, { name: 'bolt', role: 'x'.repeat(100) });
        expect(large.status.code, kind).toBe(Status.RESOURCE_EXHAUSTED);
      }
    } finally {
      await behind.close();
    }
  });

  it('never echoes a refused string, even inside the schema message', async () => {
    const outcome = await callKind(started.client, 'unary', { name: 'SECRET-TOO-LONG' });
    expect(outcome.status.code).toBe(Status.INVALID_ARGUMENT);
    expect(visibleText(outcome)).not.toContain('SECRET');
    const line = audit.lines().find((l) => l.reason === 'schema_mismatch');
    expect(line).toBeDefined();
  });

  it('refuses an HTTP route among its rules, which it would keep and never run', () => {
    expect(() =>
      createMessageValidation({
        rules: [
          { operation: '/a.B/C', schema },
          { operation: 'POST /v1/items', schema },
        ],
      }),
    ).toThrow(
      'createMessageValidation.rules[1].operation "POST /v1/items" is an HTTP route: message validation checks gRPC request messages; validate HTTP requests with validate() of @fluxguard/express',
    );
  });

  it('refuses a rule without a Standard Schema when it is made', () => {
    expect(() => createMessageValidation({ rules: [{ operation: '/a.B/C', schema: {} as never }] })).toThrow(
      'createMessageValidation.rules[0].schema must be a Standard Schema',
    );
  });
});
