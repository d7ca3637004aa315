import type {
  Server,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedHandleCall,
  UntypedServiceImplementation,
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  sendUnaryData,
} from '@grpc/grpc-js';
import { ConfigurationError } from '@fluxguard/core';
import { resolveOptions, type CallState } from '@fluxguard/core/adapter';
import { callOf, type GrpcCall, type ServerCall } from './context.js';
import { withSafeDeserializers } from './unparsable.js';
import { hardenHttp2Servers } from './http2-servers.js';
import { lacksSafeErrors, vetServerAnswers } from './grpc-js-statuses.js';
import { noteAddedService, noteServer } from './added-services.js';
import { pipelineOf } from './pipeline.js';
import { prepareFailure } from './errors.js';

/**
 * A unary handler: grpc-js callback style, or `async (call) => response`. A thrown error, a
 * rejected promise and `callback(err)` all become the safe public error.
 *
 * @example
 * ```ts
 * const getArtifact: SafeUnaryHandler<GetRequest, Artifact> = async (call) =>
 *   store.get(call.request.path, getSignal(call));
 * ```
 */
export type SafeUnaryHandler<Req, Res> = (
  call: ServerUnaryCall<Req, Res>,
  callback: sendUnaryData<Res>,
  // grpc-js handlers return void; fluxguard's may also return (or resolve to) the response.
  // eslint-disable-next-line @typescript-eslint/no-invalid-void-type
) => Res | undefined | void | Promise<Res | undefined | void>;

/**
 * A client-streaming handler: callback style, or `async (call) => response` over `for await`.
 *
 * @example
 * ```ts
 * const count: SafeClientStreamingHandler<Item, Total> = async (call) => {
 *   let total = 0;
 *   for await (const _item of call) total++;
 *   return { total };
 * };
 * ```
 */
export type SafeClientStreamingHandler<Req, Res> = (
  call: ServerReadableStream<Req, Res>,
  callback: sendUnaryData<Res>,
  // grpc-js handlers return void; fluxguard's may also return (or resolve to) the response.
  // eslint-disable-next-line @typescript-eslint/no-invalid-void-type
) => Res | undefined | void | Promise<Res | undefined | void>;

/**
 * A server-streaming handler; may be `async`. It ends the stream itself (`call.end()`); a
 * thrown error, a rejection, `call.emit('error', err)` or `call.destroy(err)` ends it with the
 * safe public error.
 *
 * @example
 * ```ts
 * const list: SafeServerStreamingHandler<ListRequest, Info> = async (call) => {
 *   for await (const info of store.list(call.request.prefix, getSignal(call))) call.write(info);
 *   call.end();
 * };
 * ```
 */
export type SafeServerStreamingHandler<Req, Res> = (call: ServerWritableStream<Req, Res>) => void | Promise<void>;

/**
 * A bidirectional-streaming handler; may be `async`. Ends the stream itself, as above.
 *
 * @example
 * ```ts
 * const echo: SafeBidiStreamingHandler<Msg, Msg> = (call) => {
 *   call.on('data', (msg: Msg) => call.write(msg));
 *   call.on('end', () => call.end());
 * };
 * ```
 */
export type SafeBidiStreamingHandler<Req, Res> = (call: ServerDuplexStream<Req, Res>) => void | Promise<void>;

/**
 * The fluxguard handler type for a grpc-js handler type. For an untyped service definition
 * (proto-loader), any of the four kinds: annotate the handler's `call` parameter.
 *
 * @example
 * ```ts
 * type GetHandler = SafeHandler<handleUnaryCall<GetRequest, Artifact>>; // SafeUnaryHandler<GetRequest, Artifact>
 * ```
 */
export type SafeHandler<H> =
  H extends handleUnaryCall<infer Req, infer Res>
    ? SafeUnaryHandler<Req, Res>
    : H extends handleClientStreamingCall<infer Req, infer Res>
      ? SafeClientStreamingHandler<Req, Res>
      : H extends handleServerStreamingCall<infer Req, infer Res>
        ? SafeServerStreamingHandler<Req, Res>
        : H extends handleBidiStreamingCall<infer Req, infer Res>
          ? SafeBidiStreamingHandler<Req, Res>
          : // Untyped services (proto-loader): grpc-js's own untyped handlers; annotate the call.
            SafeHandler<UntypedHandleCall>;

/**
 * A service implementation whose handlers may be `async` and may throw: one handler per
 * method of the service definition, named as grpc-js names them (the proto method name, or its
 * lowerCamelCase form with proto-loader).
 *
 * @example
 * ```ts
 * interface StoreHandlers { GetArtifact: handleUnaryCall<GetRequest, Artifact> }
 * const impl: SafeImplementation<StoreHandlers> = {
 *   GetArtifact: async (call) => store.get(call.request.path),
 * };
 * ```
 */
export type SafeImplementation<I> = { readonly [K in keyof I]?: SafeHandler<I[K]> };

let warnedMissingContext = false;

/**
 * Wraps every handler of an implementation so that no failure can leak or crash the process:
 * a thrown error, a rejected promise (an `async` handler), `callback(err)`, `call.emit('error',
 * err)` and `call.destroy(err)` all end the call with the safe public error, and the
 * {@link safeErrors} interceptor logs the real error once. A `SecurityError` keeps its code and
 * public message (`x-fluxguard-field` trailing metadata names the offending field); a status
 * object `{ code, details }` keeps its code when the error table knows it, with the neutral
 * text; everything else becomes `INTERNAL` with generic text. Unary and client-streaming
 * handlers may return (or resolve to) the response instead of calling `callback`.
 *
 * The kind of each method is read from the service definition, not guessed from the handler.
 * Methods left out are answered `UNIMPLEMENTED` by grpc-js. A handler is named by its method or
 * by the method's `originalName` (proto-loader's lowerCamelCase form), as grpc-js finds it; one
 * that grpc-js would find for two methods (`deleteOrder` for `DeleteOrder` and `delete_order`)
 * is refused with a `ConfigurationError`, since each method has its own rules.
 *
 * A handler counts as working on its call until its promise settles, it throws, or it answers
 * (`callback`, a returned value); a streaming handler that returns no promise, until it
 * returns. A concurrency limit keeps a cancelled call's slot that long (`holdForHandlerMs`,
 * `CallContext.afterHandler` of @fluxguard/core), so pass `getSignal(call)` on to the work.
 *
 * @example
 * ```ts
 * import { wrapImplementation } from '@fluxguard/grpc';
 * server.addService(service, wrapImplementation(service, {
 *   getArtifact: async (call: ServerUnaryCall<GetRequest, Artifact>) => store.get(call.request.path),
 * }));
 * ```
 */
export function wrapImplementation<I>(
  service: ServiceDefinition<I>,
  implementation: SafeImplementation<I>,
): UntypedServiceImplementation {
  const definitions = service as unknown as Readonly<
    Record<string, { requestStream: boolean; responseStream: boolean; originalName?: unknown }>
  >;
  const handlers = new Map(Object.entries(implementation as Readonly<Record<string, unknown>>));
  for (const [name, handler] of handlers) if (handler === undefined) handlers.delete(name);
  // grpc-js finds each method's handler under its name, else its `originalName` (proto-loader's
  // lowerCamelCase form), so `deleteOrder` would serve both `DeleteOrder` and `delete_order`,
  // each under its own rules: one handler key may serve one method only.
  const wrapped: UntypedServiceImplementation = Object.create(null) as UntypedServiceImplementation;
  const servedBy = new Map<string, string>();
  for (const [name, definition] of Object.entries(definitions)) {
    const originalName = typeof definition.originalName === 'string' ? definition.originalName : undefined;
    const key = handlers.has(name)
      ? name
      : originalName !== undefined && handlers.has(originalName)
        ? originalName
        : undefined;
    if (key === undefined) continue;
    const other = servedBy.get(key);
    if (other !== undefined) {
      throw new ConfigurationError(
        `wrapImplementation: the handler "${key}" would serve two methods, "${other}" and "${name}" ` +
          '(grpc-js finds a handler by the method name, else its lowerCamelCase form); ' +
          'name each handler by its method name',
      );
    }
    servedBy.set(key, name);
    const handler = handlers.get(key);
    if (typeof handler !== 'function') {
      throw new ConfigurationError(`wrapImplementation: the handler of "${key}" must be a function`);
    }
    // Under the method's own name, in an object without a prototype: grpc-js then finds no
    // handler for an unimplemented method under another name, nor `toString` and the like.
    wrapped[name] = wrapHandler(definition.requestStream, definition.responseStream, handler);
  }
  for (const key of handlers.keys()) {
    if (!servedBy.has(key)) throw new ConfigurationError(`wrapImplementation: the service has no method "${key}"`);
  }
  return wrapped;
}

/**
 * Options of {@link addService}.
 *
 * @example
 * ```ts
 * const options: AddServiceOptions = { strictWireFormat: true };
 * addService(server, service, implementation, options);
 * ```
 */
export interface AddServiceOptions {
  /**
   * Read the request messages of a proto-loader service definition strictly before its decoder
   * does: each known field with its schema's wire type, every length within its message, at
   * most 100 levels of nesting. protobufjs alone cuts a string that runs past the message's end
   * short and reads a field whatever its wire type, so it would act on another message than a
   * strict reader (a gateway, a log) sees. Default `true`; `false` leaves the decoder alone
   * (a schema this reading gets wrong: please report it). Definitions not made by proto-loader
   * are never checked.
   */
  readonly strictWireFormat?: boolean;
}

const ADD_SERVICE_DEFAULTS: Readonly<Required<AddServiceOptions>> = Object.freeze({ strictWireFormat: true });

/**
 * Registers a service whose handlers may be `async` and may throw, with the failures made
 * safe (see {@link wrapImplementation}). Its request deserializers are wrapped too: a message
 * that cannot be parsed is refused `INVALID_ARGUMENT` by the safeErrors interceptor, with a
 * request id and an audit line, instead of grpc-js's own unlogged `INTERNAL`; so is a message
 * of a proto-loader definition that protobuf's wire format does not allow, even where
 * protobufjs would read something from it (`strictWireFormat`). Prefer it to
 * `server.addService(service, wrapImplementation(service, implementation))`.
 *
 * @example
 * ```ts
 * import { addService } from '@fluxguard/grpc';
 * addService(server, healthService, {
 *   check: async () => ({ status: 'SERVING' }),
 * });
 * ```
 */
export function addService<I>(
  server: Pick<Server, 'addService'>,
  service: ServiceDefinition<I>,
  implementation: SafeImplementation<I>,
  options?: AddServiceOptions,
): void {
  const opts = resolveOptions('addService', ADD_SERVICE_DEFAULTS, options);
  if (typeof opts.strictWireFormat !== 'boolean') {
    throw new ConfigurationError('addService: "strictWireFormat" must be a boolean');
  }
  // Said now rather than by a warning at the first call, which no call was refused before.
  if (lacksSafeErrors(server)) {
    throw new ConfigurationError(
      'addService: the server runs no fluxguard interceptors, so its calls would be neither authenticated nor logged: new Server({ ...secureServerOptions(), interceptors: fluxguardInterceptors({ audit }) }), or safeErrors({ audit }) first in your own list',
    );
  }
  // A rule that names one of these methods in other letter case would leave it to a broader rule.
  const methods = Object.values(service as Record<string, { readonly path: string }>).map(
    (definition) => definition.path,
  );
  const interceptors = (server as { interceptors?: unknown }).interceptors;
  if (Array.isArray(interceptors)) {
    for (const interceptor of interceptors) pipelineOf(interceptor)?.checkServed(methods);
  }
  hardenHttp2Servers(server);
  vetServerAnswers(server);
  noteAddedService(methods, Array.isArray(interceptors) ? (interceptors as unknown[]) : undefined);
  noteServer(server);
  server.addService(withSafeDeserializers(service, opts.strictWireFormat), wrapImplementation(service, implementation));
}

type AnyCallback = sendUnaryData<unknown>;
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- checked with typeof at run time
type AnyFunction = Function;

function wrapHandler(requestStream: boolean, responseStream: boolean, handler: AnyFunction): UntypedHandleCall {
  if (!responseStream) {
    return requestStream
      ? wrapSingleResponse(handler as SafeClientStreamingHandler<unknown, unknown>)
      : wrapSingleResponse(handler as SafeUnaryHandler<unknown, unknown>);
  }
  return requestStream
    ? wrapStreamingResponse(handler as SafeBidiStreamingHandler<unknown, unknown>)
    : wrapStreamingResponse(handler as SafeServerStreamingHandler<unknown, unknown>);
}

function contextFor(call: ServerCall): GrpcCall | undefined {
  const state = callOf(call.metadata);
  if (state === undefined && !warnedMissingContext) {
    warnedMissingContext = true;
    process.emitWarning(
      'fluxguard: a wrapped handler ran without the safeErrors interceptor; failures are answered safely but not logged',
      { code: 'FLUXGUARD_NO_INTERCEPTOR' },
    );
  }
  // From here on only interceptors may have set the principal.
  state?.state.seal();
  return state;
}

/** Unary and client-streaming: one response through grpc-js's callback. */
function wrapSingleResponse<C extends ServerUnaryCall<unknown, unknown> | ServerReadableStream<unknown, unknown>>(
  handler: (call: C, callback: AnyCallback) => unknown,
): (call: C, callback: AnyCallback) => void {
  return (call, callback) => {
    const context = contextFor(call);
    const state = context?.state;
    state?.handlerStarted();
    let responded = false;
    const fail = (error: unknown): void => {
      if (responded) return;
      responded = true;
      try {
        callback(prepareFailure(error, context));
      } catch {
        // grpc-js could not send (the call is gone): nothing more to do.
      }
    };
    const respond: AnyCallback = (error, value, trailer, flags) => {
      // Only the handler calls this: it has answered, so it has stopped.
      state?.handlerStopped();
      // `callback()` from plain JavaScript passes undefined, not null.
      if (error != null) {
        fail(error);
        return;
      }
      if (responded) return;
      responded = true;
      try {
        callback(null, value, trailer, flags);
      } catch (err) {
        responded = false;
        fail(err);
      }
    };
    // Without a listener, `call.emit('error')` throws, and a destroyed client stream emits one.
    call.prependListener('error', (error: unknown) => {
      // Node destroys a stream with an AbortError when `for await` over it ends (the response
      // side is still open): the handler is still running and answers itself.
      if (isAbortError(error)) return;
      fail(error);
    });
    invoke(
      () => handler(call, respond),
      fail,
      (value) => {
        if (value !== undefined) respond(null, value);
      },
      state,
      // A callback-style handler has not stopped when it returns: it answers through `respond`.
      false,
    );
  };
}

/** Server-streaming and bidi: the status goes out when the handler ends the stream. */
function wrapStreamingResponse<C extends ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>>(
  handler: (call: C) => unknown,
): (call: C) => void {
  return (call) => {
    const context = contextFor(call);
    const state = context?.state;
    state?.handlerStarted();
    if (context !== undefined) context.responseStream = call;
    let failed = false;
    const fail = (error: unknown): void => {
      if (failed) return;
      failed = true;
      const status = prepareFailure(error, context);
      if (!call.destroyed && !call.writableEnded) {
        // grpc-js's own 'error' listener stores this status and ends the stream; ours, first
        // in line, has already recorded the real error.
        call.emit('error', Object.assign(new Error(status.details), status));
      } else if (context !== undefined && !context.statusSent) {
        // A destroyed stream never sends its status: send it from the interceptor.
        context.sendFailure(error);
      } else if (context !== undefined) {
        // The call is over (its client left, a deadline ended it, or the handler's own answer
        // went out), and has its line: the failure that follows, most often its aborted
        // signal, gets the debug line a unary handler's gets, whether the handler was awaiting
        // its work or works from the stream's events.
        context.afterEnd?.failedAfterEnd(context.takePendingError()?.error ?? error);
      }
    };
    call.prependListener('error', fail);
    call.once('close', () => {
      if (context === undefined || context.statusSent || context.cancelled) return;
      // Ended without a status (e.g. `call.destroy()` with no error): never leave it hanging.
      fail(new Error('the handler closed the stream without a status'));
    });
    invoke(
      () => handler(call),
      fail,
      () => undefined,
      state,
      // An event-driven stream handler has no way to say it has stopped: when it returns, its
      // work is the stream's, which ends with the call.
      true,
    );
  };
}

/**
 * Runs a handler, routing a throw or a rejection to `fail` and a resolved value to `done`.
 * The handler has stopped once it threw, once its promise settled, or (`stopsOnReturn`) once
 * it returned something else.
 */
function invoke(
  run: () => unknown,
  fail: (error: unknown) => void,
  done: (value: unknown) => void,
  state: CallState | undefined,
  stopsOnReturn: boolean,
): void {
  let result: unknown;
  try {
    result = run();
  } catch (error) {
    state?.handlerStopped();
    fail(error);
    return;
  }
  if (isPromiseLike(result)) {
    Promise.resolve(result).then(
      (value) => {
        state?.handlerStopped();
        try {
          done(value);
        } catch (error) {
          fail(error);
        }
      },
      (error: unknown) => {
        state?.handlerStopped();
        fail(error);
      },
    );
    return;
  }
  if (stopsOnReturn) state?.handlerStopped();
  try {
    done(result);
  } catch (error) {
    fail(error);
  }
}

function isAbortError(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError' && (error as { code?: unknown }).code === 'ABORT_ERR';
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
