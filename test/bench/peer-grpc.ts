import * as grpc from '@grpc/grpc-js';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { AUDIENCE, ISSUER, RATE_LIMIT_POINTS, READER_ROLE } from './fixtures.js';
import { metadataGate, type Refusal } from './grpc-gate.js';

const BEARER = /^Bearer ([^\s]+)$/;

/**
 * The gRPC peer: one hand-written grpc-js interceptor doing what a team would write without
 * fluxguard — jose's `jwtVerify` on the bearer token, a role check, and with `withRateLimit`
 * rate-limiter-flexible (memory) per client address and per caller, as high as fluxguard's.
 */
export function peerInterceptor(jwks: JSONWebKeySet, withRateLimit: boolean): grpc.ServerInterceptor {
  const keys = createLocalJWKSet(jwks);
  const limiter = (keyPrefix: string): RateLimiterMemory | undefined =>
    withRateLimit ? new RateLimiterMemory({ keyPrefix, points: RATE_LIMIT_POINTS, duration: 60 }) : undefined;
  const perPeer = limiter('peer');
  const perCaller = limiter('caller');

  async function refusal(metadata: grpc.Metadata, peer: string): Promise<Refusal | undefined> {
    const unauthenticated = { code: grpc.status.UNAUTHENTICATED, details: 'unauthenticated' };
    const match = BEARER.exec(String(metadata.get('authorization')[0] ?? ''));
    if (match?.[1] === undefined) return unauthenticated;
    try {
      await perPeer?.consume(peer.slice(0, peer.lastIndexOf(':')));
    } catch {
      return { code: grpc.status.RESOURCE_EXHAUSTED, details: 'rate limited' };
    }
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(match[1], keys, {
        issuer: ISSUER,
        audience: AUDIENCE,
        algorithms: ['ES256'],
      }));
    } catch {
      return unauthenticated;
    }
    const roles: unknown = claims.roles;
    if (!Array.isArray(roles) || !roles.includes(READER_ROLE)) {
      return { code: grpc.status.PERMISSION_DENIED, details: 'forbidden' };
    }
    try {
      await perCaller?.consume(String(claims.sub));
    } catch {
      return { code: grpc.status.RESOURCE_EXHAUSTED, details: 'rate limited' };
    }
    return undefined;
  }

  return metadataGate(refusal);
}
