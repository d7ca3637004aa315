/** What this module reads of grpc-js's message decoder (`StreamDecoder`, untyped). */
interface GrpcJsDecoder {
  readState?: unknown;
  readPartialMessage?: unknown;
  readMessageRemaining?: unknown;
}

/** The buffer the small pieces of one message are copied into, and the view of it in the parts. */
interface Tail {
  readonly buffer: Buffer;
  used: number;
  view: Buffer;
}

/** grpc-js's `ReadState.READING_MESSAGE`: a message's length is known, its bytes are coming. */
const READING_MESSAGE = 2;
/** A piece shorter than this is copied rather than kept: it costs more to hold than its bytes. */
const SMALL_PIECE = 1024;
const TAIL_BYTES = 16 * 1024;
/**
 * The tail of each message being read, by its parts array: grpc-js makes a new array for each
 * message, so a tail goes with its message. Kept apart from grpc-js's objects, whose shapes
 * its own code is optimised for.
 */
const tails = new WeakMap<unknown[], Tail>();
/** Decoder prototypes already changed; the last one, to skip the look-up on every call. */
const compacting = new WeakSet<object>();
let lastPrototype: object | undefined;

/**
 * Makes grpc-js's message decoder hold a message that arrives in small pieces at about its own
 * size. grpc-js keeps one view for each HTTP/2 DATA frame of a message until the message is
 * complete, and each view holds a separate allocation of Node's: a message sent one byte per
 * frame cost the server about 128 bytes per byte (a 4 MiB upload held 510 MB; anonymous health
 * watches, a quarter of a gigabyte) while its length was well within every limit. Here small
 * pieces (under 1 KiB) that come in a row are copied into a 16 KiB buffer they share, and their
 * own allocations let go; larger pieces, and a small one between them, are kept as they are.
 * What the decoder hands on is the same.
 *
 * `call` must be grpc-js's own call object (the one below the first interceptor). Its
 * decoder's prototype is changed once, so every decoder of that grpc-js behaves so (a client's
 * too); a grpc-js whose decoder differs is left alone.
 *
 * @internal
 */
export function compactMessageFragments(call: object): void {
  const decoder = (call as { decoder?: unknown }).decoder;
  if (typeof decoder !== 'object' || decoder === null) return;
  const proto = Object.getPrototypeOf(decoder) as { write?: unknown } | null;
  if (proto === lastPrototype || proto === null) return;
  lastPrototype = proto;
  if (compacting.has(proto) || typeof proto.write !== 'function') return;
  compacting.add(proto);
  const original = proto.write as (this: GrpcJsDecoder, data: Buffer) => Buffer[];
  // Assigned, not redefined: a prototype given new property descriptors can turn slow for every
  // method call on it.
  proto.write = function write(this: GrpcJsDecoder, data: Buffer): Buffer[] {
    const messages = original.call(this, data);
    if (this.readState === READING_MESSAGE) compactLastPiece(this);
    return messages;
  };
}

/**
 * One `write` adds at most one piece to the message being read, as its last: when it is small,
 * copied into the tail buffer the small pieces before it were copied to (a new one, with the
 * piece before it, when that was small too and no tail has room).
 */
function compactLastPiece(decoder: GrpcJsDecoder): void {
  const parts = decoder.readPartialMessage;
  if (!Array.isArray(parts)) return;
  const last: unknown = parts[parts.length - 1];
  if (!Buffer.isBuffer(last) || last.length >= SMALL_PIECE) return;
  const tail = tails.get(parts);
  if (tail !== undefined && parts.length >= 2 && parts[parts.length - 2] === tail.view) {
    if (tail.used + last.length <= tail.buffer.length) {
      last.copy(tail.buffer, tail.used);
      tail.used += last.length;
      tail.view = tail.buffer.subarray(0, tail.used);
      parts[parts.length - 2] = tail.view;
      parts.pop();
      return;
    }
  }
  // A tail is started by two small pieces in a row, never by one: a small piece between large
  // ones (where a read ends) is a view of a buffer held anyway, and a 16 KiB tail for each such
  // piece made an upload of 1 MiB messages hold 6 MiB more at its peak.
  const previous: unknown = parts[parts.length - 2];
  if (!Buffer.isBuffer(previous) || previous.length >= SMALL_PIECE) return;
  // No more than the message still needs: a length prefix alone never buys a whole buffer.
  const remaining = typeof decoder.readMessageRemaining === 'number' ? decoder.readMessageRemaining : 0;
  const used = previous.length + last.length;
  const buffer = Buffer.allocUnsafe(Math.min(Math.max(TAIL_BYTES, used), used + Math.max(0, remaining)));
  previous.copy(buffer, 0);
  last.copy(buffer, previous.length);
  const view = buffer.subarray(0, used);
  parts.pop();
  parts[parts.length - 1] = view;
  tails.set(parts, { buffer, used, view });
}
