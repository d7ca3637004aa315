import type { Expect } from './load.js';
import type { Transport, Variant } from './servers.js';

export type GeneratorName = 'wrk' | 'h2load' | 'node';

/**
 * The Authorization header of each request:
 * - `repeated`: the same valid token every time — the verified-token cache path, a client's steady state;
 * - `clients`: the tokens of many clients (1 000 by default), each reused, one after the other —
 *   a server's steady state with many callers: every token cached, none among the last few hits;
 * - `new`: a valid token never seen in the last 10 000 requests — a full ES256 verification each time;
 * - `none`: no header — the cheapest refusal;
 * - `forged`: a token of the right shape and key id, signed by another key, a different one each
 *   time — a refusal that costs a full signature check (what an attacker would send).
 */
export type TokenKind = 'repeated' | 'clients' | 'new' | 'none' | 'forged';

export interface Scenario {
  readonly transport: Transport;
  readonly generator: GeneratorName;
  readonly tokens: TokenKind;
  /** What the peer and fluxguard answer; bare, which checks nothing, always serves. */
  readonly expect: Expect;
  /** Compare `peer+ratelimit` and `fluxguard+ratelimit` instead of `peer` and `fluxguard`. */
  readonly rateLimit: boolean;
  /** Why this row exists, when it is not obvious. */
  readonly note?: string;
}

/**
 * The columns a scenario can have; bare is always the reference. `floor` (bare plus one ES256
 * signature check) exists only where every token is new or forged: elsewhere a server need not
 * verify a signature per request, so there is no floor to compare with.
 */
export const COLUMNS = ['bare', 'peer', 'fluxguard', 'floor'] as const;
export type Column = (typeof COLUMNS)[number];

/** One value per column of the scenario: `floor` is absent where the scenario has none. */
export type ByColumn<T> = Record<Exclude<Column, 'floor'>, T> & { readonly floor?: T };

/** Whether the scenario has a `floor` column: every request carries a new or a forged token. */
export function hasFloor(scenario: Scenario): boolean {
  return scenario.tokens === 'new' || scenario.tokens === 'forged';
}

/** The columns measured for a scenario, in table order. */
export function columnsOf(scenario: Scenario): readonly Column[] {
  return COLUMNS.filter((column) => column !== 'floor' || hasFloor(scenario));
}

/** One value per column of the scenario. */
export function byColumn<T>(scenario: Scenario, value: (column: Column) => T): ByColumn<T> {
  const three = { bare: value('bare'), peer: value('peer'), fluxguard: value('fluxguard') };
  return hasFloor(scenario) ? { ...three, floor: value('floor') } : three;
}

/** The server variant behind a column: the `+ratelimit` ones in a rate-limiting row. */
export function variantOf(scenario: Scenario, column: Column): Variant {
  if (column === 'bare' || column === 'floor' || !scenario.rateLimit) return column;
  return column === 'peer' ? 'peer+ratelimit' : 'fluxguard+ratelimit';
}

const served = { expect: 'ok', rateLimit: false } as const;
const refused = { expect: 'refused', rateLimit: false } as const;

/**
 * Every scenario, by group (a group is a transport). wrk and h2load are the faster generators;
 * the Node client covers what they cannot send (client certificates; a new token per gRPC
 * call) and runs once on a scenario h2load or wrk also runs, so that its ceiling can be seen.
 */
export const SCENARIOS: readonly Scenario[] = [
  { transport: 'http', generator: 'wrk', tokens: 'repeated', ...served },
  {
    transport: 'http',
    generator: 'node',
    tokens: 'repeated',
    ...served,
    note: 'the Node client on the same scenario as wrk: how far below wrk it tops out',
  },
  { transport: 'http', generator: 'wrk', tokens: 'clients', ...served },
  { transport: 'http', generator: 'wrk', tokens: 'new', ...served },
  { transport: 'http', generator: 'wrk', tokens: 'none', ...refused },
  { transport: 'http', generator: 'wrk', tokens: 'forged', ...refused },
  { transport: 'http', generator: 'wrk', tokens: 'repeated', expect: 'ok', rateLimit: true },
  { transport: 'https', generator: 'node', tokens: 'repeated', ...served },
  { transport: 'grpc', generator: 'h2load', tokens: 'repeated', ...served },
  {
    transport: 'grpc',
    generator: 'node',
    tokens: 'repeated',
    ...served,
    note: 'the Node client on the same scenario as h2load: how far below h2load it tops out',
  },
  { transport: 'grpc', generator: 'node', tokens: 'clients', ...served },
  { transport: 'grpc', generator: 'node', tokens: 'new', ...served },
  { transport: 'grpc', generator: 'h2load', tokens: 'none', ...refused },
  { transport: 'grpc', generator: 'node', tokens: 'forged', ...refused },
  { transport: 'grpc', generator: 'h2load', tokens: 'repeated', expect: 'ok', rateLimit: true },
  { transport: 'grpc-tls', generator: 'node', tokens: 'repeated', ...served },
];

const TRANSPORT_TITLES: Record<Transport, string> = {
  http: 'HTTP',
  https: 'HTTPS + client cert',
  grpc: 'gRPC',
  'grpc-tls': 'gRPC TLS + client cert',
};

const TOKEN_TITLES: Record<TokenKind, string> = {
  repeated: 'repeated token',
  clients: 'many clients, each its own token',
  new: 'new token per request',
  none: 'denial: no token',
  forged: 'denial: forged token per request',
};

export function scenarioTitle(s: Scenario): string {
  return `${TRANSPORT_TITLES[s.transport]}, ${TOKEN_TITLES[s.tokens]}${s.rateLimit ? ', rate limiting on' : ''}`;
}
