import { afterEach, describe, expect, it } from 'vitest';
import {
  compileJsonShape,
  compileRbac,
  createCertificateCheck,
  createJwtVerifier,
  createRateLimit,
  createRemoteJwksSource,
  createTimeouts,
  parseSecurityPolicy,
} from '../index.js';

// What a polluting merge or query parser elsewhere in the process would have set. Each case
// builds with options that leave the key out, so an inherited value would configure it.
const POLLUTED = Object.prototype as unknown as Record<string, unknown>;
const VERIFIER = { issuer: 'https://id.example.com', audience: 'artifacts' };
const RULE = { 'GET /a': { anyRoles: ['reader'] } };

const CASES: readonly [string, unknown, () => unknown][] = [
  // RBAC in shadow mode refuses nothing.
  ['mode', 'shadow', () => compileRbac(RULE)],
  [
    'mode',
    'shadow',
    () => parseSecurityPolicy({ version: 1, rbac: { rules: [{ operation: 'GET /a', anyRoles: ['r'] }] } }),
  ],
  // A denylist that revokes nothing, consulted by a verifier built without one.
  [
    'denylist',
    { isRevoked: () => false, revoke: () => undefined },
    () => createJwtVerifier({ ...VERIFIER, jwksUrl: 'https://id.example.com/jwks' }),
  ],
  // Signing keys over plain http from a remote host.
  [
    'jwksOptions',
    { allowInsecureHttp: true },
    () => createJwtVerifier({ ...VERIFIER, jwksUrl: 'http://id.example.com/jwks' }),
  ],
  ['allowInsecureHttp', true, () => createRemoteJwksSource({ url: 'http://id.example.com/jwks' })],
  // No depth limit on JSON bodies.
  ['maxDepth', 5_000, () => compileJsonShape()],
  // No idle limit.
  ['idleMs', 0, () => createTimeouts({ rules: [{ operation: 'GET /a', defaultMs: 1_000 }] })],
  // A rule's requirement, or a certificate identity that would name any caller.
  ['authenticated', true, () => compileRbac({ 'GET /a': { public: true } })],
  ['commonName', 'admin', () => createCertificateCheck({ allow: [{ spiffeId: 'spiffe://example.org/backup' }] })],
  // Every client a proxy that names itself.
  [
    'trustedProxies',
    ['0.0.0.0/1', '128.0.0.0/1'],
    () => createRateLimit({ rules: [{ name: 'p', key: 'peer', points: 1, durationSeconds: 1 }] }),
  ],
];

describe('options inherited from a polluted Object.prototype', () => {
  afterEach(() => {
    for (const [key] of CASES) Reflect.deleteProperty(POLLUTED, key);
  });

  it.each(CASES)('refuses to read Object.prototype.%s', (key, value, build) => {
    // Unpolluted, the same call builds (a remote http: URL is refused for being one).
    if (key === 'jwksOptions' || key === 'allowInsecureHttp') expect(build).toThrow(/"(jwksUrl|url)" must use https:/);
    else expect(build()).toBeDefined();
    POLLUTED[key] = value;
    expect(build).toThrow(
      `"${key}" is not given here but inherited: something in this process set Object.prototype.${key}`,
    );
  });
});
