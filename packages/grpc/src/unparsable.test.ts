// A request grpc-js cannot deserialize: grpc-js itself would answer INTERNAL "Error
// deserializing request" below every interceptor, with no request id and no log line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status as Status, type StatusObject } from '@grpc/grpc-js';
import { messageSize, withSafeDeserializers } from './unparsable.js';
import { addService, fluxguardInterceptors } from './index.js';
import {
  captureAudit,
  deserialize,
  metadataValue,
  startServer,
  testService,
  withRequestId,
  type Json,
  type Started,
} from './testing/harness.js';

const audit = captureAudit();
let started: Started;
let handlerRuns = 0;

beforeAll(async () => {
  started = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
    addService(server, testService, {
      Unary: () => {
        handlerRuns += 1;
        return { ok: true };
      },
      ClientStream: async (call) => {
        handlerRuns += 1;
        for await (const _message of call) {
          // Drain.
        }
        return { ok: true };
      },
    });
  });
});

afterAll(async () => {
  await started.close();
});

/** Sends raw bytes as request messages, whatever the service's serializer would write. */
const rawBytes = (value: Json | string): Buffer =>
  typeof value === 'string' ? Buffer.from(value) : Buffer.from(JSON.stringify(value));

describe('a request message that cannot be parsed', () => {
  it('is refused INVALID_ARGUMENT with a request id and one audit line, never reaching the handler (unary)', async () => {
    const runs = handlerRuns;
    const status = await new Promise<StatusObject>((resolve) => {
      const call = started.client.makeUnaryRequest(
        testService.Unary.path,
        rawBytes,
        deserialize,
        '{"path": "../../etc/passwd", broken',
        withRequestId('unparsable-unary'),
        () => undefined,
      );
      call.on('status', resolve);
    });
    expect(status.code).toBe(Status.INVALID_ARGUMENT);
    expect(status.details).toBe('The request is invalid.');
    expect(status.details).not.toMatch(/deserializ|JSON|passwd/);
    expect(metadataValue(status.metadata, 'x-request-id')).toBe('unparsable-unary');
    expect(handlerRuns).toBe(runs);
    const lines = audit.lines().filter((line) => line.requestId === 'unparsable-unary');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ code: 'invalid_argument', reason: 'message_unparsable' });
  });

  it('ends a client stream at its first unparsable message', async () => {
    const status = await new Promise<StatusObject>((resolve) => {
      const call = started.client.makeClientStreamRequest(
        testService.ClientStream.path,
        rawBytes,
        deserialize,
        withRequestId('unparsable-stream'),
        () => undefined,
      );
      call.on('status', resolve);
      call.write({ fine: 1 });
      call.write('not json at all');
      call.end();
    });
    expect(status.code).toBe(Status.INVALID_ARGUMENT);
    expect(metadataValue(status.metadata, 'x-request-id')).toBe('unparsable-stream');
  });
});

describe('the wire size of a deserialized message', () => {
  const definition = (deserialize: (bytes: Buffer) => unknown) =>
    withSafeDeserializers({
      Get: {
        path: '/t.S/Get',
        requestStream: false,
        responseStream: false,
        requestSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
        requestDeserialize: deserialize,
        responseSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
        responseDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
      },
    }) as unknown as Record<'Get', { requestDeserialize: (bytes: Buffer) => unknown }>;

  it('is known for the message object the deserializer returned, and invisible to serializers', () => {
    const { Get } = definition((bytes) => JSON.parse(bytes.toString()) as unknown);
    const bytes = Buffer.from('{"id":"42"}');
    const message = Get.requestDeserialize(bytes);
    expect(messageSize(message)).toBe(bytes.length);
    expect(Object.keys(message as object)).toEqual(['id']);
    expect(JSON.stringify(message)).toBe('{"id":"42"}');
    expect({ ...(message as object) }).toEqual({ id: '42' });
    expect(messageSize({ id: '42' })).toBeUndefined();
  });

  it('is known for a frozen message too', () => {
    const { Get } = definition((bytes) => Object.freeze(JSON.parse(bytes.toString()) as object));
    const bytes = Buffer.from('{"id":"frozen"}');
    expect(messageSize(Get.requestDeserialize(bytes))).toBe(bytes.length);
  });

  it('cannot be forged by a field of the message', () => {
    const { Get } = definition((bytes) => JSON.parse(bytes.toString()) as unknown);
    const forged = Buffer.from('{"fluxguard.wireSize":1,"size":1,"wireSize":1}');
    expect(messageSize(Get.requestDeserialize(forged))).toBe(forged.length);
  });
});
