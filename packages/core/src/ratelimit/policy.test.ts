import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { loadSecurityPolicy, parseSecurityPolicy } from '../policy/policy.js';
import { rateLimitControls } from './policy.js';
import { createMemoryRateLimitStore } from './store.js';

const RATE_LIMITS = {
  trustedProxies: ['10.0.0.0/8', 'fd00::/8'],
  ipv6PrefixLength: 56,
  rules: [
    { name: 'per-peer', key: 'peer', points: 100, durationSeconds: 1 },
    {
      name: 'uploads',
      key: 'subject',
      points: 20,
      durationSeconds: 60,
      burst: { points: 5, durationSeconds: 10 },
      operations: ['/fluxguard.example.v1.ArtifactStore/UploadArtifact', 'PUT /v1/artifacts/*path'],
      operationCosts: { 'PUT /v1/artifacts/big/*path': 5 },
      storeFailure: 'closed',
    },
    { name: 'per-key', key: 'header:x-api-key', points: 10, durationSeconds: 1, stage: 'caller-limit' },
  ],
  bruteForce: {
    peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 },
    subject: { maxFailures: 5, windowSeconds: 600, blockSeconds: 300 },
    storeFailure: 'open',
  },
};

const withRateLimits = <T>(rateLimits: T) => ({ version: 1, rateLimits });

describe('the rateLimits policy section', () => {
  it('accepts a valid section as a frozen copy, the input untouched', () => {
    const input = withRateLimits(structuredClone(RATE_LIMITS));
    const policy = parseSecurityPolicy(input);
    expect(policy.rateLimits).toEqual(RATE_LIMITS);
    expect(policy.rateLimits).not.toBe(input.rateLimits);
    expect(Object.isFrozen(policy.rateLimits?.rules?.[1]?.operations)).toBe(true);
    expect(Object.isFrozen(input.rateLimits.rules[0])).toBe(false);
  });

  it('builds the controls the section describes, each in its stage', () => {
    const policy = parseSecurityPolicy(withRateLimits(structuredClone(RATE_LIMITS)));
    const controls = rateLimitControls(policy.rateLimits ?? {}, createMemoryRateLimitStore(), 'policy.rateLimits');
    expect(controls.map((c) => [c.name, c.stage])).toEqual([
      ['rate-limit', 'pre-authentication'],
      ['rate-limit', 'caller-limit'],
      ['brute-force', 'pre-authentication'],
    ]);
    // A section that limits nothing is refused rather than read as a limit.
    expect(() => parseSecurityPolicy(withRateLimits({}))).toThrow(/has neither "rules" nor "bruteForce"/);
  });

  it.each<[string, (r: typeof RATE_LIMITS) => unknown, string | RegExp]>([
    ['a section that is not an object', () => [{ name: 'x' }], 'policy.rateLimits must be an object'],
    [
      'a misspelt section field',
      (r) => ({ ...r, rule: [] }),
      'policy.rateLimits: unknown field "rule" (did you mean "rules"?)',
    ],
    ['rules that are not an array', (r) => ({ ...r, rules: {} }), 'policy.rateLimits.rules must be a non-empty array'],
    [
      'zero points',
      (r) => ({ ...r, rules: [{ ...r.rules[0], points: 0 }] }),
      'policy.rateLimits.rules[0].points must be a whole number of at least 1',
    ],
    [
      'a misspelt rule field',
      (r) => ({ ...r, rules: [r.rules[0], { ...r.rules[1], operation: ['GET /x'] }] }),
      /^policy\.rateLimits\.rules\[1\]: unknown field "operation" \(did you mean "operations"\?\)$/,
    ],
    [
      'a bad operation pattern',
      (r) => ({ ...r, rules: [{ ...r.rules[0], operations: ['put /v1/x'] }] }),
      /^policy\.rateLimits\.rules\[0\]\.operations\[0\] "put \/v1\/x" is not an operation pattern/,
    ],
    [
      'a key that is not a string',
      (r) => ({ ...r, rules: [{ ...r.rules[0], key: { fn: 'x' } }] }),
      'policy.rateLimits.rules[0].key must be "peer", "subject", "certificate" or "header:<name>"',
    ],
    [
      'an unknown key',
      (r) => ({ ...r, rules: [{ ...r.rules[0], key: 'ip' }] }),
      /^policy\.rateLimits\.rules\[0\]\.key must be/,
    ],
    [
      'a subject key before authentication',
      (r) => ({ ...r, rules: [{ ...r.rules[1], stage: 'pre-authentication' }] }),
      /^policy\.rateLimits\.rules\[0\]: key "subject" cannot run at stage "pre-authentication"/,
    ],
    [
      'two rules with one name',
      (r) => ({ ...r, rules: [r.rules[0], r.rules[0]] }),
      'policy.rateLimits.rules[1].name "per-peer" is used by an earlier rule',
    ],
    [
      'a bad trusted proxy',
      (r) => ({ ...r, trustedProxies: ['10.0.0.0/8', 'lb.internal'] }),
      /^policy\.rateLimits\.trustedProxies\[1\] "lb\.internal" is not an IP address or CIDR range$/,
    ],
    [
      'a bad prefix length',
      (r) => ({ ...r, ipv6PrefixLength: 200 }),
      'policy.rateLimits.ipv6PrefixLength must be a whole number from 1 to 128',
    ],
    [
      'a bruteForce that is not an object',
      (r) => ({ ...r, bruteForce: true }),
      'policy.rateLimits.bruteForce must be an object',
    ],
    [
      'a bad maxFailures',
      (r) => ({ ...r, bruteForce: { peer: { ...r.bruteForce.peer, maxFailures: 'ten' } } }),
      'policy.rateLimits.bruteForce.peer.maxFailures must be a whole number of at least 1',
    ],
    [
      'a misspelt bruteForce field',
      (r) => ({ ...r, bruteForce: { ...r.bruteForce, subjects: r.bruteForce.subject } }),
      /^policy\.rateLimits\.bruteForce: unknown field "subjects" \(did you mean "subject"\?\)$/,
    ],
    [
      // Client addresses alone limit nothing.
      'a section without rules or bruteForce',
      () => ({ trustedProxies: ['10.0.0.0/8'] }),
      'policy.rateLimits has neither "rules" nor "bruteForce", so it would limit nothing',
    ],
  ])('refuses %s, naming the field', (_label, mutate, message) => {
    const policy = withRateLimits(mutate(structuredClone(RATE_LIMITS)));
    expect(() => parseSecurityPolicy(policy)).toThrow(ConfigurationError);
    expect(() => parseSecurityPolicy(policy)).toThrow(message);
  });

  it('reads the section from a YAML policy file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fluxguard-ratelimits-'));
    const file = join(dir, 'policy.yaml');
    await writeFile(
      file,
      [
        'version: 1',
        'rateLimits:',
        '  trustedProxies: [10.0.0.0/8]',
        '  rules:',
        '    - { name: per-peer, key: peer, points: 50, durationSeconds: 1 }',
        '  bruteForce:',
        '    peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 }',
        '',
      ].join('\n'),
    );
    const policy = await loadSecurityPolicy(file).finally(() => rm(dir, { recursive: true, force: true }));
    expect(policy.rateLimits).toEqual({
      trustedProxies: ['10.0.0.0/8'],
      rules: [{ name: 'per-peer', key: 'peer', points: 50, durationSeconds: 1 }],
      bruteForce: { peer: { maxFailures: 10, windowSeconds: 600, blockSeconds: 900 } },
    });
  });
});
