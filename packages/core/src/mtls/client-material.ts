import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkCaBundle, pickSource, readSourceSync, validateMaterial, type MaterialSource } from './material.js';
import { TLS_CIPHERS, type TlsMinVersion } from './tls-settings.js';

/**
 * The TLS options every fluxguard client takes (the undici agent of `@fluxguard/express`, the
 * grpc-js credentials of `@fluxguard/grpc`). Each of the CA bundle, certificate and key is given
 * either as a file (`caFile`) or as PEM contents (`ca`), not both.
 *
 * @example
 * ```ts
 * import type { ClientTlsOptions } from '@fluxguard/core';
 * const options: ClientTlsOptions = { caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' };
 * ```
 */
export interface ClientTlsOptions {
  /** The CA bundle the server's certificate must chain to. Required: the server is always verified. */
  readonly caFile?: string | undefined;
  /** The CA bundle as PEM text or bytes, instead of `caFile`. */
  readonly ca?: string | Uint8Array | undefined;
  /** The client certificate (PEM, chain allowed), for mTLS. Optional, with its key: without, no certificate is offered. */
  readonly certFile?: string | undefined;
  /** The client certificate as PEM text or bytes, instead of `certFile`. */
  readonly cert?: string | Uint8Array | undefined;
  /** The client's private key (PEM, unencrypted). */
  readonly keyFile?: string | undefined;
  /** The client's private key as PEM text or bytes, instead of `keyFile`. */
  readonly key?: string | Uint8Array | undefined;
  /** Default `TLSv1.2`. */
  readonly minVersion?: TlsMinVersion | undefined;
}

/**
 * The names of the {@link ClientTlsOptions}: a client factory passes them to `resolveOptions`
 * as known keys, so that a misspelt TLS option is refused with a hint.
 *
 * @example
 * ```ts
 * import { CLIENT_TLS_OPTION_NAMES, resolveOptions } from '@fluxguard/core/adapter';
 * const o = resolveOptions('createMyClient', { timeoutMs: 5000 }, options, CLIENT_TLS_OPTION_NAMES);
 * ```
 */
export const CLIENT_TLS_OPTION_NAMES: readonly (keyof ClientTlsOptions)[] = Object.freeze([
  'caFile',
  'ca',
  'certFile',
  'cert',
  'keyFile',
  'key',
  'minVersion',
]);

/**
 * Validated client TLS material, as PEM bytes, with the TLS settings a client applies.
 *
 * @example
 * ```ts
 * import { createSecureContext } from 'node:tls';
 * const { ca, cert, key, minVersion, ciphers } = loadClientTlsMaterial(options, 'createMyClient');
 * const context = createSecureContext({ ca, cert, key, minVersion, ciphers });
 * ```
 */
export interface ClientTlsMaterial {
  /** The CA bundle (PEM, one or more certificates) the server's certificate must chain to. */
  readonly ca: Buffer;
  /** The client certificate (PEM, chain allowed), or `undefined` when none is offered. */
  readonly cert: Buffer | undefined;
  /** The client's private key (PEM), given exactly when `cert` is. */
  readonly key: Buffer | undefined;
  /** The lowest TLS version the client accepts: `minVersion`, `TLSv1.2` by default. */
  readonly minVersion: TlsMinVersion;
  /** fluxguard's cipher suites ({@link TLS_CIPHERS}). */
  readonly ciphers: string;
}

type Part = 'ca' | 'cert' | 'key';

/** Where one part comes from (`<part>File` or `<part>`, at most one). */
function sourceOf(where: string, options: ClientTlsOptions, part: Part): MaterialSource | undefined {
  return pickSource(where, `${part}File`, options[`${part}File`], part, options[part]);
}

/**
 * Reads and checks a client's TLS material once, at construction: the CA bundle is required
 * (the server is always verified) and each of its certificates parses; a client certificate
 * and its key come together or not at all, and when given they parse, match, and OpenSSL
 * accepts them with the CA bundle. Errors are `ConfigurationError`s prefixed with `where` (the
 * calling factory) that name the option and file, never key bytes.
 *
 * Unknown keys are not checked here: the calling factory does, with `resolveOptions` and
 * {@link CLIENT_TLS_OPTION_NAMES}.
 *
 * @throws ConfigurationError on a missing, duplicated, unreadable or mismatched part, or a bad `minVersion`.
 *
 * @example
 * ```ts
 * import { loadClientTlsMaterial } from '@fluxguard/core/adapter';
 * const tls = loadClientTlsMaterial({ caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' }, 'createMyClient');
 * tls.cert !== undefined; // true: the client offers its certificate
 * ```
 */
export function loadClientTlsMaterial(options: ClientTlsOptions, where: string): ClientTlsMaterial {
  const minVersion: unknown = options.minVersion ?? 'TLSv1.2'; // options also come from plain JavaScript
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') {
    throw new ConfigurationError(`${where}: "minVersion" must be "TLSv1.2" or "TLSv1.3"`);
  }
  const caSource = sourceOf(where, options, 'ca');
  const certSource = sourceOf(where, options, 'cert');
  const keySource = sourceOf(where, options, 'key');
  if (caSource === undefined) {
    throw new ConfigurationError(`${where}: "caFile" or "ca" is required: the server's certificate is always verified`);
  }
  if ((certSource === undefined) !== (keySource === undefined)) {
    throw new ConfigurationError(`${where}: give the client certificate and its key together, or neither`);
  }
  const ca = readSourceSync(where, caSource);
  checkCaBundle(where, caSource, ca);
  let cert: Buffer | undefined;
  let key: Buffer | undefined;
  if (certSource !== undefined && keySource !== undefined) {
    cert = readSourceSync(where, certSource);
    key = readSourceSync(where, keySource);
    // core's check of a certificate, its key and a CA bundle: parse, match, OpenSSL accepts the set.
    validateMaterial(
      where,
      { cert: certSource, key: keySource, ca: caSource },
      { cert, key, ca, crl: undefined },
      'client',
    );
  }
  return Object.freeze({ ca, cert, key, minVersion, ciphers: TLS_CIPHERS });
}
