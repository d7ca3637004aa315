import { ConfigurationError } from '../errors/fluxguard-error.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { isPolicyObject } from '../policy/fields.js';
import { descriptorBudget } from './descriptor-budget.js';
import { wholeNumber } from '../options/whole-number.js';
import { checkConnectionsPerAddress, defaultConnectionsPerAddress } from './connection-gate.js';

/**
 * Limits on the connections of a server port, the same on both transports: what a client
 * that connects and then sends nothing, or very slowly, may hold. Policy section `connections`.
 *
 * - `handshakeTimeoutMs`: the TLS handshake must complete within it (Node waits 120 s).
 * - `idleMs`: a connection with no request in progress for this long is closed: on gRPC, no
 *   call open (the `grpc.max_connection_idle_ms` of `secureServerOptions`); on HTTPS, the
 *   headers of a request not received in full within it (`headersTimeoutMs` of
 *   `createSecureServer`, which also ends slow-header clients).
 * - `maxConnections`: connections held at once per port; beyond it a new one is closed at once.
 * - `maxConnectionsPerAddress`: connections one client address (an IPv6 client by its /64)
 *   holds at once per port; beyond it a new one from there is closed at once.
 *
 * @example
 * ```ts
 * import type { ConnectionLimits } from '@fluxguard/core';
 * const connections: ConnectionLimits = { handshakeTimeoutMs: 5_000, idleMs: 10_000, maxConnections: 4_000 };
 * ```
 */
export interface ConnectionLimits {
  /** Default 10,000 ms. */
  readonly handshakeTimeoutMs?: number | undefined;
  /** Default 10,000 ms. */
  readonly idleMs?: number | undefined;
  /** Default: `descriptorBudget().connections` (70 % of the open-file limit). */
  readonly maxConnections?: number | undefined;
  /** Default: half of `maxConnections`, at least 16 (`defaultConnectionsPerAddress`). */
  readonly maxConnectionsPerAddress?: number | undefined;
}

/**
 * The secure defaults of {@link ConnectionLimits}, `maxConnections` aside (it depends on the
 * process: `descriptorBudget()`).
 *
 * @example
 * ```ts
 * import { CONNECTION_DEFAULTS } from '@fluxguard/core';
 * CONNECTION_DEFAULTS.idleMs; // 10000
 * ```
 */
export const CONNECTION_DEFAULTS: Readonly<{ handshakeTimeoutMs: number; idleMs: number }> = Object.freeze({
  handshakeTimeoutMs: 10_000,
  idleMs: 10_000,
});

/**
 * {@link ConnectionLimits} with every value decided.
 *
 * @example
 * ```ts
 * import { resolveConnectionLimits, type ResolvedConnectionLimits } from '@fluxguard/core';
 * const limits: ResolvedConnectionLimits = resolveConnectionLimits({ idleMs: 5_000 });
 * ```
 */
export type ResolvedConnectionLimits = Readonly<Required<{ [K in keyof ConnectionLimits]: number }>>;

const KEYS = ['handshakeTimeoutMs', 'idleMs', 'maxConnections', 'maxConnectionsPerAddress'] as const;

/**
 * Checks connection limits (code options or the policy's `connections` section) and fills in
 * the defaults; the result feeds both adapters' server options.
 *
 * @throws ConfigurationError for an unknown key (with a hint), a value that is not a
 *   positive whole number, or a per-address cap above `maxConnections`.
 *
 * @example
 * ```ts
 * import { resolveConnectionLimits } from '@fluxguard/core';
 * import { createServerCredentials, secureServerOptions } from '@fluxguard/grpc';
 * const limits = resolveConnectionLimits(policy.connections);
 * const server = new Server(secureServerOptions({ maxConnectionIdleMs: limits.idleMs, maxConnections: limits.maxConnections }));
 * const credentials = createServerCredentials(tls, { audit, handshakeTimeoutMs: limits.handshakeTimeoutMs });
 * ```
 */
export function resolveConnectionLimits(
  limits: ConnectionLimits | undefined = {},
  where = 'resolveConnectionLimits',
): ResolvedConnectionLimits {
  // Also from plain JavaScript and parsed policy files: check the shape at run time.
  const raw: unknown = limits;
  if (!isPolicyObject(raw)) throw new ConfigurationError(`${where} must be an object`);
  checkKnownKeys(raw, KEYS, where, where.startsWith('policy') ? 'field' : 'option');
  const maxConnections = limits.maxConnections ?? descriptorBudget().connections;
  const resolved = {
    handshakeTimeoutMs: limits.handshakeTimeoutMs ?? CONNECTION_DEFAULTS.handshakeTimeoutMs,
    idleMs: limits.idleMs ?? CONNECTION_DEFAULTS.idleMs,
    maxConnections,
    maxConnectionsPerAddress:
      limits.maxConnectionsPerAddress ??
      (typeof maxConnections === 'number' ? defaultConnectionsPerAddress(maxConnections) : maxConnections),
  };
  // A time above Node's longest timer would fire after 1 ms: refused here, by the field's name.
  for (const key of KEYS) wholeNumber(resolved[key], `${where}.${key}`, key.endsWith('Ms') ? { unit: 'ms' } : {});
  checkConnectionsPerAddress(
    `${where}.maxConnectionsPerAddress`,
    resolved.maxConnectionsPerAddress,
    limits.maxConnections,
  );
  return Object.freeze(resolved);
}

/**
 * Checks the `connections` section of a policy and returns a frozen copy.
 *
 * @throws ConfigurationError naming the bad field, e.g. `policy.connections.idleMs must be a whole number of at least 1`.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported): parseConnectionsPolicy
 * const connections = parseConnectionsPolicy({ idleMs: 10_000 }, 'policy.connections');
 * ```
 */
export function parseConnectionsPolicy(value: unknown, where: string): ConnectionLimits {
  if (!isPolicyObject(value)) throw new ConfigurationError(`${where} must be an object`);
  resolveConnectionLimits(value, where);
  return Object.freeze({ ...(value as ConnectionLimits) });
}
