import { isIP } from 'node:net';
import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * An address or CIDR range from an option, as `BlockList.addSubnet` takes it.
 *
 * @internal
 */
export interface AddressRange {
  readonly address: string;
  readonly prefix: number;
  readonly type: 'ipv4' | 'ipv6';
}

/**
 * Reads an address (`10.0.0.7`, `::1`) or CIDR range (`10.0.0.0/8`) given in `where`; throws a
 * `ConfigurationError` for anything else. The prefix length must be digits: `Number('')` is 0,
 * and `10.0.0.0/` must not mean every address. A range with bits set past its prefix length
 * (`10.1.2.3/16`) is refused, naming the network and the one address it may have meant, rather
 * than widened to its network. A length of 0 is returned, for the caller to say what every
 * address would mean in its option.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core (not exported)
 * parseAddressRange('10.0.0.0/8', 'createUrlGuard: "allowAddresses"[0]'); // { address: '10.0.0.0', prefix: 8, type: 'ipv4' }
 * ```
 *
 * @internal
 */
export function parseAddressRange(entry: unknown, where: string): AddressRange {
  if (typeof entry !== 'string') throw new ConfigurationError(`${where} must be an address or CIDR string`);
  const [address = '', bits, extra] = entry.split('/');
  const family = isIP(address);
  const max = family === 6 ? 128 : 32;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (family === 0 || extra !== undefined || !Number.isSafeInteger(prefix) || prefix < 0 || prefix > max) {
    throw new ConfigurationError(`${where} "${entry}" is not an IP address or CIDR range`);
  }
  // `10.1.2.3/16` would be read as all of 10.1.0.0/16: a typo for one address, or for a
  // narrower range, must not widen what the option trusts or allows without a word.
  if (prefix > 0 && prefix < max) {
    const network = networkOf(address, family === 6 ? 6 : 4, prefix);
    if (network !== undefined) {
      throw new ConfigurationError(
        `${where} "${entry}" has bits set past its prefix length: use "${network}/${String(prefix)}" for the network, or "${address}/${String(max)}" for the one address`,
      );
    }
  }
  return { address, prefix, type: family === 6 ? 'ipv6' : 'ipv4' };
}

/** The network of `address` at `prefix` when the address has bits set past it, else `undefined`. */
function networkOf(address: string, family: 4 | 6, prefix: number): string | undefined {
  const width = family === 4 ? 8 : 16;
  const parts = family === 4 ? address.split('.').map(Number) : ipv6Groups(address);
  const network = parts.map((part, i) => {
    const kept = Math.min(Math.max(prefix - i * width, 0), width);
    return part & (((1 << width) - 1) ^ ((1 << (width - kept)) - 1));
  });
  if (network.every((part, i) => part === parts[i])) return undefined;
  return family === 4 ? network.join('.') : compressIpv6(network);
}

/**
 * The eight groups of an IPv6 address `isIP` accepted (a zone ignored, an IPv4 tail read as
 * two groups).
 *
 * @internal
 */
export function ipv6Groups(address: string): number[] {
  const [text = ''] = address.split('%');
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  const hex =
    tail === null ? text : `${text.slice(0, tail.index)}${hexPair(tail[1], tail[2])}:${hexPair(tail[3], tail[4])}`;
  const [head = '', rest] = hex.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const zeros: string[] =
    rest === undefined ? [] : Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0');
  return [...left, ...zeros, ...right].map((group) => parseInt(group, 16) || 0);
}

function hexPair(high: string | undefined, low: string | undefined): string {
  return ((Number(high) << 8) | Number(low)).toString(16);
}

/** An IPv6 address from its groups, the longest run of zero groups (two or more) as `::`. */
function compressIpv6(groups: readonly number[]): string {
  let best = { at: -1, length: 0 };
  for (let i = 0; i < groups.length;) {
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > best.length && j - i > 1) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((group) => group.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.length).join(':')}`;
}
