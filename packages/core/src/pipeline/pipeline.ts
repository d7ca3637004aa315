import type { CallInfo, Transport } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkLetterCase, unservedPatterns } from '../policy/served.js';
import type { CallState } from './call-context.js';
import { CONTROL_STAGES, isAuthentication, isAuthenticationCopy, type Control, type StartResult } from './control.js';

/**
 * An ordered, validated list of controls, compiled once, that an adapter runs on every call.
 * Adapter authors only: applications list controls and let the adapter build this.
 *
 * @example
 * ```ts
 * import { createPipeline } from '@fluxguard/core/adapter';
 * const pipeline = createPipeline('fluxguard', [rateLimit, guard.authenticator, guard.authorizer]);
 * const pending = pipeline.start(call, state); // undefined: allowed at once; else await it
 * ```
 */
export interface Pipeline {
  /** The controls in the order they run. */
  readonly controls: readonly Control[];
  /**
   * Some control has an `onMessage` or `onInboundEnd` hook: the adapter must route inbound
   * messages through {@link Pipeline.message} and their end through {@link Pipeline.inboundEnd}.
   */
  readonly hasMessageHooks: boolean;
  /** Some control matches operations against path patterns (see `Control.matchesOperation`). */
  readonly matchesOperation: boolean;
  /**
   * Runs every `onStart` in order and registers their release callbacks on `state`. Returns
   * `undefined` when all of them finished synchronously and allowed the call; a promise when
   * one is asynchronous. Throws (or rejects) with the refusal. When the call ends while a hook
   * is pending, the remaining hooks do not run: check `state.finished` before going on.
   */
  start(call: CallInfo, state: CallState): Promise<void> | undefined;
  /**
   * Runs every `onMessage` in order on one inbound message of `bytes` on the wire; throws the
   * refusal. Returns the message to hand on: the last one a hook of a control that
   * `replacesMessages` returned in its place (a schema's output), else `message`. Each hook is
   * given the message as the hooks before it left it.
   */
  message(message: unknown, call: CallInfo, state: CallState, bytes: number | undefined): unknown;
  /** Runs every `onInboundEnd` in order, once the client has sent its last message. */
  inboundEnd(call: CallInfo, state: CallState): void;
  /** The first label a control gives `operation` (see `Control.operationLabel`), for audit lines. */
  readonly operationLabel: (operation: string) => string | undefined;
  /** The smallest limit the controls put on one inbound message of `operation` (see `Control.maxMessageBytes`). */
  readonly maxMessageBytes: (operation: string) => number | undefined;
  /**
   * Runs every control's `checkRoutes` on an HTTP app's routes, after {@link Pipeline.checkServed}
   * on them; throws the first `ConfigurationError`.
   */
  checkRoutes(routes: readonly string[]): void;
  /**
   * The controls' `handOver` tests for an HTTP app's routes, as one: a route may serve an
   * operation when every control's test says so. `undefined` when no control has one.
   */
  handOver(
    routes: readonly string[],
  ): ((operation: string, route: string | undefined, current?: string) => boolean) | undefined;
  /**
   * Holds the controls' operation patterns (`Control.operationPatterns`) against operations the
   * server serves (the methods of a gRPC service being registered, an app's routes): throws a
   * `ConfigurationError` for a pattern that names one of them only in other letter case.
   */
  checkServed(served: readonly string[]): void;
  /**
   * The controls' operation patterns of `transport` that name none of `served`, once the
   * adapter knows every operation the server serves (see `warnUnservedPatterns`).
   */
  unserved(served: readonly string[], transport: Transport): readonly string[];
}

/** Operations whose message limit is remembered: gRPC methods, which a server has a bounded number of. */
const MAX_REMEMBERED_LIMITS = 1_000;

type StartHook = (call: CallInfo, state: CallState) => StartResult | Promise<StartResult>;
type MessageHook = (message: unknown, call: CallInfo, state: CallState, bytes: number | undefined) => unknown;
type EndHook = (call: CallInfo, state: CallState) => void;

/**
 * Validates `controls` and orders them by stage (controls of one stage keep the order given).
 *
 * @throws ConfigurationError naming `owner` and the offending control.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { createPipeline } from '@fluxguard/core/adapter';
 * const pipeline = createPipeline('myAdapter', [createTimeouts(), ...guard.controls]);
 * pipeline.controls.map((control) => control.stage); // ['authentication', 'authorization', 'deadline']
 * ```
 */
export function createPipeline(owner: string, controls: readonly Control[]): Pipeline {
  if (!Array.isArray(controls)) throw new ConfigurationError(`${owner}: controls must be an array`);
  const checked = controls.map((control, index) => checkControl(owner, control, index));
  checkAuthentications(owner, checked);
  const ordered = Object.freeze(
    checked
      .map((control, index) => ({ control, index, rank: CONTROL_STAGES.indexOf(control.stage) }))
      .sort((a, b) => a.rank - b.rank || a.index - b.index)
      .map(({ control }) => control),
  );
  const labels = ordered.flatMap((control) => (control.operationLabel === undefined ? [] : [control.operationLabel]));
  const messageLimits = ordered.flatMap((control) =>
    control.maxMessageBytes === undefined ? [] : [control.maxMessageBytes.bind(control)],
  );
  const limitOf = new Map<string, number | undefined>();
  const starts: StartHook[] = [];
  const messages: MessageHook[] = [];
  /** Whether each of `messages` hands on what it returns (`Control.replacesMessages`). */
  const replaces: boolean[] = [];
  const ends: EndHook[] = [];
  for (const control of ordered) {
    const { onStart, onMessage, onInboundEnd } = control;
    if (onStart !== undefined) starts.push(onStart.bind(control));
    if (onMessage !== undefined) {
      messages.push(onMessage.bind(control));
      replaces.push(control.replacesMessages === true);
    }
    if (onInboundEnd !== undefined) ends.push(onInboundEnd.bind(control));
  }

  const runStarts = (from: number, call: CallInfo, state: CallState): Promise<void> | undefined => {
    for (let i = from; i < starts.length; i++) {
      const hook = starts[i];
      if (hook === undefined || state.finished) return undefined;
      let result: StartResult | Promise<StartResult>;
      try {
        result = hook(call, state);
      } catch (error) {
        state.noteRefusal(error);
        throw error;
      }
      if (isPromiseLike(result)) {
        // A client that leaves now leaves no handler at work: the adapters log the verdict.
        state.noteDeciding(true);
        return Promise.resolve(result).then(
          (resolved) => {
            state.noteDeciding(false);
            keepRelease(resolved, state);
            return runStarts(i + 1, call, state);
          },
          (error: unknown) => {
            state.noteDeciding(false);
            state.noteRefusal(error);
            throw error;
          },
        );
      }
      keepRelease(result, state);
    }
    if (!state.finished) state.noteAllowed();
    return undefined;
  };

  // A pipeline with an authentication step of fluxguard decides on its own caller (see
  // `CallState.enterAuthentication`). The step stands for it: two pipelines of one guard (an
  // app's `before` and a route's `authorize()`) decide alike, and the second keeps the caller
  // the first recorded, a control listed with the guard included.
  const authentication = ordered.find(isAuthentication);
  const startAuthenticating = (call: CallInfo, state: CallState): Promise<void> | undefined => {
    if (authentication !== undefined) state.enterAuthentication(authentication);
    return runStarts(0, call, state);
  };

  const routeChecks = ordered.flatMap((control) =>
    control.checkRoutes === undefined ? [] : [control.checkRoutes.bind(control)],
  );
  const handOvers = ordered.flatMap((control) =>
    control.handOver === undefined ? [] : [control.handOver.bind(control)],
  );
  const patterns = ordered.flatMap((control) => control.operationPatterns ?? []);
  const checkServed = (served: readonly string[]): void => {
    checkLetterCase(patterns, served, owner);
  };

  return Object.freeze({
    controls: ordered,
    hasMessageHooks: messages.length > 0 || ends.length > 0,
    matchesOperation: ordered.some((control) => control.matchesOperation === true),
    start:
      authentication !== undefined
        ? startAuthenticating
        : (call: CallInfo, state: CallState) => runStarts(0, call, state),
    message: (message: unknown, call: CallInfo, state: CallState, bytes: number | undefined) => {
      let current = message;
      for (let i = 0; i < messages.length; i++) {
        const replaced = messages[i]?.(current, call, state, bytes);
        if (replaced !== undefined && replaces[i] === true) current = replaced;
      }
      return current;
    },
    inboundEnd: (call: CallInfo, state: CallState) => {
      for (const hook of ends) hook(call, state);
    },
    operationLabel: (operation: string) => {
      for (const label of labels) {
        const found = label(operation);
        if (found !== undefined) return found;
      }
      return undefined;
    },
    checkRoutes: (routes: readonly string[]) => {
      checkServed(routes);
      for (const check of routeChecks) check(routes);
    },
    handOver: (routes: readonly string[]) => {
      const tests = handOvers.map((handOver) => handOver(routes));
      if (tests.length === 0) return undefined;
      return (operation: string, route: string | undefined, current?: string) =>
        tests.every((test) => test(operation, route, current));
    },
    checkServed,
    unserved: (served: readonly string[], transport: Transport) => unservedPatterns(patterns, served, transport, owner),
    maxMessageBytes: (operation: string) => {
      if (messageLimits.length === 0) return undefined;
      if (limitOf.has(operation)) return limitOf.get(operation);
      let smallest: number | undefined;
      for (const limitFor of messageLimits) {
        const limit = limitFor(operation);
        if (limit !== undefined && (smallest === undefined || limit < smallest)) smallest = limit;
      }
      if (limitOf.size < MAX_REMEMBERED_LIMITS) limitOf.set(operation, smallest);
      return smallest;
    },
  });
}

function keepRelease(result: StartResult, state: CallState): void {
  if (typeof result === 'function') state.addRelease(result);
}

/**
 * Refuses a pipeline with two authentication steps of fluxguard, or a copy of one: a pipeline
 * decides on one caller (see `CallState.enterAuthentication`), and the second guard's step would
 * decide on the first one's, as would a copy, which carries no mark.
 */
function checkAuthentications(owner: string, controls: readonly Control[]): void {
  const steps = new Set(controls.filter(isAuthentication));
  if (steps.size > 1) {
    throw new ConfigurationError(
      `${owner}: the controls hold the authentication steps of two guards; a pipeline decides on one caller: mount the second guard in a pipeline of its own (authorize(), a router's fluxguard().before, another guard() interceptor)`,
    );
  }
  const copy = controls.find(isAuthenticationCopy);
  if (copy !== undefined) {
    throw new ConfigurationError(
      `${owner}: the control "${copy.name}" is a copy of an authentication step of createAuthenticator() (or a guard's): list the step itself`,
    );
  }
}

/**
 * Checks that `control` is a control: an object with a name, a stage and hooks that are
 * functions (not a group such as `createRateLimit`'s). `index` is its place in the list the
 * user gave, for the message.
 *
 * @throws ConfigurationError naming `owner`, the index and what is wrong.
 * @internal
 */
export function checkControl(owner: string, control: unknown, index: number): Control {
  const where = `${owner}: controls[${String(index)}]`;
  if (control === undefined) {
    // A control listed only sometimes (`flag ? limit : undefined`) leaves a hole in the list.
    throw new ConfigurationError(
      `${where} is undefined: leave it out of the list instead, e.g. ...(flag ? [limit] : [])`,
    );
  }
  if (typeof control !== 'object' || control === null)
    throw new ConfigurationError(`${where} must be a control object`);
  if (Array.isArray((control as { controls?: unknown }).controls)) {
    // createRateLimit (and a guard) hand back a group: one control per stage its rules run in.
    throw new ConfigurationError(
      `${where} is a group of controls (createRateLimit, a guard): spread its list, e.g. controls: [...limits.controls]`,
    );
  }
  const { name, stage, onStart, onMessage, onInboundEnd, operationLabel, maxMessageBytes, checkRoutes, handOver } =
    control as Partial<Record<keyof Control, unknown>>;
  if (typeof name !== 'string' || name === '') throw new ConfigurationError(`${where} must have a non-empty "name"`);
  if (!CONTROL_STAGES.includes(stage as Control['stage'])) {
    throw new ConfigurationError(`${where} (${name}): "stage" must be one of ${CONTROL_STAGES.join(', ')}`);
  }
  const hooks = { onStart, onMessage, onInboundEnd, operationLabel, maxMessageBytes, checkRoutes, handOver };
  for (const [key, value] of Object.entries(hooks)) {
    if (value !== undefined && typeof value !== 'function') {
      throw new ConfigurationError(`${where} (${name}): "${key}" must be a function`);
    }
  }
  if (onStart === undefined && onMessage === undefined) {
    throw new ConfigurationError(`${where} (${name}): a control needs "onStart", "onMessage" or both`);
  }
  const { replacesMessages, countsSocketAddress } = control as Partial<Record<keyof Control, unknown>>;
  if (
    countsSocketAddress !== undefined &&
    (!Array.isArray(countsSocketAddress) || !countsSocketAddress.every((item) => typeof item === 'string'))
  ) {
    throw new ConfigurationError(`${where} (${name}): "countsSocketAddress" must be a list of limit names`);
  }
  if (replacesMessages !== undefined && typeof replacesMessages !== 'boolean') {
    throw new ConfigurationError(`${where} (${name}): "replacesMessages" must be true or false`);
  }
  return control as Control;
}

function isPromiseLike(value: unknown): value is PromiseLike<StartResult> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
