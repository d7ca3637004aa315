import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createAuditLogger } from '../audit/audit-logger.js';
import type { Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createGuardFromPolicy } from '../guard/from-policy.js';
import { createJwtVerifier } from '../jwt/verifier.js';
import { compileIdentityRules } from '../mtls/identity-rules.js';
import type * as IdentityRulesModule from '../mtls/identity-rules.js';
import { loadSecurityPolicy, parseSecurityPolicy } from '../policy/policy.js';
import { compilePattern } from './pattern.js';
import type * as PatternModule from './pattern.js';
import { parseRbacPolicy, rbacRulesForTransport } from './policy.js';
import { compileRbac } from './rbac.js';

// Spies that call the real functions: compiling a rule compiles its pattern once (and its
// certificate rules once), so these counts are the number of rule compilations.
vi.mock('./pattern.js', async (importOriginal) => {
  const actual = await importOriginal<typeof PatternModule>();
  return { ...actual, compilePattern: vi.fn(actual.compilePattern) };
});
vi.mock('../mtls/identity-rules.js', async (importOriginal) => {
  const actual = await importOriginal<typeof IdentityRulesModule>();
  return { ...actual, compileIdentityRules: vi.fn(actual.compileIdentityRules) };
});
const patternCompilations = vi.mocked(compilePattern);
const certificateCompilations = vi.mocked(compileIdentityRules);

const S = '/fluxguard.example.v1.ArtifactStore';
const RULES = [
  { operation: 'GET /healthz', public: true },
  { operation: `${S}/GetArtifact`, anyRoles: ['artifacts.reader'] },
  {
    operation: `${S}/DeleteArtifact`,
    anyRoles: ['artifacts.admin'],
    certificate: [{ spiffeId: 'spiffe://fluxguard.dev/**' }],
  },
  { operation: 'GET /v1/artifacts/*path', anyRoles: ['artifacts.reader'] },
] as const;
const audit = createAuditLogger({ level: 'silent' });

function principal(roles: string[]): Principal {
  return { subject: 'alice', roles, scopes: [], claims: {}, certificate: undefined, authenticatedBy: 'jwt' };
}

beforeEach(() => {
  patternCompilations.mockClear();
  certificateCompilations.mockClear();
});

describe('parseRbacPolicy', () => {
  it('returns a deep-frozen copy, leaving the input as it was', () => {
    const input = { mode: 'shadow', rules: structuredClone(RULES) };
    const rbac = parseRbacPolicy(input, 'policy.rbac');
    expect(rbac).toEqual(input);
    expect(rbac.rules).not.toBe(input.rules);
    for (const rule of rbac.rules) expect(Object.isFrozen(rule)).toBe(true);
    expect(Object.isFrozen(rbac.rules[2]?.anyRoles)).toBe(true);
    expect(Object.isFrozen(rbac.rules[2]?.certificate?.[0])).toBe(true);
    expect(Object.isFrozen(input.rules[2])).toBe(false);
  });

  it('refuses a duplicate pattern, an unknown field with a hint, and a cycle', () => {
    expect(() =>
      parseRbacPolicy(
        {
          rules: [
            { operation: 'GET /x', public: true },
            { operation: 'GET /x/', public: true },
          ],
        },
        'policy.rbac',
      ),
    ).toThrow('policy.rbac.rules "GET /x/" names the operations of "GET /x", written before it: only one could apply');
    expect(() => parseRbacPolicy({ mdoe: 'shadow', rules: [] }, 'policy.rbac')).toThrow(
      'policy.rbac: unknown field "mdoe" (did you mean "mode"?)',
    );
    const cyclic: Record<string, unknown> = { operation: 'GET /x' };
    cyclic.anyRoles = [cyclic];
    expect(() => parseRbacPolicy({ rules: [cyclic] }, 'policy.rbac')).toThrow(ConfigurationError);
  });
});

describe('compile once: parse, then createGuardFromPolicy', () => {
  it('compiles each rule when the policy is parsed, and never again', () => {
    const policy = parseSecurityPolicy({ rbac: { rules: structuredClone(RULES) } });
    expect(patternCompilations).toHaveBeenCalledTimes(RULES.length);
    expect(certificateCompilations).toHaveBeenCalledTimes(1);
    patternCompilations.mockClear();
    certificateCompilations.mockClear();

    // Rules that ask for roles need something to give a call a principal.
    const jwt = createJwtVerifier({
      secret: crypto.randomUUID().repeat(2),
      issuer: 'https://id.example',
      audience: 'a',
    });
    const both = createGuardFromPolicy(policy, { audit, jwt });
    const grpc = createGuardFromPolicy(policy, {
      audit,
      jwt,
      transport: 'grpc',
      servedOperations: [`${S}/GetArtifact`, `${S}/DeleteArtifact`],
    });
    const http = compileRbac(rbacRulesForTransport(policy.rbac?.rules ?? [], 'http'), { mode: 'shadow' });
    expect(patternCompilations).not.toHaveBeenCalled();
    expect(certificateCompilations).not.toHaveBeenCalled();

    // The reused compiled rules decide as freshly compiled ones do.
    const fresh = compileRbac(structuredClone(RULES));
    for (const [operation, roles] of [
      ['GET /healthz', []],
      [`${S}/GetArtifact`, ['artifacts.reader']],
      [`${S}/DeleteArtifact`, ['artifacts.reader']],
      ['GET /v1/artifacts/a/b.txt', ['artifacts.reader']],
      ['DELETE /v1/artifacts/a', ['artifacts.admin']],
    ] as const) {
      const expected = fresh.authorize(operation, principal([...roles]));
      expect(both.rbac.authorize(operation, principal([...roles]))).toEqual(expected);
    }
    expect(grpc.rbac.authorize(`${S}/GetArtifact`, undefined)).toMatchObject({
      allowed: false,
      reason: 'unauthenticated',
    });
    expect(grpc.rbac.ruleFor('GET /healthz')).toBeUndefined();
    expect(http.authorize(`GET /v1/artifacts/x`, principal([]))).toMatchObject({ allowed: true, shadowDenied: true });
  });

  it('compiles once a policy loaded from a YAML file', async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, ['rbac:', '  rules:', ...RULES.slice(0, 2).flatMap(yamlRule), ''].join('\n'));
    const policy = await loadSecurityPolicy(file);
    expect(patternCompilations).toHaveBeenCalledTimes(2);
    patternCompilations.mockClear();
    const guard = createGuardFromPolicy(policy, { audit, transport: 'http' });
    expect(patternCompilations).not.toHaveBeenCalled();
    expect(guard.rbac.isPublic('GET /healthz')).toBe(true);
  });

  it('compiles rules it did not check itself: a copy, or the caller objects given to the parser', () => {
    const input = structuredClone(RULES);
    const policy = parseSecurityPolicy({ rbac: { rules: input } });
    patternCompilations.mockClear();
    compileRbac(input);
    expect(patternCompilations).toHaveBeenCalledTimes(RULES.length);
    patternCompilations.mockClear();
    compileRbac(structuredClone(policy.rbac?.rules ?? []));
    expect(patternCompilations).toHaveBeenCalledTimes(RULES.length);
  });
});

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fluxguard-rbac-policy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function yamlRule(rule: (typeof RULES)[number]): string[] {
  return Object.entries(rule).map(([k, v], i) => `${i === 0 ? '    - ' : '      '}${k}: ${JSON.stringify(v)}`);
}
