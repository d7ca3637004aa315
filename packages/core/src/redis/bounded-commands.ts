import { ConfigurationError } from '../errors/fluxguard-error.js';
import { listenWeakly } from '../events/listen-weakly.js';

/**
 * Runs the Redis commands of one store with a deadline each and a cap on those still waiting
 * for Redis. The deadline is Redis's, not this process's: it starts once the current turn of the
 * event loop is over (ioredis may write the command only then), an answer that came while the
 * event loop was busy is read before it is declared, and one that fires late because the process
 * was busy starts over. ioredis keeps a command until Redis answers, whatever the caller's deadline (and
 * whatever its own `commandTimeout`, which rejects the promise but leaves the command queued),
 * so a Redis that hangs while calls keep coming would hold a command, and its memory, for each
 * of them. A command counts as waiting until Redis has answered it, which a later command's
 * answer also proves (Redis answers a connection's commands in order); once `maxPending` wait,
 * the next fails at once.
 *
 * Once a command outlasts its deadline, Redis is taken as slow and the next commands fail at once
 * instead of each waiting out its own deadline (a call that counts several rules waited for each
 * in turn): one of them goes to Redis every `probeEveryMs`, or as soon as a late answer shows
 * Redis is back, and waits for its answer within the deadline; the first such answer ends it.
 *
 * @internal
 */
export interface BoundedCommands {
  /** Runs `command`; rejects when it fails, outlasts the deadline, or too many already wait. */
  run<T>(command: () => Promise<T>): Promise<T>;
  /** Commands sent that Redis has not answered yet, as far as this process can tell. */
  readonly pending: number;
}

/** What the cap listens to on the client: the end of a connection drops what it queued. */
export interface CommandsConnection {
  on(event: 'close', listener: () => void): unknown;
}

/** How often a command goes to a Redis taken as slow, to learn when it answers in time again. */
export const PROBE_EVERY_MS = 1_000;

/**
 * How many times a command's deadline starts over because this process, not Redis, held it
 * back: bounded, so that a process busy for good still fails the commands of a hung Redis.
 */
const MAX_RESTARTS = 3;

/**
 * Commands of one store, `timeoutMs` each, at most `maxPending` waiting at once. `connection`
 * (the ioredis client) tells when a connection ends, taking its queued commands with it; while
 * Redis is taken as slow, one command every `probeEveryMs` goes to learn when it answers again.
 *
 * @example
 * ```ts
 * const commands = boundedCommands(250, 10_000, redis);
 * const exists = await commands.run(() => redis.exists('fluxguard:jti:abc'));
 * ```
 *
 * @internal
 */
export function boundedCommands(
  timeoutMs: number,
  maxPending: number,
  connection?: Partial<CommandsConnection>,
  probeEveryMs: number = PROBE_EVERY_MS,
): BoundedCommands {
  let sent = 0;
  let inFlight = 0;
  // Commands the client gave up on (its `commandTimeout`) that are still in its queue, oldest
  // first: they leave it when Redis answers them or a later command.
  let timedOut: number[] = [];
  let head = 0;
  const waitingTimedOut = (): number => timedOut.length - head;
  const answeredThrough = (id: number): void => {
    while (head < timedOut.length && (timedOut[head] ?? 0) < id) head += 1;
    if (head > 1_024 && head * 2 > timedOut.length) {
      timedOut = timedOut.slice(head);
      head = 0;
    }
  };
  const forgetQueued = (): void => {
    timedOut = [];
    head = 0;
  };
  // Set while Redis is taken as slow: the time from which the next command may go as a probe.
  let slowProbeAt: number | undefined;
  let probing = false;

  const send = <T>(command: () => Promise<T>): Promise<T> => {
    // At the cap, one command may still go when none is in flight: only an answer tells that
    // the commands the client gave up on have left its queue.
    if (inFlight + waitingTimedOut() >= maxPending && inFlight > 0) {
      return Promise.reject(new Error(`${String(maxPending)} Redis commands are already waiting for an answer`));
    }
    let answer: Promise<T>;
    try {
      answer = command();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error('the Redis command failed'));
    }
    sent += 1;
    const id = sent;
    inFlight += 1;
    // Whether the deadline passed before the answer came, and whether either has happened.
    let late = false;
    let done = false;
    const settled = (slow: boolean): void => {
      inFlight -= 1;
      if (slow) slowProbeAt = Date.now() + probeEveryMs;
      else if (!late) slowProbeAt = undefined;
      // A late answer shows Redis is answering again: the next command may go as a probe.
      else if (slowProbeAt !== undefined) slowProbeAt = 0;
    };
    answer.then(
      () => {
        settled(false);
        answeredThrough(id);
      },
      (error: unknown) => {
        // Refused before it was sent, or dropped with its connection: nothing is left queued.
        // A reply error is an answer, but tells nothing the next answer will not.
        const clientTimeout = isClientTimeout(error);
        settled(clientTimeout);
        if (clientTimeout) timedOut.push(id);
      },
    );
    return new Promise<T>((resolve, reject) => {
      let restarts = 0;
      const expire = (): void => {
        if (done) return;
        done = true;
        late = true;
        slowProbeAt = Date.now() + probeEveryMs;
        reject(new Error(`Redis took longer than ${String(timeoutMs)} ms`));
      };
      const arm = (): NodeJS.Timeout => {
        const due = Date.now() + timeoutMs;
        return setTimeout(() => {
          const heldBack = Date.now() - due;
          // An answer that came while the event loop was busy is read in this turn's poll phase,
          // which runs before setImmediate callbacks: only a Redis that really is slow fails.
          setImmediate(() => {
            if (done) return;
            // A timer this process held back by over half a deadline says the process was busy,
            // and a command it had yet to write (a script's EVAL after NOSCRIPT, a Cluster
            // redirection, both sent once the first answer is read) has not reached Redis:
            // Redis gets a deadline of its own from now, at most MAX_RESTARTS times.
            if (heldBack * 2 > timeoutMs && restarts < MAX_RESTARTS) {
              restarts += 1;
              timer = arm();
              return;
            }
            expire();
          });
        }, timeoutMs);
      };
      // The deadline starts once this turn is over: ioredis's auto-pipelining writes the
      // command from a setImmediate queued before this one, so a long turn is not Redis's time.
      let timer: NodeJS.Timeout | undefined;
      setImmediate(() => {
        if (!done) timer = arm();
      });
      answer.then(
        (value) => {
          done = true;
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          done = true;
          clearTimeout(timer);
          reject(error instanceof Error ? error : new Error('the Redis command failed'));
        },
      );
    });
  };

  const commands: BoundedCommands = {
    get pending() {
      return inFlight + waitingTimedOut();
    },
    run<T>(command: () => Promise<T>): Promise<T> {
      if (slowProbeAt === undefined) return send(command);
      if (!probing && Date.now() >= slowProbeAt) {
        // The probe is a real call that waits for its answer, within the deadline: refusing it
        // would fail (or count locally) the first call Redis could have answered.
        probing = true;
        return send(command).finally(() => {
          probing = false;
        });
      }
      return Promise.reject(
        new Error(`Redis did not answer within ${String(timeoutMs)} ms; waiting for it to answer again`),
      );
    },
  };
  // One listener per client: a store made per request, by mistake, would otherwise pile up a
  // listener per store on a client that outlives them, until Node warned of a leak.
  if (typeof connection?.on === 'function')
    listenWeakly(connection as CommandsConnection, 'close', commands, forgetQueued);
  return commands;
}

/** ioredis's `commandTimeout` rejection, also as the cause of a limiter's own error. */
function isClientTimeout(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if (current.message === 'Command timed out') return true;
    current = current.cause;
  }
  return false;
}

let warnedOfClientTimeout = false;

/**
 * Warns once per process when an ioredis client has its own `commandTimeout`: its timer runs in
 * the timers phase, before the poll phase reads a reply that came during a busy turn, so under
 * load it fails commands Redis answered in time, and the stores fall back as if Redis were down.
 *
 * @example
 * ```ts
 * warnOfClientTimeout(client, 'createRedisDenylist');
 * ```
 *
 * @internal
 */
export function warnOfClientTimeout(client: unknown, where: string): void {
  if (warnedOfClientTimeout) return;
  const options = (client as { options?: { commandTimeout?: unknown } } | null)?.options;
  if (typeof options?.commandTimeout !== 'number') return;
  warnedOfClientTimeout = true;
  process.emitWarning(
    `${where}: the ioredis client has a commandTimeout, which fails commands while the event loop is busy; leave it unset ("timeoutMs" bounds each command)`,
    { code: 'FLUXGUARD_REDIS_COMMAND_TIMEOUT' },
  );
}

/**
 * Refuses an ioredis client that will never send a command: one closed already (`end`, which
 * ioredis never reconnects). Every count or revocation check would fail for good, as an outage
 * of a Redis that is up.
 *
 * @example
 * ```ts
 * refuseClosedClient(client, 'createRedisDenylist'); // throws once client.quit() has run
 * ```
 *
 * @internal
 */
export function refuseClosedClient(client: { readonly status: string }, where: string): void {
  if (client.status === 'end') {
    throw new ConfigurationError(
      `${where}: the Redis client is closed (status "end"), and ioredis never reconnects one: give an open client`,
    );
  }
}
