import { BlockList, isIP } from 'node:net';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { ipv6Groups, parseAddressRange, type AddressRange } from '../options/address-range.js';
import { checkKnownKeys } from '../options/unknown-keys.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * How a limit finds the client's address: the socket's peer, unless the connection comes from
 * a trusted proxy, whose `Forwarded` / `X-Forwarded-For` entry then names the client; and how
 * many leading bits of an IPv6 address make one client (a host usually owns a whole /64).
 *
 * @example
 * ```ts
 * import type { ClientAddressOptions } from '@fluxguard/core';
 * const behindLoadBalancer: ClientAddressOptions = { trustedProxies: ['10.0.0.0/8'], ipv6PrefixLength: 64 };
 * ```
 */
export interface ClientAddressOptions {
  /**
   * Addresses or CIDR ranges of the proxies in front of the server (`10.0.0.7`, `10.0.0.0/8`,
   * `fd00::/8`). Only a connection from one of them may say who the client is; from anyone
   * else, the headers are ignored. Default: none (the socket's peer is always the client).
   * `0.0.0.0/0` and `::/0` are refused: with every address a proxy, any client names itself.
   * A range with bits set past its prefix length (`10.1.2.3/16`) is refused, not widened to its
   * network.
   * `unix` trusts the proxy in front of a server that listens on a Unix socket: its
   * connections' peer is `unix` (the adapters read it from the connection's handle, a pipe; see
   * `isUnixSocketConnection`), and the header the proxy writes names each client. A TCP
   * connection whose address is unreadable is never taken for one.
   */
  readonly trustedProxies?: readonly string[] | undefined;
  /** Leading bits of an IPv6 address that name one client. Default 64. */
  readonly ipv6PrefixLength?: number | undefined;
  /**
   * The one header your proxies write: `x-forwarded-for` or `forwarded` (RFC 7239). Only this
   * one is read: a proxy that appends to one passes the other through as the client wrote it.
   * Default `x-forwarded-for`.
   */
  readonly forwardedHeader?: 'x-forwarded-for' | 'forwarded' | undefined;
}

/**
 * A compiled {@link ClientAddressOptions}: the client's address key of a call.
 *
 * @example
 * ```ts
 * import { compileClientAddress, type ClientAddress } from '@fluxguard/core';
 * const address: ClientAddress = compileClientAddress({ trustedProxies: ['10.0.0.0/8'] }, 'rateLimits');
 * address.keyOf(call); // '203.0.113.9', or '2001:db8:1:2:0:0:0:0/64' for an IPv6 client
 * ```
 */
export interface ClientAddress {
  /**
   * The client's address as a key: an IPv4 address, or an IPv6 prefix
   * (`2001:db8:1:2:0:0:0:0/64`); `no-address` for every call whose transport gives no peer
   * address (a Unix socket), counted as one client rather than by no limit at all.
   */
  keyOf(call: CallInfo): string;
  /** Some proxy is trusted (`trustedProxies`): otherwise the socket's peer is always the client. */
  readonly behindProxies: boolean;
}

/**
 * The key of the calls that come without a peer address (a Unix socket, a connection closed
 * before its address was read): left out, they escaped every limit by address and the
 * brute-force protection; together, they are at worst one client. Not an address, so no
 * client's key can be it.
 */
const NO_ADDRESS_KEY = 'no-address';

/**
 * The peer address the adapters give a connection to a server listening on a Unix socket (no
 * address of its own), and the entry of `trustedProxies` that trusts the proxy in front of one.
 *
 * @internal
 */
export const UNIX_SOCKET_PEER = 'unix';

let warnedNoAddress = false;

/** Says once per process that calls without an address are counted together. */
function noAddress(): string {
  if (!warnedNoAddress) {
    warnedNoAddress = true;
    process.emitWarning(
      'fluxguard: a call came without a peer address (a server on a Unix socket, or a connection closed before its address was read): limits by client address, and the brute-force protection, count every such call as one client. Behind a proxy on a Unix socket, list "unix" in the trustedProxies of the rate limits and the brute-force protection, so that the header the proxy writes names the client',
      { code: 'FLUXGUARD_NO_PEER_ADDRESS' },
    );
  }
  return NO_ADDRESS_KEY;
}

/** The most header entries walked: a longer chain is a forgery or a loop. */
const MAX_HOPS = 32;

/**
 * Compiles where a call's client address comes from (see {@link ClientAddressOptions}).
 *
 * @throws ConfigurationError for options that are not an object or hold an unknown key (with a
 *   hint for a misspelt one), an entry of `trustedProxies` that is not an address or CIDR (or
 *   a CIDR with bits set past its prefix length, `10.1.2.3/16`), a prefix length out of range,
 *   or a range wider than a /8 of IPv4 or a /7 of IPv6 (`::ffff:0:0/96` is every IPv4 client).
 *
 * @example
 * ```ts
 * import { compileClientAddress } from '@fluxguard/core';
 * const address = compileClientAddress({ trustedProxies: ['127.0.0.1'] }, 'rateLimits');
 * // address.keyOf(call) → '203.0.113.9' when the local proxy forwarded for it
 * ```
 */
export function compileClientAddress(options: ClientAddressOptions, where: string): ClientAddress {
  // Also from plain JavaScript: check the shape at run time. The limits that take these options
  // among their own check their keys themselves and call clientAddressFrom.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigurationError(`${where} must be an object`);
  }
  checkKnownKeys(options, CLIENT_ADDRESS_KEYS, where, 'option');
  return clientAddressFrom(options, where);
}

const CLIENT_ADDRESS_KEYS = ['trustedProxies', 'ipv6PrefixLength', 'forwardedHeader'] as const;

/**
 * {@link compileClientAddress} for options whose keys the caller has checked (the options of a
 * limit, which holds these among its own).
 *
 * @internal
 */
export function clientAddressFrom(options: ClientAddressOptions, where: string): ClientAddress {
  const prefix = wholeNumber(options.ipv6PrefixLength ?? 64, `${where}.ipv6PrefixLength`, { max: 128 });
  const proxies = options.trustedProxies ?? [];
  if (!Array.isArray(proxies)) throw new ConfigurationError(`${where}.trustedProxies must be an array`);
  const trusted = new BlockList();
  let trustsUnixSocket = false;
  proxies.forEach((entry: unknown, i) => {
    if (entry === UNIX_SOCKET_PEER) trustsUnixSocket = true;
    else addTrusted(trusted, entry, `${where}.trustedProxies[${String(i)}]`);
  });
  // Read once: the caller's array, changed later, changes nothing.
  const behindProxies = proxies.length > 0;
  const header: unknown = options.forwardedHeader ?? 'x-forwarded-for';
  if (header !== 'x-forwarded-for' && header !== 'forwarded') {
    throw new ConfigurationError(`${where}.forwardedHeader must be "x-forwarded-for" or "forwarded"`);
  }

  const isTrusted = (ip: string): boolean => trusted.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4');
  const toKey = (ip: string): string => hostKey(ip, prefix);
  let lastPeer: string | undefined;
  let lastKey: string | undefined;

  return Object.freeze({
    behindProxies,
    keyOf(call: CallInfo): string {
      const { peerAddress } = call;
      // Calls of one connection share its peer address: the last one's key is reused.
      if (peerAddress === lastPeer && lastKey !== undefined) return lastKey;
      if (peerAddress === UNIX_SOCKET_PEER && trustsUnixSocket) {
        // The proxy on the socket names the client; without an entry it wrote, all share one key.
        const client = forwardedClient(forwardedFor(call, header), undefined, isTrusted);
        return client === undefined ? noAddress() : toKey(client);
      }
      const peer = peerHost(peerAddress);
      if (peer === undefined) return noAddress();
      if (behindProxies && isTrusted(peer)) return toKey(forwardedClient(forwardedFor(call, header), peer, isTrusted));
      lastPeer = peerAddress;
      lastKey = toKey(peer);
      return lastKey;
    },
  });
}

/**
 * The store key of a call's client, `ip:<keyOf>`, as rate limits and the brute-force protection
 * count it. `keyOf` hands back one string while the peer stays the same, and so does this: the
 * store's look-up then hashes the key once, not a newly joined string on every call.
 *
 * @internal
 */
export function peerStoreKeys(address: ClientAddress): (call: CallInfo) => string {
  let lastClient: string | undefined;
  let lastKey = '';
  return (call) => {
    const client = address.keyOf(call);
    if (client !== lastClient) {
      lastClient = client;
      lastKey = `ip:${client}`;
    }
    return lastKey;
  };
}

/**
 * The widest ranges trusted as proxies: 10.0.0.0/8, the largest private IPv4 network, and
 * fc00::/7, the IPv6 unique local block. A wider one (`0.0.0.0/1` beside `128.0.0.0/1`, or
 * `::ffff:0:0/96`, every IPv4 client as Node's `BlockList` matches it) holds clients, and each of
 * them could choose its own rate-limit and brute-force key in the header it sends.
 */
const WIDEST_IPV4_PREFIX = 8;
const WIDEST_IPV6_PREFIX = 7;
/** The first 96 bits of an IPv4-mapped address, `::ffff:0:0/96`, in 16-bit groups. */
const MAPPED_HEAD = [0, 0, 0, 0, 0, 0xffff] as const;

function addTrusted(list: BlockList, entry: unknown, where: string): void {
  const range = parseAddressRange(entry, where);
  const ipv4Prefix = range.type === 'ipv4' ? range.prefix : mappedIpv4Prefix(range);
  if (range.prefix === 0 || ipv4Prefix === 0) {
    // Every address a proxy: any client could name itself in the header it sends.
    throw new ConfigurationError(
      `${where} "${String(entry)}" trusts every ${range.prefix === 0 ? '' : 'IPv4 '}address as a proxy, so any client could choose its own address: list your proxies' addresses or ranges`,
    );
  }
  if (ipv4Prefix === undefined ? range.prefix < WIDEST_IPV6_PREFIX : ipv4Prefix < WIDEST_IPV4_PREFIX) {
    throw new ConfigurationError(
      `${where} "${String(entry)}" is wider than the largest private network (a /${String(ipv4Prefix === undefined ? WIDEST_IPV6_PREFIX : WIDEST_IPV4_PREFIX)}${ipv4Prefix === undefined ? '' : ' of IPv4'}), so clients in it could choose their own address: list your proxies' addresses or ranges`,
    );
  }
  list.addSubnet(range.address, range.prefix, range.type);
}

/**
 * The prefix length, counted in IPv4 bits, of the IPv4-mapped addresses an IPv6 range holds
 * (`::ffff:10.0.0.0/104` is 8; `::/64`, holding all of `::ffff:0:0/96`, is 0); `undefined` when
 * it holds none.
 */
function mappedIpv4Prefix(range: AddressRange): number | undefined {
  const groups = ipv6Groups(range.address);
  const compared = Math.min(range.prefix, 96);
  for (let i = 0; i < MAPPED_HEAD.length; i++) {
    const bits = Math.min(Math.max(compared - 16 * i, 0), 16);
    const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    if (((groups[i] ?? 0) & mask) !== ((MAPPED_HEAD[i] ?? 0) & mask)) return undefined;
  }
  return Math.max(range.prefix - 96, 0);
}

/**
 * The client a chain of trusted proxies forwarded for: walking the entries from the nearest
 * proxy outwards, the first address that is not a trusted proxy. Only the entries our own
 * proxies appended are believed; anything further left the client wrote itself. An entry that
 * is not an address ends the walk at the last trusted hop, so garbage cannot pick a key.
 */
function forwardedClient<Peer extends string | undefined>(
  chain: readonly string[],
  peer: Peer,
  isTrusted: (ip: string) => boolean,
): string | Peer {
  let client: string | Peer = peer;
  for (let i = chain.length - 1, hops = 0; i >= 0 && hops < MAX_HOPS; i--, hops++) {
    const ip = plainAddress(chain[i] ?? '');
    if (ip === undefined) return client;
    client = ip;
    if (!isTrusted(ip)) return ip;
  }
  return client;
}

/** The `for=` entries of `Forwarded` (RFC 7239), or the entries of `X-Forwarded-For`. */
function forwardedFor(call: CallInfo, header: 'x-forwarded-for' | 'forwarded'): string[] {
  if (header === 'forwarded') {
    const out: string[] = [];
    for (const element of call.headers.getAll('forwarded').join(',').split(',')) {
      const pair = element.split(';').find((p) => p.trim().toLowerCase().startsWith('for='));
      out.push(pair === undefined ? '' : pair.trim().slice(4).replace(/^"|"$/g, ''));
    }
    return out;
  }
  return call.headers
    .getAll('x-forwarded-for')
    .join(',')
    .split(',')
    .map((s) => s.trim());
}

/** An address from a header entry: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`. */
function plainAddress(entry: string): string | undefined {
  let host = entry;
  if (host.startsWith('[')) host = host.slice(1, !host.includes(']') ? host.length : host.indexOf(']'));
  else if (isIP(host) === 0) host = host.replace(/:\d+$/, '');
  return isIP(host) === 0 ? undefined : unmapped(host);
}

/**
 * The client a peer address names, as a rate limit's `peer` key counts it when no proxy is
 * trusted: its host without the port, IPv4-mapped IPv6 as IPv4, IPv6 by its first
 * `ipv6PrefixLength` bits; `undefined` for what is no address.
 *
 * @internal
 */
export function peerClientKey(peerAddress: string | undefined, ipv6PrefixLength = 64): string | undefined {
  const peer = peerHost(peerAddress);
  return peer === undefined ? undefined : hostKey(peer, ipv6PrefixLength);
}

/**
 * One client's key from its address: an IPv4 address as it is, an IPv6 one by its prefix, but
 * an IPv6 address that carries an IPv4 client's address as that IPv4 address: by its prefix,
 * every IPv4 client behind a NAT64/SIIT translator (`64:ff9b::198.51.100.7`) or a Teredo
 * server was one client, whose allowance they shared and whose lock-out locked all of them out.
 */
function hostKey(ip: string, ipv6PrefixLength: number): string {
  if (!ip.includes(':')) return ip;
  // A zone (`fe80::1%eth0`) names the interface, not the client: `ipv6Groups` leaves it out (left
  // on, it was read as part of an embedded IPv4 address).
  const groups = ipv6Groups(ip);
  return embeddedIpv4(groups) ?? prefixOf(groups, ipv6PrefixLength);
}

/**
 * The IPv4 client address an IPv6 address stands for, if it is one of those that carry one:
 * IPv4-mapped (`::ffff:0:0/96`, in any spelling), IPv4-translated (`::ffff:0:0:0/96`, RFC
 * 2765), the well-known NAT64 prefix (`64:ff9b::/96`, RFC 6052), IPv4-compatible (`::/96`,
 * deprecated; `::` and `::1` excluded), Teredo (`2001::/32`, the client's public address stored
 * inverted, RFC 4380).
 */
function embeddedIpv4(groups: readonly number[]): string | undefined {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = groups;
  if (g0 === 0x2001 && g1 === 0) return dotted(g6 ^ 0xffff, g7 ^ 0xffff);
  const zeroFirst = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0;
  const carries =
    (zeroFirst && g4 === 0 && g5 === 0xffff) ||
    (zeroFirst && g4 === 0xffff && g5 === 0) ||
    (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) ||
    (zeroFirst && g4 === 0 && g5 === 0 && (g6 !== 0 || g7 > 1));
  return carries ? dotted(g6, g7) : undefined;
}

/** The IPv4 address of two 16-bit groups. */
function dotted(high: number, low: number): string {
  return `${String(high >> 8)}.${String(high & 0xff)}.${String(low >> 8)}.${String(low & 0xff)}`;
}

/** The host of `127.0.0.1:5000` or `[::1]:5000`, IPv4-mapped IPv6 as plain IPv4. */
function peerHost(peerAddress: string | undefined): string | undefined {
  if (peerAddress === undefined) return undefined;
  let host: string;
  if (peerAddress.startsWith('[')) host = peerAddress.slice(1, peerAddress.indexOf(']'));
  else {
    const colon = peerAddress.lastIndexOf(':');
    // One colon: IPv4 and its port (the common case, no parsing). More: a bare IPv6 address,
    // or one with its port appended unbracketed.
    if (colon === -1) host = peerAddress;
    else if (colon === peerAddress.indexOf(':')) host = peerAddress.slice(0, colon);
    else host = isIP(peerAddress) === 6 ? peerAddress : peerAddress.slice(0, colon);
  }
  return isIP(host) === 0 ? undefined : unmapped(host);
}

function unmapped(ip: string): string {
  const lower = ip.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

/**
 * The first `bits` of an IPv6 address, as `hhhh:hhhh:hhhh:hhhh::/64`: every address of one
 * prefix is one key.
 */
export function ipv6Prefix(ip: string, bits: number): string {
  return prefixOf(ipv6Groups(ip), bits);
}

function prefixOf(groups: readonly number[], bits: number): string {
  const out: string[] = [];
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
    out.push(((groups[i] ?? 0) & mask).toString(16));
  }
  return `${out.join(':')}/${String(bits)}`;
}
