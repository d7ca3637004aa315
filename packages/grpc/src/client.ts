import { checkServerIdentity as defaultCheckServerIdentity, createSecureContext, type PeerCertificate } from 'node:tls';
import { ChannelCredentials, InterceptingCall, type Interceptor } from '@grpc/grpc-js';
import { ConfigurationError, type ClientTlsOptions } from '@fluxguard/core';
import {
  CLIENT_TLS_OPTION_NAMES,
  loadClientTlsMaterial,
  resolveOptions,
  TLS_ECDH_CURVES,
  wholeNumber,
} from '@fluxguard/core/adapter';

/**
 * Options of {@link createClientCredentials}: the client TLS options of core (each of the CA
 * bundle, certificate and key given either as a file, `caFile`, or as PEM contents, `ca`, not
 * both; the certificate and key are for mTLS), plus an extra check of the server's certificate.
 *
 * @example
 * ```ts
 * const options: ClientCredentialsOptions = { caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' };
 * ```
 */
export interface ClientCredentialsOptions extends ClientTlsOptions {
  /**
   * An extra check of the server's certificate, run only after Node's host name check has
   * passed (grpc-js would otherwise replace that check): return an `Error` to refuse.
   */
  readonly checkServerIdentity?: ((hostname: string, certificate: PeerCertificate) => Error | undefined) | undefined;
}

interface Resolved extends ClientTlsOptions {
  readonly checkServerIdentity: ((hostname: string, certificate: PeerCertificate) => Error | undefined) | undefined;
}

const DEFAULTS: Resolved = Object.freeze({ checkServerIdentity: undefined });

const FACTORY = 'createClientCredentials';

/**
 * grpc-js channel credentials for calling a fluxguard (or any TLS) gRPC server: the server's
 * certificate is always verified against `ca` and its host name checked, TLS 1.2 at least with
 * fluxguard's cipher suites, and the client certificate offered when given (mTLS). Files are
 * read and checked now — certificate and key parse and match, the CA bundle parses — with a
 * `ConfigurationError` naming the option. To verify the server under another name than the
 * target's host, set the channel option `grpc.ssl_target_name_override`. Dial a host name, not
 * an address: grpc-js sends the target's host as the TLS server name, and Node 25 and later
 * refuse an IP address there (the call fails `UNAVAILABLE`); with an address target, set the
 * override to a DNS name of the server's certificate.
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
  const o = resolveOptions<Resolved>(FACTORY, DEFAULTS, options, CLIENT_TLS_OPTION_NAMES);
  const extraCheck = o.checkServerIdentity;
  if (extraCheck !== undefined && typeof extraCheck !== 'function') {
    throw new ConfigurationError(`${FACTORY}: "checkServerIdentity" must be a function`);
  }
  const { ca, cert, key, minVersion, ciphers } = loadClientTlsMaterial(o, FACTORY);
  let secureContext;
  try {
    secureContext = createSecureContext({
      ca,
      ...(cert === undefined || key === undefined ? {} : { cert, key }),
      minVersion,
      ciphers,
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
  wholeNumber(ms, 'defaultDeadline: the deadline', { unit: 'ms' });
  return (options, nextCall) =>
    new InterceptingCall(
      nextCall(options.deadline === undefined ? { ...options, deadline: Date.now() + ms } : options),
    );
}
