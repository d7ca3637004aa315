import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createJwtVerifier } from '../jwt/verifier.js';
import { compileRbac } from '../rbac/rbac.js';
import { AUDIENCE, ISSUER, makeKey, sign, type TestKey } from '../testing/jwt-fixtures.js';
import { jwtVerifierOptionsFromPolicy } from '../jwt/policy.js';
import { rbacRulesForTransport } from '../rbac/policy.js';
import { MAX_POLICY_FILE_BYTES, loadSecurityPolicy, parseSecurityPolicy } from './policy.js';

const S = '/fluxguard.example.v1.ArtifactStore';
const VALID = {
  jwt: { issuer: ISSUER, audience: AUDIENCE, jwksFile: 'jwks.json', rolesClaim: 'roles', clockToleranceSeconds: 10 },
  rbac: {
    mode: 'enforce',
    rules: [
      { operation: 'GET /healthz', public: true },
      { operation: `${S}/GetArtifact`, anyRoles: ['artifacts.reader'] },
      { operation: `${S}/DeleteArtifact`, anyRoles: ['artifacts.admin'] },
      { operation: 'DELETE /v1/artifacts/*path', anyRoles: ['artifacts.admin'] },
    ],
  },
  mtls: {
    clientCertificates: 'per-operation',
    certificateRoles: [{ spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['artifacts.reader'] }],
  },
};

let key: TestKey;
beforeAll(async () => {
  key = await makeKey('ES256', 'p1');
});

describe('parseSecurityPolicy', () => {
  it('accepts a valid policy and passes mtls through', () => {
    const policy = parseSecurityPolicy(structuredClone(VALID));
    expect(policy.mtls).toEqual(VALID.mtls);
    expect(policy.rbac?.rules).toHaveLength(4);
  });

  it.each<[string, (p: Record<string, unknown>) => void, string | RegExp]>([
    [
      'an unknown top-level key',
      (p) => {
        p.rabc = {};
      },
      /policy: unknown field "rabc" \(did you mean "rbac"\?\)/,
    ],
    [
      // compileRbac's form: the policy file's rules are a list, each naming its operation.
      'rules keyed by pattern',
      (p) => {
        (p.rbac as { rules: unknown }).rules = { 'GET /x': { public: true } };
      },
      /policy\.rbac\.rules must be an array of rules, each with its "operation": \[\{ "operation": "GET/,
    ],
    [
      'a bad role',
      (p) => {
        (p.rbac as { rules: { anyRoles?: unknown[] }[] }).rules[3] = { operation: 'GET /x', anyRoles: [42] } as never;
      },
      'policy.rbac.rules[3].anyRoles[0] must be a non-empty string',
    ],
    [
      'a bad pattern',
      (p) => {
        (p.rbac as { rules: unknown[] }).rules[1] = { operation: 'get x', public: true };
      },
      /policy.rbac.rules\[1\].operation "get x" is not an operation pattern/,
    ],
    [
      'a bad mode',
      (p) => {
        (p.rbac as { mode: string }).mode = 'audit';
      },
      'policy.rbac.mode must be "enforce" or "shadow"',
    ],
    [
      'no issuer',
      (p) => {
        delete (p.jwt as { issuer?: string }).issuer;
      },
      'policy.jwt.issuer must be a non-empty string',
    ],
    [
      'an audience with surrounding white space',
      (p) => {
        (p.jwt as Record<string, unknown>).audience = ['artifacts', 'artifacts '];
      },
      'policy.jwt.audience[1] must not start or end with white space (remove it)',
    ],
    [
      'an issuer with a leading space',
      (p) => {
        (p.jwt as Record<string, unknown>).issuer = ' https://id.example.com';
      },
      'policy.jwt.issuer must not start or end with white space (remove it)',
    ],
    [
      'two key sources',
      (p) => {
        (p.jwt as Record<string, unknown>).jwksUrl = 'https://x';
      },
      /exactly one of jwksUrl, jwksFile, publicKeyFile/,
    ],
    [
      'HS256',
      (p) => {
        (p.jwt as Record<string, unknown>).algorithms = ['HS256'];
      },
      /policy.jwt.algorithms\[0\] must be an asymmetric/,
    ],
    [
      'a negative tolerance',
      (p) => {
        (p.jwt as Record<string, unknown>).clockToleranceSeconds = -1;
      },
      'policy.jwt.clockToleranceSeconds must be a non-negative number',
    ],
    [
      // Ten years of leeway let a token that expired a year ago create and delete artifacts.
      'a tolerance above five minutes',
      (p) => {
        (p.jwt as Record<string, unknown>).clockToleranceSeconds = 315_360_000;
      },
      'policy.jwt.clockToleranceSeconds must be a non-negative number, at most 300',
    ],
    [
      // Node runs a longer timer after 1 ms: every key-set fetch would time out at once.
      'a JWKS timeout longer than a Node timer',
      (p) => {
        (p.jwt as Record<string, unknown>).jwksTimeoutMs = 2 ** 31;
      },
      'policy.jwt.jwksTimeoutMs must be a non-negative number, at most 2147483647',
    ],
    [
      // Every key-set fetch would time out at once; the verifier said so under its own option's name.
      'a JWKS timeout of 0',
      (p) => {
        (p.jwt as Record<string, unknown>).jwksTimeoutMs = 0;
      },
      'policy.jwt.jwksTimeoutMs must be a whole number, at least 1',
    ],
    [
      // Every token with a made-up kid would make the server fetch the key set again.
      'a JWKS cooldown under a second',
      (p) => {
        (p.jwt as Record<string, unknown>).jwksCooldownMs = 0;
      },
      'policy.jwt.jwksCooldownMs must be a whole number, at least 1000',
    ],
    [
      'a token length limit no token meets',
      (p) => {
        (p.jwt as Record<string, unknown>).maxTokenLength = 10;
      },
      'policy.jwt.maxTokenLength must be a whole number, at least 64',
    ],
    [
      'a fraction of a cache entry',
      (p) => {
        (p.jwt as Record<string, unknown>).cacheMaxEntries = 0.5;
      },
      'policy.jwt.cacheMaxEntries must be a whole number, at least 0',
    ],
    [
      // Read by nothing: the keys come from a file, which is never fetched.
      'a remote key-set setting next to a key file',
      (p) => {
        (p.jwt as Record<string, unknown>).jwksCooldownMs = 60_000;
      },
      'policy.jwt.jwksCooldownMs applies to jwksUrl only, and this section reads its keys from a file',
    ],
    [
      'an unknown jwt field',
      (p) => {
        (p.jwt as Record<string, unknown>).audiences = ['x'];
      },
      /policy.jwt: unknown field "audiences"/,
    ],
    [
      'an unknown mtls field',
      (p) => {
        (p.mtls as Record<string, unknown>).certificateRole = [];
      },
      /policy.mtls: unknown field "certificateRole" \(did you mean "certificateRoles"\?\)/,
    ],
    [
      'a bad client-certificate mode',
      (p) => {
        (p.mtls as Record<string, unknown>).clientCertificates = 'optional';
      },
      'policy.mtls.clientCertificates must be "strict" or "per-operation"',
    ],
    [
      'certificate roles that are not a list',
      (p) => {
        (p.mtls as Record<string, unknown>).certificateRoles = { spiffeId: 'spiffe://fluxguard.dev/backup' };
      },
      'policy.mtls.certificateRoles must be an array',
    ],
    [
      'a bad certificate rule',
      (p) => {
        (p.mtls as Record<string, unknown>).certificateRoles = [
          { spiffeId: 'spiffe://fluxguard.dev/backup', roles: ['r'] },
          { spiffeId: 'https://not-spiffe', roles: ['r'] },
        ];
      },
      /policy.mtls.certificateRoles\[1\].spiffeId: must start with "spiffe:\/\/"/,
    ],
    [
      'a certificate rule with an empty role',
      (p) => {
        (p.mtls as Record<string, unknown>).certificateRoles = [{ dnsName: 'backup.example.com', roles: [''] }];
      },
      /policy.mtls.certificateRoles\[0\].roles: every role must be a non-empty string/,
    ],
    [
      'an mtls section that is not an object',
      (p) => {
        p.mtls = 'strict';
      },
      'policy.mtls must be an object',
    ],
  ])('refuses %s, naming the field', (_label, mutate, message) => {
    const p = structuredClone(VALID) as unknown as Record<string, unknown>;
    mutate(p);
    expect(() => parseSecurityPolicy(p)).toThrow(ConfigurationError);
    expect(() => parseSecurityPolicy(p)).toThrow(message);
  });

  it('refuses a document nested deeper than any policy, naming where, instead of overflowing the stack', () => {
    let deep: unknown = '10.0.0.0/8';
    for (let i = 0; i < 20_000; i++) deep = [deep];
    const policy = { ...structuredClone(VALID), rateLimits: { trustedProxies: deep } };
    expect(() => parseSecurityPolicy(policy)).toThrow(ConfigurationError);
    expect(() => parseSecurityPolicy(policy)).toThrow(
      /^policy\.rateLimits\.trustedProxies(\[0\]){30} is nested too deeply \(at most 32 levels\)$/,
    );
  });

  it('refuses a non-object', () => {
    expect(() => parseSecurityPolicy([])).toThrow('policy must be an object');
  });

  it('checks a limits section through its control, naming the bad field', () => {
    const policy = parseSecurityPolicy({
      limits: { maxBodyBytes: 1_048_576, rules: [{ operation: 'PUT /v1/artifacts/*path', maxBodyBytes: 67_108_864 }] },
    });
    expect(policy.limits?.rules?.[0]?.maxBodyBytes).toBe(67_108_864);
    expect(Object.isFrozen(policy.limits?.rules?.[0])).toBe(true);
    expect(() => parseSecurityPolicy({ limits: { maxBodyBytes: 0 } })).toThrow(
      'policy.limits.maxBodyBytes must be a whole number of at least 1',
    );
    expect(() => parseSecurityPolicy({ limits: { rules: [{ operation: 'PUT /x', maxBodyByte: 1 }] } })).toThrow(
      'policy.limits.rules[0]: unknown field "maxBodyByte" (did you mean "maxBodyBytes"?)',
    );
    expect(() => parseSecurityPolicy({ limits: { transport: 'grpc' } })).toThrow(
      'policy.limits: unknown field "transport"',
    );
  });

  it('checks a timeouts section through its control, naming the bad field', () => {
    const policy = parseSecurityPolicy({
      timeouts: { defaultMs: 30_000, rules: [{ operation: 'PUT /v1/artifacts/*path', idleMs: 5_000 }] },
    });
    expect(policy.timeouts?.rules?.[0]).toEqual({ operation: 'PUT /v1/artifacts/*path', idleMs: 5_000 });
    expect(Object.isFrozen(policy.timeouts?.rules?.[0])).toBe(true);
    expect(() => parseSecurityPolicy({ timeouts: { requestMs: 5000 } })).toThrow(
      /policy.timeouts: unknown field "requestMs"/,
    );
    expect(() => parseSecurityPolicy({ timeouts: { rules: [{ operation: 'GET /x', idleMs: -1 }] } })).toThrow(
      'policy.timeouts.rules[0].idleMs must be a whole number of ms',
    );
    expect(() => parseSecurityPolicy({ timeouts: { defaultMs: 60_000, maxMs: 1_000 } })).toThrow(
      /maxMs .* must not be below defaultMs/,
    );
  });

  it('returns a frozen policy without freezing or changing what it was given', () => {
    const input = structuredClone(VALID);
    const policy = parseSecurityPolicy(input);
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(policy.rbac?.rules[1])).toBe(true);
    expect(Object.isFrozen(policy.rbac?.rules[1]?.anyRoles)).toBe(true);
    expect(Object.isFrozen(input)).toBe(false);
    expect(Object.isFrozen(input.rbac.rules[1])).toBe(false);
    expect(input).toEqual(VALID);
    expect(policy).toEqual(VALID);
  });

  it('accepts an mtls section with only a mode, or with an empty role list', () => {
    expect(parseSecurityPolicy({ mtls: { clientCertificates: 'strict' } }).mtls).toEqual({
      clientCertificates: 'strict',
    });
    expect(parseSecurityPolicy({ mtls: { certificateRoles: [] } }).mtls?.certificateRoles).toEqual([]);
  });
});

describe('rbacRulesForTransport', () => {
  it('splits one policy into the gRPC rules and the HTTP rules', () => {
    const rules = parseSecurityPolicy(structuredClone(VALID)).rbac?.rules ?? [];
    expect(rbacRulesForTransport(rules, 'grpc').map((r) => r.operation)).toEqual([
      `${S}/GetArtifact`,
      `${S}/DeleteArtifact`,
    ]);
    expect(rbacRulesForTransport(rules, 'http').map((r) => r.operation)).toEqual([
      'GET /healthz',
      'DELETE /v1/artifacts/*path',
    ]);
  });
});

describe('loadSecurityPolicy', () => {
  // One scratch directory per test, all under one that is removed at the end.
  let scratch = '';
  const newDir = (): Promise<string> => mkdtemp(join(scratch, 'case-'));
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'fluxguard-policy-'));
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('loads JSON, resolves the key file next to it, and drives a verifier and RBAC', async () => {
    const dir = await newDir();
    await writeFile(join(dir, 'jwks.json'), JSON.stringify({ keys: [key.publicJwk] }));
    await writeFile(join(dir, 'policy.json'), JSON.stringify(VALID));
    const policy = await loadSecurityPolicy(join(dir, 'policy.json'));
    expect(policy.jwt?.jwksFile).toBe(join(dir, 'jwks.json'));
    if (policy.jwt === undefined || policy.rbac === undefined) throw new Error('sections expected');
    const verifier = createJwtVerifier(jwtVerifierOptionsFromPolicy(policy.jwt));
    const principal = await verifier.authenticate({
      headers: { get: () => undefined, getAll: (n) => (n === 'authorization' ? [`Bearer ${token}`] : []) },
    });
    const rbac = compileRbac(policy.rbac.rules, { mode: policy.rbac.mode });
    expect(rbac.authorize(`${S}/GetArtifact`, principal).allowed).toBe(true);
    expect(rbac.authorize(`${S}/DeleteArtifact`, principal).allowed).toBe(false);
  });

  let token = '';
  beforeAll(async () => {
    token = await sign(key);
  });

  it('refuses a file larger than 16 MiB, and a device that never ends, without reading it all', async () => {
    const dir = await newDir();
    const big = join(dir, 'big.json');
    await writeFile(big, `{"x":"${'a'.repeat(MAX_POLICY_FILE_BYTES)}"}`);
    await expect(loadSecurityPolicy(big)).rejects.toThrow(
      `${big} is larger than 16 MiB, the most a policy file may hold`,
    );
    // readFile read /dev/zero until it ran out of memory (or of its 2 GiB bound).
    await expect(loadSecurityPolicy('/dev/zero')).rejects.toThrow('/dev/zero is larger than 16 MiB');
    await writeFile(join(dir, 'edge.json'), `{"x":"${'a'.repeat(MAX_POLICY_FILE_BYTES - 10)}"}`);
    await expect(loadSecurityPolicy(join(dir, 'edge.json'))).rejects.toThrow('policy (');
  });

  it('reads a policy from a pipe, which has no positions to read at', async () => {
    const fifo = join(await newDir(), 'policy.json');
    execFileSync('mkfifo', [fifo]);
    const [policy] = await Promise.all([
      loadSecurityPolicy(fifo),
      writeFile(fifo, JSON.stringify({ version: 1, rbac: { rules: [{ operation: 'GET /healthz', public: true }] } })),
    ]);
    expect(policy.rbac?.rules).toMatchObject([{ operation: 'GET /healthz', public: true }]);
  });

  it('reports an unreadable file or invalid JSON', async () => {
    const dir = await newDir();
    await expect(loadSecurityPolicy(join(dir, 'missing.json'))).rejects.toThrow(/cannot read/);
    await writeFile(join(dir, 'bad.json'), '{ nope');
    await expect(loadSecurityPolicy(join(dir, 'bad.json'))).rejects.toThrow(/not valid JSON/);
    // Where the fault is, never the text around it (a secret may stand there).
    await writeFile(join(dir, 'comma.json'), '{\n  "jwt": { "secret": "s3cr3t-value" }\n  "rbac": {}\n}');
    const error = (await loadSecurityPolicy(join(dir, 'comma.json')).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/comma\.json is not valid JSON \(line 3, column 3\)$/);
    expect(error.message).not.toContain('s3cr3t');
    await writeFile(join(dir, 'bad.yaml'), 'jwt:\n  secret: s3cr3t-value\n    rbac: [\n');
    const yaml = (await loadSecurityPolicy(join(dir, 'bad.yaml')).catch((e: unknown) => e)) as Error;
    expect(yaml.message).toMatch(
      /bad\.yaml is not valid YAML \(line 2, column 11: bad indentation \(a block where a key should be\)\)$/,
    );
    expect(yaml.message).not.toContain('s3cr3t');
  });

  it('copies every section: the input changed after the check changes nothing', () => {
    const input = {
      jwt: { issuer: 'https://id.example.test', audience: ['artifacts'], jwksUrl: 'https://id.example.test/jwks' },
      mtls: { clientCertificates: 'strict', certificateRoles: [{ spiffeId: 'spiffe://x.test/a', roles: ['r'] }] },
    };
    const policy = parseSecurityPolicy(input);
    input.mtls.clientCertificates = 'Strict';
    input.mtls.certificateRoles[0] = { spiffeId: 'spiffe://x.test/*', roles: ['admin'] };
    input.jwt.audience.push('everything');
    expect(policy.mtls).toEqual({
      clientCertificates: 'strict',
      certificateRoles: [{ spiffeId: 'spiffe://x.test/a', roles: ['r'] }],
    });
    expect(policy.jwt?.audience).toEqual(['artifacts']);
    expect(Object.isFrozen(policy.mtls?.certificateRoles)).toBe(true);
    expect(Object.isFrozen(input.mtls)).toBe(false);
  });

  it('refuses a JSON policy that gives one key twice, which JSON.parse would read as its last value', async () => {
    const dir = await newDir();
    // A reader sees enforce; JSON.parse keeps shadow.
    await writeFile(join(dir, 'twice.json'), '{ "rbac": { "mode": "enforce", "rules": [], "mode": "shadow" } }');
    await expect(loadSecurityPolicy(join(dir, 'twice.json'))).rejects.toThrow(
      /twice\.json gives one key twice in an object \(JSON\.parse would keep only the last\)$/,
    );
    await writeFile(
      join(dir, 'escaped.json'),
      '{ "rbac": { "mode": "enforce", "rules": [], "mo\\u0064e": "shadow" } }',
    );
    await expect(loadSecurityPolicy(join(dir, 'escaped.json'))).rejects.toThrow(/gives one key twice/);
    await writeFile(join(dir, 'proto.json'), '{ "__proto__": { "rbac": {} } }');
    await expect(loadSecurityPolicy(join(dir, 'proto.json'))).rejects.toThrow(/a key named __proto__/);
    // The same key in two objects is no duplicate.
    await writeFile(
      join(dir, 'apart.json'),
      '{ "rbac": { "mode": "enforce", "rules": [] }, "timeouts": { "rules": [] } }',
    );
    await expect(loadSecurityPolicy(join(dir, 'apart.json'))).resolves.toMatchObject({ rbac: { mode: 'enforce' } });
  });

  it('loads the same policy from YAML', async () => {
    const dir = await newDir();
    const file = join(dir, 'policy.yaml');
    await writeFile(
      file,
      [
        'version: 1',
        'jwt:',
        '  issuer: https://id.example.test',
        '  audience: artifacts',
        '  jwksUrl: https://id.example.test/jwks',
        'rbac:',
        '  rules:',
        '    - operation: GET /healthz',
        '      public: true',
        '    - operation: /fluxguard.example.v1.ArtifactStore/GetArtifact',
        '      anyRoles: [artifacts.reader]',
        '',
      ].join('\n'),
    );
    const policy = await loadSecurityPolicy(file);
    expect(policy.rbac?.rules).toEqual([
      { operation: 'GET /healthz', public: true },
      { operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact', anyRoles: ['artifacts.reader'] },
    ]);
    await writeFile(join(dir, 'typo.yml'), 'rbac:\n  mod: shadow\n  rules: []\n');
    await expect(loadSecurityPolicy(join(dir, 'typo.yml'))).rejects.toThrow(/mod/);
  });

  it('reads a limits section from a YAML policy', async () => {
    const dir = await newDir();
    const file = join(dir, 'policy.yaml');
    await writeFile(
      file,
      'version: 1\nrbac:\n  rules:\n    - operation: GET /healthz\n      public: true\nlimits:\n  maxMessageBytes: 1048576\n',
    );
    expect((await loadSecurityPolicy(file)).limits?.maxMessageBytes).toBe(1_048_576);
  });

  it.each([
    ['an alias bomb (a billion laughs)', aliasBomb(), /p\.yaml is not valid YAML \(more than 50 aliases expanded\)$/],
    [
      'a custom tag',
      'jwt: !!js/function "function () { return 1 }"',
      /not valid YAML \(line 1, column 6: a tag the core schema does not have \(no custom tags\)\)$/,
    ],
    [
      'a duplicate key (a later rule silently winning)',
      'version: 1\nversion: 1\n',
      /not valid YAML \(line 2, column 1: a key given twice\)$/,
    ],
    ['a tab used to indent', 'rbac:\n\t- x\n', /not valid YAML \(line 2, column 1: a tab used to indent\)$/],
    ['another fault, by its code', 'a: &x &y 1\n', /not valid YAML \(line 1, column 7: multiple anchors\)$/],
    ['a list at the top level', '- a\n- b\n', /an object/],
    [
      // A reader of the first document would run in shadow mode; the second said enforce.
      'a second document',
      'version: 1\nrbac:\n  mode: shadow\n  rules: []\n---\nversion: 1\nrbac:\n  mode: enforce\n  rules: []\n',
      /p\.yaml: a policy is one YAML document \(found 2\)/,
    ],
    ['text after the end of the document', 'version: 1\n...\n: : not yaml [\n', /one YAML document \(found 2\)/],
    ['no document', '# nothing but a comment\n', /one YAML document \(found 0\)/],
  ])('refuses %s in a YAML policy', async (_label, text, message) => {
    const dir = await newDir();
    await writeFile(join(dir, 'p.yaml'), text);
    await expect(loadSecurityPolicy(join(dir, 'p.yaml'))).rejects.toThrow(message);
  });
});

/** Nine levels of ten aliases each: 10^9 nodes once expanded, a few hundred bytes on disk. */
function aliasBomb(): string {
  const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 9; i++)
    lines.push(`a${i}: &a${i} [${Array.from({ length: 10 }, () => `*a${i - 1}`).join(', ')}]`);
  return lines.join('\n');
}

describe("the core README's policy example", () => {
  it('is a policy that parses as written', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const block = /<!-- policy-example -->\s*```json\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const policy = parseSecurityPolicy(JSON.parse(block ?? 'null'));
    expect(policy.rbac?.rules).toHaveLength(4);
    expect(policy.jwt?.jwksUrl).toBe('https://id.example.com/.well-known/jwks.json');
  });
});
