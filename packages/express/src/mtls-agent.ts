import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import type * as Undici from 'undici';
import type { Agent } from 'undici';
import { ConfigurationError, type ClientTlsOptions } from '@fluxguard/core';
import { CLIENT_TLS_OPTION_NAMES, loadClientTlsMaterial, resolveOptions, wholeNumber } from '@fluxguard/core/adapter';

const require = createRequire(import.meta.url);

/**
 * undici is an optional peer dependency: only this client helper uses it, and a server that
 * never calls out with mTLS should not have to install it. It is loaded on the first call, not
 * imported statically, because a static import of a missing package would make the whole of
 * @fluxguard/express fail to load. `require` (undici is a CommonJS package) keeps
 * `createMtlsAgent` synchronous.
 */
function loadUndici(): typeof Undici {
  try {
    return require('undici') as typeof Undici;
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw new ConfigurationError(
        `${FACTORY}: needs the package "undici", an optional peer dependency of @fluxguard/express that is not installed: ${installUndici()}`,
        { cause: err },
      );
    }
    // Installed but failing as it loads: undici 8 on a Node older than 22.19 does that, with a
    // TypeError that names neither undici nor Node.
    throw new ConfigurationError(
      `${FACTORY}: the installed undici${describeInstalled()} could not be loaded on Node ${process.versions.node}: ${installUndici()}`,
      { cause: err },
    );
  }
}

/** The install command for this Node: undici 8 needs Node 22.19 or later, undici 7 runs on Node 20. */
function installUndici(): string {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 19) ? 'npm install undici' : 'npm install undici@7';
}

/** The installed version and the Node versions it declares, as " 8.1.0 (for Node >=22.19.0)", or "". */
function describeInstalled(): string {
  try {
    const manifest = require('undici/package.json') as { version?: unknown; engines?: { node?: unknown } };
    const version = typeof manifest.version === 'string' ? ` ${manifest.version}` : '';
    const node = manifest.engines?.node;
    return typeof node === 'string' ? `${version} (for Node ${node})` : version;
  } catch {
    return '';
  }
}

/**
 * Options of {@link createMtlsAgent}: the client TLS options of core (each of the CA bundle,
 * certificate and key given either as a file, `caFile`, or as PEM contents, `ca`, not both),
 * plus the server name and timeouts. Times are in milliseconds.
 *
 * @example
 * ```ts
 * const options: MtlsAgentOptions = { caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' };
 * ```
 */
export interface MtlsAgentOptions extends ClientTlsOptions {
  /** Server name for SNI and certificate checks when it differs from the URL's host: a host name, not an address. */
  readonly servername?: string | undefined;
  /** TCP and TLS handshake. Default 10 000. */
  readonly connectTimeoutMs?: number | undefined;
  /** From the request sent to the response headers. Default 30 000. */
  readonly headersTimeoutMs?: number | undefined;
  /** Between two chunks of the response body. Default 30 000. */
  readonly bodyTimeoutMs?: number | undefined;
}

interface Resolved extends ClientTlsOptions {
  readonly servername: string | undefined;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
}

const DEFAULTS: Resolved = Object.freeze({
  servername: undefined,
  connectTimeoutMs: 10_000,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 30_000,
});

const FACTORY = 'createMtlsAgent';

function timeout(value: unknown, name: string): number {
  return wholeNumber(value, `${FACTORY}: "${name}"`, { unit: 'ms' });
}

/**
 * An undici `Agent` for calling an mTLS service: the server's certificate is always verified
 * against `ca` (never `rejectUnauthorized: false`), TLS 1.2 at least, the client certificate
 * offered when given, and timeouts on connecting, on the response headers and between body
 * chunks so that a stalled server cannot hang the caller. Files are read and checked now
 * (certificate and key parse and match), with a `ConfigurationError` naming the option.
 *
 * Use it with undici's own `fetch` (`import { fetch } from 'undici'`). Node's global `fetch` is
 * the undici bundled with Node (6 in Node 20, 7 in Node 24, 8 in Node 26): an undici 7 `Agent`
 * works with all three at run time (their types differ), an undici 8 one not with Node 24's.
 * Close it (`await agent.close()`) when done, to free its connections.
 * undici (7, or 8 on Node 22.19 and later) is an optional peer dependency of this package:
 * without it installed, or with a version this Node cannot load, this throws a
 * `ConfigurationError` saying which to install.
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
  const { Agent } = loadUndici();
  const o = resolveOptions<Resolved>(FACTORY, DEFAULTS, options, CLIENT_TLS_OPTION_NAMES);
  const { ca, cert, key, minVersion, ciphers } = loadClientTlsMaterial(o, FACTORY);
  // A blank name matches no certificate: every connection would fail its check.
  if (o.servername !== undefined && (typeof o.servername !== 'string' || o.servername.trim() === '')) {
    throw new ConfigurationError(`${FACTORY}: "servername" must be a host name`);
  }
  // TLS sends no address as a server name (RFC 6066): Node 20 ignores one with a warning, and
  // Node 25 and later fail the connection; a URL's address is verified without it.
  if (o.servername !== undefined && isIP(o.servername) !== 0) {
    throw new ConfigurationError(
      `${FACTORY}: "servername" must be a host name, not an IP address: to verify a certificate issued to an address, call the address and leave "servername" unset`,
    );
  }
  return new Agent({
    connect: {
      ca,
      ...(cert === undefined || key === undefined ? {} : { cert, key }),
      ...(o.servername === undefined ? {} : { servername: o.servername }),
      minVersion,
      // The suites the gRPC client offers too, not Node's longer default list.
      ciphers,
      rejectUnauthorized: true,
      timeout: timeout(o.connectTimeoutMs, 'connectTimeoutMs'),
    },
    headersTimeout: timeout(o.headersTimeoutMs, 'headersTimeoutMs'),
    bodyTimeout: timeout(o.bodyTimeoutMs, 'bodyTimeoutMs'),
  });
}
