/**
 * A strict reading of protobuf's wire format for the request messages of proto-loader service
 * definitions, run before proto-loader's own decoder (protobufjs). protobufjs is lenient where
 * a security layer must not be: it cuts a string that runs past the end of the message short
 * instead of refusing it (`0a 7f 41` reads as `"A"`), it reads a field with whatever wire type
 * its schema names, not the one the sender wrote (`08 03 41 42 43` reads as the string `"ABC"`),
 * and it reads a 32-bit number of six to nine bytes as five and skips five more, whatever they
 * were (versions before 7.6 also let a nested message run on into its parent). A gateway or a log that parses the same
 * bytes strictly would see another message than the handler does. What this check accepts,
 * every conformant encoder writes: the schema's wire type for each known field (or packed, for
 * repeated numbers), nested messages within their bounds, unknown fields of any valid wire type
 * (groups included), at most {@link MAX_NESTING} levels deep.
 */

/** Nesting levels of messages and groups a request may have, as protobuf's C++ and Java readers. */
export const MAX_NESTING = 100;

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const START_GROUP = 3;
const END_GROUP = 4;
const FIXED32 = 5;

/** How one known field must arrive. */
interface FieldRule {
  /** The wire type its schema type is written with. */
  readonly wire: number;
  /** A repeated number may also come packed: the wire type of each element, else `undefined`. */
  readonly packed: number | undefined;
  /** Its message type, for a message field (filled once the type is resolved). */
  message: MessageRule | undefined;
  /**
   * A 32-bit varint (int32, uint32, sint32, enum, bool): protobufjs reads five bytes and then
   * skips five more, so such a varint must take at most five bytes, or exactly ten (a negative
   * number, sign-extended).
   */
  readonly narrow: boolean;
}

/** The known fields of one message type, by field number. */
interface MessageRule {
  readonly fields: Map<number, FieldRule>;
}

/** Checks that `bytes` are one message as the rule describes; `false` means refuse it. */
export type WireCheck = (bytes: Uint8Array) => boolean;

/**
 * The check for each method of a proto-loader service definition, by method name; a method
 * whose request type cannot be found in the definition's descriptors (a definition not made by
 * proto-loader, or by a codec other than protobuf) is absent and keeps only its own decoder.
 *
 * @internal
 */
export function wireChecksOf(service: object): Map<string, WireCheck> {
  const checks = new Map<string, WireCheck>();
  let schema: Schema | undefined;
  let schemaOf: unknown;
  for (const [name, definition] of Object.entries(service as Readonly<Record<string, MethodLike>>)) {
    const files = descriptorFilesOf(definition);
    if (files === undefined || typeof definition.path !== 'string') continue;
    if (schema === undefined || schemaOf !== files) {
      schema = readSchema(files);
      schemaOf = files;
    }
    const rule = schema?.requestRule(definition.path);
    if (rule !== undefined) checks.set(name, (bytes) => checkMessage(bytes, rule));
  }
  return checks;
}

// Definitions come from grpc-js, proto-loader or hand-written code: nothing is assumed.
interface MethodLike {
  readonly path?: unknown;
  readonly requestType?: unknown;
}

function descriptorFilesOf(definition: MethodLike): readonly Uint8Array[] | undefined {
  const type = definition.requestType;
  if (typeof type !== 'object' || type === null) return undefined;
  const { format, fileDescriptorProtos: files } = type as { format?: unknown; fileDescriptorProtos?: unknown };
  if (format !== 'Protocol Buffer 3 DescriptorProto') return undefined;
  if (!Array.isArray(files) || !files.every((file) => file instanceof Uint8Array)) return undefined;
  return files;
}

/**
 * Whether `bytes` are exactly one message of `rule`.
 *
 * @internal
 */
export function checkMessage(bytes: Uint8Array, rule: MessageRule): boolean {
  return walk(bytes, 0, bytes.length, rule, 0, 0) === bytes.length;
}

// The value of the last varint read: the reader returns the position after it, or -1.
let varint = 0;

function readVarint(bytes: Uint8Array, pos: number, end: number, maxBytes: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < maxBytes; i += 1) {
    if (pos >= end) return -1;
    const byte = bytes[pos++] ?? 0;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varint = value;
      return pos;
    }
    scale *= 128;
  }
  return -1;
}

/**
 * Walks the fields between `pos` and `end`. Returns where they end: `end` for a message, the
 * byte after the matching end tag for a group (`group` is its field number), or -1 if refused.
 */
function walk(
  bytes: Uint8Array,
  pos: number,
  end: number,
  rule: MessageRule | undefined,
  depth: number,
  group: number,
): number {
  if (depth > MAX_NESTING) return -1;
  while (pos < end) {
    // Tags and lengths fit 32 bits: five bytes at most. Numbers take up to ten.
    pos = readVarint(bytes, pos, end, 5);
    if (pos < 0 || varint > 0xffffffff) return -1;
    const wire = varint % 8;
    const number = Math.floor(varint / 8);
    if (number === 0) return -1;
    const field = rule?.fields.get(number);
    if (field !== undefined && wire !== field.wire && !(wire === LENGTH_DELIMITED && field.packed !== undefined)) {
      return -1;
    }
    switch (wire) {
      case VARINT:
        pos = field?.narrow === true ? readNarrowVarint(bytes, pos, end) : readVarint(bytes, pos, end, 10);
        break;
      case FIXED64:
        pos = pos + 8 <= end ? pos + 8 : -1;
        break;
      case FIXED32:
        pos = pos + 4 <= end ? pos + 4 : -1;
        break;
      case LENGTH_DELIMITED: {
        pos = readVarint(bytes, pos, end, 5);
        if (pos < 0 || varint > end - pos) return -1;
        const stop = pos + varint;
        if (field?.message !== undefined) {
          if (walk(bytes, pos, stop, field.message, depth + 1, 0) !== stop) return -1;
        } else if (field?.packed !== undefined && !packedFits(bytes, pos, stop, field.packed, field.narrow)) {
          return -1;
        }
        pos = stop;
        break;
      }
      case START_GROUP:
        pos = walk(bytes, pos, end, undefined, depth + 1, number);
        break;
      case END_GROUP:
        return number === group ? pos : -1;
      default:
        return -1;
    }
    if (pos < 0) return -1;
  }
  // A group must end with its own end tag, not with the bytes.
  return group === 0 ? pos : -1;
}

/** Whether a packed field's bytes are whole elements of its wire type. */
function packedFits(bytes: Uint8Array, pos: number, stop: number, wire: number, narrow: boolean): boolean {
  if (wire === FIXED32) return (stop - pos) % 4 === 0;
  if (wire === FIXED64) return (stop - pos) % 8 === 0;
  while (pos < stop) {
    pos = narrow ? readNarrowVarint(bytes, pos, stop) : readVarint(bytes, pos, stop, 10);
    if (pos < 0) return false;
  }
  return true;
}

/** A 32-bit field's varint: five bytes at most, or ten. */
function readNarrowVarint(bytes: Uint8Array, pos: number, end: number): number {
  const after = readVarint(bytes, pos, end, 10);
  return after - pos <= 5 || after - pos === 10 ? after : -1;
}

// FieldDescriptorProto.Type and Label (google/protobuf/descriptor.proto).
const TYPE_GROUP = 10;
const TYPE_MESSAGE = 11;
const LABEL_REPEATED = 3;
/** The wire type of each scalar type, by FieldDescriptorProto.Type number. */
const SCALAR_WIRE: Readonly<Record<number, number>> = Object.freeze({
  1: FIXED64, // double
  2: FIXED32, // float
  3: VARINT, // int64
  4: VARINT, // uint64
  5: VARINT, // int32
  6: FIXED64, // fixed64
  7: FIXED32, // fixed32
  8: VARINT, // bool
  9: LENGTH_DELIMITED, // string
  12: LENGTH_DELIMITED, // bytes
  13: VARINT, // uint32
  14: VARINT, // enum
  15: FIXED32, // sfixed32
  16: FIXED64, // sfixed64
  17: VARINT, // sint32
  18: VARINT, // sint64
});

/** The types protobufjs reads as 32-bit varints: int32, bool, uint32, enum, sint32. */
const NARROW_TYPES: ReadonlySet<number> = new Set([5, 8, 13, 14, 17]);

interface FieldDescriptor {
  readonly number: number;
  readonly label: number;
  readonly type: number;
  readonly typeName: string;
}

interface Schema {
  /** The rule of the request type of the method at `/package.Service/Method`, if found. */
  requestRule(path: string): MessageRule | undefined;
}

/** Reads the message types and services of encoded FileDescriptorProtos. */
function readSchema(files: readonly Uint8Array[]): Schema | undefined {
  const messages = new Map<string, readonly FieldDescriptor[]>();
  const inputs = new Map<string, string>();
  try {
    for (const file of files) {
      const entries = fieldsOf(file);
      const pkg = entries.filter((entry) => entry.number === 2).map((entry) => text(entry.bytes))[0] ?? '';
      for (const entry of entries) {
        if (entry.number === 4) readMessage(entry.bytes, pkg, messages);
        if (entry.number === 6) readService(entry.bytes, pkg, inputs);
      }
    }
  } catch {
    // Descriptors this reader does not understand: the decoder alone decides, as before.
    return undefined;
  }
  const rules = new Map<string, MessageRule>();
  const ruleOf = (fullName: string): MessageRule | undefined => {
    const known = rules.get(fullName);
    if (known !== undefined) return known;
    const fields = messages.get(fullName);
    if (fields === undefined) return undefined;
    // Registered before its fields: a type may contain itself.
    const rule: MessageRule = { fields: new Map() };
    rules.set(fullName, rule);
    for (const field of fields) {
      if (field.type === TYPE_GROUP) {
        rule.fields.set(field.number, { wire: START_GROUP, packed: undefined, message: undefined, narrow: false });
      } else if (field.type === TYPE_MESSAGE) {
        const nested = resolve(field.typeName, fullName, messages);
        // A type not found leaves the field's content to the decoder; its framing is still checked.
        rule.fields.set(field.number, {
          wire: LENGTH_DELIMITED,
          packed: undefined,
          message: nested === undefined ? undefined : ruleOf(nested),
          narrow: false,
        });
      } else {
        const wire = SCALAR_WIRE[field.type];
        if (wire === undefined) continue;
        const packable = field.label === LABEL_REPEATED && wire !== LENGTH_DELIMITED;
        rule.fields.set(field.number, {
          wire,
          packed: packable ? wire : undefined,
          message: undefined,
          narrow: NARROW_TYPES.has(field.type),
        });
      }
    }
    return rule;
  };
  return {
    requestRule(path) {
      const input = inputs.get(path);
      if (input === undefined) return undefined;
      const fullName = resolve(input, '', messages);
      return fullName === undefined ? undefined : ruleOf(fullName);
    },
  };
}

function readMessage(bytes: Uint8Array, scope: string, messages: Map<string, readonly FieldDescriptor[]>): void {
  const entries = fieldsOf(bytes);
  const name = entries.find((entry) => entry.number === 1);
  if (name === undefined) return;
  const fullName = scope === '' ? text(name.bytes) : `${scope}.${text(name.bytes)}`;
  const fields: FieldDescriptor[] = [];
  for (const entry of entries) {
    if (entry.number === 2) fields.push(readField(entry.bytes));
    if (entry.number === 3) readMessage(entry.bytes, fullName, messages);
  }
  messages.set(fullName, fields);
}

function readField(bytes: Uint8Array): FieldDescriptor {
  let number = 0;
  let label = 0;
  let type = 0;
  let typeName = '';
  for (const entry of fieldsOf(bytes)) {
    if (entry.number === 3) number = entry.value;
    if (entry.number === 4) label = entry.value;
    if (entry.number === 5) type = entry.value;
    if (entry.number === 6) typeName = text(entry.bytes);
  }
  return { number, label, type, typeName };
}

function readService(bytes: Uint8Array, pkg: string, inputs: Map<string, string>): void {
  const entries = fieldsOf(bytes);
  const name = entries.find((entry) => entry.number === 1);
  if (name === undefined) return;
  const service = pkg === '' ? text(name.bytes) : `${pkg}.${text(name.bytes)}`;
  for (const entry of entries) {
    if (entry.number !== 2) continue;
    const method = fieldsOf(entry.bytes);
    const methodName = method.find((field) => field.number === 1);
    const input = method.find((field) => field.number === 2);
    if (methodName === undefined || input === undefined) continue;
    const inputType = text(input.bytes);
    // Relative to the file's package, as protoc resolves it.
    inputs.set(`/${service}/${text(methodName.bytes)}`, inputType.startsWith('.') ? inputType : `${pkg}.${inputType}`);
  }
}

/** protobuf's scoping: `.a.B` is absolute; `B` is looked for in `scope`, then in each enclosing scope. */
function resolve(typeName: string, scope: string, messages: ReadonlyMap<string, unknown>): string | undefined {
  if (typeName.startsWith('.')) return messages.has(typeName.slice(1)) ? typeName.slice(1) : undefined;
  let outer = scope;
  for (;;) {
    const candidate = outer === '' ? typeName : `${outer}.${typeName}`;
    if (messages.has(candidate)) return candidate;
    if (outer === '') return undefined;
    const dot = outer.lastIndexOf('.');
    outer = dot < 0 ? '' : outer.slice(0, dot);
  }
}

interface Entry {
  readonly number: number;
  /** A varint field's value (0 for others). */
  readonly value: number;
  /** A length-delimited field's bytes (empty for others). */
  readonly bytes: Uint8Array;
}

/** The top-level fields of a descriptor message; throws on malformed bytes. */
function fieldsOf(bytes: Uint8Array): Entry[] {
  const entries: Entry[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    pos = readVarint(bytes, pos, bytes.length, 5);
    if (pos < 0) throw new Error('malformed descriptor');
    const wire = varint % 8;
    const number = Math.floor(varint / 8);
    if (wire === FIXED32 || wire === FIXED64) {
      // Not among the fields read here: skipped.
      pos += wire === FIXED32 ? 4 : 8;
      continue;
    }
    pos = readVarint(bytes, pos, bytes.length, 10);
    if (pos < 0) throw new Error('malformed descriptor');
    if (wire === VARINT) {
      entries.push({ number, value: varint, bytes: EMPTY });
    } else if (wire === LENGTH_DELIMITED && varint <= bytes.length - pos) {
      entries.push({ number, value: 0, bytes: bytes.subarray(pos, pos + varint) });
      pos += varint;
    } else {
      throw new Error('malformed descriptor');
    }
  }
  if (pos > bytes.length) throw new Error('malformed descriptor');
  return entries;
}

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder();

function text(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}
