import type { ServiceDefinition } from '@grpc/grpc-js';

/**
 * What a request deserializer installed by `addService` returns for bytes it cannot parse.
 * grpc-js answers a throwing deserializer itself, below every interceptor (`INTERNAL`
 * "Error deserializing request", with no request id and unlogged); this marker travels as a
 * message instead, and the safeErrors interceptor refuses it as `invalid_argument`.
 */
export const UNPARSABLE_MESSAGE: unknown = Object.freeze({});

/**
 * A copy of `service` whose request deserializers return {@link UNPARSABLE_MESSAGE} instead of
 * throwing. Definitions are plain objects of grpc-js and proto-loader; the original is untouched.
 */
export function withSafeDeserializers<I>(service: ServiceDefinition<I>): ServiceDefinition<I> {
  const definitions = service as unknown as Readonly<
    Record<string, { requestDeserialize: (bytes: Buffer) => unknown }>
  >;
  const copy: Record<string, unknown> = {};
  for (const [name, definition] of Object.entries(definitions)) {
    const deserialize = definition.requestDeserialize;
    copy[name] = {
      ...definition,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return deserialize(bytes);
        } catch {
          return UNPARSABLE_MESSAGE;
        }
      },
    };
  }
  return copy as unknown as ServiceDefinition<I>;
}
