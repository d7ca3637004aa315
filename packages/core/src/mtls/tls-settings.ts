import type { SecureContextOptions } from 'node:tls';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { TLS_CIPHERS } from './ciphers.js';
import {
  crlList,
  pickSource,
  readMaterialSync,
  validateMaterial,
  type MaterialSources,
  type TlsMaterial,
} from './material.js';

/**
 * How client certificates are handled.
 *
 * - `strict`: the handshake itself refuses a client without a certificate, or with one that does
 *   not verify against the CA bundle (or is revoked, expired, not yet valid).
 * - `per-operation`: the handshake asks for a certificate but completes without one (or with
 *   one that does not verify: `socket.authorized === false`); the policy decides per operation,
 *   so health can stay public on an mTLS port. Identity is then read only from authorized
 *   connections (see `identityFromTlsSocket`).
 *
 * @example
 * ```ts
 * import type { ClientCertificateMode } from '@fluxguard/core';
 * const clientCertificates: ClientCertificateMode = 'per-operation'; // health stays public on the mTLS port
 * ```
 */
export type ClientCertificateMode = 'strict' | 'per-operation';

/**
 * The lowest TLS version accepted. 1.0 and 1.1 are never offered.
 *
 * @example
 * ```ts
 * import type { TlsMinVersion } from '@fluxguard/core';
 * const minVersion: TlsMinVersion = 'TLSv1.3';
 * ```
 */
export type TlsMinVersion = 'TLSv1.2' | 'TLSv1.3';

/**
 * Options of {@link createTlsSettings}. Each of certificate, key and CA is given either as a
 * file (`certFile`) or as PEM contents (`cert`), not both.
 *
 * @example
 * ```ts
 * import type { TlsSettingsOptions } from '@fluxguard/core';
 * const options: TlsSettingsOptions = {
 *   certFile: '.fluxguard/dev/server.crt',
 *   keyFile: '.fluxguard/dev/server.key',
 *   caFile: '.fluxguard/dev/ca.crt',
 *   clientCertificates: 'per-operation',
 * };
 * ```
 */
export interface TlsSettingsOptions {
  /** Required, no default: whether the handshake refuses clients without a valid certificate. */
  readonly clientCertificates: ClientCertificateMode;
  /** Path of the server certificate (PEM, optionally followed by its chain). This or `cert` is required. */
  readonly certFile?: string | undefined;
  /** Path of the server's private key (PEM, unencrypted); it must match the certificate. This or `key` is required. */
  readonly keyFile?: string | undefined;
  /**
   * Path of the CA bundle (PEM, one or more certificates) that client certificates are verified
   * against. This or `ca` is required.
   */
  readonly caFile?: string | undefined;
  /** Optional CRL file (PEM). When set, OpenSSL requires a CRL for every CA in the chain. */
  readonly crlFile?: string | undefined;
  /** The server certificate as PEM text or bytes, instead of `certFile`. */
  readonly cert?: string | Uint8Array | undefined;
  /** The server's private key as PEM text or bytes, instead of `keyFile`. */
  readonly key?: string | Uint8Array | undefined;
  /** The CA bundle as PEM text or bytes, instead of `caFile`. */
  readonly ca?: string | Uint8Array | undefined;
  /** The CRL(s) as PEM text or bytes, instead of `crlFile`; optional. */
  readonly crl?: string | Uint8Array | undefined;
  /** Default `TLSv1.2` (TLS 1.3 is preferred whenever the client offers it). */
  readonly minVersion?: TlsMinVersion | undefined;
}

/**
 * Node `tls.createServer` / `https.createServer` options: spread them into the server's options.
 *
 * @example
 * ```ts
 * import https from 'node:https';
 * const server = https.createServer({ ...settings.serverOptions }, app);
 * ```
 */
export interface TlsServerOptions {
  /** The lowest TLS version accepted, from the `minVersion` option. */
  readonly minVersion: TlsMinVersion;
  /** {@link TLS_CIPHERS}: ECDHE + AEAD suites only, at OpenSSL security level 2. */
  readonly ciphers: string;
  /** The server's cipher order wins over the client's. */
  readonly honorCipherOrder: true;
  /** {@link TLS_ECDH_CURVES}, in order of preference. */
  readonly ecdhCurve: string;
  /** The server's private key (PEM). */
  readonly key: Buffer;
  /** The server certificate and its chain (PEM). */
  readonly cert: Buffer;
  /** The CA bundle that client certificates are verified against (PEM). */
  readonly ca: Buffer;
  /**
   * One entry per CRL of `crlFile` or `crl` (Node reads only the first CRL of a single buffer);
   * absent when no CRL is configured.
   */
  readonly crl?: Buffer[];
  /** A client certificate is always asked for, in both modes. */
  readonly requestCert: true;
  /**
   * True in `strict` mode only: in `per-operation` mode the handshake completes without a valid
   * client certificate and the policy decides per operation.
   */
  readonly rejectUnauthorized: boolean;
}

/**
 * The material in the shapes grpc-js takes: `ServerCredentials.createSsl(rootCerts,
 * keyCertPairs, checkClientCertificate)` and certificate-provider updates (`caCertificate`,
 * `certificate`, `privateKey`). grpc-js sets neither CRL nor cipher list nor minimum version
 * from these; `serverOptions` carries them for an adapter that builds its own credentials.
 *
 * @example
 * ```ts
 * import { ServerCredentials } from '@grpc/grpc-js';
 * const { rootCerts, keyCertPairs, checkClientCertificate } = settings.grpc;
 * const creds = ServerCredentials.createSsl(rootCerts, [...keyCertPairs], checkClientCertificate);
 * ```
 */
export interface GrpcTlsMaterial {
  /** The CA bundle, for `createSsl`'s first argument. */
  readonly rootCerts: Buffer;
  /** The server's one key and certificate chain, for `createSsl`'s second argument. */
  readonly keyCertPairs: readonly { readonly private_key: Buffer; readonly cert_chain: Buffer }[];
  /** True in strict mode. grpc-js `createSsl(..., false)` would not even ask for a certificate. */
  readonly checkClientCertificate: boolean;
  /** The CA bundle, for a certificate-provider update. */
  readonly caCertificate: Buffer;
  /** The server certificate and its chain, for a certificate-provider update. */
  readonly certificate: Buffer;
  /** The server's private key, for a certificate-provider update. */
  readonly privateKey: Buffer;
}

/**
 * Validated TLS settings for both transports, built by {@link createTlsSettings}.
 *
 * @example
 * ```ts
 * const settings = createTlsSettings({ ...files, clientCertificates: 'strict' });
 * const server = tls.createServer(settings.serverOptions);
 * ```
 */
export interface TlsSettings {
  /** The client-certificate mode the settings were built with. */
  readonly clientCertificates: ClientCertificateMode;
  /** The lowest TLS version accepted: the `minVersion` option, `TLSv1.2` by default. */
  readonly minVersion: TlsMinVersion;
  /** The validated material the settings were built from (PEM bytes, fingerprint, expiry). */
  readonly material: TlsMaterial;
  /** For `tls.createServer` / `https.createServer`. */
  readonly serverOptions: TlsServerOptions;
  /** For grpc-js. */
  readonly grpc: GrpcTlsMaterial;
  /**
   * Complete options for `server.setSecureContext(...)` with new material (from
   * `watchTlsMaterial`). Node rebuilds the whole secure context from what it is given, so these
   * repeat ciphers, curves, minimum version and CRL, not only key and certificates.
   */
  secureContextOptions(material?: TlsMaterial): SecureContextOptions;
}

export { TLS_CIPHERS } from './ciphers.js';

/**
 * Key-exchange groups, in order of preference.
 *
 * @example
 * ```ts
 * import { TLS_ECDH_CURVES } from '@fluxguard/core/adapter';
 * TLS_ECDH_CURVES; // 'X25519:P-256:P-384'
 * ```
 */
export const TLS_ECDH_CURVES = 'X25519:P-256:P-384';

interface ResolvedTlsSettingsOptions {
  readonly clientCertificates: ClientCertificateMode | undefined;
  readonly minVersion: TlsMinVersion;
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  readonly caFile: string | undefined;
  readonly crlFile: string | undefined;
  readonly cert: string | Uint8Array | undefined;
  readonly key: string | Uint8Array | undefined;
  readonly ca: string | Uint8Array | undefined;
  readonly crl: string | Uint8Array | undefined;
}

const DEFAULTS: ResolvedTlsSettingsOptions = Object.freeze({
  clientCertificates: undefined,
  minVersion: 'TLSv1.2',
  certFile: undefined,
  keyFile: undefined,
  caFile: undefined,
  crlFile: undefined,
  cert: undefined,
  key: undefined,
  ca: undefined,
  crl: undefined,
});

const FACTORY = 'createTlsSettings';

/**
 * Builds hardened server TLS settings for both transports, validated once: files readable,
 * certificate and key parse and match, CA bundle parses, CRL parses, OpenSSL accepts the set.
 * Errors are `ConfigurationError`s that name the option (and file), never key material.
 *
 * TLS 1.2 minimum (1.3 negotiated whenever the client offers it), ECDHE + AEAD suites only,
 * server cipher order, a client certificate always requested and verified against `ca`.
 *
 * @throws ConfigurationError on a missing or unknown option, an unreadable or mismatched file.
 *
 * @example
 * ```ts
 * import https from 'node:https';
 * import { createTlsSettings } from '@fluxguard/core/adapter';
 * const tls = createTlsSettings({
 *   certFile: 'server.crt', keyFile: 'server.key', caFile: 'ca.crt',
 *   clientCertificates: 'strict',
 * });
 * https.createServer({ ...tls.serverOptions }, app).listen(8443);
 * ```
 */
export function createTlsSettings(options: TlsSettingsOptions): TlsSettings {
  return tlsSettingsFrom(options, FACTORY);
}

/**
 * {@link createTlsSettings}, whose errors name `where`: the option of the server factory the
 * TLS options were given to (`createSecureServer: "tls"`).
 *
 * @internal
 */
export function tlsSettingsFrom(options: TlsSettingsOptions, where: string): TlsSettings {
  const o = resolveOptions<ResolvedTlsSettingsOptions>(where, DEFAULTS, options);
  const mode = o.clientCertificates;
  if (mode !== 'strict' && mode !== 'per-operation') {
    throw new ConfigurationError(`${where}: "clientCertificates" is required and must be "strict" or "per-operation"`);
  }
  const minVersion: unknown = o.minVersion; // options also come from plain JavaScript and JSON
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') {
    throw new ConfigurationError(`${where}: "minVersion" must be "TLSv1.2" or "TLSv1.3"`);
  }
  const sources = tlsMaterialSources(where, o);
  const material = validateMaterial(where, sources, readMaterialSync(where, sources));
  return buildTlsSettings(mode, minVersion, material);
}

function buildTlsSettings(mode: ClientCertificateMode, minVersion: TlsMinVersion, material: TlsMaterial): TlsSettings {
  const contextOptions = (m: TlsMaterial): SecureContextOptions => ({
    minVersion,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    ecdhCurve: TLS_ECDH_CURVES,
    key: m.key,
    cert: m.cert,
    ca: m.ca,
    ...(m.crl === undefined ? {} : { crl: crlList(Buffer.from(m.crl)) }),
  });
  const serverOptions: TlsServerOptions = Object.freeze({
    minVersion,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    ecdhCurve: TLS_ECDH_CURVES,
    key: material.key,
    cert: material.cert,
    ca: material.ca,
    ...(material.crl === undefined ? {} : { crl: crlList(Buffer.from(material.crl)) }),
    requestCert: true,
    rejectUnauthorized: mode === 'strict',
  });
  const grpc: GrpcTlsMaterial = Object.freeze({
    rootCerts: material.ca,
    keyCertPairs: Object.freeze([Object.freeze({ private_key: material.key, cert_chain: material.cert })]),
    checkClientCertificate: mode === 'strict',
    caCertificate: material.ca,
    certificate: material.cert,
    privateKey: material.key,
  });
  return Object.freeze({
    clientCertificates: mode,
    minVersion,
    material,
    serverOptions,
    grpc,
    secureContextOptions: (m: TlsMaterial = material) => contextOptions(m),
  });
}

function tlsMaterialSources(where: string, o: ResolvedTlsSettingsOptions): MaterialSources {
  const pick = (
    fileOption: string,
    file: string | undefined,
    option: string,
    contents: string | Uint8Array | undefined,
  ) => pickSource(where, fileOption, file, option, contents);
  const required = (
    fileOption: string,
    file: string | undefined,
    option: string,
    contents: string | Uint8Array | undefined,
  ) => {
    const source = pick(fileOption, file, option, contents);
    if (source === undefined) throw new ConfigurationError(`${where}: "${fileOption}" (or "${option}") is required`);
    return source;
  };
  return {
    cert: required('certFile', o.certFile, 'cert', o.cert),
    key: required('keyFile', o.keyFile, 'key', o.key),
    ca: required('caFile', o.caFile, 'ca', o.ca),
    crl: pick('crlFile', o.crlFile, 'crl', o.crl),
  };
}
