import type { SecureContextOptions } from 'node:tls';
import type { AuditLogger } from '../audit/audit-logger.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { assertAuditLogger } from '../audit/check.js';
import { resolveOptions } from '../options/resolve-options.js';
import { MAX_TIMER_MS } from '../options/whole-number.js';
import type { TlsMaterial } from './material.js';
import { watchTlsMaterial } from './reload.js';
import { tlsSettingsFrom, type TlsSettings, type TlsSettingsOptions } from './tls-settings.js';

/**
 * The reload options an adapter's server factory offers (`createSecureServer` of
 * `@fluxguard/express`, `createServerCredentials` of `@fluxguard/grpc`).
 *
 * @example
 * ```ts
 * import type { ReloadOptions } from '@fluxguard/core';
 * const options: ReloadOptions = { reload: true, reloadIntervalMs: 1000 };
 * ```
 */
export interface ReloadOptions {
  /**
   * Reload certificate, key, CA bundle (and CRL) when the files change on disk, without a
   * restart. Default: on when the TLS options name files (`certFile`, `keyFile`, `caFile`);
   * `true` with PEM contents or built `TlsSettings` throws.
   */
  readonly reload?: boolean | undefined;
  /** How often the files are checked, in milliseconds. Default 1000; at least 20. */
  readonly reloadIntervalMs?: number | undefined;
}

/**
 * Options of {@link createReloadingTlsSettings}.
 *
 * @example
 * ```ts
 * import type { ReloadingTlsSettingsOptions } from '@fluxguard/core/adapter';
 * const options: ReloadingTlsSettingsOptions = {
 *   audit,
 *   onUpdate: (contextOptions) => server.setSecureContext(contextOptions),
 *   where: 'createSecureServer',
 * };
 * ```
 */
export interface ReloadingTlsSettingsOptions extends ReloadOptions {
  /**
   * Where reloads (`tls.reloaded`), reload failures (`tls.reload_failed`) and material that
   * expired in use (`tls.material_expired`: the server certificate, or a CRL past its next
   * update) are logged. Required.
   */
  readonly audit: AuditLogger;
  /**
   * Hands renewed material to the transport. `contextOptions` are complete (ciphers, curves,
   * minimum version, CRL, not only key and certificates), since Node rebuilds the whole secure
   * context from them. A throw keeps the last good material and logs `tls.reload_failed`.
   */
  readonly onUpdate: (contextOptions: SecureContextOptions, material: TlsMaterial) => void;
  /**
   * The factory named in configuration errors; those of the TLS options name its `"tls"`
   * (`createSecureServer: "tls": ...`). Default `createReloadingTlsSettings` (the TLS options'
   * errors then name `createTlsSettings`).
   */
  readonly where?: string | undefined;
}

/**
 * TLS settings with their reload running, from {@link createReloadingTlsSettings}.
 *
 * @example
 * ```ts
 * const tls = createReloadingTlsSettings(tlsOptions, { audit, onUpdate });
 * https.createServer({ ...tls.settings.serverOptions, ...tls.settings.secureContextOptions(tls.current) }, app);
 * tls.close();
 * ```
 */
export interface ReloadingTlsSettings {
  /** The settings: built from the options, or the ones given. */
  readonly settings: TlsSettings;
  /**
   * The material in use: the initial files, or the last reload the transport took. Start the
   * server with `settings.secureContextOptions(current)`, not `settings.material`: the files may
   * have changed between the two reads.
   */
  readonly current: TlsMaterial;
  /** Whether the files are watched. */
  readonly reloading: boolean;
  /** Stops reloading. Idempotent; `onUpdate` is not called afterwards. */
  close(): void;
}

interface Resolved {
  readonly audit: AuditLogger | undefined;
  readonly reload: boolean | undefined;
  readonly reloadIntervalMs: number;
  readonly onUpdate: ((contextOptions: SecureContextOptions, material: TlsMaterial) => void) | undefined;
  readonly where: string;
}

const FACTORY = 'createReloadingTlsSettings';

const DEFAULTS: Resolved = Object.freeze({
  audit: undefined,
  reload: undefined,
  reloadIntervalMs: 1000,
  onUpdate: undefined,
  where: FACTORY,
});

/**
 * The TLS settings of a server together with their reload without restart, for adapters: builds
 * `createTlsSettings(tls)` when given options, and when those name files (unless `reload` is
 * `false`) watches them (`watchTlsMaterial`), handing each renewed, valid set to `onUpdate` as
 * complete secure-context options and logging `tls.reloaded`; a broken set, or an `onUpdate`
 * that throws, keeps the last good material and logs `tls.reload_failed`. Asking for `reload`
 * with PEM contents or built settings throws, since there is nothing to watch.
 *
 * @throws ConfigurationError on bad options or unreadable, mismatched or invalid material.
 *
 * @example
 * ```ts
 * import https from 'node:https';
 * import { createReloadingTlsSettings } from '@fluxguard/core/adapter';
 * let server: https.Server | undefined;
 * const tls = createReloadingTlsSettings(
 *   { certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt', clientCertificates: 'strict' },
 *   { audit, onUpdate: (contextOptions) => server?.setSecureContext(contextOptions) },
 * );
 * server = https.createServer({ ...tls.settings.serverOptions, ...tls.settings.secureContextOptions(tls.current) }, app);
 * server.once('close', () => tls.close());
 * ```
 */
export function createReloadingTlsSettings(
  tls: TlsSettingsOptions | TlsSettings,
  options: ReloadingTlsSettingsOptions,
): ReloadingTlsSettings {
  // Also from plain JavaScript, where the second argument can be left out.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigurationError(`${FACTORY}: options must be an object with "audit" and "onUpdate"`);
  }
  const where = typeof options.where === 'string' && options.where.length > 0 ? options.where : FACTORY;
  const o = resolveOptions<Resolved>(where, DEFAULTS, options);
  const audit = o.audit;
  assertAuditLogger(audit, where);
  const onUpdate = o.onUpdate;
  if (typeof onUpdate !== 'function') throw new ConfigurationError(`${where}: "onUpdate" must be a function`);
  if (o.reload !== undefined && typeof o.reload !== 'boolean') {
    throw new ConfigurationError(`${where}: "reload" must be a boolean`);
  }
  if (!Number.isFinite(o.reloadIntervalMs) || o.reloadIntervalMs < 20 || o.reloadIntervalMs > MAX_TIMER_MS) {
    throw new ConfigurationError(
      `${where}: "reloadIntervalMs" must be a number of milliseconds, from 20 to ${String(MAX_TIMER_MS)}`,
    );
  }
  // Options also come from plain JavaScript.
  const given: unknown = tls;
  if (typeof given !== 'object' || given === null) {
    throw new ConfigurationError(`${where}: the TLS options are required (createTlsSettings options or settings)`);
  }
  const built = isTlsSettings(tls);
  // Named as the option of the factory that was given them, when one says so.
  const settings = built ? tls : tlsSettingsFrom(tls, where === FACTORY ? 'createTlsSettings' : `${where}: "tls"`);
  const files = built ? undefined : tls;
  const certFile = files?.certFile;
  const keyFile = files?.keyFile;
  const caFile = files?.caFile;
  const canReload = certFile !== undefined && keyFile !== undefined && caFile !== undefined;
  if (o.reload === true && !canReload) {
    throw new ConfigurationError(
      `${where}: "reload" needs the TLS options to name files (certFile, keyFile, caFile), not PEM contents or built settings`,
    );
  }
  if (o.reload !== false && !canReload && [certFile, keyFile, caFile, files?.crlFile].some((f) => f !== undefined)) {
    // Read once and never again: a renewed file (a CRL, say) would be silently ignored.
    throw new ConfigurationError(
      `${where}: some TLS material is named as files and some given as contents, so the files would never be reloaded: name certFile, keyFile and caFile as files, or set reload: false`,
    );
  }
  if ((!canReload || o.reload === false) && options.reloadIntervalMs !== undefined) {
    throw new ConfigurationError(
      `${where}: "reloadIntervalMs" is read only while files are reloaded, and they are not`,
    );
  }
  if (!canReload || o.reload === false) {
    return Object.freeze({
      settings,
      current: settings.material,
      reloading: false,
      close: () => undefined,
    });
  }

  let current = settings.material;
  const failed = (err: unknown): void => {
    audit.logger.error({ event: 'tls.reload_failed', err }, 'tls.reload_failed');
  };
  const watcher = watchTlsMaterial({
    certFile,
    keyFile,
    caFile,
    crlFile: files?.crlFile,
    intervalMs: o.reloadIntervalMs,
    onUpdate: (material) => {
      try {
        onUpdate(settings.secureContextOptions(material), material);
        current = material;
        audit.logger.info(
          { event: 'tls.reloaded', certFingerprint256: material.certFingerprint256, certValidTo: material.certValidTo },
          'tls.reloaded',
        );
      } catch (err) {
        failed(err);
      }
    },
    onError: failed,
    onExpired: (err) => {
      audit.logger.error({ event: 'tls.material_expired', err }, 'tls.material_expired');
    },
  });
  // The watcher's first read is the baseline it compares later files to, and what the server
  // starts with. Its callbacks run from a timer, after this line.
  current = watcher.current;
  return Object.freeze({
    settings,
    get current() {
      return current;
    },
    reloading: true,
    close: () => {
      watcher.close();
    },
  });
}

function isTlsSettings(value: TlsSettingsOptions | TlsSettings): value is TlsSettings {
  return typeof (value as Partial<TlsSettings>).secureContextOptions === 'function';
}
