// The outbound URL guard against real local HTTPS servers, a DNS stand-in (`lookup`) and a DNS server on UDP. 127.0.0.1 is in a
// refused range: the tests accept it explicitly (`allowAddresses: ['127.0.0.1']`) so that the
// local server can stand in for a public one; every other private address stays refused.
import { createServer, type Server } from 'node:https';
import type { LookupAddress } from 'node:dns';
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevCertificateAuthority } from '../dev-pki/dev-pki.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { createUrlGuard, type UrlGuardOptions } from './url-guard.js';

let server: Server;
let port: number;
/** Releases the rest of `/stream`, whose first chunk is sent at once. */
const streamRest = (() => {
  let release = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { promise, release };
})();
let ca: string;
/** The local server's own certificate: not a CA's. */
let serverPem: string;
const connections: string[] = [];

/** The DNS stand-in: names to addresses; `rebind.test` answers a public then a private address. */
let rebinds = 0;
const lookups: string[] = [];
function lookup(hostname: string): Promise<readonly LookupAddress[]> {
  lookups.push(hostname);
  return Promise.resolve().then(() => answer(hostname));
}

function answer(hostname: string): readonly LookupAddress[] {
  switch (hostname) {
    case 'public.test':
      return [{ address: '127.0.0.1', family: 4 }];
    case 'internal.test':
      return [{ address: '10.0.0.1', family: 4 }];
    case 'mixed.test':
      return [
        { address: '127.0.0.1', family: 4 },
        { address: '192.168.1.10', family: 4 },
      ];
    case 'unreachable.test':
      // TCP to a multicast address fails inside connect() itself (ENETUNREACH), as a host
      // with no route to a name's address does.
      return [{ address: '224.0.0.1', family: 4 }];
    case 'rebind.test':
      rebinds += 1;
      return [{ address: rebinds === 1 ? '127.0.0.1' : '10.0.0.1', family: 4 }];
    default:
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
  }
}

/**
 * A DNS server on 127.0.0.1 (UDP): `public.test` is 127.0.0.1 (A; no AAAA), `internal.test`
 * 10.0.0.1, `silent*.test` never answered, anything else NXDOMAIN. `asked` lists each query as
 * `TYPE name`.
 */
const dns = { port: 0, asked: [] as string[], socket: createSocket('udp4') };

function dnsAnswer(query: Buffer): Buffer | undefined {
  const labels: string[] = [];
  let at = 12;
  while (at < query.length && query[at] !== 0) {
    const length = query[at] ?? 0;
    labels.push(query.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += 1 + length;
  }
  const question = query.subarray(12, at + 5);
  const type = query.readUInt16BE(at + 1);
  const name = labels.join('.').toLowerCase();
  dns.asked.push(`${type === 28 ? 'AAAA' : type === 1 ? 'A' : String(type)} ${name}`);
  if (name.startsWith('silent')) return undefined;
  const address = type === 1 ? { 'public.test': [127, 0, 0, 1], 'internal.test': [10, 0, 0, 1] }[name] : undefined;
  const known = name === 'public.test' || name === 'internal.test';
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  header.writeUInt16BE(known ? 0x8180 : 0x8183, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(address === undefined ? 0 : 1, 6);
  const answer =
    address === undefined
      ? Buffer.alloc(0)
      : Buffer.concat([Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]), Buffer.from(address)]);
  return Buffer.concat([header, question, answer]);
}

const guarded = (options: UrlGuardOptions = {}) =>
  createUrlGuard({ ca, lookup, allowAddresses: ['127.0.0.1'], ...options });

beforeAll(async () => {
  dns.socket.on('message', (query, from) => {
    const answer = dnsAnswer(query);
    if (answer !== undefined) dns.socket.send(answer, from.port, from.address);
  });
  await new Promise<void>((resolve) => dns.socket.bind(0, '127.0.0.1', resolve));
  dns.port = dns.socket.address().port;
  const authority = await createDevCertificateAuthority();
  const certificate = await authority.issueServerCertificate({
    dnsNames: ['localhost', 'public.test', 'rebind.test', 'mixed.test'],
    ipAddresses: ['127.0.0.1'],
  });
  ca = authority.certPem;
  serverPem = certificate.certPem;
  server = createServer({ cert: certificate.certPem, key: certificate.keyPem }, (req, res) => {
    connections.push(req.socket.remoteAddress ?? '');
    const url = req.url ?? '/';
    if (url === '/model') res.end('MODEL BYTES');
    else if (url === '/big') res.end(Buffer.alloc(4096, 1));
    else if (url === '/big-chunked') {
      // No Content-Length: the size is found while reading.
      for (let i = 0; i < 8; i++) res.write(Buffer.alloc(512, 1));
      res.end();
    } else if (url === '/stream') {
      res.write('FIRST');
      void streamRest.promise.then(() => res.end('REST'));
    } else if (url === '/stall') res.write('FIRST');
    else if (url === '/cut') {
      res.writeHead(200, { 'content-length': '100' }).write('only ten b');
      setTimeout(() => req.socket.destroy(), 20);
    } else if (url === '/gzip') res.writeHead(200, { 'content-encoding': 'gzip' }).end('not really gzip');
    else if (url === '/to-private') res.writeHead(302, { location: 'https://10.0.0.1/model' }).end();
    else if (url === '/to-metadata') res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    else if (url === '/to-public') res.writeHead(302, { location: `https://public.test:${String(port)}/model` }).end();
    else if (url === '/loop') res.writeHead(302, { location: '/loop' }).end();
    else if (url.startsWith('/to-nowhere'))
      res.writeHead(302, { location: 'https://admin:SECRETMARK-password@[bad/x' }).end();
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  dns.socket.close();
  await new Promise((resolve) => server.close(resolve));
});

async function refusal(run: () => Promise<unknown>): Promise<{ code?: string; reason?: string; details?: unknown }> {
  try {
    await run();
  } catch (error) {
    return error as { code?: string; reason?: string };
  }
  throw new Error('expected a refusal');
}

describe('createUrlGuard', () => {
  it('fetches from a (stand-in) public address, verifying its certificate', async () => {
    const answer = await guarded().fetch(`https://public.test:${String(port)}/model`);
    expect(answer.body.toString()).toBe('MODEL BYTES');
    expect(answer.address).toBe('127.0.0.1');
  });

  it.each([
    ['http://', 'http://public.test/model', 'url_scheme_refused'],
    ['loopback', 'https://127.0.0.2/', 'url_address_refused'],
    ['IPv6 loopback', 'https://[::1]/', 'url_address_refused'],
    ['IPv4-mapped loopback', 'https://[::ffff:127.0.0.2]/', 'url_address_refused'],
    ['a decimal spelling', 'https://2130706434/', 'url_address_refused'],
    ['a hex spelling', 'https://0x7f.2/', 'url_address_refused'],
    ['an octal spelling', 'https://0177.0.0.2/', 'url_address_refused'],
    ['cloud metadata', 'https://169.254.169.254/latest/meta-data/', 'url_address_refused'],
    ['CGNAT', 'https://100.64.0.1/', 'url_address_refused'],
    ['a private network', 'https://192.168.0.1/', 'url_address_refused'],
    ['IPv6 unique local', 'https://[fd00::1]/', 'url_address_refused'],
    // IPv6 forms that embed an IPv4 address or reach one through a translator (found by an outside pass).
    ['NAT64', 'https://[64:ff9b::a00:1]/', 'url_address_refused'],
    ['local-use NAT64', 'https://[64:ff9b:1::a00:1]/', 'url_address_refused'],
    ['IPv4-translated (SIIT)', 'https://[::ffff:0:a00:1]/', 'url_address_refused'],
    ['IPv4-compatible', 'https://[::10.0.0.1]/', 'url_address_refused'],
    ['IPv4-compatible loopback', 'https://[::127.0.0.1]/', 'url_address_refused'],
    ['6to4 of the metadata address', 'https://[2002:a9fe:a9fe::]/', 'url_address_refused'],
    ['the Azure WireServer, a public address', 'https://168.63.129.16/machine', 'url_address_refused'],
    ['Teredo', 'https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/', 'url_address_refused'],
    ['IPv6 site-local', 'https://[fec0::1]/', 'url_address_refused'],
    ['IPv6 discard-only', 'https://[100::1]/', 'url_address_refused'],
    ['multicast', 'https://224.0.0.1/', 'url_address_refused'],
    ['credentials', 'https://user:pass@public.test/', 'url_credentials'],
    ['not a URL', 'https//nope', 'url_invalid'],
  ])('refuses %s without connecting', async (_label, url, reason) => {
    const before = connections.length;
    expect(await refusal(() => guarded().fetch(url))).toMatchObject({
      code: 'invalid_argument',
      reason,
      details: { field: 'url' },
    });
    expect(connections.length).toBe(before);
  });

  it('refuses a name that resolves to a private address, or to one among public ones', async () => {
    expect(await refusal(() => guarded().fetch('https://internal.test/model'))).toMatchObject({
      reason: 'url_address_refused',
    });
    expect(await refusal(() => guarded().fetch(`https://mixed.test:${String(port)}/model`))).toMatchObject({
      reason: 'url_address_refused',
    });
  });

  it('connects to the address it checked: a second lookup that would answer a private one is never made', async () => {
    rebinds = 0;
    const answer = await guarded().fetch(`https://rebind.test:${String(port)}/model`);
    expect(answer.address).toBe('127.0.0.1');
    expect(rebinds).toBe(1);
  });

  it('checks every redirect target again, and bounds the redirects', async () => {
    const base = `https://public.test:${String(port)}`;
    expect((await guarded().fetch(`${base}/to-public`)).body.toString()).toBe('MODEL BYTES');
    expect(await refusal(() => guarded().fetch(`${base}/to-private`))).toMatchObject({ reason: 'url_address_refused' });
    expect(await refusal(() => guarded().fetch(`${base}/to-metadata`))).toMatchObject({ reason: 'url_scheme_refused' });
    expect(await refusal(() => guarded({ maxRedirects: 2 }).fetch(`${base}/loop`))).toMatchObject({
      reason: 'url_too_many_redirects',
    });
  });

  it("refuses a redirect to what is no URL as the origin's failure, quoting neither URL", async () => {
    const sent = `https://public.test:${String(port)}/to-nowhere?access_token=SECRETMARK-query`;
    const refused = await refusal(() => guarded().fetch(sent));
    expect(refused).toMatchObject({ code: 'invalid_argument', reason: 'url_fetch_failed' });
    // Node's own error for an unparsable URL carries it and its base as properties.
    const seen = JSON.stringify(refused, Object.getOwnPropertyNames(refused)) + String((refused as Error).cause);
    expect(seen).not.toContain('SECRETMARK');
  });

  it('bounds the size, refuses what is not found, and what does not verify', async () => {
    const base = `https://public.test:${String(port)}`;
    expect(await refusal(() => guarded({ maxBytes: 1024 }).fetch(`${base}/big`))).toMatchObject({
      reason: 'url_too_large',
    });
    expect(await refusal(() => guarded().fetch(`${base}/missing`))).toMatchObject({ reason: 'url_status' });
    // Without the test CA the certificate does not verify: refused, never fetched insecurely.
    expect(
      await refusal(() => createUrlGuard({ lookup, allowAddresses: ['127.0.0.1'] }).fetch(`${base}/model`)),
    ).toMatchObject({ reason: 'url_fetch_failed' });
    expect(await refusal(() => guarded().fetch('https://unknown.test/model'))).toMatchObject({
      reason: 'url_unresolvable',
    });
  });

  it('opens a body to read as it arrives: the first chunk before the origin has sent the rest', async () => {
    const { body } = await guarded().open(`https://public.test:${String(port)}/stream`);
    const chunks: string[] = [];
    for await (const chunk of body) {
      chunks.push(chunk.toString());
      // Held by the origin until the first chunk is read here: a fetch that gathered the whole
      // body first would never get this far.
      if (chunks.length === 1) streamRest.release();
    }
    expect(chunks.join('')).toBe('FIRSTREST');
  });

  it('bounds a body while it is read: its size, its time, its end, and no content coding', async () => {
    const base = `https://public.test:${String(port)}`;
    const read = async (guard: ReturnType<typeof guarded>, path: string): Promise<number> => {
      const { body } = await guard.open(`${base}${path}`);
      let size = 0;
      for await (const chunk of body) size += chunk.length;
      return size;
    };
    expect(await refusal(() => read(guarded({ maxBytes: 1024 }), '/big-chunked'))).toMatchObject({
      reason: 'url_too_large',
    });
    expect(await refusal(() => read(guarded({ timeoutMs: 300 }), '/stall'))).toMatchObject({ reason: 'url_timeout' });
    expect(await refusal(() => read(guarded(), '/cut'))).toMatchObject({ reason: 'url_fetch_failed' });
    // Stored as it came, a gzip body would pass every upload check unread.
    expect(await refusal(() => read(guarded(), '/gzip'))).toMatchObject({
      code: 'invalid_argument',
      reason: 'url_content_coded',
    });
  });

  it('refuses an address whose connect fails at once, and the process lives on', async () => {
    const crashes: unknown[] = [];
    const onCrash = (error: unknown): void => {
      crashes.push(error);
    };
    process.on('uncaughtException', onCrash);
    try {
      const guard = guarded({ allowAddresses: ['224.0.0.1'] });
      for (let i = 0; i < 3; i++) {
        expect(await refusal(() => guard.fetch('https://unreachable.test/model'))).toMatchObject({
          code: 'invalid_argument',
          reason: 'url_fetch_failed',
        });
      }
      // The socket's own error event comes a tick or two later.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(crashes).toEqual([]);
    } finally {
      process.off('uncaughtException', onCrash);
    }
  });

  it('resolves with DNS by default: A and AAAA queries to the servers given, the answers checked', async () => {
    const guard = createUrlGuard({ ca, allowAddresses: ['127.0.0.1'], dnsServers: [`127.0.0.1:${String(dns.port)}`] });
    const fetched = await guard.fetch(`https://public.test:${String(port)}/model`);
    expect(fetched.body.toString()).toBe('MODEL BYTES');
    expect(dns.asked).toEqual(expect.arrayContaining(['A public.test', 'AAAA public.test']));
    expect(await refusal(() => guard.fetch('https://internal.test/model'))).toMatchObject({
      reason: 'url_address_refused',
    });
    expect(await refusal(() => guard.fetch('https://unknown.test/model'))).toMatchObject({
      reason: 'url_unresolvable',
    });
  });

  it('drops the DNS queries of a fetch abandoned while a name does not answer, and bounds one that is not', async () => {
    const guard = createUrlGuard({ ca, timeoutMs: 300, dnsServers: [`127.0.0.1:${String(dns.port)}`] });
    const before = dns.asked.length;
    const abandoned = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const controller = new AbortController();
        setTimeout(() => {
          controller.abort();
        }, 50);
        return guard.fetch(`https://silent-${String(i)}.test/model`, { signal: controller.signal }).then(
          () => 'fetched',
          (error: unknown) => (error as Error).name,
        );
      }),
    );
    expect(abandoned).toEqual(Array.from({ length: 12 }, () => 'AbortError'));
    const sent = dns.asked.length - before;
    expect(sent).toBeGreaterThan(0);
    // Past the first query's time (2 s): a query still alive would have been sent again.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(dns.asked.length - before).toBe(sent);
    // Not abandoned: refused at the guard's own time.
    expect(await refusal(() => guard.fetch('https://silent.test/model'))).toMatchObject({ reason: 'url_timeout' });
  });

  it("refuses more than 20 redirects, the Fetch standard's limit", () => {
    for (const maxRedirects of [21, 1_000_000]) {
      expect(() => createUrlGuard({ maxRedirects })).toThrow(
        new ConfigurationError('createUrlGuard: "maxRedirects" must be a whole number from 0 to 20'),
      );
    }
    expect(() => createUrlGuard({ maxRedirects: 20 })).not.toThrow();
  });

  it('refuses bad options', () => {
    expect(() => createUrlGuard({ maxRedirects: -1 })).toThrow(ConfigurationError);
    expect(() => createUrlGuard({ allowAddresses: ['not-an-ip'] })).toThrow(ConfigurationError);
  });

  it.each([
    // `Number('')` is 0: this entry allowed every address, the metadata one included.
    ['10.0.0.0/', /"allowAddresses"\[0\] "10\.0\.0\.0\/" is not an IP address or CIDR range/],
    ['10.0.0.0/abc', /is not an IP address or CIDR range/],
    ['::1/200', /is not an IP address or CIDR range/],
    ['10.0.0.0/8/8', /is not an IP address or CIDR range/],
    // Bits past the prefix length were dropped, allowing the whole network (found by a misconfiguration pass).
    [
      '127.0.0.1/8',
      /^createUrlGuard: "allowAddresses"\[0\] "127\.0\.0\.1\/8" has bits set past its prefix length: use "127\.0\.0\.0\/8" for the network, or "127\.0\.0\.1\/32" for the one address$/,
    ],
    ['10.1.2.3/16', /use "10\.1\.0\.0\/16" for the network, or "10\.1\.2\.3\/32" for the one address/],
    ['2001:db8:1:2::5/64', /use "2001:db8:1:2::\/64" for the network, or "2001:db8:1:2::5\/128" for the one address/],
    [42, /"allowAddresses"\[0\] must be an address or CIDR string/],
    ['0.0.0.0/0', /allows every address, the private ones included/],
    ['::/0', /allows every address/],
    // Any range holding the metadata address, in any spelling, reopened it (found by a review).
    ['128.0.0.0/1', /includes the cloud metadata address 169\.254\.169\.254, which is never allowed/],
    ['169.254.0.0/16', /includes the cloud metadata address/],
    ['::/1', /includes the cloud metadata address/],
    ['2002::/16', /includes the cloud metadata address/],
    ['::ffff:0:0/96', /includes the cloud metadata address/],
    ['fd00::/8', /includes the cloud metadata address/],
    // Metadata services and host agents outside 169.254.0.0/16, and their IPv6 forms.
    ['100.64.0.0/10', /"100\.64\.0\.0\/10" includes the cloud metadata address 100\.100\.100\.200, which/],
    ['168.63.0.0/16', /includes the cloud metadata address 168\.63\.129\.16,/],
    ['168.63.129.16', /includes the cloud metadata address 168\.63\.129\.16,/],
    ['192.0.0.0/24', /includes the cloud metadata address 192\.0\.0\.192,/],
    ['169.254.170.0/24', /includes the cloud metadata address 169\.254\.170\.2,/],
    ['fd20:ce::/32', /includes the cloud metadata address fd20:ce::254,/],
    ['fd00:ec2::23', /includes the cloud metadata address fd00:ec2::23,/],
    ['::ffff:100.100.100.200', /includes the cloud metadata address 100\.100\.100\.200,/],
    ['::ffff:0:6464:64c8', /includes the cloud metadata address 100\.100\.100\.200,/],
    ['64:ff9b::a83f:8110', /includes the cloud metadata address 168\.63\.129\.16,/],
    // Inside the 6to4 network that carries the address, without holding its first address.
    ['2002:a9fe:a9fe:1::/64', /includes the cloud metadata address 169\.254\.169\.254,/],
    ['2002:6464:64c8::1', /includes the cloud metadata address 100\.100\.100\.200,/],
  ])('refuses the allowAddresses entry %s, which must not open the guard', (entry, message) => {
    expect(() => createUrlGuard({ allowAddresses: [entry as string] })).toThrow(message);
  });

  it('takes a private range that holds no metadata address, and still refuses the metadata one', async () => {
    const guard = createUrlGuard({ lookup, allowAddresses: ['10.0.0.0/8'] });
    expect(await refusal(() => guard.fetch('https://169.254.169.254/'))).toMatchObject({
      reason: 'url_address_refused',
    });
  });

  it('refuses a name that resolves to the Azure WireServer, a public address that only a VM reaches', async () => {
    const azure = (): Promise<readonly LookupAddress[]> => Promise.resolve([{ address: '168.63.129.16', family: 4 }]);
    const guard = createUrlGuard({ lookup: azure, timeoutMs: 2_000 });
    expect(await refusal(() => guard.fetch('https://wireserver.test/machine?comp=goalstate'))).toMatchObject({
      reason: 'url_address_refused',
    });
  });

  it('refuses a lookup that is not a function when built, not at the first fetch', () => {
    expect(() => createUrlGuard({ lookup: 'x' as never })).toThrow(
      /^createUrlGuard: "lookup" must be a function that resolves a name to its addresses/,
    );
  });

  it.each([
    ['a string', '127.0.0.1'],
    ['an address without its list', { address: '127.0.0.1', family: 4 }],
    ['an entry that is not an address', [{ address: 'public.test', family: 4 }]],
    ['an entry without an address', [{ family: 4 }]],
    ['null', null],
  ])('refuses, as the guard, a lookup that answers %s', async (_label, answered) => {
    const odd = () => Promise.resolve(answered as never);
    const error = await refusal(() =>
      createUrlGuard({ lookup: odd, allowAddresses: ['127.0.0.1'] }).fetch(`https://public.test/`),
    );
    expect(error).toBeInstanceOf(SecurityError);
    expect(error).toMatchObject({ code: 'invalid_argument', reason: 'url_unresolvable', details: { field: 'url' } });
  });

  it.each([
    ['text that is not PEM', 'not a pem', /^createUrlGuard: "ca" holds no PEM certificate$/],
    ['bytes that are not PEM', Buffer.from('not a pem'), /^createUrlGuard: "ca" holds no PEM certificate$/],
    [
      'a block that does not parse',
      '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n',
      /^createUrlGuard: certificate 1 in "ca" cannot be parsed$/,
    ],
    ['a number', 42, /^createUrlGuard: "ca" must be PEM text or bytes of CA certificates$/],
  ])('refuses a ca that is %s when built, not at every fetch', (_label, value, message) => {
    expect(() => createUrlGuard({ ca: value as never })).toThrow(message);
  });

  it('refuses a server certificate given as the ca, which verifies no one', () => {
    expect(() => createUrlGuard({ ca: serverPem })).toThrow(/certificate 1 in "ca" is not a CA certificate/);
  });

  it('refuses other bad options', () => {
    expect(() => createUrlGuard({ dnsServers: ['not an address'] })).toThrow(/"dnsServers" holds an entry/);
    expect(() => createUrlGuard({ dnsServers: [] })).toThrow(/"dnsServers" must be a non-empty array/);
  });
});
