/** Anything with Node's `on(event, listener)`: a stream, a socket, a Redis client. */
export interface ListenerTarget {
  on(event: string, listener: (...values: unknown[]) => void): unknown;
  prependListener?(event: string, listener: (...values: unknown[]) => void): unknown;
}

interface Listeners {
  /** The owners registered, held weakly, in the order their callbacks run. */
  owners: Set<WeakRef<object>>;
  /** Each live owner's callback: gone with its owner. */
  readonly callbackOf: WeakMap<object, (value: unknown) => void>;
}

/** Per emitter and event, the owners its one listener calls. */
const listenersOf = new WeakMap<object, Map<string, Listeners>>();

/**
 * Calls `callback` each time `emitter` emits `event`, for as long as `owner` lives, through one
 * listener per emitter and event. An emitter that outlives its owners (one Redis client under a
 * store made per request, one file under a logger per tenant) would otherwise pile up a listener
 * per owner until Node warns of a leak, and keep every owner alive. The listener stays when the
 * owners are gone: on `'error'`, that is what keeps an error from ending the process.
 *
 * `callback` is held only through `owner`, so it may refer to the owner's state freely. An owner
 * registered again on the same emitter and event has its callback replaced. With `first`, the
 * one listener goes before those already there (`prependListener`), as the first registration
 * for that emitter and event asks. With `callFirst`, this owner's callback runs before those of
 * the owners registered earlier (lines written at `'exit'` before the stream's own exit flush).
 *
 * @example
 * ```ts
 * listenWeakly(redisClient, 'close', store, () => store.forgetQueued());
 * ```
 */
export function listenWeakly(
  emitter: ListenerTarget,
  event: string,
  owner: object,
  callback: (value: unknown) => void,
  options?: { readonly first?: boolean; readonly callFirst?: boolean },
): void {
  let events = listenersOf.get(emitter);
  if (events === undefined) {
    events = new Map();
    listenersOf.set(emitter, events);
  }
  let listeners = events.get(event);
  if (listeners === undefined) {
    const created: Listeners = { owners: new Set(), callbackOf: new WeakMap() };
    listeners = created;
    events.set(event, created);
    const listener = (...values: unknown[]): void => {
      const value = values[0];
      for (const ref of created.owners) {
        const live = ref.deref();
        if (live === undefined) created.owners.delete(ref);
        else created.callbackOf.get(live)?.(value);
      }
    };
    if (options?.first === true && emitter.prependListener !== undefined) emitter.prependListener(event, listener);
    else emitter.on(event, listener);
  }
  // Owners collected since the last one was added leave the set here, not only at an event.
  for (const ref of listeners.owners) if (ref.deref() === undefined) listeners.owners.delete(ref);
  if (!listeners.callbackOf.has(owner)) {
    const ref = new WeakRef(owner);
    if (options?.callFirst === true) listeners.owners = new Set([ref, ...listeners.owners]);
    else listeners.owners.add(ref);
  }
  listeners.callbackOf.set(owner, callback);
}
