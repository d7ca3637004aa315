import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { ConfigurationError } from '@fluxguard/core';
import { closestKey } from '@fluxguard/core/adapter';

/** Where the reference servers listen and keep their files. */
export interface ServerConfig {
  readonly host: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly dataDir: string;
  readonly devDir: string;
}

/**
 * Reads the reference servers' configuration from the environment: `FLUXGUARD_HOST`
 * (default `127.0.0.1`: only this machine until you say otherwise), `FLUXGUARD_GRPC_PORT`
 * (9000), `FLUXGUARD_HTTP_PORT` (8443), `FLUXGUARD_DATA_DIR` (`.fluxguard/data`) and
 * `FLUXGUARD_DEV_DIR` (`.fluxguard/dev`). A malformed value stops start-up with a clear error, and
 * so does a misspelt name of a variable the servers read (`FLUXGUARD_CLIENT_CERT`).
 *
 * @example
 * ```ts
 * const config = loadServerConfig(process.env);
 * ```
 */
export function loadServerConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  refuseMisspeltVariables(env);
  return Object.freeze({
    host: host(env, 'FLUXGUARD_HOST', '127.0.0.1'),
    grpcPort: port(env, 'FLUXGUARD_GRPC_PORT', 9000),
    httpPort: port(env, 'FLUXGUARD_HTTP_PORT', 8443),
    dataDir: resolve(nonEmpty(env, 'FLUXGUARD_DATA_DIR', '.fluxguard/data')),
    devDir: resolve(nonEmpty(env, 'FLUXGUARD_DEV_DIR', '.fluxguard/dev')),
  });
}

/** What follows `FLUXGUARD_` in each variable the reference servers and their commands read. */
const VARIABLES: readonly string[] = [
  'HOST',
  'GRPC_PORT',
  'HTTP_PORT',
  'DATA_DIR',
  'DEV_DIR',
  'CLIENT_CERTS',
  'POLICY',
  'JWKS_URL',
  'JWT_ISSUER',
  'JWT_AUDIENCE',
  'TLS_CERT',
  'TLS_KEY',
  'TLS_CA',
  'TLS_CRL',
  'REDIS_URL',
  'DENYLIST_REDIS_URL',
  'RATE_LIMIT_MAX_KEYS',
  'TOKEN',
];

/**
 * Refuses a `FLUXGUARD_` variable that is a misspelling of one the servers read: it would be
 * ignored without a word (`FLUXGUARD_CLIENT_CERT=strict` left client certificates per
 * operation). Other `FLUXGUARD_` names (the benchmarks', say) are left alone.
 */
function refuseMisspeltVariables(env: NodeJS.ProcessEnv): void {
  for (const name of Object.keys(env)) {
    if (!name.startsWith('FLUXGUARD_')) continue;
    const rest = name.slice('FLUXGUARD_'.length);
    if (VARIABLES.includes(rest)) continue;
    const meant = closestKey(rest, VARIABLES);
    if (meant !== undefined) {
      throw new ConfigurationError(`${name} is not read by the reference servers: did you mean FLUXGUARD_${meant}?`);
    }
  }
}

function nonEmpty(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const value = env[name];
  if (value === undefined) return fallback;
  if (value.trim() === '') throw new ConfigurationError(`${name} must not be empty`);
  return value;
}

// A host name (letters, digits, hyphens, underscores as container names have them, dots), or an IP address, as `listen` takes it.
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

function host(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const value = nonEmpty(env, name, fallback);
  // Else the transport's resolver failed on it later, in words that never named the variable.
  if (isIP(value) === 0 && !HOST_NAME.test(value)) {
    throw new ConfigurationError(
      `${name} must be an IP address (IPv6 without brackets) or a host name, with no spaces`,
    );
  }
  return value;
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = env[name];
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d{1,5}$/.test(value) || n > 65535) {
    throw new ConfigurationError(`${name} must be a port number from 0 to 65535`);
  }
  return n;
}
