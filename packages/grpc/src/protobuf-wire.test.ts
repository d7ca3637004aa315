// The strict reading of protobuf's wire format that addService puts before proto-loader's
// decoder: every message a conformant encoder writes passes, and each lenient reading of
// protobufjs (a string cut short, a field read with another wire type, a nested message running
// into its parent) is refused, on its own and through a real server.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Client,
  credentials,
  status as Status,
  type ServiceDefinition,
  type StatusObject,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';
import { MAX_NESTING, wireChecksOf, type WireCheck } from './protobuf-wire.js';
import { addService, fluxguardInterceptors } from './index.js';
import {
  captureAudit,
  metadataValue,
  startServer,
  testService,
  withRequestId,
  type Started,
} from './testing/harness.js';

const protos = fileURLToPath(new URL('./testing/protos/', import.meta.url));
const LOAD: Options = { includeDirs: [protos], keepCase: true, longs: String, defaults: false };
const definitions = loadSync('wire.proto', LOAD);
const newer = loadSync('wire_v2.proto', LOAD);
const wire = definitions['fluxguard.test.wire.Wire'] as unknown as ServiceDefinition;
const checks = wireChecksOf(wire);

/** What proto-loader's message definitions hold besides the descriptor. */
interface Codec {
  serialize(value: object): Buffer;
  deserialize(bytes: Buffer): object;
}
const everything = definitions['fluxguard.test.wire.Everything'] as unknown as Codec;
const nodeType = definitions['fluxguard.test.wire.Node'] as unknown as Codec;
const newerEverything = newer['fluxguard.test.wire.Everything'] as unknown as Codec;

const checkOf = (method: string): WireCheck => {
  const check = checks.get(method);
  if (check === undefined) throw new Error(`no check for ${method}`);
  return check;
};
const send = checkOf('Send');
const tree = checkOf('Tree');
const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random valid Everything, written one field at a time (protobuf merges concatenated messages),
 * so that where each top-level field ends is known: `ends` are the positions between fields.
 */
function randomEverything(next: () => number): { bytes: Buffer; ends: Set<number> } {
  const int = (max: number) => Math.floor(next() * max);
  const text = () => 'x'.repeat(int(300)) + String.fromCodePoint(0x20 + int(0x3000));
  const inner = () => ({
    name: text(),
    leaf: next() < 0.5 ? { text: text(), count: int(2 ** 31) - 2 ** 30 } : undefined,
  });
  const list = <T>(max: number, make: () => T): T[] => Array.from({ length: int(max) }, make);
  const candidates: object[] = [
    { f_double: next() * 1e300 },
    { f_float: next() },
    { f_int64: String(-int(2 ** 52)) },
    { f_uint64: String(int(2 ** 52)) },
    { f_int32: int(2 ** 32) - 2 ** 31 },
    { f_fixed64: String(int(2 ** 52)) },
    { f_fixed32: int(2 ** 32) },
    { f_bool: true },
    { f_string: text() },
    { f_bytes: Buffer.alloc(int(2000), int(256)) },
    { f_uint32: int(2 ** 32) },
    { f_enum: 'KIND_ONE' },
    { f_sfixed32: -int(2 ** 31) },
    { f_sfixed64: String(-int(2 ** 52)) },
    { f_sint32: -int(2 ** 31) },
    { f_sint64: String(-int(2 ** 52)) },
    { packed_int32: list(20, () => int(2 ** 32) - 2 ** 31) },
    { packed_fixed32: list(20, () => int(2 ** 32)) },
    { packed_double: list(20, next) },
    ...list(5, () => ({ unpacked_sint64: [String(int(2 ** 40) - 2 ** 39)] })),
    ...list(5, () => ({ strings: [text()] })),
    { inner: inner() },
    ...list(4, () => ({ inners: [inner()] })),
    ...list(4, () => ({ by_name: { [text()]: inner() } })),
    next() < 0.5 ? { choice_text: text() } : { choice_shared: { id: text(), values: list(5, () => int(1000)) } },
  ];
  const pieces = candidates.filter(() => next() < 0.6).map((field) => everything.serialize(field));
  const ends = new Set<number>([0]);
  let length = 0;
  for (const piece of pieces) {
    length += piece.length;
    ends.add(length);
  }
  return { bytes: Buffer.concat(pieces), ends };
}

/** A Node holding a child `depth - 1` times (written by hand: protobufjs will not encode so deep). */
function nested(depth: number): Buffer {
  let message = hex('0a 01 41');
  for (let i = 1; i < depth; i += 1) message = Buffer.concat([Buffer.from([0x12]), varint(message.length), message]);
  return message;
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  while (value >= 0x80) {
    bytes.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

describe('the strict wire-format check', () => {
  it('is compiled for every method of a proto-loader definition, and for none of another codec', () => {
    expect([...checks.keys()]).toEqual(['Send', 'Stream', 'Tree', 'Imported']);
    expect(wireChecksOf(testService).size).toBe(0);
  });

  it('accepts every message protobufjs writes for the schema (300 random messages)', () => {
    const next = random(1);
    for (let i = 0; i < 300; i += 1) {
      const { bytes } = randomEverything(next);
      expect(send(bytes), bytes.toString('hex')).toBe(true);
      expect(send(everything.serialize(everything.deserialize(bytes))), bytes.toString('hex')).toBe(true);
    }
    expect(send(Buffer.alloc(0))).toBe(true);
    expect(checkOf('Imported')(hex('0a 02 6964 12 03 01 02 03'))).toBe(true);
  });

  it('accepts repeated numbers packed and unpacked alike, as the spec requires of readers', () => {
    // packed_int32 (20) as one length-delimited run, then as separate varints.
    expect(send(hex('a2 01 03 01 02 03'))).toBe(true);
    expect(send(hex('a0 01 01 a0 01 02'))).toBe(true);
    // unpacked_sint64 [packed = false] arriving packed.
    expect(send(hex('ba 01 02 01 02'))).toBe(true);
  });

  it('accepts the fields of a newer schema it does not know, of every wire type, group included', () => {
    const bytes = newerEverything.serialize({
      f_string: 'known',
      new_varint: '18446744073709551615',
      new_fixed64: '12',
      new_text: 'later',
      new_fixed32: 7,
      newGroup: { inside: 'grouped', number: -1 },
    });
    expect(bytes.includes(0xe3)).toBe(true); // the group's start tag (44 << 3 | 3, first byte)
    expect(send(bytes)).toBe(true);
  });

  it('refuses each lenient reading of protobufjs, which decodes all of them to something', () => {
    const lenient: Record<string, Buffer> = {
      // f_string (9) says 127 bytes follow; one does. protobufjs reads "A".
      'a string cut short': hex('4a 7f 41'),
      // f_string written as a varint of 3: protobufjs reads the 3 bytes after it as the string.
      'a string field sent as a varint': hex('48 03 414243'),
      // inner (25) sent as a varint: protobufjs takes the varint for the message's length.
      'a message field sent as a varint': hex('c8 01 02 0a 00'),
      // f_fixed32 (7) as a length-delimited field: protobufjs reads the length byte as the number's first.
      'a fixed32 field sent with a length': hex('3a 04 010203'),
      // inner (25, 3 bytes long) holds name (1) saying 127 bytes: protobufjs reads "A" (older
      // versions read on into the parent).
      'a string cut short inside a nested message': hex('ca 01 03 0a 7f 41 4a 01 42'),
      // f_int32 (5) in seven bytes: protobufjs reads five and skips five, so f_string after it is lost.
      'a 32-bit number of seven bytes': hex('28 81 80 80 80 80 80 01 4a 01 41'),
    };
    for (const [name, bytes] of Object.entries(lenient)) {
      expect(() => everything.deserialize(bytes), name).not.toThrow();
      expect(send(bytes), name).toBe(false);
    }
  });

  it('refuses malformed framing: field 0, wire types 6 and 7, overlong tags and lengths, groups astray', () => {
    const malformed: Record<string, Buffer> = {
      'field number 0': hex('02 00'),
      // packed_int32 (20) of 2 bytes whose last varint goes on past them.
      'a packed run whose last number runs past it': hex('a2 01 02 01 81 01'),
      // packed_fixed32 (21) of 6 bytes: one and a half numbers.
      'a packed fixed32 run of a length no element count makes': hex('aa 01 06 010203040506 0708'),
      // packed_double (22) of 12 bytes.
      'a packed double run of a length no element count makes': hex('b2 01 0c 000000000000f03f 0000000000000000'),
      'a 32-bit number of eleven bytes': hex('28 ff ff ff ff ff ff ff ff ff ff 01'),
      'wire type 6': hex('96 03'),
      'wire type 7': hex('97 03'),
      'a tag of six bytes': hex('c8 80 80 80 80 00 01'),
      'a tag over 32 bits': hex('c8 80 80 80 20 01'),
      'a 64-bit number of eleven bytes': hex('18 ff ff ff ff ff ff ff ff ff ff 01'),
      'a varint cut short': hex('28 ff'),
      'a length over what is left': hex('62 05 0102'),
      'a length of six bytes': hex('62 80 80 80 80 80 00'),
      'a fixed64 cut short': hex('09 01020304'),
      'a fixed32 cut short': hex('3d 0102'),
      'a group never ended': hex('f3 02 08 01'),
      'a group ended by another field number': hex('f3 02 08 01 fc 02'),
      'an end tag with no group': hex('fc 02'),
    };
    for (const [name, bytes] of Object.entries(malformed)) expect(send(bytes), name).toBe(false);
  });

  it(`accepts ${MAX_NESTING} levels of nesting and refuses one more, as protobufjs does`, () => {
    expect(tree(nested(MAX_NESTING + 1))).toBe(true);
    expect(() => nodeType.deserialize(nested(MAX_NESTING + 1))).not.toThrow();
    expect(tree(nested(MAX_NESTING + 2))).toBe(false);
    expect(() => nodeType.deserialize(nested(MAX_NESTING + 2))).toThrow();
    // Groups count as levels too (field 50, unknown to the schema).
    const groups = (depth: number) => Buffer.from('9303'.repeat(depth) + '9403'.repeat(depth), 'hex');
    expect(send(groups(MAX_NESTING))).toBe(true);
    expect(send(groups(MAX_NESTING + 1))).toBe(false);
  });

  it('refuses 200 valid messages cut anywhere but between two fields, as protobufjs often does not', () => {
    const next = random(2);
    let readLeniently = 0;
    for (let i = 0; i < 200; i += 1) {
      const { bytes, ends } = randomEverything(next);
      for (let cut = 0; cut <= bytes.length; cut += 1 + Math.floor(next() * 16)) {
        const part = bytes.subarray(0, cut);
        expect(send(part), `${bytes.toString('hex')} cut at ${cut}`).toBe(ends.has(cut));
        if (!ends.has(cut)) {
          try {
            everything.deserialize(part);
            readLeniently += 1;
          } catch {
            // protobufjs refuses this cut too.
          }
        }
      }
    }
    expect(readLeniently).toBeGreaterThan(100);
  });

  it('answers true or false for any bytes, never throws (2,000 random inputs)', () => {
    const next = random(3);
    for (let i = 0; i < 2000; i += 1) {
      const bytes = Buffer.from(Array.from({ length: Math.floor(next() * 64) }, () => Math.floor(next() * 256)));
      expect(typeof send(bytes)).toBe('boolean');
    }
  });
});

describe('a proto-loader service registered with addService', () => {
  const audit = captureAudit();
  const seen: unknown[] = [];
  let strict: Started;
  let lenient: Started;
  let rawClient: Client;
  let lenientClient: Client;
  const implementation = {
    Send: (call: { request: unknown }) => {
      seen.push(call.request);
      return {};
    },
    Stream: async (call: AsyncIterable<unknown>) => {
      for await (const message of call) seen.push(message);
      return {};
    },
    Tree: () => ({}),
  } as unknown as UntypedServiceImplementation;

  beforeAll(async () => {
    strict = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
      addService(server, wire, implementation);
    });
    lenient = await startServer(fluxguardInterceptors({ audit: audit.audit }), (server) => {
      addService(server, wire, implementation, { strictWireFormat: false });
    });
    rawClient = new Client(strict.address, credentials.createInsecure());
    lenientClient = new Client(lenient.address, credentials.createInsecure());
  });

  afterAll(async () => {
    rawClient.close();
    lenientClient.close();
    await strict.close();
    await lenient.close();
  });

  const unary = (client: Client, method: string, bytes: Buffer, requestId: string) =>
    new Promise<StatusObject>((resolve) => {
      const call = client.makeUnaryRequest(
        `/fluxguard.test.wire.Wire/${method}`,
        (raw: Buffer) => raw,
        (raw: Buffer) => raw,
        bytes,
        withRequestId(requestId),
        () => undefined,
      );
      call.on('status', resolve);
    });

  it('refuses a string cut short INVALID_ARGUMENT, with a request id and one audit line, before the handler', async () => {
    const before = seen.length;
    const status = await unary(rawClient, 'Send', hex('4a 7f 41'), 'wire-cut-short');
    expect(status.code).toBe(Status.INVALID_ARGUMENT);
    expect(status.details).toBe('The request is invalid.');
    expect(metadataValue(status.metadata, 'x-request-id')).toBe('wire-cut-short');
    expect(seen.length).toBe(before);
    const lines = audit.lines().filter((line) => line.requestId === 'wire-cut-short');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ code: 'invalid_argument', reason: 'message_unparsable' });
  });

  it('serves a well-formed message, and with strictWireFormat false hands the lenient reading on', async () => {
    expect((await unary(rawClient, 'Send', everything.serialize({ f_string: 'whole' }), 'wire-whole')).code).toBe(
      Status.OK,
    );
    expect(seen.at(-1)).toMatchObject({ f_string: 'whole' });
    expect((await unary(lenientClient, 'Send', hex('4a 7f 41'), 'wire-lenient')).code).toBe(Status.OK);
    expect(seen.at(-1)).toMatchObject({ f_string: 'A' });
  });

  it('ends a client stream at a message whose nested field runs into its parent', async () => {
    const before = seen.length;
    const status = await new Promise<StatusObject>((resolve) => {
      const call = rawClient.makeClientStreamRequest(
        '/fluxguard.test.wire.Wire/Stream',
        (raw: Buffer) => raw,
        (raw: Buffer) => raw,
        withRequestId('wire-stream'),
        () => undefined,
      );
      call.on('status', resolve);
      call.write(everything.serialize({ f_string: 'first' }));
      call.write(hex('ca 01 03 0a 7f 41 4a 01 42'));
      call.write(everything.serialize({ f_string: 'never read' }));
      call.end();
    });
    expect(status.code).toBe(Status.INVALID_ARGUMENT);
    expect(seen.slice(before)).toEqual([expect.objectContaining({ f_string: 'first' })]);
  });

  it('refuses a flood of deeply nested messages (4 MiB of groups, 20 calls at once) and keeps serving', async () => {
    // Under grpc-js's default 4 MiB message limit: field 50's group tags, two bytes each.
    const depth = 1024 * 1024 - 16;
    const bomb = Buffer.from('9303'.repeat(depth) + '9403'.repeat(depth), 'hex');
    const statuses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => unary(rawClient, 'Send', bomb, `wire-bomb-${i}`)),
    );
    expect(statuses.map((status) => status.code)).toEqual(statuses.map(() => Status.INVALID_ARGUMENT));
    expect((await unary(rawClient, 'Send', everything.serialize({ f_string: 'after' }), 'wire-after')).code).toBe(
      Status.OK,
    );
  });

  it('takes only a boolean strictWireFormat, and no unknown option', () => {
    const register = () => undefined;
    const server = { addService: register };
    expect(() => {
      addService(server, wire, implementation, { strictWireFormat: 'no' as unknown as boolean });
    }).toThrow('"strictWireFormat" must be a boolean');
    expect(() => {
      addService(server, wire, implementation, { strictWireformat: false } as never);
    }).toThrow(/strictWireformat/);
  });
});
