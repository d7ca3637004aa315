import * as grpc from '@grpc/grpc-js';

/** A status that ends a call. */
export interface Refusal {
  readonly code: grpc.status;
  readonly details: string;
}

/** Decides a call from its metadata and peer address: `undefined` lets it on. */
export type Decide = (metadata: grpc.Metadata, peer: string) => Refusal | undefined | Promise<Refusal | undefined>;

/**
 * One grpc-js server interceptor that asks `decide` when a call's metadata arrives and either
 * passes the call on or ends it with the refusal. A synchronous answer is acted on at once (the
 * floor adds no promise); an asynchronous one is awaited, and a failed one ends the call INTERNAL.
 */
export function metadataGate(decide: Decide): grpc.ServerInterceptor {
  return (_method, call) => {
    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder()
        .withStart((next) => {
          next(
            new grpc.ServerListenerBuilder()
              .withOnReceiveMetadata((metadata, nextMetadata) => {
                const act = (refusal: Refusal | undefined): void => {
                  if (refusal === undefined) nextMetadata(metadata);
                  else intercepting.sendStatus(refusal);
                };
                const answer = decide(metadata, call.getPeer());
                if (answer instanceof Promise) {
                  answer.then(act, () => {
                    intercepting.sendStatus({ code: grpc.status.INTERNAL, details: 'internal error' });
                  });
                } else act(answer);
              })
              .build(),
          );
        })
        .build(),
    );
    return intercepting;
  };
}
