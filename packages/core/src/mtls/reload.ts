import { statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { MAX_TIMER_MS } from '../options/whole-number.js';
import {
  describeSource,
  readError,
  materialDigest,
  readMaterial,
  readMaterialSync,
  validateMaterial,
  type MaterialSources,
  type TlsMaterial,
} from './material.js';

/**
 * Options of {@link watchTlsMaterial}.
 *
 * @example
 * ```ts
 * import type { WatchTlsMaterialOptions } from '@fluxguard/core/adapter';
 * const options: WatchTlsMaterialOptions = {
 *   certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt',
 *   onUpdate: (m) => server.setSecureContext(settings.secureContextOptions(m)),
 *   onError: (err) => logger.error({ err }, 'TLS reload failed; keeping the last good material'),
 * };
 * ```
 */
export interface WatchTlsMaterialOptions {
  /** Path of the server certificate (PEM, chain allowed), polled for changes. Required. */
  readonly certFile: string;
  /** Path of the server's private key (PEM, unencrypted); a new key must match the new certificate. Required. */
  readonly keyFile: string;
  /** Path of the CA bundle that client certificates are verified against, polled for changes. Required. */
  readonly caFile: string;
  /**
   * Path of the CRL file (PEM), polled like the others. Optional; when set, OpenSSL requires a CRL
   * for every CA in the chain.
   */
  readonly crlFile?: string | undefined;
  /** Called with each new, validated set of material (not for the initial one: see `current`). */
  readonly onUpdate: (material: TlsMaterial) => void;
  /** Called once per distinct failure; the last good material stays in use. */
  readonly onError: (error: Error) => void;
  /**
   * Called once when the material in use expires while no new files have been loaded: the
   * server certificate (every client refuses it) or a CRL past its `nextUpdate` (OpenSSL
   * refuses every client of its CA). Nothing can be served until new files are; this says why.
   * Default: nothing is called.
   */
  readonly onExpired?: ((error: ConfigurationError) => void) | undefined;
  /** How often files are checked. Default 1000 ms; at least 20 ms. */
  readonly intervalMs?: number | undefined;
}

/**
 * A running watch over TLS files, from {@link watchTlsMaterial}.
 *
 * @example
 * ```ts
 * const watcher = watchTlsMaterial({ ... });
 * watcher.current.certFingerprint256; // the material in use
 * watcher.close();
 * ```
 */
export interface TlsMaterialWatcher {
  /** The last good material: the initial files, or the latest valid update. */
  readonly current: TlsMaterial;
  /** Stops watching. Idempotent; no callback is made afterwards. */
  close(): void;
}

interface ResolvedWatchOptions {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly crlFile: string | undefined;
  readonly onUpdate: (material: TlsMaterial) => void;
  readonly onError: (error: Error) => void;
  readonly onExpired: (error: ConfigurationError) => void;
  readonly intervalMs: number;
}

const noop = (): void => undefined;

const DEFAULTS: ResolvedWatchOptions = Object.freeze({
  certFile: '',
  keyFile: '',
  caFile: '',
  crlFile: undefined,
  onUpdate: noop,
  onError: noop,
  onExpired: noop,
  intervalMs: 1000,
});

const FACTORY = 'watchTlsMaterial';

/** One running watch: its settings and what it has seen so far. */
interface Watch {
  readonly options: ResolvedWatchOptions;
  readonly sources: MaterialSources;
  readonly files: readonly string[];
  /** The last good material, and the digest of its bytes. */
  current: TlsMaterial;
  currentDigest: string;
  /** The files' signature (inode, size, mtime) last loaded or found broken. */
  seenSignature: string;
  /** A changed signature waiting to stay the same for one interval. */
  pendingSignature: string | undefined;
  /** The last failure reported, so that each is reported once. */
  lastErrorKey: string | undefined;
  closed: boolean;
  /** A poll is in progress: the next tick is skipped. */
  running: boolean;
  /** What of the material in use has been reported expired (`certificate`, `crl`). */
  readonly expired: Set<string>;
}

/**
 * Watches server certificate, key, CA bundle (and CRL) files and hands over each new, valid set
 * without a restart: adapters feed it to `server.setSecureContext` (Node `tls`/`https`) or to a
 * grpc-js certificate provider; new connections get the new material, open ones keep theirs.
 *
 * Files are polled (size, mtime, inode; then a content digest), because `fs.watch` misses files
 * replaced by rename, which is how most tools rotate certificates. A change is loaded once the
 * files have stayed the same for one interval, so that a rotation writing certificate and key
 * one after the other is not reported as a mismatch. A broken set (unreadable file, key not
 * matching the certificate, bad CA or CRL) keeps the last good material and calls `onError`
 * once per distinct failure.
 *
 * The initial files are read synchronously: an invalid initial set throws, since there is no
 * last good material to keep.
 *
 * @throws ConfigurationError on bad options or an invalid initial set of files.
 *
 * @example
 * ```ts
 * import { createTlsSettings, watchTlsMaterial } from '@fluxguard/core/adapter';
 * const files = { certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt' };
 * const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
 * const server = https.createServer({ ...settings.serverOptions }, app);
 * const watcher = watchTlsMaterial({
 *   ...files,
 *   onUpdate: (material) => server.setSecureContext(settings.secureContextOptions(material)),
 *   onError: (err) => audit.logger.error({ err }, 'TLS reload failed'),
 * });
 * server.on('close', () => watcher.close());
 * ```
 */
export function watchTlsMaterial(options: WatchTlsMaterialOptions): TlsMaterialWatcher {
  const o = resolveWatchOptions(options);
  const sources: MaterialSources = {
    cert: { option: 'certFile', file: o.certFile },
    key: { option: 'keyFile', file: o.keyFile },
    ca: { option: 'caFile', file: o.caFile },
    ...(o.crlFile === undefined ? {} : { crl: { option: 'crlFile', file: o.crlFile } }),
  };
  const files = [o.certFile, o.keyFile, o.caFile, ...(o.crlFile === undefined ? [] : [o.crlFile])];
  const initialRaw = readMaterialSync(FACTORY, sources);
  const watch: Watch = {
    options: o,
    sources,
    files,
    current: validateMaterial(FACTORY, sources, initialRaw),
    currentDigest: materialDigest(initialRaw),
    seenSignature: signatureSync(files),
    pendingSignature: undefined,
    lastErrorKey: undefined,
    closed: false,
    running: false,
    expired: new Set(),
  };

  const timer = setInterval(() => {
    runTick(watch);
  }, o.intervalMs);
  timer.unref();

  return {
    get current() {
      return watch.current;
    },
    close() {
      watch.closed = true;
      clearInterval(timer);
    },
  };
}

/** The options once checked; they also arrive from plain JavaScript, so types are checked too. */
function resolveWatchOptions(options: WatchTlsMaterialOptions): ResolvedWatchOptions {
  const o = resolveOptions<ResolvedWatchOptions>(FACTORY, DEFAULTS, options);
  for (const key of ['certFile', 'keyFile', 'caFile'] as const) {
    if (typeof o[key] !== 'string' || o[key].length === 0) {
      throw new ConfigurationError(`${FACTORY}: "${key}" is required (a file path)`);
    }
  }
  if (o.crlFile !== undefined && (typeof o.crlFile !== 'string' || o.crlFile.length === 0)) {
    throw new ConfigurationError(`${FACTORY}: "crlFile" must be a file path`);
  }
  if (typeof options.onUpdate !== 'function' || typeof options.onError !== 'function') {
    throw new ConfigurationError(`${FACTORY}: "onUpdate" and "onError" are required functions`);
  }
  if (typeof o.onExpired !== 'function') throw new ConfigurationError(`${FACTORY}: "onExpired" must be a function`);
  // Node runs a longer interval every millisecond.
  if (!Number.isFinite(o.intervalMs) || o.intervalMs < 20 || o.intervalMs > MAX_TIMER_MS) {
    throw new ConfigurationError(
      `${FACTORY}: "intervalMs" must be a number of milliseconds, from 20 to ${String(MAX_TIMER_MS)}`,
    );
  }
  return o;
}

/** One timer tick: at most one poll at a time, none after close. */
function runTick(watch: Watch): void {
  if (watch.running || watch.closed) return;
  noticeExpiry(watch, Date.now());
  watch.running = true;
  poll(watch)
    .catch((cause: unknown) => {
      report(watch, `tick:${String(cause)}`, cause instanceof Error ? cause : new Error(String(cause)));
    })
    .finally(() => {
      watch.running = false;
    });
}

/**
 * Compares the files' signature with the last one seen, and reloads once a changed signature
 * has stayed the same for one interval, so that a rotation writing certificate and key one
 * after the other is not reported as a mismatch.
 */
async function poll(watch: Watch): Promise<void> {
  let signature: string;
  try {
    signature = await signatureOf(watch.files);
  } catch (cause) {
    const { key, error } = unreadableFile(watch.options, cause);
    report(watch, key, error);
    watch.pendingSignature = undefined;
    return;
  }
  if (signature === watch.seenSignature) {
    watch.pendingSignature = undefined;
    return;
  }
  if (signature !== watch.pendingSignature) {
    watch.pendingSignature = signature;
    return;
  }
  watch.pendingSignature = undefined;
  await reload(watch, signature);
}

/** Reads and validates the files; hands over a new, valid set, or reports why there is none. */
async function reload(watch: Watch, signature: string): Promise<void> {
  let digest = '';
  try {
    const raw = await readMaterial(FACTORY, watch.sources);
    digest = materialDigest(raw);
    if (watch.closed) return;
    // Same bytes (e.g. a file touched or restored): nothing to hand over.
    if (digest === watch.currentDigest) {
      watch.seenSignature = signature;
      watch.lastErrorKey = undefined;
      return;
    }
    const material = validateMaterial(FACTORY, watch.sources, raw);
    watch.seenSignature = signature;
    watch.current = material;
    watch.expired.clear();
    watch.currentDigest = digest;
    watch.lastErrorKey = undefined;
    watch.options.onUpdate(material);
  } catch (cause) {
    // Not marked as seen: it is tried again every other tick until it loads (reported once).
    // A fix that changes no size, time or inode (a `chmod` of an unreadable file) is then
    // found, where a set retried only on a change stayed out for good: a revoking CRL too.
    const error = cause instanceof Error ? cause : new Error(String(cause));
    report(watch, `load:${digest}:${error.message}`, error);
  }
}

/**
 * Reports, once each, a server certificate or a CRL of the material in use that has expired
 * since it was loaded: the server then fails every handshake, and without a line saying why.
 */
function noticeExpiry(watch: Watch, now: number): void {
  const { current, sources } = watch;
  // The usual tick: nothing has expired, and nothing is built.
  if (current.certValidTo.getTime() > now && (current.crlNextUpdate?.getTime() ?? Infinity) > now) return;
  const expiries = [
    {
      what: 'certificate',
      at: current.certValidTo,
      text: (at: Date) =>
        `the certificate in ${describeSource(sources.cert)} expired on ${at.toUTCString()}; every client refuses it until a renewed one is loaded`,
    },
    {
      what: 'crl',
      at: current.crlNextUpdate,
      text: (at: Date) =>
        `a CRL in ${sources.crl === undefined ? 'the CRL' : describeSource(sources.crl)} passed its next update on ${at.toUTCString()}; OpenSSL refuses every client of its CA until a fresh one is loaded`,
    },
  ];
  for (const { what, at, text } of expiries) {
    if (at === undefined || at.getTime() > now || watch.expired.has(what)) continue;
    watch.expired.add(what);
    try {
      watch.options.onExpired(new ConfigurationError(`${FACTORY}: ${text(at)}`));
    } catch {
      // As for onError: a failing callback must not crash the process from a timer.
    }
  }
}

/** The error of a file that cannot be stat'ed, naming the option it came from. */
function unreadableFile(o: ResolvedWatchOptions, cause: unknown): { key: string; error: ConfigurationError } {
  const code = (cause as { code?: unknown } | null)?.code;
  const path = (cause as { path?: unknown } | null)?.path;
  const option =
    Object.entries({ certFile: o.certFile, keyFile: o.keyFile, caFile: o.caFile, crlFile: o.crlFile }).find(
      ([, file]) => file === path,
    )?.[0] ?? 'keyFile';
  return {
    key: `stat:${String(path)}:${String(code)}`,
    error: readError(FACTORY, { option, file: typeof path === 'string' ? path : undefined }, cause),
  };
}

/** Calls `onError` once per distinct failure (by `key`), never after close. */
function report(watch: Watch, key: string, error: Error): void {
  if (watch.closed || key === watch.lastErrorKey) return;
  watch.lastErrorKey = key;
  try {
    watch.options.onError(error);
  } catch {
    // A failing error callback must not crash the process from a timer; nothing else to do.
  }
}

function signatureSync(files: readonly string[]): string {
  return files
    .map((file) => {
      try {
        const s = statSync(file);
        return `${String(s.ino)}:${String(s.size)}:${String(s.mtimeMs)}`;
      } catch {
        return 'missing';
      }
    })
    .join('|');
}

async function signatureOf(files: readonly string[]): Promise<string> {
  const stats = await Promise.all(files.map((file) => stat(file)));
  return stats.map((s) => `${String(s.ino)}:${String(s.size)}:${String(s.mtimeMs)}`).join('|');
}
