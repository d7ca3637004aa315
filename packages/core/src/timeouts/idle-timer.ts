import { AsyncResource } from 'node:async_hooks';
import { SecurityError } from '../errors/security-error.js';
import type { CallContext } from '../pipeline/call-context.js';
import { createContextKey } from '../pipeline/call-context.js';

/** An idle timer still to be made, at the end of the event loop's turn. */
const WAITING = Symbol('waiting');

const IDLE_TIMER = createContextKey<ReturnType<typeof setTimeout> | typeof WAITING | undefined>('timeouts.idle');

// The calls whose idle timer is made at the end of this turn, the limit of each, and the async
// context each started in.
let waitingCalls: CallContext[] = [];
let waitingLimits: number[] = [];
let waitingScopes: AsyncResource[] = [];
// The `setImmediate` that scheduled the turn's timers, until they are made. Compared rather
// than a flag: an immediate scheduled through a test's fake timers never runs once they are
// uninstalled, and every later call would have waited for it, with no idle limit at all.
let scheduledWith: typeof setImmediate | undefined;

/**
 * Starts the idle limit of a call: if no message comes for `idleMs`, the call ends with
 * `inbound_idle`. The timer itself is made at the end of the event loop's turn, for the calls
 * still waiting for their request then: most calls (a unary gRPC call, a small upload) receive
 * the whole of it in the turn they start, and a timer made and cleared within one turn was
 * about 0.6 % of a served gRPC call's instructions. The limit is the same from the call's view:
 * it can only start later, by less than one turn.
 *
 * @internal
 */
export function startIdleTimer(context: CallContext, idleMs: number): void {
  context.set(IDLE_TIMER, WAITING);
  // One shared immediate per turn, whatever the number of calls.
  if (scheduledWith !== setImmediate) {
    scheduledWith = setImmediate;
    setImmediate(makeWaitingTimers);
  }
  waitingCalls.push(context);
  waitingLimits.push(idleMs);
  // The timer is made in the async context the call started in, as one made here would be:
  // made bare in the turn's shared immediate, it ran the call's end (its signal's listeners, its
  // line) in the context of the turn's first call, so code reading an AsyncLocalStorage there (a
  // request's store, a trace) read another request's. A resource costs about a tenth of a timer
  // made and cleared (10 ns against 100 ns).
  waitingScopes.push(new AsyncResource(IDLE_SCOPE));
}

function makeWaitingTimers(): void {
  scheduledWith = undefined;
  const calls = waitingCalls;
  const limits = waitingLimits;
  const scopes = waitingScopes;
  waitingCalls = [];
  waitingLimits = [];
  waitingScopes = [];
  for (let i = 0; i < calls.length; i++) {
    const context = calls[i];
    const idleMs = limits[i];
    const scope = scopes[i];
    if (context === undefined || idleMs === undefined || scope === undefined || context.get(IDLE_TIMER) !== WAITING) {
      continue;
    }
    context.set(IDLE_TIMER, scope.runInAsyncScope(makeIdleTimer, undefined, context, idleMs));
  }
}

/** The type of the async resource a waiting call's timer is made in. */
const IDLE_SCOPE = 'fluxguard.idle-limit';

/** The idle timer of `context`, made in the async context of the caller. */
function makeIdleTimer(context: CallContext, idleMs: number): ReturnType<typeof setTimeout> {
  const timer = setTimeout(() => {
    context.end(new SecurityError('deadline_exceeded', { reason: 'inbound_idle' }));
  }, idleMs);
  timer.unref();
  return timer;
}

/**
 * A message came: the call's idle limit starts again. Returns false when the call has no idle
 * timer (none was started, or it was stopped).
 *
 * @internal
 */
export function restartIdleTimer(context: CallContext): boolean {
  const timer = context.get(IDLE_TIMER);
  if (timer === undefined) return false;
  // Still waiting for the end of the turn, which comes after this message.
  if (timer !== WAITING) timer.refresh();
  return true;
}

/**
 * Stops the call's idle limit (its request has ended, or the call has).
 *
 * @internal
 */
export function stopIdleTimer(context: CallContext): void {
  const timer = context.get(IDLE_TIMER);
  if (timer === undefined) return;
  if (timer !== WAITING) clearTimeout(timer);
  context.set(IDLE_TIMER, undefined);
}
