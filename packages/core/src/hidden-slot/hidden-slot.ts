/**
 * A value kept on objects its holder does not own (grpc-js's `Metadata`, decoded request
 * messages), for the holder's eyes only. For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * const sizes: HiddenSlot<number> = hiddenSlot<number>();
 * ```
 */
export interface HiddenSlot<T> {
  /** The value kept on `target`, or `undefined`. */
  get(target: object): T | undefined;
  /** Keeps `value` on `target`, in place of any value kept before. */
  set(target: object, value: T): void;
}

/** A base class whose constructor hands back the object it is given, so a subclass's fields land on it. */
// eslint-disable-next-line @typescript-eslint/no-extraneous-class -- only its constructor is the point
class Adopt {
  constructor(target: object) {
    return target;
  }
}

/**
 * A new {@link HiddenSlot}, held as a private class field that is added to the target object
 * itself. Nothing outside this slot can read, change or forge it: not a client's metadata, not
 * `Object.getOwnPropertySymbols`, not `util.inspect` or a serializer. A field is added at the
 * cost of a plain property store. `Object.defineProperty` measured more than ten times that per
 * object, paid on every call, and a WeakMap entry per call costs the garbage collector more.
 * Where the engine refuses a private field (engines may stop adding them to objects that cannot
 * be extended), the value goes to a WeakMap (rare).
 *
 * @example
 * ```ts
 * const sizes = hiddenSlot<number>();
 * sizes.set(message, bytes.length);
 * sizes.get(message); // bytes.length
 * ```
 */
export function hiddenSlot<T>(): HiddenSlot<T> {
  const sealed = new WeakMap<object, T>();
  // Until an object that cannot be extended is given a value, a miss needs no WeakMap look-up
  // (a call without the value is common: a principal that was never marked, say).
  let anySealed = false;
  class Slot extends Adopt {
    #value: T;

    constructor(target: object, value: T) {
      super(target);
      this.#value = value;
    }

    static get(target: object): T | undefined {
      if (#value in target) return target.#value;
      return anySealed ? sealed.get(target) : undefined;
    }

    static set(target: object, value: T): void {
      if (#value in target) {
        target.#value = value;
        return;
      }
      // Tried, not asked first: `Object.isExtensible` cost a call into the runtime on every set
      // (two a served gRPC call), for objects that can almost always be extended.
      try {
        new Slot(target, value);
      } catch {
        anySealed = true;
        sealed.set(target, value);
      }
    }
  }
  return {
    get: (target) => Slot.get(target),
    set: (target, value) => {
      Slot.set(target, value);
    },
  };
}
