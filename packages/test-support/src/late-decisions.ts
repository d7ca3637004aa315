// Controls and a key source that decide late, held on gates a test opens once the server has
// noticed that the client left: how the adapters' tests make a refusal come strictly after the
// client hung up. The shapes below are those of fluxguard's `Control`, `CallContext` and
// `JwksSource`, written out because this package depends on no fluxguard package (core's own
// tests use it); a test that hands them to fluxguard has them type-checked there.

/** A promise the test resolves by hand. */
interface Gate {
  readonly promise: Promise<void>;
  open(): void;
}

function gate(): Gate {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** What the observer reads of a call and of its context. */
export interface ObservedCall {
  readonly signal: AbortSignal;
}
export interface ObservedContext {
  whenRefused(listener: () => void): void;
  whenAllowed(listener: () => void): void;
}

/** What the held control reads of a call. */
export interface HeldCall {
  readonly headers: { get(name: string): string | undefined };
}

/** fluxguard's `SecurityError`, as the held control makes its refusal. */
export type RefusalClass = new (
  code: 'rate_limited',
  options: {
    readonly reason: 'rate_limited';
    readonly details: { readonly retryAfterSeconds: number };
    readonly auditFields: { readonly rule: string };
  },
) => Error;

/** A key source as the JWT verifier asks it, for any header and keys. */
export interface KeySource<Header, Keys> {
  readonly version: number;
  getKeys(header: Header): Promise<Keys>;
}

/** What {@link createLateDecisions} gives. */
export interface LateDecisions {
  /** A control that tells the test when the server notices the client left, and when a verdict is reached. */
  readonly observer: {
    readonly name: 'test.observer';
    readonly stage: 'pre-authentication';
    readonly onStart: (call: ObservedCall, context: ObservedContext) => undefined;
  };
  /**
   * A control that decides late (a Redis-backed limit) for a call that carries `x-held`: it
   * waits for the test, then refuses `x-held: refuse` as a rate limit does (code and reason
   * `rate_limited`, rule `test.held`) and allows `x-held: allow`.
   */
  readonly held: {
    readonly name: 'test.held';
    readonly stage: 'pre-authentication';
    readonly onStart: (call: HeldCall) => Promise<undefined>;
  };
  /** While set, a key source made by {@link LateDecisions.keySource} waits for the test. */
  holdKeys: boolean;
  /** `keys`, answering late while `holdKeys` is set: a remote key set being fetched. */
  keySource<Header, Keys>(keys: KeySource<Header, Keys>): KeySource<Header, Keys>;
  /**
   * Starts over and sends a call with `send`, calls the hang-up `send` returned once a held
   * control or key source has the call, waits until the server has noticed, then lets it
   * decide; resolves once the verdict (when `expectVerdict`) has been acted on.
   */
  leaveWhileDeciding(send: () => () => void, expectVerdict: boolean): Promise<void>;
}

/**
 * Gates, controls and a key source for one test file; the held control refuses with a
 * `Refusal` (fluxguard's `SecurityError`).
 *
 * @example
 * ```ts
 * const late = createLateDecisions(SecurityError);
 * const controls = [late.observer, late.held];
 * await late.leaveWhileDeciding(() => { const call = send({ 'x-held': 'refuse' }); return () => call.cancel(); }, true);
 * ```
 */
export function createLateDecisions(Refusal: RefusalClass): LateDecisions {
  // What the test waits on for the call in flight: the held part reached, the hang-up noticed,
  // the verdict; `release` is opened by the test once the server has noticed the hang-up.
  let reached = gate();
  let left = gate();
  let decided = gate();
  let release = gate();
  const late: LateDecisions = {
    observer: {
      name: 'test.observer',
      stage: 'pre-authentication',
      onStart(call, context) {
        call.signal.addEventListener('abort', () => {
          left.open();
        });
        context.whenRefused(() => {
          decided.open();
        });
        context.whenAllowed(() => {
          decided.open();
        });
        return undefined;
      },
    },
    held: {
      name: 'test.held',
      stage: 'pre-authentication',
      async onStart(call) {
        const verdict = call.headers.get('x-held');
        if (verdict === undefined) return undefined;
        reached.open();
        await release.promise;
        if (verdict === 'refuse') {
          throw new Refusal('rate_limited', {
            reason: 'rate_limited',
            details: { retryAfterSeconds: 1 },
            auditFields: { rule: 'test.held' },
          });
        }
        return undefined;
      },
    },
    holdKeys: false,
    keySource(keys) {
      return {
        get version() {
          return keys.version;
        },
        async getKeys(header) {
          if (late.holdKeys) {
            reached.open();
            await release.promise;
          }
          return keys.getKeys(header);
        },
      };
    },
    async leaveWhileDeciding(send, expectVerdict) {
      reached = gate();
      left = gate();
      decided = gate();
      release = gate();
      const leave = send();
      await reached.promise;
      leave();
      await left.promise;
      release.open();
      if (expectVerdict) await decided.promise;
      // The adapter acts on the verdict a few promise turns later.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
  return late;
}
