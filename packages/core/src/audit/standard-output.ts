import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';
import { pino, type DestinationStream } from 'pino';
import { listenWeakly } from '../events/listen-weakly.js';

/**
 * The most bytes of lines standard output holds unwritten. Its writes are asynchronous: while
 * the reader of the pipe stalls (a log shipper that hangs, a full container log pipe), every
 * line waits in memory, and a flood of refusals from many addresses, folded or not, grew that
 * without bound.
 */
export const STDOUT_BACKLOG_BYTES = 16 * 1024 * 1024;

/**
 * How long standard output may take nothing before its writes stop holding the process open
 * (they go on, from a timer that does not), and, at exit, before the lines it still holds are
 * given up. pino retried a full pipe from a timer every 100 ms for as long as it stayed full,
 * and flushed it at exit without a bound: a server stopped while its log shipper hung never
 * ended, until it was killed.
 */
export const STALL_MS = 1_000;

/** How often a stalled standard output is tried again, from a timer that holds nothing open. */
const RETRY_STALLED_MS = 250;

/** What a line dropped past {@link STDOUT_BACKLOG_BYTES} is reported as. */
const BACKLOG_FULL = Object.assign(new Error('standard output is not being read'), { code: 'ERR_AUDIT_BACKLOG_FULL' });

/** The part of pino's standard-output stream (sonic-boom) used here. */
interface Stdout {
  write(line: string): unknown;
  flushSync(): void;
}

interface StdoutState {
  /** Set by an error no retry mends (a full disk), cleared by a write that went through. */
  failed: boolean;
  /** Bytes unwritten when a write was last refused (a full pipe), and since when none were taken. */
  pending: number;
  stalledSince: number | undefined;
  /** pino waits to try a refused write again (then `_writing` holds no write in flight). */
  waitingToRetry: boolean;
  retry: ReturnType<typeof setTimeout> | undefined;
}

/** The full-pipe errors of a stalled standard output: no line was lost, it is tried again. */
const stalledErrors = new WeakSet<object>();

let exiting = false;

/**
 * The default destination: standard output as pino writes it (asynchronously, flushed at
 * exit), holding at most {@link STDOUT_BACKLOG_BYTES} unwritten; a line past that is dropped
 * and counted as lost. Once its reader has taken nothing for {@link STALL_MS} it is tried again
 * from a timer that keeps no process alive, and at exit the flush gives up after as long without
 * progress, and says so on standard error. `undefined` when something replaced
 * `process.stdout.write` (a test runner that captures output), where pino writes through it, as
 * it does by default.
 *
 * @example
 * ```ts
 * const destination = standardOutput((error) => warnOfLostLine(error));
 * ```
 */
export function standardOutput(lineLost: (error: unknown) => void): DestinationStream | undefined {
  const stdout = process.stdout as { write: unknown; fd?: number; constructor: { prototype: { write: unknown } } };
  if (stdout.write !== stdout.constructor.prototype.write) return undefined;
  const state: StdoutState = {
    failed: false,
    pending: 0,
    stalledSince: undefined,
    waitingToRetry: false,
    retry: undefined,
  };
  const stream = pino.destination({
    // In a worker thread `fd` is undefined, and pino writes to descriptor 1 as well.
    dest: stdout.fd ?? 1,
    sync: false,
    maxLength: STDOUT_BACKLOG_BYTES,
    // A full pipe: pino tries again in 100 ms when this says so, else emits the error and
    // tries again with the next line.
    retryEAGAIN: (error: Error, writing: number, waiting: number) => {
      state.waitingToRetry = stillFlowing(state, writing + waiting);
      if (state.waitingToRetry) return true;
      if (exiting) return false;
      stalledErrors.add(error);
      state.retry ??= setTimeout(() => {
        state.retry = undefined;
        tryAgain(stream);
      }, RETRY_STALLED_MS).unref();
      return false;
    },
  });
  stream.on('drop', () => {
    lineLost(BACKLOG_FULL);
  });
  stream.on('error', (error: unknown) => {
    if (!isStalledOutput(error)) state.failed = true;
  });
  stream.on('write', () => {
    state.failed = false;
    state.waitingToRetry = false;
    state.stalledSince = undefined;
  });
  // Before pino's own listener (installed by the first stream it makes): it would flush first,
  // without a bound. Held through the stream, as pino holds it. pino flushes no stream at a
  // worker thread's exit, and neither does this.
  if (isMainThread) {
    listenWeakly(
      process,
      'exit',
      stream,
      () => {
        flushAtExit(stream, state);
      },
      { first: true },
    );
    holdAtExit(stream);
  }
  return stream;
}

/** The streams made here, held weakly; `undefined` until the first is made. */
let heldAtExit: Set<WeakRef<Stdout>> | undefined;

/**
 * Makes `stream` only gather its lines once the process exits, for its exit flush to write them
 * out. A line written at exit (the audit log's folded counts) started an asynchronous write,
 * left out of that flush as already in flight, and a process ending with its work done does
 * not wait for the thread pool that was to make it: now and then the line never came.
 */
function holdAtExit(stream: Stdout): void {
  if (heldAtExit === undefined) {
    const streams = new Set<WeakRef<Stdout>>();
    heldAtExit = streams;
    // Prepended after the listener that calls the exit callbacks (installed by the time the
    // first stream is made), so this runs before any of them writes a line.
    process.prependListener('exit', () => {
      exiting = true;
      for (const ref of streams) {
        const live = ref.deref();
        // sonic-boom 4 starts a write once it holds `minLength` bytes.
        const held = live as unknown as { minLength?: unknown } | undefined;
        if (typeof held?.minLength === 'number') held.minLength = Number.MAX_SAFE_INTEGER;
      }
    });
  }
  for (const ref of heldAtExit) if (ref.deref() === undefined) heldAtExit.delete(ref);
  heldAtExit.add(new WeakRef(stream));
}

/**
 * Whether `error` is standard output refusing a write because its reader has stalled: no line
 * is lost, and the audit logger does not count one.
 *
 * @example
 * ```ts
 * stream.on('error', (error) => { if (!isStalledOutput(error)) lineLost(error); });
 * ```
 */
export function isStalledOutput(error: unknown): boolean {
  return typeof error === 'object' && error !== null && stalledErrors.has(error);
}

/** Whether a refused write is tried again soon: standard output took some bytes within {@link STALL_MS}. */
function stillFlowing(state: StdoutState, pending: number): boolean {
  // Not the wall clock: one set back while standard output stalls held the process open.
  const now = performance.now();
  if (state.stalledSince === undefined || pending < state.pending) state.stalledSince = now;
  state.pending = pending;
  return now - state.stalledSince < STALL_MS;
}

/** Writes what a stalled standard output holds, as the next line would (an empty line adds nothing). */
function tryAgain(stream: Stdout): void {
  try {
    stream.write('');
  } catch {
    // Destroyed since: nothing more is written to it.
  }
}

function flushAtExit(stream: Stdout, state: StdoutState): void {
  exiting = true;
  clearTimeout(state.retry);
  // Its lines were reported lost as each write failed.
  const left = state.failed ? 0 : writeOutAtExit(stream, state);
  // pino's own flush at exit comes next: it would write again what was written here, or wait
  // for ever for what could not be (sonic-boom retries any error but EAGAIN without a bound).
  stream.flushSync = () => undefined;
  if (left > 0) tellLostAtExit(left);
}

/** The parts of sonic-boom 4 read at exit: the lines it holds, and its descriptor. */
interface HeldLines {
  readonly fd: number;
  readonly _writing: boolean;
  readonly _writingBuf: string | Buffer;
  readonly _bufs: readonly unknown[];
}

/**
 * Writes out synchronously what `stream` holds, as sonic-boom's `flushSync` does (the chunk of
 * a write still in flight left out, as it may have been taken), but giving up at the first
 * error other than EAGAIN, and at EAGAIN once standard output has taken nothing for
 * {@link STALL_MS}. Returns the bytes given up. A stream whose parts are not as expected (another
 * sonic-boom) is flushed by its own `flushSync`, bounded at EAGAIN only.
 */
function writeOutAtExit(stream: Stdout, state: StdoutState): number {
  const held = stream as unknown as Partial<HeldLines>;
  const { fd, _writing: writing, _writingBuf: writingBuf, _bufs: bufs } = held;
  if (
    typeof fd !== 'number' ||
    typeof writing !== 'boolean' ||
    (typeof writingBuf !== 'string' && !Buffer.isBuffer(writingBuf)) ||
    !Array.isArray(bufs) ||
    !bufs.every((buf) => typeof buf === 'string')
  ) {
    try {
      stream.flushSync();
      return 0;
    } catch {
      return state.pending;
    }
  }
  // pino's own flush leaves that chunk out whenever a write is under way, also while it only
  // waits to try it again: up to 16 KiB of lines were lost at exit without a word.
  const chunks = [...(writing && !state.waitingToRetry ? [] : [writingBuf]), ...bufs].map((chunk) =>
    typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk,
  );
  let left = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  let stalledSince: number | undefined;
  for (const chunk of chunks) {
    let offset = 0;
    while (offset < chunk.length) {
      try {
        const written = writeSync(fd, chunk, offset);
        offset += written;
        left -= written;
        stalledSince = undefined;
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'EAGAIN') {
          // A closed pipe (EPIPE), a full disk (ENOSPC): nothing more will be taken.
          return left;
        }
        const now = performance.now();
        stalledSince ??= now;
        if (now - stalledSince >= STALL_MS) return left;
        Atomics.wait(PAUSE, 0, 0, 10);
      }
    }
  }
  return 0;
}

/** What the writes at exit wait on between two refusals of a full pipe: 10 ms each. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/**
 * Says on standard error, synchronously (nothing asynchronous runs any more), that lines were
 * given up at exit: a warning emitted now would never be printed. Standard error may be stalled
 * too, and then nothing is said.
 */
function tellLostAtExit(bytes: number): void {
  const warning = `createAuditLogger: standard output did not take the last ${String(bytes)} bytes of audit lines at exit (it failed, or took nothing for ${String(STALL_MS)} ms); they are lost`;
  try {
    // As Node prints a process warning.
    writeSync(2, `(node:${String(process.pid)}) [FLUXGUARD_AUDIT_WRITE_FAILED] Warning: ${warning}\n`);
  } catch {
    // Nobody reads standard error either.
  }
}
