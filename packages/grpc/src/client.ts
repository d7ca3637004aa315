import { readFileSync } from 'node:fs';
import { checkServerIdentity as defaultCheckServerIdentity, createSecureContext, type PeerCertificate } from 'node:tls';
import { ChannelCredentials, InterceptingCall, type Interceptor } from '@grpc/grpc-js';
import {
  ConfigurationError,
  TLS_CIPHERS,
  TLS_ECDH_CURVES,
  createTlsSettings,
  resolveOptions,
  type TlsMinVersion,
} from '@fluxguard/core';

/**
 * Options of {@link createClientCredentials}. Each of the CA bundle, certificate and key is
 * given either as a file (`caFile`) or as PEM contents (`ca`), not both.
 *
 * @example
 * ```ts
 * const options: ClientCredentialsOptions = { caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' };
 * ```
 */
export interface ClientCredentialsOptions {
  /** The CA bundle the server's certificate must chain to. Required: the server is always verified. */
  readonly caFile?: string | undefined;
  readonly ca?: string | Uint8Array | undefined;
  /** The client certificate (PEM, chain allowed), for mTLS. Optional, with its key. */
  readonly certFile?: string | undefined;
  readonly cert?: string | Uint8Array | undefined;
  /** The client's private key (PEM, unencrypted). */
  readonly keyFile?: string | undefined;
  readonly key?: string | Uint8Array | undefined;
  /** Default `TLSv1.2`. */
  readonly minVersion?: TlsMinVersion | undefined;
  /**
   * An extra check of the server's certificate, run only after Node's host name check has
   * passed (grpc-js would otherwise replace that check): return an `Error` to refuse.
   */
  readonly checkServerIdentity?: ((hostname: string, certificate: PeerCertificate) => Error | undefined) | undefined;
}

interface Resolved {
  readonly caFile: string | undefined;
  readonly ca: string | Uint8Array | undefined;
  readonly certFile: string | undefined;
  readonly cert: string | Uint8Array | undefined;
  readonly keyFile: string | undefined;
  readonly key: string | Uint8Array | undefined;
  readonly minVersion: TlsMinVersion;
  readonly checkServerIdentity: ((hostname: string, certificate: PeerCertificate) => Error | undefined) | undefined;
}

const DEFAULTS: Resolved = Object.freeze({
  caFile: undefined,
  ca: undefined,
  certFile: undefined,
  cert: undefined,
  keyFile: undefined,
  key: undefined,
  minVersion: 'TLSv1.2',
  checkServerIdentity: undefined,
});

const FACTORY = 'createClientCredentials';

/**
 * grpc-js channel credentials for calling a fluxguard (or any TLS) gRPC server: the server's
 * certificate is always verified against `ca` and its host name checked, TLS 1.2 at least with
 * fluxguard's cipher suites, and the client certificate offered when given (mTLS). Files are
 * read and checked now — certificate and key parse and match, the CA bundle parses — with a
 * `ConfigurationError` naming the option. To verify the server under another name than the
 * target's host, set the channel option `grpc.ssl_target_name_override`.
 *
 * @throws ConfigurationError on bad options or unreadable or mismatched material.
 *
 * @example
 * ```ts
 * import { Client } from '@grpc/grpc-js';
 * import { createClientCredentials, defaultDeadline } from '@fluxguard/grpc';
 * const credentials = createClientCredentials({ caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' });
 * const client = new Client('localhost:9000', credentials, { interceptors: [defaultDeadline(10_000)] });
 * ```
 */
export function createClientCredentials(options: ClientCredentialsOptions): ChannelCredentials {
  const o = resolveOptions<Resolved>(FACTORY, DEFAULTS, options);
  if (o.caFile === undefined && o.ca === undefined) {
    throw new ConfigurationError(
      `${FACTORY}: "caFile" or "ca" is required: the server's certificate is always verified`,
    );
  }
  const hasCert = o.certFile !== undefined || o.cert !== undefined;
  const hasKey = o.keyFile !== undefined || o.key !== undefined;
  if (hasCert !== hasKey) {
    throw new ConfigurationError(`${FACTORY}: give the client certificate and its key together, or neither`);
  }
  const minVersion: unknown = o.minVersion; // options may come from plain JavaScript
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') {
    throw new ConfigurationError(`${FACTORY}: "minVersion" must be "TLSv1.2" or "TLSv1.3"`);
  }
  const extraCheck = o.checkServerIdentity;
  if (extraCheck !== undefined && typeof extraCheck !== 'function') {
    throw new ConfigurationError(`${FACTORY}: "checkServerIdentity" must be a function`);
  }

  let material: { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  if (hasCert) {
    // core's validation of a certificate, its key and a CA bundle (parse, match, OpenSSL accepts).
    const settings = createTlsSettings({
      clientCertificates: 'strict',
      certFile: o.certFile,
      cert: o.cert,
      keyFile: o.keyFile,
      key: o.key,
      caFile: o.caFile,
      ca: o.ca,
    });
    material = settings.material;
  } else {
    material = { ca: readCa(o) };
  }

  let secureContext;
  try {
    secureContext = createSecureContext({
      ...material,
      minVersion: o.minVersion,
      ciphers: TLS_CIPHERS,
      ecdhCurve: TLS_ECDH_CURVES,
    });
  } catch (cause) {
    throw new ConfigurationError(`${FACTORY}: OpenSSL refused the TLS material ("ca", "cert", "key")`, { cause });
  }
  return ChannelCredentials.createFromSecureContext(secureContext, {
    rejectUnauthorized: true,
    checkServerIdentity: (hostname, certificate) =>
      defaultCheckServerIdentity(hostname, certificate) ?? extraCheck?.(hostname, certificate),
  });
}

function readCa(o: Resolved): Buffer {
  if (o.caFile !== undefined && o.ca !== undefined) {
    throw new ConfigurationError(`${FACTORY}: give "caFile" or "ca", not both`);
  }
  let ca: Buffer;
  if (o.caFile !== undefined) {
    if (typeof o.caFile !== 'string' || o.caFile === '') {
      throw new ConfigurationError(`${FACTORY}: "caFile" must be a file path`);
    }
    try {
      ca = readFileSync(o.caFile);
    } catch (cause) {
      const code = (cause as { code?: unknown } | null)?.code;
      throw new ConfigurationError(
        `${FACTORY}: cannot read "caFile" (${o.caFile})${typeof code === 'string' ? ` (${code})` : ''}`,
        { cause },
      );
    }
  } else {
    ca = Buffer.from(o.ca ?? '');
  }
  if (!ca.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigurationError(`${FACTORY}: "ca" holds no PEM certificate`);
  }
  return ca;
}

/**
 * A client interceptor that gives every call without a deadline one `ms` milliseconds away,
 * so that a stalled server cannot hold a caller (and its resources) forever. A deadline the
 * caller set is kept as it is.
 *
 * @throws ConfigurationError when `ms` is not a positive integer.
 *
 * @example
 * ```ts
 * import { Client } from '@grpc/grpc-js';
 * import { defaultDeadline } from '@fluxguard/grpc';
 * const client = new Client(address, credentials, { interceptors: [defaultDeadline(10_000)] });
 * ```
 */
export function defaultDeadline(ms: number): Interceptor {
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw new ConfigurationError('defaultDeadline: the deadline must be a positive whole number of milliseconds');
  }
  return (options, nextCall) =>
    new InterceptingCall(
      nextCall(options.deadline === undefined ? { ...options, deadline: Date.now() + ms } : options),
    );
}
