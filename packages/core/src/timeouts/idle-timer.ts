import { AsyncResource } from 'node:async_hooks';
import { SecurityError } from '../errors/security-error.js';
import type { CallContext } from '../pipeline/call-context.js';
import { createContextKey } from '../pipeline/call-context.js';

/** An idle timer still to be made, at the end of the event loop's turn. */
const WAITING = Symbol('waiting');

const IDLE_TIMER = createContextKey<ReturnType<typeof setTimeout> | typeof WAITING | undefined>('timeouts.idle');

/**
 * A call whose idle timer is made at the end of this turn. It is the async resource the timer is
 * made in, so that the call's end runs in the async context the call started in, as it would
 * with a timer made at once: made bare in the turn's shared immediate, the end of every call
 * started in the turn ran in the first one's context (its signal's listeners and its line read
 * another request's AsyncLocalStorage store). A resource costs about a tenth of a timer made and
 * cleared (10 ns against 100 ns).
 */
class WaitingCall extends AsyncResource {
  readonly context: CallContext;
  readonly idleMs: number;

  constructor(context: CallContext, idleMs: number) {
    super('fluxguard.idle-limit');
    this.context = context;
    this.idleMs = idleMs;
  }
}

let waitingCalls: WaitingCall[] = [];
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
  waitingCalls.push(new WaitingCall(context, idleMs));
}

function makeWaitingTimers(): void {
  scheduledWith = undefined;
  const calls = waitingCalls;
  waitingCalls = [];
  for (const call of calls) {
    const { context, idleMs } = call;
    if (context.get(IDLE_TIMER) !== WAITING) continue;
    context.set(IDLE_TIMER, call.runInAsyncScope(makeIdleTimer, undefined, context, idleMs));
  }
}

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
