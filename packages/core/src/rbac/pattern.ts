import { METHODS } from 'node:http';
import { ConfigurationError } from '../errors/fluxguard-error.js';

/** A compiled operation pattern. */
export interface OperationPattern {
  /** The pattern in normal form (trailing slash removed), used for duplicates and exact lookups. */
  readonly key: string;
  /** The pattern as the policy wrote it (`GET /healthz/`), for messages. */
  readonly written: string;
  /**
   * The operations it names, written without the names of its parameters and wildcards
   * (`GET /v1/:/*`): two patterns of one shape match the same operations, and only one of them
   * could ever apply.
   */
  readonly shape: string;
  /** True when it names exactly one operation (no `*` method, service wildcard, `:param` or `*splat`). */
  readonly exact: boolean;
  /** Segment ranks for ordering wildcards: 3 literal, 2 `:param`, 1 `*splat`; last, the method rank. */
  readonly ranks: readonly number[];
  matches(operation: string): boolean;
}

const GRPC = /^\/([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\/([A-Za-z_][A-Za-z0-9_]*|\*)$/;
const HTTP = /^(\*|[A-Z][A-Z-]*) (\/.*)$/;
const PARAM = /^:[A-Za-z_$][A-Za-z0-9_$]*$/;
const SPLAT = /^\*(?:[A-Za-z_$][A-Za-z0-9_$]*)?$/;
// What a client never needs to encode (RFC 3986 unreserved): a literal segment of a rule holds only these.
const LITERAL_SEGMENT = /^[A-Za-z0-9._~-]+$/;
// What Node's HTTP parser accepts as a method: a rule for any other word would never apply, nor
// would one for CONNECT, which Node hands to its `connect` event, never to Express.
const HTTP_METHODS = new Set(METHODS.filter((method) => method !== 'CONNECT'));

/** Removes a trailing slash from an HTTP operation's path, as Express's non-strict routing does. */
export function normalizeOperation(operation: string): string {
  return operation.length > 1 && operation.endsWith('/') && !operation.endsWith(' /') && !operation.startsWith('/')
    ? operation.slice(0, -1)
    : operation;
}

/**
 * Parses a rule's operation pattern: gRPC `/pkg.Service/Method` or `/pkg.Service/*`; HTTP
 * `METHOD /path` with `:param` (one segment) and a final `*splat` (one or more segments), the
 * method `*` standing for any method.
 */
export function compilePattern(pattern: unknown, where: string): OperationPattern {
  if (typeof pattern !== 'string' || pattern === '')
    throw new ConfigurationError(`${where} must be a non-empty string`);
  if (pattern.startsWith('/')) {
    const m = GRPC.exec(pattern);
    if (m === null) {
      // A path with its method left out (`/v1/items/:id`) would otherwise read as a bad gRPC name.
      const hint = /^\/[^/]*\/[^/]*\/|\/[:*]/.test(pattern) ? `; an HTTP route needs its method: "GET ${pattern}"` : '';
      throw new ConfigurationError(
        `${where} "${pattern}" is not a gRPC method pattern (/pkg.Service/Method or /pkg.Service/*)${hint}`,
      );
    }
    const service = `/${m[1] ?? ''}/`;
    const exact = m[2] !== '*';
    return {
      key: pattern,
      written: pattern,
      shape: pattern,
      exact,
      ranks: exact ? [3, 3] : [3, 2],
      matches: exact
        ? (op) => op === pattern
        : (op) => op.startsWith(service) && op.length > service.length && !op.includes('/', service.length),
    };
  }
  const m = HTTP.exec(pattern);
  if (m === null) {
    throw new ConfigurationError(
      `${where} "${pattern}" is not an operation pattern: gRPC "/pkg.Service/Method" or HTTP "METHOD /path" (method in capitals, or *)`,
    );
  }
  const method = m[1] ?? '*';
  if (method !== '*' && !HTTP_METHODS.has(method)) {
    throw new ConfigurationError(
      `${where} "${pattern}": "${method}" is not an HTTP method Node's server accepts (GET, POST, PUT, PATCH, DELETE, OPTIONS, ...), so the rule would never apply`,
    );
  }
  // The adapters report a HEAD request as GET (Express runs GET routes for it): a HEAD rule would never apply.
  if (method === 'HEAD') {
    throw new ConfigurationError(
      `${where} "${pattern}": a HEAD request is decided by the rule of GET (Express answers it with the GET route); write the rule for GET`,
    );
  }
  const key = normalizeOperation(pattern);
  const path = key.slice(method.length + 1);
  const segments = path === '/' ? [] : path.slice(1).split('/');
  const ranks: number[] = [];
  for (const [i, segment] of segments.entries()) {
    if (segment === '') throw new ConfigurationError(`${where} "${pattern}" has an empty path segment`);
    if (/[{}()?+]/.test(segment)) {
      throw new ConfigurationError(
        `${where} "${pattern}": optional groups and regular expressions are not supported; write one rule per path`,
      );
    }
    if (segment.startsWith(':')) {
      if (!PARAM.test(segment)) throw new ConfigurationError(`${where} "${pattern}": bad parameter "${segment}"`);
      ranks.push(2);
    } else if (segment.startsWith('*')) {
      if (!SPLAT.test(segment)) throw new ConfigurationError(`${where} "${pattern}": bad wildcard "${segment}"`);
      if (i !== segments.length - 1)
        throw new ConfigurationError(`${where} "${pattern}": a *wildcard must be the last segment`);
      ranks.push(1);
    } else {
      if (segment.includes('*') || segment.includes(':')) {
        throw new ConfigurationError(`${where} "${pattern}": "*" and ":" may only start a segment`);
      }
      // Rules read the path as sent and Express decodes it for the route: `root%40corp` would
      // reach the route of `root@corp` past its rule, and `hr reports` arrives only encoded.
      if (!LITERAL_SEGMENT.test(segment)) {
        throw new ConfigurationError(
          `${where} "${pattern}": a literal path segment may hold only letters, digits, "-", ".", "_" and "~": a client may send any other character percent-encoded, which the rule would not match; name such paths with a :param`,
        );
      }
      ranks.push(3);
    }
  }
  ranks.push(method === '*' ? 0 : 1);
  const exact = method !== '*' && ranks.slice(0, -1).every((r) => r === 3);
  const splat = segments.length > 0 && ranks[segments.length - 1] === 1;
  const shape = `${method} /${segments.map((segment, i) => (ranks[i] === 3 ? segment : segment.charAt(0))).join('/')}`;
  return {
    key,
    written: pattern,
    shape,
    exact,
    ranks,
    matches(operation: string): boolean {
      const op = normalizeOperation(operation);
      const space = op.indexOf(' ');
      if (space <= 0) return false;
      if (method !== '*' && op.slice(0, space) !== method) return false;
      const opPath = op.slice(space + 1);
      if (!opPath.startsWith('/')) return false;
      const opSegments = opPath === '/' ? [] : opPath.slice(1).split('/');
      if (splat ? opSegments.length < segments.length : opSegments.length !== segments.length) return false;
      for (const [i, segment] of segments.entries()) {
        const rank = ranks[i];
        const actual = opSegments[i] ?? '';
        if (rank === 1) return opSegments.slice(i).every((s) => s !== '');
        if (actual === '') return false;
        if (rank === 3 && actual !== segment) return false;
      }
      return true;
    },
  };
}

/**
 * Checks a list of the operations a server serves (`servedOperations`): gRPC method names
 * (`/pkg.Service/Method`) and HTTP routes (`METHOD /path`), nothing else. An entry of neither
 * kind (`pkg.Service/Method` without its slash) was read as an HTTP route, and with no gRPC name
 * left in the list no gRPC rule was held against it: a typo there turned the check off.
 *
 * @throws ConfigurationError for a `served` that is not an array of strings, or naming the
 *   first entry that is no operation, with what it should read.
 *
 * @example
 * ```ts
 * checkServedList(['store.v1.Store/Get'], 'createTimeouts', 'servedOperations');
 * // ConfigurationError: createTimeouts: "servedOperations[0]" "store.v1.Store/Get" is not an operation: a gRPC method name starts with "/": "/store.v1.Store/Get"
 * ```
 *
 * @internal
 */
export function checkServedList(served: unknown, where: string, name: string): readonly string[] {
  if (!Array.isArray(served) || !served.every((o) => typeof o === 'string')) {
    throw new ConfigurationError(`${where}: "${name}" must be an array of strings`);
  }
  const operations: readonly string[] = served;
  operations.forEach((operation, i) => {
    const problem = notAnOperation(operation);
    if (problem !== undefined) {
      throw new ConfigurationError(`${where}: "${name}[${String(i)}]" "${operation}" is not an operation: ${problem}`);
    }
  });
  return operations;
}

/** Why `operation` is neither a gRPC method name nor an HTTP route, or `undefined` when it is one. */
function notAnOperation(operation: string): string | undefined {
  if (operation.startsWith('/')) {
    const m = GRPC.exec(operation);
    if (m !== null && m[2] !== '*') return undefined;
    if (m !== null) return 'a served gRPC operation is one method, not a service\'s "*"';
    return `a gRPC method is "/pkg.Service/Method", and an HTTP route needs its method: "GET ${operation}"`;
  }
  const m = HTTP.exec(operation);
  if (m !== null) {
    const method = m[1] ?? '';
    return method === '*' || HTTP_METHODS.has(method)
      ? undefined
      : `"${method}" is not an HTTP method Node's server hands to Express`;
  }
  if (GRPC.test(`/${operation}`)) return `a gRPC method name starts with "/": "/${operation}"`;
  const lower = /^([a-z]+) (\/.*)$/.exec(operation);
  if (lower !== null)
    return `an HTTP method is written in capitals: "${(lower[1] ?? '').toUpperCase()} ${lower[2] ?? ''}"`;
  return 'expected a gRPC method "/pkg.Service/Method" or an HTTP route "METHOD /path"';
}

/**
 * Refuses two patterns that name the same operations (`PUT /v1/x` and `PUT /v1/x/`, `GET
 * /v1/:id` and `GET /v1/:name`): only the one written first would ever apply. `at(i)` says
 * where the i-th pattern was written.
 *
 * @throws ConfigurationError naming the second pattern and the first.
 *
 * @example
 * ```ts
 * refuseSameOperations([compilePattern('GET /v1/:id', 'a'), compilePattern('GET /v1/:name', 'b')], (i) => `rules[${i}]`);
 * // ConfigurationError: rules[1] "GET /v1/:name" names the operations of "GET /v1/:id", written before it: only one could apply
 * ```
 *
 * @internal
 */
export function refuseSameOperations(patterns: readonly OperationPattern[], at: (index: number) => string): void {
  const first = new Map<string, OperationPattern>();
  patterns.forEach((pattern, i) => {
    const earlier = first.get(pattern.shape);
    if (earlier !== undefined) {
      throw new ConfigurationError(
        `${at(i)} "${pattern.written}" names the operations of "${earlier.written}", written before it: only one could apply`,
      );
    }
    first.set(pattern.shape, pattern);
  });
}

/**
 * Whether `pattern` names one of the operations a server serves: one of them exactly (a route
 * as the router writes it, `GET /v1/items/:id`), or one it matches. What start-up checks ask
 * of every rule and every operation pattern of a policy.
 *
 * @internal
 */
export function namesServed(pattern: OperationPattern, served: readonly string[]): boolean {
  return served.some((op) => pattern.key === op || pattern.matches(op));
}

/** Orders wildcard patterns most specific first: segment by segment, then a named method over `*`. */
export function compareSpecificity(a: OperationPattern, b: OperationPattern): number {
  const pathA = a.ranks.slice(0, -1);
  const pathB = b.ranks.slice(0, -1);
  for (let i = 0; i < Math.min(pathA.length, pathB.length); i++) {
    const diff = (pathB[i] ?? 0) - (pathA[i] ?? 0);
    if (diff !== 0) return diff;
  }
  if (pathA.length !== pathB.length) return pathB.length - pathA.length;
  return (b.ranks.at(-1) ?? 0) - (a.ranks.at(-1) ?? 0);
}

// A witness segment for a `:param` or `*splat`: no literal segment of a pattern can be this
// (":" and "*" may only start a segment, and then it is a parameter or a wildcard).
const ANY_SEGMENT = 'x:';

/**
 * A concrete HTTP operation that both patterns (or routes, `METHOD /path` with `:param` and a
 * final `*splat`) match, or `undefined` when no request could match both: different methods,
 * different literal segments, or lengths no wildcard makes up for. Used at start-up to find
 * routes whose paths overlap.
 *
 * @internal
 */
export function overlapWitness(a: string, b: string): string | undefined {
  const x = splitHttp(a);
  const y = splitHttp(b);
  if (x === undefined || y === undefined) return undefined;
  const method = x.method === '*' ? y.method : y.method === '*' || y.method === x.method ? x.method : undefined;
  if (method === undefined) return undefined;
  const path: string[] = [];
  for (let i = 0; ; i++) {
    const s = x.segments[i];
    const t = y.segments[i];
    if (s === undefined && t === undefined) break;
    // A wildcard takes the other's rest, which must be at least one segment.
    if (s?.startsWith('*') === true) {
      if (t === undefined) return undefined;
      path.push(...y.segments.slice(i).map(concrete));
      break;
    }
    if (t?.startsWith('*') === true) {
      if (s === undefined) return undefined;
      path.push(...x.segments.slice(i).map(concrete));
      break;
    }
    if (s === undefined || t === undefined) return undefined;
    if (!s.startsWith(':') && !t.startsWith(':') && s !== t) return undefined;
    path.push(s.startsWith(':') ? concrete(t) : s);
  }
  return `${method === '*' ? 'GET' : method} /${path.join('/')}`;
}

/**
 * For the route order check, which holds every route against every later one: each pattern of
 * `patterns` split once, and a test of two of them (by index) that is `false` only where
 * {@link overlapWitness} finds no request both match (another method, or a literal segment
 * that differs), at the cost of a few comparisons. 2,000 routes took 2 s to check, splitting
 * both patterns of each of the two million pairs.
 *
 * @internal
 */
export function mayOverlap(patterns: readonly string[]): (i: number, j: number) => boolean {
  const split = patterns.map(splitHttp);
  return (i, j) => {
    const x = split[i];
    const y = split[j];
    if (x === undefined || y === undefined) return false;
    if (x.method !== '*' && y.method !== '*' && x.method !== y.method) return false;
    for (let k = 0; k < x.segments.length && k < y.segments.length; k++) {
      const s = x.segments[k] ?? '';
      const t = y.segments[k] ?? '';
      if (s.startsWith('*') || t.startsWith('*')) return true;
      if (!s.startsWith(':') && !t.startsWith(':') && s !== t) return false;
    }
    return true;
  };
}

/**
 * Whether an Express route (`METHOD /path`, `*` for `app.all`) could have matched `operation`
 * as it arrived: the method, each literal segment letter for letter, a `:param` (or a segment
 * holding one, `file.:ext`) one non-empty segment, a final `*splat` the rest. A route that
 * could not have matched it was reached because something rewrote `req.method` or `req.url`.
 *
 * @internal
 */
export function routeServes(route: string, operation: string): boolean {
  const r = splitHttp(route);
  const o = splitHttp(operation);
  if (r === undefined || o === undefined) return false;
  if (r.method !== '*' && r.method !== o.method) return false;
  for (const [i, segment] of r.segments.entries()) {
    if (segment.startsWith('*')) return o.segments.length > i && o.segments.slice(i).every((s) => s !== '');
    const actual = o.segments[i];
    if (actual === undefined || actual === '') return false;
    if (!segment.includes(':') && !segment.includes('*') && segment !== actual) return false;
  }
  return o.segments.length === r.segments.length;
}

function splitHttp(pattern: string): { method: string; segments: readonly string[] } | undefined {
  const m = HTTP.exec(normalizeOperation(pattern));
  if (m === null) return undefined;
  const path = m[2] ?? '/';
  return { method: m[1] ?? '*', segments: path === '/' ? [] : path.slice(1).split('/') };
}

function concrete(segment: string): string {
  return segment.startsWith(':') || segment.startsWith('*') ? ANY_SEGMENT : segment;
}
