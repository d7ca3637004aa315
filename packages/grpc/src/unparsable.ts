import type { ServiceDefinition } from '@grpc/grpc-js';
import { hiddenSlot } from '@fluxguard/core/adapter';
import { wireChecksOf } from './protobuf-wire.js';

/**
 * What a request deserializer installed by `addService` returns for bytes it cannot parse.
 * grpc-js answers a throwing deserializer itself, below every interceptor (`INTERNAL`
 * "Error deserializing request", with no request id and unlogged); this marker travels as a
 * message instead, and the safeErrors interceptor refuses it as `invalid_argument`.
 */
export const UNPARSABLE_MESSAGE: unknown = Object.freeze({});

// The size on the wire of each message a wrapped deserializer produced: controls limit sizes,
// and grpc-js hands interceptors the decoded message only. Kept in a hidden slot on the message
// itself, gone with it (serializers, `Object.keys` and `util.inspect` do not see it).
const sizes = hiddenSlot<number>();

/**
 * The size in bytes a request message had on the wire, when `addService` registered its
 * service (else `undefined`).
 *
 * @internal
 */
export function messageSize(message: unknown): number | undefined {
  return typeof message === 'object' && message !== null ? sizes.get(message) : undefined;
}

/**
 * Gives `replacement` (a schema's output, handed on in a message's place) the wire size of the
 * message it replaces, so that later controls (the input limits of another pipeline) still know it.
 *
 * @internal
 */
export function setMessageSize(replacement: unknown, bytes: number): void {
  if (typeof replacement === 'object' && replacement !== null) sizes.set(replacement, bytes);
}

/**
 * A copy of `service` whose request deserializers return {@link UNPARSABLE_MESSAGE} instead of
 * throwing. Definitions are plain objects of grpc-js and proto-loader; the original is untouched.
 * With `strictWireFormat`, the requests of proto-loader definitions are first read strictly
 * (`protobuf-wire.ts`): bytes that protobufjs would read leniently are unparsable too.
 */
export function withSafeDeserializers<I>(service: ServiceDefinition<I>, strictWireFormat = true): ServiceDefinition<I> {
  const definitions = service as unknown as Readonly<
    Record<string, { requestDeserialize: (bytes: Buffer) => unknown }>
  >;
  const checks = strictWireFormat ? wireChecksOf(service) : undefined;
  const copy: Record<string, unknown> = {};
  for (const [name, definition] of Object.entries(definitions)) {
    const deserialize = definition.requestDeserialize;
    const check = checks?.get(name);
    copy[name] = {
      ...definition,
      requestDeserialize: (bytes: Buffer): unknown => {
        if (check !== undefined && !check(bytes)) return UNPARSABLE_MESSAGE;
        let message: unknown;
        try {
          message = deserialize(bytes);
        } catch {
          return UNPARSABLE_MESSAGE;
        }
        if (typeof message === 'object' && message !== null) sizes.set(message, bytes.length);
        return message;
      },
    };
  }
  return copy as unknown as ServiceDefinition<I>;
}
