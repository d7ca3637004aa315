/**
 * A `Host` value (HTTP/1.1) or `:authority` (HTTP/2) as RFC 9112 section 3.2 has it,
 * `uri-host [ ":" port ]` of RFC 3986: a bracketed IPv6 address, or a name of unreserved,
 * sub-delim and percent-encoded characters; {@link canonicalHost} then reads it as the URL parser
 * does (a real IPv6 address, a port up to 65535, no encoded space).
 */
const HOST_FIELD = /^(?:\[[\da-f:.]+\]|[\w.~!$&'()*+,;=%-]+)(?::\d*)?$/i;

/** The values read lately, valid or not: a server sees a handful, each on every request. */
const hostsRead = new Map<string, boolean>();
/** Most values kept: a client sending a new one each time empties the map when it is full. */
const MOST_HOSTS_KEPT = 256;
/** Longest value kept: 253 characters of name, a colon and five digits of port. */
const LONGEST_HOST_KEPT = 259;
/**
 * The last value read and its verdict, compared before the map is asked: a connection sends the
 * same value on every request, and Node makes a new string of it each time, which the map must
 * hash whole (about 600 instructions a gRPC call, against a few dozen to compare).
 */
let lastHost = '';
let lastValid = false;

/**
 * Whether `host` is a host and an optional port, as a request's `Host` header (HTTP/1.1) or
 * `:authority` (HTTP/2) must be: not `a b`, `u@a`, `a.example/x`, `[::1` or `a:99999`, which
 * Node and grpc-js hand on as they came, to `req.hostname` and `call.getHost()`. The verdict is
 * kept for the values read lately (bounded in count and length): the URL parser's reading is
 * about a microsecond, and every request has one.
 *
 * @example
 * ```ts
 * import { isValidHostField } from '@fluxguard/core/adapter';
 * isValidHostField('api.example:8443'); // true
 * isValidHostField('u@api.example'); // false
 * ```
 */
export function isValidHostField(host: string): boolean {
  if (host === lastHost) return lastValid;
  let valid = hostsRead.get(host);
  if (valid === undefined) {
    valid = HOST_FIELD.test(host) && canonicalHost('http', host) !== undefined;
    // A name a DNS could hold, and a port: a longer value (up to the header limit) is not kept.
    if (host.length <= LONGEST_HOST_KEPT) {
      if (hostsRead.size >= MOST_HOSTS_KEPT) hostsRead.clear();
      hostsRead.set(host, valid);
    }
  }
  if (host.length <= LONGEST_HOST_KEPT) {
    lastHost = host;
    lastValid = valid;
  }
  return valid;
}

/**
 * A host (with any port) as the URL parser reads it for `scheme`, so that two spellings of one
 * host compare equal: letter case, the scheme's default port or an empty one (`a:443`, `a:` are
 * `a` for `https`), an IPv6 address written in full, percent-encoding, and the root's trailing
 * dot (`a.example.`). `undefined` for anything but a host and a port.
 *
 * @example
 * ```ts
 * import { canonicalHost } from '@fluxguard/core/adapter';
 * canonicalHost('https', 'A.Example.:443'); // 'a.example'
 * canonicalHost('http', 'u@a.example'); // undefined
 * ```
 */
export function canonicalHost(scheme: string, host: string): string | undefined {
  let url: URL;
  try {
    url = new URL(`${scheme}://${host}/`);
  } catch {
    return undefined;
  }
  if (url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '')
    return undefined;
  const name = url.hostname.endsWith('.') ? url.hostname.slice(0, -1) : url.hostname;
  return url.port === '' ? name : `${name}:${url.port}`;
}
