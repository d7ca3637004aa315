import type { BenchTls, Transport } from './servers.js';

/** What the answers of a run must be: served (200 / gRPC OK) or refused (401 / UNAUTHENTICATED). */
export type Expect = 'ok' | 'refused';

/** Which Authorization header each request carries. */
export type TokenPlan =
  | { readonly kind: 'none' }
  | { readonly kind: 'repeated'; readonly token: string }
  /** Cycles through the tokens of `file`, one per line, from line `start` (0-based). */
  | { readonly kind: 'pool'; readonly file: string; readonly start: number }
  /** No token, and an `x-api-key` no request has sent before (wrk only): a flood of made-up keys. */
  | { readonly kind: 'made-up-api-keys' };

/** How many requests are in flight: HTTP/1.1 keep-alive connections, or HTTP/2 connections × streams. */
export interface LoadShape {
  readonly connections: number;
  readonly h2Connections: number;
  readonly h2Streams: number;
}

export interface LoadRequest {
  readonly transport: Transport;
  readonly port: number;
  readonly seconds: number;
  readonly tokens: TokenPlan;
  readonly shape: LoadShape;
  /** The client certificate for `https` and `grpc-tls`. */
  readonly clientTls: BenchTls;
}

export interface LoadResult {
  /** Requests answered in the measured window. */
  readonly requests: number;
  readonly ok: number;
  /**
   * Answers that were not served. wrk and h2load cannot tell a 401 from another refusal (wrk
   * counts non-2xx, h2load sees gRPC statuses only as trailers): a probe before the run checks
   * the exact status (`probe.ts`).
   */
  readonly refused: number;
  /** Socket errors, timeouts, resets, and (from the Node client) any other status. */
  readonly other: number;
  readonly seconds: number;
  /** CPU the generator used, as a share of one CPU over the window; undefined where unmeasurable. */
  readonly generatorCpu: number | undefined;
}

export type Generator = (request: LoadRequest) => Promise<LoadResult>;

/**
 * A run whose answers are more than 1 % not what the scenario expects measures the wrong path
 * (a 401 flood where 200s were meant, or the reverse): it fails the variant instead of being
 * reported.
 */
export function checkResult(result: LoadResult, expect: Expect): void {
  if (result.requests === 0) throw new Error('no request was answered');
  const expected = expect === 'ok' ? result.ok : result.refused;
  const wrong = result.requests - expected + result.other;
  if (wrong > result.requests / 100) {
    throw new Error(
      `${String(wrong)} of ${String(result.requests)} answers were not ${expect === 'ok' ? 'served' : 'refused'} ` +
        `(ok ${String(result.ok)}, refused ${String(result.refused)}, errors ${String(result.other)})`,
    );
  }
}
