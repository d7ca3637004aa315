import { describe, expect, it } from 'vitest';
import type { CallInfo } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { compileClientAddress, ipv6Prefix, type ClientAddressOptions } from './client-address.js';

function call(peerAddress: string | undefined, headers: Record<string, string | string[]> = {}): CallInfo {
  const all = (name: string): string[] => {
    const value = headers[name];
    return value === undefined ? [] : Array.isArray(value) ? value : [value];
  };
  return {
    transport: 'http',
    operation: 'GET /v1/x',
    requestId: 'r',
    peerAddress,
    peerCertificate: undefined,
    headers: { get: (name) => all(name)[0], getAll: all },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

const keyOf = (options: ClientAddressOptions, info: CallInfo) => compileClientAddress(options, 'test').keyOf(info);

describe('compileClientAddress without trusted proxies', () => {
  it('keys on the socket’s peer and ignores every forwarding header', () => {
    const spoofed = call('203.0.113.9:5000', {
      'x-forwarded-for': '198.51.100.1',
      forwarded: 'for=198.51.100.2',
    });
    expect(keyOf({}, spoofed)).toBe('203.0.113.9');
    expect(keyOf({ trustedProxies: [] }, spoofed)).toBe('203.0.113.9');
  });

  it('drops the port, so that every connection of one client is one key', () => {
    expect(keyOf({}, call('203.0.113.9:1'))).toBe(keyOf({}, call('203.0.113.9:65535')));
    expect(keyOf({}, call('[2001:db8::1]:1'))).toBe(keyOf({}, call('[2001:db8::1]:2')));
  });

  it('counts every call whose transport names no peer (a Unix socket) as one client', () => {
    // Left without a key, such calls escaped every limit by address.
    expect(keyOf({}, call(undefined))).toBe('no-address');
    expect(keyOf({}, call('unknown'))).toBe('no-address');
    // Even with proxies trusted: nothing says the call came from one.
    expect(keyOf({ trustedProxies: ['10.0.0.0/8'] }, call(undefined, { 'x-forwarded-for': '198.51.100.1' }))).toBe(
      'no-address',
    );
  });
});

describe('compileClientAddress behind the proxy on a Unix socket', () => {
  const socket = { trustedProxies: ['unix', '10.0.0.0/8'] };

  it('reads the client the proxy names on a connection the adapter says came through a socket', () => {
    expect(keyOf(socket, call('unix', { 'x-forwarded-for': '198.51.100.1' }))).toBe('198.51.100.1');
    expect(keyOf(socket, call('unix', { 'x-forwarded-for': '203.0.113.9, 10.0.0.7' }))).toBe('203.0.113.9');
    // Nothing the proxy wrote, or nothing readable: one client still.
    expect(keyOf(socket, call('unix'))).toBe('no-address');
    expect(keyOf(socket, call('unix', { 'x-forwarded-for': 'garbage' }))).toBe('no-address');
    // Untrusted, the socket's calls are one client whatever they say.
    expect(keyOf({}, call('unix', { 'x-forwarded-for': '198.51.100.1' }))).toBe('no-address');
  });

  it('never believes a call whose address is merely unreadable, nor a TCP client', () => {
    // A TCP client that resets early leaves no address: it must not pass for the proxy.
    expect(keyOf(socket, call(undefined, { 'x-forwarded-for': '198.51.100.1' }))).toBe('no-address');
    expect(keyOf(socket, call('unknown', { 'x-forwarded-for': '198.51.100.1' }))).toBe('no-address');
    expect(keyOf(socket, call('203.0.113.5:1', { 'x-forwarded-for': '198.51.100.1' }))).toBe('203.0.113.5');
  });
});

describe('compileClientAddress behind trusted proxies', () => {
  const proxies = { trustedProxies: ['10.0.0.7', '172.16.0.0/12', 'fd00::/8'] };

  it('ignores the headers of a connection that does not come from a trusted proxy', () => {
    const direct = call('203.0.113.9:5000', { 'x-forwarded-for': '198.51.100.1' });
    expect(keyOf(proxies, direct)).toBe('203.0.113.9');
    // 10.0.0.8 is next to the trusted 10.0.0.7, not it.
    expect(keyOf(proxies, call('10.0.0.8:5000', { 'x-forwarded-for': '198.51.100.1' }))).toBe('10.0.0.8');
  });

  it('believes a trusted proxy, by exact address and by range, IPv4 and IPv6', () => {
    const forwarded = { 'x-forwarded-for': '198.51.100.4' };
    expect(keyOf(proxies, call('10.0.0.7:443', forwarded))).toBe('198.51.100.4');
    expect(keyOf(proxies, call('172.20.1.1:443', forwarded))).toBe('198.51.100.4');
    expect(keyOf(proxies, call('[fd00::1]:443', forwarded))).toBe('198.51.100.4');
    expect(keyOf({ trustedProxies: ['2001:db8:ffff::7'] }, call('[2001:db8:ffff::7]:443', forwarded))).toBe(
      '198.51.100.4',
    );
    // grpc-js writes an IPv6 peer without brackets, the port after the last colon.
    expect(keyOf(proxies, call('fd00::1:50000', forwarded))).toBe('198.51.100.4');
  });

  it('reads the list of proxies once: the caller emptying its array later changes nothing', () => {
    const trustedProxies = ['10.0.0.7'];
    const address = compileClientAddress({ trustedProxies }, 'test');
    trustedProxies.length = 0;
    expect(address.keyOf(call('10.0.0.7:443', { 'x-forwarded-for': '198.51.100.4' }))).toBe('198.51.100.4');
  });

  it('takes the rightmost entry that is not a trusted proxy: what the client wrote itself is ignored', () => {
    // The client sent "X-Forwarded-For: 1.1.1.1, 2.2.2.2"; our proxies appended the rest.
    const chain = call('10.0.0.7:443', { 'x-forwarded-for': '1.1.1.1, 2.2.2.2, 198.51.100.4, 172.16.0.9' });
    expect(keyOf(proxies, chain)).toBe('198.51.100.4');
    // Several header lines are one list, in order.
    const lines = call('10.0.0.7:443', { 'x-forwarded-for': ['1.1.1.1', '198.51.100.4, 172.16.0.9'] });
    expect(keyOf(proxies, lines)).toBe('198.51.100.4');
  });

  it('reads RFC 7239 Forwarded (quoted IPv6 with a port included) when the proxies write it, and then only it', () => {
    const forwarded = { ...proxies, forwardedHeader: 'forwarded' as const };
    const info = call('10.0.0.7:443', {
      forwarded: 'for=1.1.1.1;proto=https, for="[2001:db8:1:2::5]:4711";by=10.0.0.7, for=172.16.0.9',
      'x-forwarded-for': '198.51.100.4',
    });
    expect(keyOf(forwarded, info)).toBe(ipv6Prefix('2001:db8:1:2::', 64));
    expect(keyOf(forwarded, call('10.0.0.7:443', { forwarded: 'For="198.51.100.4:80"' }))).toBe('198.51.100.4');
    // A client's own X-Forwarded-For, passed through by a proxy that writes Forwarded, is ignored.
    expect(keyOf(forwarded, call('10.0.0.7:443', { 'x-forwarded-for': '198.51.100.4' }))).toBe('10.0.0.7');
  });

  it('reads only X-Forwarded-For by default: a client-written Forwarded cannot choose the key', () => {
    const info = call('10.0.0.7:443', { forwarded: 'for=198.51.100.99', 'x-forwarded-for': '198.51.100.4' });
    expect(keyOf(proxies, info)).toBe('198.51.100.4');
    expect(keyOf(proxies, call('10.0.0.7:443', { forwarded: 'for=198.51.100.99' }))).toBe('10.0.0.7');
  });

  it('keys a bare IPv6 peer address (no port) by its prefix', () => {
    expect(keyOf({}, call('2001:db8:1:2::5'))).toBe(ipv6Prefix('2001:db8:1:2::', 64));
  });

  it('refuses unknown or misspelt options, and options that are not an object', () => {
    expect(() => compileClientAddress({ trustedProxie: ['10.0.0.1'] } as never, 'rl')).toThrow(
      'rl: unknown option "trustedProxie" (did you mean "trustedProxies"?)',
    );
    expect(() => compileClientAddress(JSON.parse('{"constructor": 1}') as never, 'rl')).toThrow(
      /rl: unknown option "constructor"/,
    );
    for (const options of [null, 5, ['10.0.0.1']]) {
      expect(() => compileClientAddress(options as never, 'rl')).toThrow('rl must be an object');
    }
  });

  it('refuses an unknown forwardedHeader', () => {
    expect(() => compileClientAddress({ forwardedHeader: 'x-real-ip' as 'forwarded' }, 'rl')).toThrow(
      'rl.forwardedHeader must be "x-forwarded-for" or "forwarded"',
    );
  });

  it('stops at the last trusted hop when an entry is not an address, so garbage cannot choose the key', () => {
    const garbage = call('10.0.0.7:443', { 'x-forwarded-for': '198.51.100.4, <script>, 172.16.0.9' });
    expect(keyOf(proxies, garbage)).toBe('172.16.0.9');
    const forwarded = { ...proxies, forwardedHeader: 'forwarded' as const };
    const hidden = call('10.0.0.7:443', { forwarded: 'for=198.51.100.4, for=unknown' });
    expect(keyOf(forwarded, hidden)).toBe('10.0.0.7');
    const noFor = call('10.0.0.7:443', { forwarded: 'for=198.51.100.4, proto=https' });
    expect(keyOf(forwarded, noFor)).toBe('10.0.0.7');
    // A trusted proxy that forwarded nothing is itself the client.
    expect(keyOf(proxies, call('10.0.0.7:443'))).toBe('10.0.0.7');
    expect(keyOf(proxies, call('10.0.0.7:443', { 'x-forwarded-for': '' }))).toBe('10.0.0.7');
  });

  it('strips a port from an IPv4 entry', () => {
    expect(keyOf(proxies, call('10.0.0.7:443', { 'x-forwarded-for': '198.51.100.4:1234' }))).toBe('198.51.100.4');
  });
});

describe('compileClientAddress with IPv6 clients', () => {
  it('gives every address of one /64 one key, and another /64 another', () => {
    const a = keyOf({}, call('[2001:db8:1:2::1]:5000'));
    const b = keyOf({}, call('[2001:db8:1:2:ffff:ffff:ffff:ffff]:5000'));
    const c = keyOf({}, call('[2001:DB8:1:2:abcd::9]:5000'));
    const other = keyOf({}, call('[2001:db8:1:3::1]:5000'));
    expect(a).toBe(b);
    expect(a).toBe(c);
    expect(other).not.toBe(a);
    expect(a).toBe('2001:db8:1:2:0:0:0:0/64');
  });

  it('takes the prefix length from ipv6PrefixLength', () => {
    const wide = { ipv6PrefixLength: 48 };
    expect(keyOf(wide, call('[2001:db8:1:2::1]:5000'))).toBe(keyOf(wide, call('[2001:db8:1:3::1]:5000')));
    expect(keyOf(wide, call('[2001:db8:1:2::1]:5000'))).not.toBe(keyOf(wide, call('[2001:db8:2:2::1]:5000')));
    const exact = { ipv6PrefixLength: 128 };
    expect(keyOf(exact, call('[2001:db8::1]:5000'))).not.toBe(keyOf(exact, call('[2001:db8::2]:5000')));
  });

  it('keys an IPv4-mapped IPv6 address as the IPv4 address', () => {
    expect(keyOf({}, call('[::ffff:1.2.3.4]:5000'))).toBe('1.2.3.4');
    expect(keyOf({}, call('::ffff:1.2.3.4:5000'))).toBe('1.2.3.4');
    // Trust is checked on the IPv4 form too.
    const viaMapped = call('[::ffff:10.0.0.7]:443', { 'x-forwarded-for': '::FFFF:198.51.100.4' });
    expect(keyOf({ trustedProxies: ['10.0.0.7'] }, viaMapped)).toBe('198.51.100.4');
  });
});

describe('compileClientAddress with IPv6 addresses that carry an IPv4 client', () => {
  it.each([
    ['IPv4-mapped, in hex', '::ffff:c633:6407', '198.51.100.7'],
    ['NAT64 / SIIT, well-known prefix', '64:ff9b::198.51.100.7', '198.51.100.7'],
    ['NAT64 / SIIT, in hex', '64:FF9B::c633:6407', '198.51.100.7'],
    ['IPv4-compatible', '::203.0.113.9', '203.0.113.9'],
    ['IPv4-translated (SIIT)', '::ffff:0:203.0.113.9', '203.0.113.9'],
    ['NAT64 with a zone', '64:ff9b::198.51.100.7%eth0', '198.51.100.7'],
    ['IPv4-mapped with a zone', '::ffff:198.51.100.7%2', '198.51.100.7'],
    // Teredo: server 65.54.227.120, the client's address 192.0.2.45 stored inverted.
    ['Teredo', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '192.0.2.45'],
  ])('keys %s (%s) as the IPv4 client, one per client', (_kind, address, ipv4) => {
    expect(keyOf({}, call(`[${address}]:5000`))).toBe(ipv4);
    // Behind a trusted proxy that names such a client too.
    expect(keyOf({ trustedProxies: ['10.0.0.7'] }, call('10.0.0.7:443', { 'x-forwarded-for': address }))).toBe(ipv4);
  });

  it('gives two IPv4 clients of one translator two keys, and leaves other IPv6 addresses to their prefix', () => {
    expect(keyOf({}, call('[64:ff9b::198.51.100.7]:1'))).not.toBe(keyOf({}, call('[64:ff9b::198.51.100.8]:1')));
    expect(keyOf({}, call('[2001:0:4136:e378::1]:1'))).not.toBe(keyOf({}, call('[2001:0:4136:e378::2]:1')));
    expect(keyOf({}, call('[::1]:5000'))).toBe('0:0:0:0:0:0:0:0/64');
    expect(keyOf({}, call('[64:ff9b:1::c633:6407]:5000'))).toBe('64:ff9b:1:0:0:0:0:0/64');
    expect(keyOf({}, call('[2001:db8::c633:6407]:5000'))).toBe('2001:db8:0:0:0:0:0:0/64');
  });
});

describe('ipv6Prefix', () => {
  it.each([
    ['2001:db8:1:2:3:4:5:6', 64, '2001:db8:1:2:0:0:0:0/64'],
    ['2001:db8:1:2ff::', 56, '2001:db8:1:200:0:0:0:0/56'],
    ['::1', 128, '0:0:0:0:0:0:0:1/128'],
    ['64:ff9b::198.51.100.4', 128, '64:ff9b:0:0:0:0:c633:6404/128'],
    ['ffff::', 1, '8000:0:0:0:0:0:0:0/1'],
  ])('%s/%i is %s', (ip, bits, prefix) => {
    expect(ipv6Prefix(ip, bits)).toBe(prefix);
  });
});

describe('compileClientAddress options', () => {
  it.each<[string, unknown]>([
    ['not an address', 'proxy.internal'],
    ['an IPv4 prefix over 32', '10.0.0.0/33'],
    ['an IPv6 prefix over 128', 'fd00::/129'],
    ['two slashes', '10.0.0.0/8/1'],
    ['a negative prefix', '10.0.0.0/-1'],
    // Number('') is 0: read as /0 this would trust every address on the internet.
    ['an empty prefix', '10.0.0.0/'],
    ['a prefix that is not decimal', '10.0.0.0/0x8'],
    ['a number', 42],
  ])('refuses a trusted proxy that is %s', (_label, entry) => {
    const compile = () => compileClientAddress({ trustedProxies: ['10.0.0.7', entry as string] }, 'rateLimits');
    expect(compile).toThrow(ConfigurationError);
    expect(compile).toThrow(/^rateLimits\.trustedProxies\[1\]/);
  });

  it.each([0, 129, 1.5, Number.NaN])('refuses ipv6PrefixLength %s', (ipv6PrefixLength) => {
    expect(() => compileClientAddress({ ipv6PrefixLength }, 'rateLimits')).toThrow(
      new ConfigurationError('rateLimits.ipv6PrefixLength must be a whole number from 1 to 128'),
    );
  });

  it.each([
    ['127.0.0.1/8', 'use "127.0.0.0/8" for the network, or "127.0.0.1/32" for the one address'],
    ['10.1.2.3/16', 'use "10.1.0.0/16" for the network, or "10.1.2.3/32" for the one address'],
    ['fd00::7/8', 'use "fd00::/8" for the network, or "fd00::7/128" for the one address'],
  ])('refuses %s, whose bits past the prefix would have trusted the whole network', (entry, advice) => {
    expect(() => compileClientAddress({ trustedProxies: [entry] }, 'rateLimits')).toThrow(
      new ConfigurationError(`rateLimits.trustedProxies[0] "${entry}" has bits set past its prefix length: ${advice}`),
    );
  });

  it.each(['0.0.0.0/0', '::/0'])('refuses %s, which makes every client a proxy that names the client', (entry) => {
    expect(() => compileClientAddress({ trustedProxies: [entry] }, 'rateLimits')).toThrow(
      `rateLimits.trustedProxies[0] "${entry}" trusts every address as a proxy`,
    );
  });

  it.each([
    // Every IPv4 client, as BlockList matches an IPv4 peer against IPv4-mapped ranges.
    ['::ffff:0:0/96', 'trusts every IPv4 address as a proxy'],
    ['::/80', 'trusts every IPv4 address as a proxy'],
    ['::ffff:0.0.0.0/97', 'is wider than the largest private network (a /8 of IPv4)'],
    ['0.0.0.0/1', 'is wider than the largest private network (a /8 of IPv4)'],
    ['128.0.0.0/7', 'is wider than the largest private network (a /8 of IPv4)'],
    ['8000::/1', 'is wider than the largest private network (a /7)'],
    ['2000::/3', 'is wider than the largest private network (a /7)'],
  ])('refuses %s, a range of clients that could choose their own key', (entry, reason) => {
    expect(() => compileClientAddress({ trustedProxies: [entry] }, 'rateLimits')).toThrow(
      `rateLimits.trustedProxies[0] "${entry}" ${reason}`,
    );
  });

  it.each(['10.0.0.0/8', 'fc00::/7', '::ffff:10.0.0.0/104', '100.64.0.0/10', '2001:db8::/32', '::/96'])(
    "accepts %s, a private network or a provider's range",
    (entry) => {
      expect(compileClientAddress({ trustedProxies: [entry] }, 'rateLimits').behindProxies).toBe(true);
    },
  );

  it('takes the client from the header only behind a trusted IPv4-mapped range', () => {
    const trusted = { trustedProxies: ['::ffff:10.0.0.0/104'] };
    expect(keyOf(trusted, call('10.1.2.3:5000', { 'x-forwarded-for': '6.6.6.6' }))).toBe('6.6.6.6');
    expect(keyOf(trusted, call('203.0.113.9:5000', { 'x-forwarded-for': '6.6.6.6' }))).toBe('203.0.113.9');
  });

  it('refuses trustedProxies that is not an array', () => {
    expect(() => compileClientAddress({ trustedProxies: '10.0.0.0/8' as never }, 'rateLimits')).toThrow(
      'rateLimits.trustedProxies must be an array',
    );
  });
});
