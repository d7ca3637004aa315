import { describe, expect, it } from 'vitest';
import type { CertificateIdentity, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import {
  compileCertificateRoles,
  compileIdentityRules,
  mergePrincipals,
  normalizeFingerprint256,
  principalFromCertificate,
  rolesFromCertificate,
  type IdentityRule,
} from './identity-rules.js';

const FP = 'ab'.repeat(32);

function identity(fields: Partial<CertificateIdentity>): CertificateIdentity {
  return {
    spiffeId: undefined,
    uris: [],
    dnsNames: [],
    commonName: undefined,
    fingerprint256: FP,
    validFrom: new Date(0),
    validTo: new Date(4_102_444_800_000),
    ...fields,
  };
}

const spiffe = (id: string) => identity({ spiffeId: id, uris: [id] });

describe('compileIdentityRules: spiffeId', () => {
  it('matches exactly', () => {
    const match = compileIdentityRules([{ spiffeId: 'spiffe://example.org/ns/prod/sa/reader' }], 'test');
    expect(match(spiffe('spiffe://example.org/ns/prod/sa/reader'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/ns/prod/sa/writer'))).toBe(false);
    expect(match(spiffe('spiffe://example.org/ns/prod/sa/reader/x'))).toBe(false);
    expect(match(spiffe('spiffe://other.org/ns/prod/sa/reader'))).toBe(false);
    expect(match(undefined)).toBe(false);
    expect(match(identity({ commonName: 'spiffe://example.org/ns/prod/sa/reader' }))).toBe(false);
  });

  it('lets * stand for exactly one path segment, never across "/"', () => {
    const match = compileIdentityRules([{ spiffeId: 'spiffe://example.org/ns/*/sa/reader' }], 'test');
    expect(match(spiffe('spiffe://example.org/ns/prod/sa/reader'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/ns/dev/sa/reader'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/ns/a/b/sa/reader'))).toBe(false);
    expect(match(spiffe('spiffe://example.org/ns/sa/reader'))).toBe(false);
  });

  it('lets a final ** stand for one or more segments', () => {
    const match = compileIdentityRules([{ spiffeId: 'spiffe://example.org/ns/prod/**' }], 'test');
    expect(match(spiffe('spiffe://example.org/ns/prod/sa/reader'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/ns/prod/x'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/ns/prod'))).toBe(false);
    expect(match(spiffe('spiffe://example.org/ns/production/x'))).toBe(false);
  });

  it('treats regular-expression characters literally', () => {
    const match = compileIdentityRules([{ spiffeId: 'spiffe://example.org/svc/a.b' }], 'test');
    expect(match(spiffe('spiffe://example.org/svc/a.b'))).toBe(true);
    expect(match(spiffe('spiffe://example.org/svc/axb'))).toBe(false);
    const domain = compileIdentityRules([{ spiffeId: 'spiffe://example.org/x' }], 'test');
    expect(domain(spiffe('spiffe://exampleXorg/x'))).toBe(false);
    for (const bad of [
      'spiffe://example.org/.*',
      'spiffe://example.org/a+',
      'spiffe://example.org/(a|b)',
      'spiffe://example.org/re*der',
    ]) {
      expect(() => compileIdentityRules([{ spiffeId: bad }], 'policy.rbac.Get.certificate')).toThrow(
        /^policy\.rbac\.Get\.certificate\[0\]\.spiffeId: path segment/,
      );
    }
  });

  it('refuses malformed patterns, naming where they are', () => {
    const bad = [
      'https://example.org/x',
      'spiffe://Example.org/x',
      'spiffe://*/x',
      'spiffe://example.org',
      'spiffe://example.org/a//b',
      'spiffe://example.org/**/x',
    ];
    for (const pattern of bad) {
      expect(() => compileIdentityRules([{ spiffeId: pattern }], 'where')).toThrow(ConfigurationError);
      expect(() => compileIdentityRules([{ spiffeId: pattern }], 'where')).toThrow(/^where\[0\]\.spiffeId: /);
    }
  });
});

describe('compileIdentityRules: dnsName, commonName, fingerprint256', () => {
  it('matches a DNS name exactly, case-insensitively, against any SAN DNS name', () => {
    const match = compileIdentityRules([{ dnsName: 'backup.example.com' }], 'test');
    expect(match(identity({ dnsNames: ['x.test', 'Backup.Example.com'] }))).toBe(true);
    expect(match(identity({ dnsNames: ['backup.example.co'] }))).toBe(false);
  });

  it('lets *. stand for exactly one label', () => {
    const match = compileIdentityRules([{ dnsName: '*.example.com' }], 'test');
    expect(match(identity({ dnsNames: ['api.example.com'] }))).toBe(true);
    expect(match(identity({ dnsNames: ['a.b.example.com'] }))).toBe(false);
    expect(match(identity({ dnsNames: ['example.com'] }))).toBe(false);
    expect(match(identity({ dnsNames: ['.example.com'] }))).toBe(false);
    expect(match(identity({ dnsNames: ['apiXexample.com', 'api.exampleXcom'] }))).toBe(false);
    expect(match(identity({ dnsNames: ['*.example.com'] }))).toBe(false);
  });

  it('refuses bad DNS patterns', () => {
    for (const bad of ['*.com', 'a.*.example.com', 'a*.example.com', 'ex ample.com', '(a).example.com', '']) {
      expect(() => compileIdentityRules([{ dnsName: bad }], 'where')).toThrow(/^where\[0\]\.dnsName: /);
    }
  });

  it('matches a common name exactly and literally', () => {
    const match = compileIdentityRules([{ commonName: '.*' }], 'test');
    expect(match(identity({ commonName: '.*' }))).toBe(true);
    expect(match(identity({ commonName: 'admin' }))).toBe(false);
  });

  it('pins a fingerprint given with colons in any case', () => {
    const pin = FP.toUpperCase().match(/../g)?.join(':') ?? '';
    const match = compileIdentityRules([{ fingerprint256: pin }], 'test');
    expect(match(identity({}))).toBe(true);
    expect(match(identity({ fingerprint256: 'cd'.repeat(32) }))).toBe(false);
    expect(() => compileIdentityRules([{ fingerprint256: 'abcd' }], 'where')).toThrow(/^where\[0\]\.fingerprint256: /);
    expect(normalizeFingerprint256(`${FP.slice(0, 62)}zz`)).toBeUndefined();
  });
});

describe('compileIdentityRules: combination and validation', () => {
  it('ANDs the fields of a rule and ORs the rules', () => {
    const match = compileIdentityRules(
      [{ spiffeId: 'spiffe://example.org/a', fingerprint256: FP }, { dnsName: 'b.example.com' }],
      'test',
    );
    expect(match(identity({ spiffeId: 'spiffe://example.org/a' }))).toBe(true);
    expect(match(identity({ spiffeId: 'spiffe://example.org/a', fingerprint256: 'cd'.repeat(32) }))).toBe(false);
    expect(match(identity({ dnsNames: ['b.example.com'], fingerprint256: 'cd'.repeat(32) }))).toBe(true);
  });

  it('refuses empty lists, empty rules and unknown fields', () => {
    expect(() => compileIdentityRules([], 'policy.x')).toThrow(/^policy\.x: identity rules must not be empty/);
    expect(() => compileIdentityRules([{}], 'policy.x')).toThrow(
      /^policy\.x\[0\]: an identity rule needs at least one/,
    );
    expect(() => compileIdentityRules([{ roles: ['a'] }], 'policy.x')).toThrow(/needs at least one/);
    expect(() => compileIdentityRules([{ spiffeID: 'spiffe://a/b' } as IdentityRule], 'policy.x')).toThrow(
      /^policy\.x\[0\]: unknown field "spiffeID" \(did you mean "spiffeId"\?\)/,
    );
    expect(() => compileIdentityRules([{ spiffeId: 'spiffe://a/b', roles: 'admin' as never }], 'p')).toThrow(
      /^p\[0\]\.roles: /,
    );
    expect(() => compileIdentityRules('nope' as never, 'p')).toThrow(ConfigurationError);
    // Its fields were read with inherited ones, while only its own were checked.
    const inheriting = Object.create({ spiffeId: 'spiffe://a/**' }) as IdentityRule;
    expect(() => compileIdentityRules([inheriting], 'p')).toThrow(/^p\[0\]: must be a plain object/);
  });
});

describe('roles and principals from certificates', () => {
  const RULES: readonly IdentityRule[] = Object.freeze([
    { spiffeId: 'spiffe://example.org/ns/*/sa/backup', roles: ['artifacts.reader'] },
    { spiffeId: 'spiffe://example.org/ns/prod/**', roles: ['artifacts.reader', 'artifacts.writer'] },
  ]);

  it('refuses roles where nothing reads them, and a role rule without roles, which maps nothing', () => {
    expect(() => compileIdentityRules([{ dnsName: 'ops.example.org', roles: ['admin'] }], 'mtls.allow')).toThrow(
      'mtls.allow[0].roles: these rules only say which certificates pass; roles are granted by certificateRoles',
    );
    expect(() => compileCertificateRoles([{ dnsName: 'ops.example.org' }], 'policy.mtls.certificateRoles')).toThrow(
      'policy.mtls.certificateRoles[0].roles: a certificate role rule needs at least one role (it would map nothing)',
    );
    expect(() => compileCertificateRoles([{ dnsName: 'ops.example.org', roles: [] }], 'certificateRoles')).toThrow(
      /needs at least one role/,
    );
  });

  it('collects the roles of every matching rule, once each', () => {
    expect(rolesFromCertificate(spiffe('spiffe://example.org/ns/prod/sa/backup'), RULES)).toEqual([
      'artifacts.reader',
      'artifacts.writer',
    ]);
    expect(rolesFromCertificate(spiffe('spiffe://example.org/ns/dev/sa/backup'), RULES)).toEqual(['artifacts.reader']);
    expect(rolesFromCertificate(identity({ dnsNames: ['ops.example.org'] }), RULES)).toEqual([]);
    expect(rolesFromCertificate(undefined, RULES)).toEqual([]);
    const mapper = compileCertificateRoles(RULES, 'test');
    expect(rolesFromCertificate(spiffe('spiffe://example.org/ns/dev/sa/backup'), mapper)).toEqual(['artifacts.reader']);
  });

  it('builds an mtls principal with the certificate as subject source', () => {
    const id = spiffe('spiffe://example.org/ns/dev/sa/backup');
    const principal = principalFromCertificate(id, RULES);
    expect(principal).toEqual({
      subject: 'spiffe://example.org/ns/dev/sa/backup',
      roles: ['artifacts.reader'],
      scopes: [],
      claims: {},
      certificate: id,
      authenticatedBy: 'mtls',
    });
    expect(Object.isFrozen(principal)).toBe(true);
    expect(principalFromCertificate(undefined, RULES)).toBeUndefined();
    expect(principalFromCertificate(identity({ dnsNames: ['a.test'], commonName: 'cn' }), RULES)?.subject).toBe(
      'a.test',
    );
    expect(principalFromCertificate(identity({ commonName: 'cn' }), RULES)?.subject).toBe('cn');
    expect(principalFromCertificate(identity({}), RULES)?.subject).toBe(`sha256:${FP}`);
    // A name that reads as another kind of subject says what it was taken from: such a
    // certificate shared the SPIFFE workload's subject, its audit lines and its rate limits.
    const posing = [
      identity({ commonName: 'spiffe://fluxguard.dev/backup' }),
      identity({ dnsNames: ['spiffe://fluxguard.dev/backup'] }),
      identity({ commonName: `sha256:${FP}` }),
      identity({ commonName: 'dns:spiffe://fluxguard.dev/backup' }),
    ].map((id) => principalFromCertificate(id, RULES)?.subject);
    expect(posing).toEqual([
      'cn:spiffe://fluxguard.dev/backup',
      'dns:spiffe://fluxguard.dev/backup',
      `cn:sha256:${FP}`,
      'cn:dns:spiffe://fluxguard.dev/backup',
    ]);
    expect(new Set([...posing, 'spiffe://fluxguard.dev/backup', `sha256:${FP}`]).size).toBe(posing.length + 2);
  });

  it('merges a JWT principal with a certificate identity', () => {
    const jwt: Principal = {
      subject: 'alice',
      roles: ['artifacts.admin'],
      scopes: ['a'],
      claims: { sub: 'alice' },
      certificate: undefined,
      authenticatedBy: 'jwt',
    };
    const id = spiffe('spiffe://example.org/x');
    expect(mergePrincipals(jwt, id)).toEqual({ ...jwt, certificate: id, authenticatedBy: 'both' });
    expect(mergePrincipals(jwt, undefined)).toBe(jwt);
  });

  it('gives the same frozen merge for the same token principal and certificate, a new one otherwise', () => {
    const principal = (subject: string): Principal =>
      Object.freeze({
        subject,
        roles: Object.freeze(['artifacts.reader']),
        scopes: Object.freeze([]),
        claims: Object.freeze({ sub: subject }),
        certificate: undefined,
        authenticatedBy: 'jwt' as const,
      });
    const alice = principal('alice');
    const bob = principal('bob');
    const first = spiffe('spiffe://example.org/first');
    const second = spiffe('spiffe://example.org/second');
    const merged = mergePrincipals(alice, first);
    expect(Object.isFrozen(merged)).toBe(true);
    expect(mergePrincipals(alice, first)).toBe(merged);
    // Another token on the same connection, or the same token on another: never the old merge.
    expect(mergePrincipals(bob, first)).toMatchObject({ subject: 'bob', certificate: first });
    expect(mergePrincipals(alice, second)).toMatchObject({ subject: 'alice', certificate: second });
    expect(mergePrincipals(alice, first)).not.toBe(merged);
    expect(mergePrincipals(alice, first)).toEqual(merged);
  });
});
