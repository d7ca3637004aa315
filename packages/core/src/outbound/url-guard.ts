import { Resolver, type LookupAddress } from 'node:dns';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { request, type RequestOptions } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { checkCaBundle } from '../mtls/material.js';
import { parseAddressRange } from '../options/address-range.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError, isSecurityError } from '../errors/security-error.js';
import { resolveOptions } from '../options/resolve-options.js';
import { wholeNumber } from '../options/whole-number.js';

/**
 * Why the URL guard refused a URL a client gave: not a URL or not `https:` (`url_invalid`,
 * `url_scheme_refused`), credentials in it (`url_credentials`), an address the guard refuses
 * (`url_address_refused`: private, loopback, link-local, CGNAT, multicast, cloud metadata), a
 * name that does not resolve (`url_unresolvable`), too many redirects (`url_too_many_redirects`),
 * an answer that is not a 2xx (`url_status`), too large (`url_too_large`), in a content coding
 * (`url_content_coded`: its bytes would be stored unread by any check), too slow (`url_timeout`),
 * or a TLS or connection failure (`url_fetch_failed`).
 *
 * @example
 * ```ts
 * import type { UrlGuardReason } from '@fluxguard/core';
 * const reason: UrlGuardReason = 'url_address_refused';
 * ```
 */
export type UrlGuardReason =
  | 'url_invalid'
  | 'url_scheme_refused'
  | 'url_credentials'
  | 'url_address_refused'
  | 'url_unresolvable'
  | 'url_too_many_redirects'
  | 'url_status'
  | 'url_too_large'
  | 'url_content_coded'
  | 'url_timeout'
  | 'url_fetch_failed';

/**
 * A `dns.lookup` with `{ all: true }`: the guard checks every address, then connects to the one it checked.
 *
 * @example
 * ```ts
 * import { lookup } from 'node:dns/promises';
 * import { createUrlGuard, type LookupAll } from '@fluxguard/core';
 * const lookupAll: LookupAll = (hostname) => lookup(hostname, { all: true });
 * const guard = createUrlGuard({ lookup: lookupAll });
 * ```
 */
export type LookupAll = (hostname: string) => Promise<readonly LookupAddress[]>;

/**
 * Options of {@link createUrlGuard}.
 *
 * @example
 * ```ts
 * import type { UrlGuardOptions } from '@fluxguard/core';
 * const options: UrlGuardOptions = { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000 };
 * ```
 */
export interface UrlGuardOptions {
  /** Redirects followed, each target checked again. Default 3, at most 20 (the Fetch standard's limit). */
  readonly maxRedirects?: number | undefined;
  /** The whole fetch, redirects included. Default 30 s. */
  readonly timeoutMs?: number | undefined;
  /** The largest body accepted; a larger one (declared or received) is refused (`url_too_large`). Default 64 MiB. */
  readonly maxBytes?: number | undefined;
  /**
   * Name resolution (tests stand in for DNS). Default: DNS queries (A and AAAA) through Node's
   * `dns.Resolver`, each bounded in time and dropped when the fetch is abandoned; `/etc/hosts`
   * is not read. Not `dns.lookup`: its `getaddrinfo` runs on libuv's thread pool, which runs two
   * of them at once for the whole process and cannot drop one, so names whose DNS never answers
   * held every other lookup of the process (imports, a JWKS host, Redis) long after their calls
   * were cancelled. Anything but a function is refused at construction; an answer that is not a
   * list of `{ address }` holding IP addresses is refused (`url_unresolvable`) at fetch time.
   */
  readonly lookup?: LookupAll | undefined;
  /**
   * The DNS servers the default resolution asks (`'1.1.1.1'`, `'[2001:db8::1]:53'`): a resolver
   * you trust for outbound fetches. Default: the system's (`/etc/resolv.conf`).
   */
  readonly dnsServers?: readonly string[] | undefined;
  /**
   * Addresses or CIDRs accepted even though they are in a refused range (a partner's network,
   * or a test server standing in for a public one). Default: none. A range with bits set past its
   * prefix length (`10.1.2.3/16`) is refused, not widened to its network. An entry that holds a cloud
   * metadata address is refused at construction: 169.254.169.254, AWS's 169.254.170.2,
   * 169.254.170.23, `fd00:ec2::254` and `fd00:ec2::23`, Google Cloud's `fd20:ce::254`, Alibaba
   * Cloud's 100.100.100.200 (so not all of CGNAT, `100.64.0.0/10`), Azure's 168.63.129.16 and
   * Oracle Cloud's 192.0.0.192, or an IPv6 form of one.
   */
  readonly allowAddresses?: readonly string[] | undefined;
  /**
   * Extra CA certificates trusted for the servers fetched from (tests), as PEM; the system's
   * otherwise. Refused at construction unless it holds at least one PEM certificate, each one a
   * CA's or self-signed.
   */
  readonly ca?: string | Buffer | undefined;
}

/**
 * What {@link UrlGuard.fetch} returns.
 *
 * @example
 * ```ts
 * import type { GuardedResponse } from '@fluxguard/core';
 * const { url, address, body }: GuardedResponse = await guard.fetch('https://models.example.com/m.bin');
 * ```
 */
export interface GuardedResponse {
  /** The URL finally fetched, after redirects. */
  readonly url: string;
  /** The address it was fetched from (the one checked). */
  readonly address: string;
  /** The whole body of the 2xx answer, at most `maxBytes`. */
  readonly body: Buffer;
}

/**
 * What {@link UrlGuard.open} returns.
 *
 * @example
 * ```ts
 * const { body }: GuardedStream = await guard.open('https://models.example.com/m.bin', { signal });
 * for await (const chunk of body) await file.write(chunk);
 * ```
 */
export interface GuardedStream {
  /** The URL finally fetched, after redirects. */
  readonly url: string;
  /** The address it was fetched from (the one checked). */
  readonly address: string;
  /** The body, chunk by chunk as it arrives, within the guard's size and time limits. */
  readonly body: AsyncIterable<Buffer>;
}

/**
 * Checks and fetches URLs that clients give (model URLs, webhooks), so that a client cannot make
 * the server reach what only the server can reach (SSRF).
 *
 * @example
 * ```ts
 * import { createUrlGuard, type UrlGuard } from '@fluxguard/core';
 * const guard: UrlGuard = createUrlGuard({ maxBytes: 64 * 1024 * 1024 });
 * guard.check('https://169.254.169.254/latest/meta-data'); // throws SecurityError (url_address_refused): link-local
 * ```
 */
export interface UrlGuard {
  /** Checks a URL's form (scheme, credentials, an IP literal's range) without resolving it. */
  check(url: string): URL;
  /** Checks, resolves, checks every address, then fetches from the checked address. */
  fetch(url: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<GuardedResponse>;
  /**
   * As {@link UrlGuard.fetch}, but resolves once a 2xx answer's head is in, with its body to
   * read as it arrives (to a file, say): the server holds a chunk at a time, not the whole body.
   * The size and time limits hold while it is read, a failure then being the guard's refusal.
   * Read it to the end, or stop reading (`break`, a throw): either ends the request.
   */
  open(url: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<GuardedStream>;
}

/** Ranges no client-given URL may reach. */
const REFUSED = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // CGNAT
  ['127.0.0.0', 8],
  ['168.63.129.16', 32], // Azure WireServer (see METADATA_SERVICES)
  ['169.254.0.0', 16], // link-local, cloud metadata (169.254.169.254)
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4],
] as const) {
  REFUSED.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
  ['fd00:ec2::254', 128], // AWS metadata over IPv6
  ['64:ff9b::', 96], // NAT64 of any IPv4, private ones included
  // Forms that carry an IPv4 address, or reach one through a translator, where the network
  // has one: any of them could lead to a private address the IPv4 list refuses.
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215)
  ['::', 96], // IPv4-compatible (deprecated)
  ['::ffff:0:0:0', 96], // IPv4-translated (SIIT)
  ['2002::', 16], // 6to4
  ['2001::', 32], // Teredo
  ['fec0::', 10], // site-local (deprecated)
  ['100::', 64], // discard-only
  ['2001:db8::', 32], // documentation
] as const) {
  REFUSED.addSubnet(network, prefix, 'ipv6');
}

/**
 * Cloud metadata services and host agents: they hand out credentials or a machine's secrets to
 * whoever asks from inside it. Most answer on 169.254.169.254; these are all the well-known ones,
 * some outside link-local, and each is refused even where `allowAddresses` would allow its range.
 */
const METADATA_SERVICES: readonly (readonly [string, 'ipv4' | 'ipv6'])[] = [
  ['169.254.169.254', 'ipv4'], // AWS, Google Cloud, Azure, Oracle Cloud, DigitalOcean, OpenStack...
  ['169.254.170.2', 'ipv4'], // AWS ECS task metadata and credentials
  ['169.254.170.23', 'ipv4'], // AWS EKS Pod Identity Agent
  ['100.100.100.200', 'ipv4'], // Alibaba Cloud (in CGNAT 100.64.0.0/10)
  ['168.63.129.16', 'ipv4'], // Azure WireServer, the host agent (a public address)
  ['192.0.0.192', 'ipv4'], // Oracle Cloud (Classic)
  ['fd00:ec2::254', 'ipv6'], // AWS over IPv6
  ['fd00:ec2::23', 'ipv6'], // AWS EKS Pod Identity Agent over IPv6
  ['fd20:ce::254', 'ipv6'], // Google Cloud over IPv6
];

/** A metadata service, or an IPv6 form that reaches one, as a subnet. */
interface MetadataNetwork {
  /** The service's own address, named in errors. */
  readonly service: string;
  readonly network: BlockList;
  readonly address: string;
  readonly type: 'ipv4' | 'ipv6';
}

/**
 * The metadata services as subnets, each IPv4 one with the IPv6 forms that reach it (mapped,
 * IPv4-compatible, SIIT, NAT64, and the 6to4 network that carries it).
 */
const METADATA_NETWORKS: readonly MetadataNetwork[] = METADATA_SERVICES.flatMap(([service, type]) => {
  const forms: (readonly [string, number, 'ipv4' | 'ipv6'])[] = [[service, type === 'ipv4' ? 32 : 128, type]];
  if (type === 'ipv4') {
    const [a = 0, b = 0, c = 0, d = 0] = service.split('.').map(Number);
    const low = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    forms.push(
      [`::ffff:${low}`, 128, 'ipv6'],
      [`::${low}`, 128, 'ipv6'],
      [`::ffff:0:${low}`, 128, 'ipv6'],
      [`64:ff9b::${low}`, 128, 'ipv6'],
      [`64:ff9b:1::${low}`, 128, 'ipv6'],
      [`2002:${low}::`, 48, 'ipv6'],
    );
  }
  return forms.map(([address, prefix, family]) => {
    const network = new BlockList();
    network.addSubnet(address, prefix, family);
    return { service, network, address, type: family };
  });
});

/** The most `maxRedirects` may be: the Fetch standard's limit, which browsers follow. */
const MAX_REDIRECTS = 20;

const DEFAULTS: Readonly<UrlGuardOptions> = Object.freeze({
  maxRedirects: 3,
  timeoutMs: 30_000,
  maxBytes: 64 * 1024 * 1024,
  lookup: undefined,
  dnsServers: undefined,
  allowAddresses: undefined,
  ca: undefined,
});

/**
 * An outbound URL guard. `https:` only; the host resolved and every address checked (private,
 * loopback, link-local, CGNAT, multicast, cloud metadata (Azure's 168.63.129.16 among them) refused, in IPv4, IPv6 and IPv4-mapped
 * IPv6, and the IPv6 forms that embed or translate to an IPv4 address: NAT64, SIIT, 6to4,
 * Teredo, IPv4-compatible; numeric spellings such as `2130706433` or `0x7f.1` are what the WHATWG URL parser makes
 * of them: `127.0.0.1`); the connection made to the address that was checked, with no second
 * lookup, so DNS rebinding fails; the server's certificate verified for the URL's host; each
 * redirect target checked again, at most `maxRedirects`; the body bounded in size and the fetch
 * in time. Every refusal is `invalid_argument` naming the `url` field, the reason in the audit
 * line only.
 *
 * @throws ConfigurationError for unknown options, bad limits, a `lookup` that is not a function, a
 *   `ca` without a PEM CA certificate,
 *   or an `allowAddresses` entry that is not an address or range or holds a cloud metadata address.
 *
 * @example
 * ```ts
 * import { createUrlGuard } from '@fluxguard/core';
 * const guard = createUrlGuard({ maxBytes: 64 * 1024 * 1024 });
 * const { body } = await guard.fetch('https://models.example.com/m.bin', { signal });
 * ```
 */
export function createUrlGuard(options: UrlGuardOptions = {}): UrlGuard {
  const opts = resolveOptions('createUrlGuard', DEFAULTS, options);
  const maxRedirects = wholeNumber(opts.maxRedirects, 'createUrlGuard: "maxRedirects"', { min: 0, max: MAX_REDIRECTS });
  const timeoutMs = whole(opts.timeoutMs, 'timeoutMs', 1);
  const maxBytes = whole(opts.maxBytes, 'maxBytes', 1);
  const allowed = new BlockList();
  const allowList: unknown = opts.allowAddresses ?? [];
  if (!Array.isArray(allowList)) throw new ConfigurationError('createUrlGuard: "allowAddresses" must be an array');
  allowList.forEach((entry: unknown, i) => {
    const where = `createUrlGuard: "allowAddresses"[${String(i)}]`;
    const { address, prefix, type } = parseAddressRange(entry, where);
    if (prefix === 0) {
      throw new ConfigurationError(
        `${where} "${String(entry)}" allows every address, the private ones included: list the addresses or ranges to allow`,
      );
    }
    // A cloud metadata service hands out credentials: no entry may reach one, in any spelling.
    // Two ranges overlap when one holds the other's first address.
    const range = new BlockList();
    range.addSubnet(address, prefix, type);
    const metadata = METADATA_NETWORKS.find((m) => range.check(m.address, m.type) || m.network.check(address, type));
    if (metadata !== undefined) {
      throw new ConfigurationError(
        `${where} "${String(entry)}" includes the cloud metadata address ${metadata.service}, which is never allowed: list narrower ranges`,
      );
    }
    allowed.addSubnet(address, prefix, type);
  });
  const dnsServers = servers(opts.dnsServers);
  caBundle(opts.ca);
  if (opts.lookup !== undefined && typeof opts.lookup !== 'function') {
    throw new ConfigurationError(
      'createUrlGuard: "lookup" must be a function that resolves a name to its addresses, as dns.lookup with { all: true } does, or left out for DNS',
    );
  }
  const lookupAll = (hostname: string, signal: AbortSignal): Promise<readonly LookupAddress[]> =>
    opts.lookup === undefined ? resolveWithDns(hostname, signal, dnsServers) : opts.lookup(hostname);

  const refuse = (reason: UrlGuardReason, cause?: unknown): never => {
    throw new SecurityError('invalid_argument', { details: { field: 'url' }, reason, cause });
  };

  const isRefused = (address: string): boolean => {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const ip = mapped ?? address;
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    return REFUSED.check(ip, type) && !allowed.check(ip, type);
  };

  function check(url: string): URL {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (cause) {
      return refuse('url_invalid', cause);
    }
    if (parsed.protocol !== 'https:') refuse('url_scheme_refused');
    if (parsed.username !== '' || parsed.password !== '') refuse('url_credentials');
    const host = parsed.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) !== 0 && isRefused(host)) refuse('url_address_refused');
    return parsed;
  }

  async function resolveChecked(url: URL, signal: AbortSignal): Promise<LookupAddress> {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) !== 0) return { address: host, family: isIP(host) };
    let answered: unknown;
    try {
      answered = await lookupAll(host, signal);
    } catch (cause) {
      if (signal.aborted) throw cause;
      return refuse('url_unresolvable', cause);
    }
    // A `lookup` of the application's may answer anything: only addresses are checked and
    // connected to, and anything else is refused here, not as a TypeError further on.
    const addresses = addressesOf(answered);
    if (addresses === undefined) {
      return refuse('url_unresolvable', new Error('"lookup" answered something other than a list of addresses'));
    }
    // Every address must pass: a name with one private address among public ones is refused.
    if (addresses.some((a) => isRefused(a.address))) refuse('url_address_refused');
    const first = addresses[0];
    return first ?? refuse('url_unresolvable');
  }

  /** One request to the checked address, resolved with the answer's head; its body unread. */
  async function fetchOnce(url: URL, address: LookupAddress, signal: AbortSignal): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const requestOptions: RequestOptions = {
        method: 'GET',
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port === '' ? 443 : Number(url.port),
        path: `${url.pathname}${url.search}`,
        servername: isIP(url.hostname.replace(/^\[|\]$/g, '')) === 0 ? url.hostname : undefined,
        // The connection goes to the address that was checked: no second lookup. Answered on
        // the next tick, as DNS answers: answered at once, a connect that fails at once (an
        // unreachable network) tore the socket down inside `request()`, which then threw, and
        // the socket's 'error' came with no listener and ended the process.
        lookup: (_hostname, lookupOptions, callback) => {
          process.nextTick(() => {
            if ((lookupOptions as { all?: boolean }).all === true) {
              (callback as unknown as (err: null, addresses: LookupAddress[]) => void)(null, [address]);
            } else callback(null, address.address, address.family);
          });
        },
        rejectUnauthorized: true,
        ...(opts.ca === undefined ? {} : { ca: opts.ca }),
        // The bytes as stored: a coded body would pass the upload checks unread.
        headers: { 'accept-encoding': 'identity' },
        agent: false,
        signal,
      };
      const req = request(requestOptions, (res) => {
        resolve({ status: res.statusCode ?? 0, location: res.headers.location, res, req });
      });
      req.on('error', reject);
      req.end();
    });
  }

  /**
   * The body of a 2xx answer as it arrives: at most `maxBytes` (a larger declared length is
   * refused before a byte), within the fetch's time. A failure while reading is the guard's
   * refusal; the request ends with the body or when its reader stops.
   */
  async function* bodyOf(
    answer: Answer,
    timeout: AbortSignal,
    signal: AbortSignal,
  ): AsyncGenerator<Buffer, void, undefined> {
    const { res, req } = answer;
    try {
      const coding = res.headers['content-encoding'];
      if (coding !== undefined && coding.trim().toLowerCase() !== 'identity') refuse('url_content_coded');
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) refuse('url_too_large');
      let size = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > maxBytes) refuse('url_too_large');
        yield chunk;
      }
      // Node ends a body the connection lost midway without an error: not a whole answer.
      if (!res.complete) refuse('url_fetch_failed', new Error('the answer ended before its body was whole'));
    } catch (cause) {
      if (isSecurityError(cause)) throw cause;
      if (timeout.aborted) refuse('url_timeout', cause);
      if (signal.aborted) throw cause;
      refuse('url_fetch_failed', cause);
    } finally {
      req.destroy();
    }
  }

  async function openGuarded(
    url: string,
    fetchOptions: { readonly signal?: AbortSignal | undefined } = {},
  ): Promise<GuardedStream> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = fetchOptions.signal === undefined ? timeout : AbortSignal.any([timeout, fetchOptions.signal]);
    let current = check(url);
    for (let redirects = 0; ; redirects++) {
      let address: LookupAddress;
      try {
        address = await resolveChecked(current, signal);
      } catch (cause) {
        // Only an abandoned resolution gets here (a failed one is refused inside).
        if (isSecurityError(cause) || !timeout.aborted) throw cause;
        return refuse('url_timeout', cause);
      }
      let answer: Answer;
      try {
        answer = await fetchOnce(current, address, signal);
      } catch (cause) {
        if (isSecurityError(cause)) throw cause;
        if (timeout.aborted) return refuse('url_timeout', cause);
        if (signal.aborted) throw cause;
        return refuse('url_fetch_failed', cause);
      }
      if (answer.status < 200 || answer.status > 299) {
        // Only the head is read: a redirect's or an error's body is no business of ours.
        answer.req.destroy();
      }
      if (answer.status >= 300 && answer.status < 400 && answer.location !== undefined) {
        if (redirects >= maxRedirects) refuse('url_too_many_redirects');
        // Each target is checked again, from its scheme up. A Location that is no URL is the
        // origin's fault, and Node's error would quote it and the URL a client sent.
        const next = URL.parse(answer.location, current.href);
        if (next === null) return refuse('url_fetch_failed', new Error('a redirect whose Location is not a URL'));
        current = check(next.toString());
        continue;
      }
      if (answer.status < 200 || answer.status > 299) refuse('url_status');
      return { url: current.toString(), address: address.address, body: bodyOf(answer, timeout, signal) };
    }
  }

  async function fetchGuarded(
    url: string,
    fetchOptions: { readonly signal?: AbortSignal | undefined } = {},
  ): Promise<GuardedResponse> {
    const opened = await openGuarded(url, fetchOptions);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.body) chunks.push(chunk);
    return { url: opened.url, address: opened.address, body: Buffer.concat(chunks) };
  }

  return Object.freeze({ check, fetch: fetchGuarded, open: openGuarded });
}

/**
 * The addresses a lookup answered, each with the family its text has; `undefined` for anything
 * but an array of `{ address }` holding IP addresses.
 */
function addressesOf(answered: unknown): readonly LookupAddress[] | undefined {
  if (!Array.isArray(answered)) return undefined;
  const addresses: LookupAddress[] = [];
  for (const entry of answered as unknown[]) {
    const address: unknown = (entry as { address?: unknown } | null)?.address;
    const family = typeof address === 'string' ? isIP(address) : 0;
    if (typeof address !== 'string' || family === 0) return undefined;
    addresses.push({ address, family });
  }
  return addresses;
}

/** The head of one answer, its body not read yet. */
interface Answer {
  readonly status: number;
  readonly location: string | undefined;
  readonly res: IncomingMessage;
  readonly req: ClientRequest;
}

/** A DNS query's wait for an answer, the first time (c-ares doubles it for each retry). */
const DNS_TIMEOUT_MS = 2_000;
/** Tries per server of each query. */
const DNS_TRIES = 2;

/**
 * A name's IPv4 and IPv6 addresses from DNS (c-ares: in the event loop, not the thread pool),
 * each query bounded by c-ares's time and tries, and every query of the resolution dropped when
 * `signal` aborts.
 */
async function resolveWithDns(
  hostname: string,
  signal: AbortSignal,
  dnsServers: readonly string[] | undefined,
): Promise<readonly LookupAddress[]> {
  signal.throwIfAborted();
  const resolver = new Resolver({ timeout: DNS_TIMEOUT_MS, tries: DNS_TRIES });
  if (dnsServers !== undefined) resolver.setServers(dnsServers);
  const cancel = (): void => {
    resolver.cancel();
  };
  signal.addEventListener('abort', cancel, { once: true });
  try {
    const query = (family: 4 | 6): Promise<LookupAddress[]> =>
      new Promise((resolve, reject) => {
        const answered = (err: Error | null, addresses: string[]): void => {
          if (err) reject(err);
          else resolve(addresses.map((address) => ({ address, family })));
        };
        if (family === 4) resolver.resolve4(hostname, answered);
        else resolver.resolve6(hostname, answered);
      });
    const [v4, v6] = await Promise.allSettled([query(4), query(6)]);
    const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    signal.throwIfAborted();
    if (addresses.length > 0) return addresses;
    throw v4.status === 'rejected' ? v4.reason : new Error(`no address for ${hostname}`);
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}

function servers(value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) {
    throw new ConfigurationError('createUrlGuard: "dnsServers" must be a non-empty array of addresses');
  }
  // Checked as c-ares reads them, once: a bad entry throws here, not on the first fetch.
  try {
    new Resolver().setServers(value);
  } catch (cause) {
    throw new ConfigurationError('createUrlGuard: "dnsServers" holds an entry that is not an address', { cause });
  }
  return Object.freeze(value.slice());
}

/**
 * Checks `ca` once: PEM text or bytes holding CA certificates (or self-signed ones), each parsed.
 * Anything else made every fetch fail its handshake.
 */
function caBundle(value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
    throw new ConfigurationError('createUrlGuard: "ca" must be PEM text or bytes of CA certificates');
  }
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
  checkCaBundle('createUrlGuard', { option: 'ca', contents: value }, bytes);
}

function whole(value: unknown, name: string, min: number): number {
  return wholeNumber(value, `createUrlGuard: "${name}"`, { min });
}
