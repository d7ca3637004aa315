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
 * and `10.0.0.0/` must not mean every address. A length of 0 is returned, for the caller to say
 * what every address would mean in its option.
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
  return { address, prefix, type: family === 6 ? 'ipv6' : 'ipv4' };
}
