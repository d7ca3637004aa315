import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent } from 'undici';
import { ConfigurationError, resolveOptions, type TlsMinVersion } from '@fluxguard/core';

/**
 * Options of {@link createMtlsAgent}. Each of the CA bundle, certificate and key is given
 * either as a file (`caFile`) or as PEM contents (`ca`), not both. Times are in milliseconds.
 *
 * @example
 * ```ts
 * const options: MtlsAgentOptions = { caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' };
 * ```
 */
export interface MtlsAgentOptions {
  /** The CA bundle the server's certificate must chain to. Required: the server is always verified. */
  readonly caFile?: string | undefined;
  readonly ca?: string | Uint8Array | undefined;
  /** The client certificate (PEM, chain allowed). Optional, with its key: without, no certificate is offered. */
  readonly certFile?: string | undefined;
  readonly cert?: string | Uint8Array | undefined;
  /** The client's private key (PEM, unencrypted). */
  readonly keyFile?: string | undefined;
  readonly key?: string | Uint8Array | undefined;
  /** Server name for SNI and certificate checks when it differs from the URL's host. */
  readonly servername?: string | undefined;
  /** Default `TLSv1.2`. */
  readonly minVersion?: TlsMinVersion | undefined;
  /** TCP and TLS handshake. Default 10 000. */
  readonly connectTimeoutMs?: number | undefined;
  /** From the request sent to the response headers. Default 30 000. */
  readonly headersTimeoutMs?: number | undefined;
  /** Between two chunks of the response body. Default 30 000. */
  readonly bodyTimeoutMs?: number | undefined;
}

interface Resolved {
  readonly caFile: string | undefined;
  readonly ca: string | Uint8Array | undefined;
  readonly certFile: string | undefined;
  readonly cert: string | Uint8Array | undefined;
  readonly keyFile: string | undefined;
  readonly key: string | Uint8Array | undefined;
  readonly servername: string | undefined;
  readonly minVersion: TlsMinVersion;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
}

const DEFAULTS: Resolved = Object.freeze({
  caFile: undefined,
  ca: undefined,
  certFile: undefined,
  cert: undefined,
  keyFile: undefined,
  key: undefined,
  servername: undefined,
  minVersion: 'TLSv1.2',
  connectTimeoutMs: 10_000,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 30_000,
});

const FACTORY = 'createMtlsAgent';

function load(o: Resolved, name: 'ca' | 'cert' | 'key'): Buffer | undefined {
  const file = o[`${name}File`];
  const contents = o[name];
  if (file !== undefined && contents !== undefined) {
    throw new ConfigurationError(`${FACTORY}: give "${name}File" or "${name}", not both`);
  }
  if (file !== undefined) {
    if (typeof file !== 'string' || file === '')
      throw new ConfigurationError(`${FACTORY}: "${name}File" must be a file path`);
    try {
      return readFileSync(file);
    } catch (cause) {
      const code = (cause as { code?: unknown } | null)?.code;
      throw new ConfigurationError(
        `${FACTORY}: cannot read "${name}File" (${file})${typeof code === 'string' ? ` (${code})` : ''}`,
        { cause },
      );
    }
  }
  if (contents === undefined) return undefined;
  if (typeof contents === 'string') return Buffer.from(contents);
  if (contents instanceof Uint8Array) return Buffer.from(contents);
  throw new ConfigurationError(`${FACTORY}: "${name}" must be PEM text or bytes`);
}

function parse<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    // The library's text may quote the input; the option name says enough.
    throw new ConfigurationError(`${FACTORY}: ${what}`, { cause });
  }
}

function timeout(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigurationError(`${FACTORY}: "${name}" must be a positive whole number of milliseconds`);
  }
  return value;
}

/**
 * An undici `Agent` for calling an mTLS service: the server's certificate is always verified
 * against `ca` (never `rejectUnauthorized: false`), TLS 1.2 at least, the client certificate
 * offered when given, and timeouts on connecting, on the response headers and between body
 * chunks so that a stalled server cannot hang the caller. Files are read and checked now
 * (certificate and key parse and match), with a `ConfigurationError` naming the option.
 *
 * Use it with undici's own `fetch` (`import { fetch } from 'undici'`): the global `fetch` of
 * Node 20 is an older bundled undici that does not take this `Agent` as its `dispatcher`.
 * Close it (`await agent.close()`) when done, to free its connections.
 *
 * @example
 * ```ts
 * import { fetch } from 'undici';
 * import { createMtlsAgent } from '@fluxguard/express';
 *
 * const dispatcher = createMtlsAgent({ caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' });
 * const res = await fetch('https://127.0.0.1:8443/v1/artifacts', {
 *   dispatcher,
 *   headers: { authorization: `Bearer ${token}` },
 * });
 * await dispatcher.close();
 * ```
 */
export function createMtlsAgent(options: MtlsAgentOptions): Agent {
  const o = resolveOptions<Resolved>(FACTORY, DEFAULTS, options);
  const ca = load(o, 'ca');
  const cert = load(o, 'cert');
  const key = load(o, 'key');
  if (ca === undefined) {
    throw new ConfigurationError(
      `${FACTORY}: "caFile" or "ca" is required: the server's certificate is always verified`,
    );
  }
  const authorities =
    ca.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (authorities.length === 0) throw new ConfigurationError(`${FACTORY}: "ca" holds no PEM certificate`);
  for (const pem of authorities) parse('"ca" holds a certificate that does not parse', () => new X509Certificate(pem));
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigurationError(`${FACTORY}: give the client certificate and its key together, or neither`);
  }
  if (cert !== undefined && key !== undefined) {
    const certificate = parse('"cert" is not a PEM certificate', () => new X509Certificate(cert));
    const privateKey: KeyObject = parse('"key" is not an unencrypted PEM private key', () => createPrivateKey(key));
    if (!certificate.checkPrivateKey(privateKey)) {
      throw new ConfigurationError(`${FACTORY}: "key" does not match the certificate of "cert"`);
    }
  }
  const minVersion: unknown = o.minVersion; // options may come from plain JavaScript
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') {
    throw new ConfigurationError(`${FACTORY}: "minVersion" must be "TLSv1.2" or "TLSv1.3"`);
  }
  if (o.servername !== undefined && (typeof o.servername !== 'string' || o.servername === '')) {
    throw new ConfigurationError(`${FACTORY}: "servername" must be a host name`);
  }
  return new Agent({
    connect: {
      ca,
      ...(cert === undefined || key === undefined ? {} : { cert, key }),
      ...(o.servername === undefined ? {} : { servername: o.servername }),
      minVersion: o.minVersion,
      rejectUnauthorized: true,
      timeout: timeout(o.connectTimeoutMs, 'connectTimeoutMs'),
    },
    headersTimeout: timeout(o.headersTimeoutMs, 'headersTimeoutMs'),
    bodyTimeout: timeout(o.bodyTimeoutMs, 'bodyTimeoutMs'),
  });
}
