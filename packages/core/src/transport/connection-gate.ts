import type { AuditLogger } from '../audit/audit-logger.js';
import { peerClientKey } from '../ratelimit/client-address.js';

/** The most refusals a gate tells apart in one summary: the addresses beyond are counted only. */
const MAX_NAMED_ADDRESSES = 16;
/** How often a gate writes its summary line while it refuses connections. */
const SUMMARY_INTERVAL_MS = 10_000;

/**
 * The connections of one listening port, counted per client address, as the adapters admit
 * them. Built by {@link createConnectionGate}.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * server.on('connection', (socket) => {
 *   const release = gate.admit(socket.remoteAddress);
 *   if (release === undefined) socket.destroy();
 *   else socket.once('close', release);
 * });
 * server.on('drop', () => gate.refusedOverall());
 * ```
 */
export interface ConnectionGate {
  /**
   * Admits a new connection from `remoteAddress` (the socket's, without port): its release,
   * to call once when it closes, or `undefined` when that client (an IPv6 client by its /64)
   * holds `maxPerAddress` already and the connection must be closed at once.
   */
  admit(remoteAddress: string | undefined): (() => void) | undefined;
  /** Notes a connection the port's overall cap refused (Node's `drop` event), for the summary. */
  refusedOverall(): void;
  /** Connections held now by the client of `remoteAddress`. */
  heldBy(remoteAddress: string | undefined): number;
}

/**
 * A per-address share of a port's connections: one client holding the whole port's cap shut out
 * everyone (an anonymous client reopening every connection the server closed kept HTTPS and gRPC
 * unanswered for as long as it went on). Refusals are written as one `connection.refused` line
 * at once and then at most one summary every 10 s while they go on (how many, by the port's cap
 * or by the share, and the addresses), so a flood cannot flood the log and is never silent.
 *
 * For adapter authors (`@fluxguard/core/adapter`): `createSecureServer` of `@fluxguard/express`
 * and `addService` of `@fluxguard/grpc` run one per port.
 *
 * @example
 * ```ts
 * import { createConnectionGate } from '@fluxguard/core/adapter';
 * const gate = createConnectionGate({ maxPerAddress: 1_000, audit, transport: 'http' });
 * ```
 */
export function createConnectionGate(options: {
  readonly maxPerAddress: number;
  readonly audit: AuditLogger | undefined;
  readonly transport: 'grpc' | 'http';
}): ConnectionGate {
  const { maxPerAddress, audit, transport } = options;
  const held = new Map<string, number>();
  let byShare = 0;
  let byCap = 0;
  const addresses = new Set<string>();
  let summaryTimer: NodeJS.Timeout | undefined;

  const write = (first: boolean): void => {
    if (byShare + byCap > 0) {
      audit?.logger.warn(
        {
          event: 'connection.refused',
          transport,
          reason: byCap > 0 && byShare === 0 ? 'connection_limit' : 'address_connection_limit',
          refusedByAddressShare: byShare,
          refusedByPortCap: byCap,
          addresses: [...addresses],
          ...(first ? {} : { intervalMs: SUMMARY_INTERVAL_MS }),
        },
        'connection.refused',
      );
    }
    byShare = 0;
    byCap = 0;
    addresses.clear();
  };
  const note = (key: string | undefined, byAddress: boolean): void => {
    if (byAddress) byShare += 1;
    else byCap += 1;
    if (key !== undefined && addresses.size < MAX_NAMED_ADDRESSES) addresses.add(key);
    if (summaryTimer !== undefined) return;
    // The first refusal is written at once; the rest of the spell in one line per interval.
    write(true);
    summaryTimer = setInterval(() => {
      if (byShare + byCap === 0) {
        clearInterval(summaryTimer);
        summaryTimer = undefined;
        return;
      }
      write(false);
    }, SUMMARY_INTERVAL_MS);
    summaryTimer.unref();
  };

  return Object.freeze({
    admit(remoteAddress: string | undefined) {
      const key = peerClientKey(remoteAddress) ?? '';
      const count = held.get(key) ?? 0;
      if (count >= maxPerAddress) {
        note(key, true);
        return undefined;
      }
      held.set(key, count + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (held.get(key) ?? 1) - 1;
        if (left <= 0) held.delete(key);
        else held.set(key, left);
      };
    },
    refusedOverall() {
      note(undefined, false);
    },
    heldBy(remoteAddress: string | undefined) {
      return held.get(peerClientKey(remoteAddress) ?? '') ?? 0;
    },
  });
}

/**
 * The default share of one client address: half of the port's connections, at least 16. One
 * client cannot hold the whole port, while a reverse proxy in front, whose connections all come
 * from one address, keeps a large pool: a smaller share by default would refuse a busy proxy's
 * connections. Where clients connect directly, a smaller share (an eighth, say) makes it take
 * more addresses to hold the port; behind a single proxy, raise it to `maxConnections`.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { defaultConnectionsPerAddress } from '@fluxguard/core/adapter';
 * defaultConnectionsPerAddress(14_000); // 7000
 * ```
 */
export function defaultConnectionsPerAddress(maxConnections: number): number {
  return Math.min(maxConnections, Math.max(16, Math.floor(maxConnections / 2)));
}
