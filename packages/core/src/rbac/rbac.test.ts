import { describe, expect, it } from 'vitest';
import type { CertificateIdentity, Principal } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { compileRbac, type RbacRules } from './rbac.js';

const S = '/fluxguard.example.v1.ArtifactStore';
const READ = ['artifacts.reader', 'artifacts.writer', 'artifacts.admin'];
const WRITE = ['artifacts.writer', 'artifacts.admin'];
const ADMIN = ['artifacts.admin'];

const RULES: RbacRules = [
  { operation: '/grpc.health.v1.Health/*', public: true },
  { operation: `${S}/GetArtifact`, anyRoles: READ },
  { operation: `${S}/ListArtifacts`, anyRoles: READ },
  { operation: `${S}/UploadArtifact`, anyRoles: WRITE },
  { operation: `${S}/DeleteArtifact`, anyRoles: ADMIN },
  { operation: 'GET /healthz', public: true },
  { operation: 'GET /v1/artifacts', anyRoles: READ },
  { operation: 'GET /v1/artifacts/*path', anyRoles: READ },
  { operation: 'PUT /v1/artifacts/*path', anyRoles: WRITE },
  { operation: 'DELETE /v1/artifacts/*path', anyRoles: ADMIN },
];

const SERVED = [
  '/grpc.health.v1.Health/Check',
  '/grpc.health.v1.Health/Watch',
  `${S}/GetArtifact`,
  `${S}/ListArtifacts`,
  `${S}/UploadArtifact`,
  `${S}/DeleteArtifact`,
  'GET /healthz',
  'GET /v1/artifacts',
  'GET /v1/artifacts/*path',
  'PUT /v1/artifacts/*path',
  'DELETE /v1/artifacts/*path',
];

function principal(roles: string[], extra: Partial<Principal> = {}): Principal {
  return { subject: 'alice', roles, scopes: [], claims: {}, certificate: undefined, authenticatedBy: 'jwt', ...extra };
}

const rbac = compileRbac(RULES, { servedOperations: SERVED });

describe('compileRbac: the ArtifactStore matrix', () => {
  const ops = {
    get: [`${S}/GetArtifact`, 'GET /v1/artifacts/*path'],
    list: [`${S}/ListArtifacts`, 'GET /v1/artifacts'],
    upload: [`${S}/UploadArtifact`, 'PUT /v1/artifacts/*path'],
    delete: [`${S}/DeleteArtifact`, 'DELETE /v1/artifacts/*path'],
  };
  const matrix: [string, Record<keyof typeof ops, boolean>][] = [
    ['artifacts.reader', { get: true, list: true, upload: false, delete: false }],
    ['artifacts.writer', { get: true, list: true, upload: true, delete: false }],
    ['artifacts.admin', { get: true, list: true, upload: true, delete: true }],
    ['other.role', { get: false, list: false, upload: false, delete: false }],
  ];
  for (const [role, expected] of matrix) {
    for (const [action, operations] of Object.entries(ops) as [keyof typeof ops, string[]][]) {
      for (const op of operations) {
        it(`${role} ${expected[action] ? 'may' : 'may not'} ${op}`, () => {
          const decision = rbac.authorize(op, principal([role]));
          expect(decision.allowed).toBe(expected[action]);
          if (!expected[action]) {
            expect(decision.denial).toBeInstanceOf(SecurityError);
            expect(decision.denial?.code).toBe('permission_denied');
            expect(decision.reason).toBe('missing_role');
            expect(() => rbac.enforce(op, principal([role]))).toThrow(SecurityError);
          }
        });
      }
    }
  }

  it('lets anyone reach health, with or without a principal', () => {
    for (const op of ['/grpc.health.v1.Health/Check', 'GET /healthz']) {
      expect(rbac.isPublic(op)).toBe(true);
      expect(rbac.authorize(op, undefined)).toMatchObject({ allowed: true, reason: 'public' });
    }
    expect(rbac.isPublic(`${S}/GetArtifact`)).toBe(false);
  });

  it('refuses a protected operation without a principal as unauthenticated', () => {
    const d = rbac.authorize(`${S}/GetArtifact`, undefined);
    expect(d).toMatchObject({ allowed: false, reason: 'unauthenticated' });
    expect(d.denial?.code).toBe('unauthenticated');
    // Made when first read, then the same error on every read (a decision is frozen).
    expect(d.denial).toBe(d.denial);
    expect(d.denial?.reason).toBe('unauthenticated');
    expect(Object.isFrozen(d)).toBe(true);
  });

  it('decides an HTTP path with empty segments by the rule it names without them, then refuses it as invalid', () => {
    // Express routes `a//b` to `*path`; over gRPC the same name is a field the handler
    // refuses as invalid: a `403 no_rule` here answered what gRPC answers `INVALID_ARGUMENT`.
    for (const op of ['PUT /v1/artifacts/a//b', 'PUT /v1/artifacts//abs.txt', 'PUT /v1//artifacts/a']) {
      const d = rbac.authorize(op, principal(WRITE));
      expect(d, op).toMatchObject({ allowed: false, reason: 'empty_path_segment', rule: 'PUT /v1/artifacts/*path' });
      expect(d.denial?.code).toBe('invalid_argument');
      // The rule is applied first, as gRPC applies the method's: a reader is refused its role.
      expect(rbac.authorize(op, principal(['artifacts.reader'])).reason).toBe('missing_role');
      expect(rbac.authorize(op, undefined).reason).toBe('unauthenticated');
    }
    // No rule without them either: default deny, as before; a trailing slash of a rule's own
    // path is that path.
    for (const op of ['GET /admin//x', 'POST /v1/artifacts/a//b', 'GET //']) {
      expect(rbac.authorize(op, principal(ADMIN)).reason, op).toBe('no_rule');
    }
    expect(rbac.authorize('GET /v1/artifacts/', principal(READ)).allowed).toBe(true);
    expect(rbac.authorize('PUT /v1/artifacts/a/', principal(WRITE)).allowed).toBe(true);
    expect(rbac.authorize('GET //healthz', undefined)).toMatchObject({ allowed: false, reason: 'empty_path_segment' });
    const shadow = compileRbac(RULES, { mode: 'shadow' }).authorize('PUT /v1/artifacts/a//b', principal(WRITE));
    expect(shadow).toMatchObject({ allowed: true, shadowDenied: true, reason: 'empty_path_segment' });
  });

  it('denies by default an operation no rule names', () => {
    for (const op of [`${S}/PurgeEverything`, '/other.Service/Get', 'POST /v1/artifacts/x', 'GET /admin']) {
      const d = rbac.authorize(op, principal(ADMIN));
      expect(d).toMatchObject({ allowed: false, reason: 'no_rule', rule: undefined });
      expect(d.denial?.code).toBe('permission_denied');
      expect(rbac.isPublic(op)).toBe(false);
    }
  });

  it('matches concrete HTTP paths against :param and *splat patterns', () => {
    expect(rbac.ruleFor('GET /v1/artifacts/a/b/c.bin')).toBe('GET /v1/artifacts/*path');
    expect(rbac.ruleFor('GET /v1/artifacts/')).toBe('GET /v1/artifacts');
    expect(rbac.ruleFor('GET /v1/artifacts/a//b')).toBeUndefined();
  });
});

describe('compileRbac: wildcards and specificity', () => {
  const r = compileRbac({
    '/pkg.Svc/*': { anyRoles: ['svc.user'] },
    '/pkg.Svc/Admin': { anyRoles: ['svc.admin'] },
    '* /api/*rest': { authenticated: true },
    'DELETE /api/*rest': { anyRoles: ['admin'] },
    'GET /api/items/:id': { anyRoles: ['reader'] },
    'GET /api/items/special': { public: true },
  });

  it('prefers the exact operation over a wildcard', () => {
    expect(r.authorize('/pkg.Svc/Admin', principal(['svc.user'])).allowed).toBe(false);
    expect(r.authorize('/pkg.Svc/Other', principal(['svc.user'])).allowed).toBe(true);
    expect(r.ruleFor('/pkg.Svc/Nested/Method')).toBeUndefined();
    expect(r.ruleFor('/pkg.SvcX/Method')).toBeUndefined();
  });

  it('prefers literal over :param over *splat, then a named method over *', () => {
    expect(r.ruleFor('GET /api/items/special')).toBe('GET /api/items/special');
    expect(r.ruleFor('GET /api/items/42')).toBe('GET /api/items/:id');
    expect(r.ruleFor('GET /api/items/42/parts')).toBe('* /api/*rest');
    expect(r.ruleFor('DELETE /api/items/42')).toBe('DELETE /api/*rest');
    expect(r.authorize('DELETE /api/items/42', principal(['svc.user'])).reason).toBe('missing_role');
    expect(r.authorize('POST /api/x', principal([])).allowed).toBe(true);
  });

  it('reads a path that spells a pattern as a path, not as that pattern', () => {
    // A client may send `/v1/files/*path` as its path: the route `/v1/files/:id` serves it (id
    // `*path`), and the `:id` rule, more specific, decides it; it once found the splat rule by its text.
    const files = compileRbac([
      { operation: 'GET /v1/files/*path', anyRoles: ['reader', 'admin'] },
      { operation: 'GET /v1/files/:id', anyRoles: ['admin'] },
      { operation: 'GET /static/*file', public: true },
      { operation: 'GET /static/:tenant', authenticated: true },
    ]);
    for (const op of ['GET /v1/files/*path', 'GET /v1/files/*path/', 'GET /v1/files/:id']) {
      expect(files.ruleFor(op)).toBe('GET /v1/files/:id');
      expect(files.authorize(op, principal(['reader']))).toMatchObject({ allowed: false, reason: 'missing_role' });
    }
    expect(files.ruleFor('GET /v1/files/a/b')).toBe('GET /v1/files/*path');
    expect(files.isPublic('GET /static/*file')).toBe(false);
    expect(files.authorize('GET /static/*file', undefined)).toMatchObject({
      allowed: false,
      reason: 'unauthenticated',
    });
    expect(files.isPublic('GET /static/a/b')).toBe(true);
    // A route is still decided by its own rule: the splat route before the param route is fine.
    expect(() => {
      files.checkRouteOrder(['GET /v1/files/:id', 'GET /v1/files/*path']);
    }).not.toThrow();
    expect(files.checkServed(['GET /v1/files/*path', 'GET /static/*file']).uncovered).toEqual([]);
  });

  it('combines requirements with AND: roles and scopes, all roles', () => {
    const c = compileRbac({
      '/p.S/Write': { anyRoles: ['w'], scopes: ['artifacts:write'] },
      '/p.S/Both': { allRoles: ['a', 'b'] },
    });
    expect(c.authorize('/p.S/Write', principal(['w'])).reason).toBe('missing_scope');
    expect(c.authorize('/p.S/Write', principal(['w'], { scopes: ['artifacts:write'] })).allowed).toBe(true);
    expect(c.authorize('/p.S/Both', principal(['a'])).allowed).toBe(false);
    expect(c.authorize('/p.S/Both', principal(['a', 'b'])).allowed).toBe(true);
  });

  it('checks a certificate requirement against the principal, else the peer certificate', () => {
    const c = compileRbac({ '/p.S/M': { certificate: [{ spiffeId: 'spiffe://example.org/ns/*/sa/reader' }] } });
    const cert: CertificateIdentity = {
      spiffeId: 'spiffe://example.org/ns/prod/sa/reader',
      uris: ['spiffe://example.org/ns/prod/sa/reader'],
      dnsNames: [],
      commonName: undefined,
      fingerprint256: 'ab'.repeat(32),
      validFrom: new Date(0),
      validTo: new Date(Date.now() + 3_600_000),
    };
    expect(c.authorize('/p.S/M', principal([])).reason).toBe('certificate_mismatch');
    expect(c.authorize('/p.S/M', principal([]), cert).allowed).toBe(true);
    expect(c.authorize('/p.S/M', principal([], { certificate: cert })).allowed).toBe(true);
    expect(
      c.authorize('/p.S/M', principal([]), { ...cert, spiffeId: 'spiffe://example.org/ns/prod/sa/writer' }).allowed,
    ).toBe(false);
  });
});

describe('compileRbac: shadow mode', () => {
  const shadow = compileRbac(RULES, { mode: 'shadow' });
  it('allows but reports what enforce mode would deny', () => {
    const d = shadow.authorize(`${S}/DeleteArtifact`, principal(['artifacts.reader']));
    expect(d).toMatchObject({ allowed: true, shadowDenied: true, reason: 'missing_role', rule: `${S}/DeleteArtifact` });
    expect(d.denial?.code).toBe('permission_denied');
    expect(shadow.enforce(`${S}/DeleteArtifact`, principal(['artifacts.reader'])).shadowDenied).toBe(true);
    expect(shadow.authorize(`${S}/Unknown`, undefined)).toMatchObject({
      allowed: true,
      shadowDenied: true,
      reason: 'no_rule',
    });
    expect(shadow.authorize(`${S}/GetArtifact`, principal(['artifacts.reader']))).toMatchObject({
      allowed: true,
      shadowDenied: false,
    });
  });
});

describe('compileRbac: start-up checks', () => {
  it('names "servedOperations" when it is not an array of strings', () => {
    for (const servedOperations of [5, '/p.S/M', [5]]) {
      expect(() => compileRbac({ '/p.S/M': { public: true } }, { servedOperations } as never)).toThrow(
        'compileRbac: "servedOperations" must be an array of strings',
      );
    }
  });

  it('refuses an entry of "servedOperations" that is no operation, saying what it should read', () => {
    // Accepted before: a gRPC name without its slash stood in the list as an HTTP route.
    expect(() => compileRbac({ '/p.S/M': { public: true } }, { servedOperations: ['/p.S/M', 'p.S/N'] })).toThrow(
      'compileRbac: "servedOperations[1]" "p.S/N" is not an operation: a gRPC method name starts with "/": "/p.S/N"',
    );
    expect(() => rbac.checkServed([...SERVED, 'get /healthz'])).toThrow(
      `checkServed: "operations[${String(SERVED.length)}]" "get /healthz" is not an operation: an HTTP method is written in capitals: "GET /healthz"`,
    );
    expect(() => rbac.checkServed([...SERVED, ''])).toThrow(ConfigurationError);
  });

  it('names "where" when it is not a string, rather than failing inside with a TypeError', () => {
    for (const where of [Symbol('w'), 5, ' ']) {
      expect(() => compileRbac({ '/p.S/M': { public: true } }, { where } as never)).toThrow(
        'compileRbac: "where" must be a non-empty string',
      );
    }
  });

  it('reports rules naming operations the server does not serve, and returns uncovered ones', () => {
    expect(() => rbac.checkServed(SERVED.filter((o) => !o.includes('Delete')))).toThrow(
      /does not serve: "\/fluxguard.example.v1.ArtifactStore\/DeleteArtifact"/,
    );
    expect(rbac.checkServed([...SERVED, `${S}/Extra`]).uncovered).toEqual([`${S}/Extra`]);
    expect(() => compileRbac({ '/p.S/Typo': { public: true } }, { servedOperations: ['/p.S/Real'] })).toThrow(
      ConfigurationError,
    );
  });

  it.each<[string, unknown, RegExp]>([
    ['a bad pattern', { 'GET v1/x': { public: true } }, /not an operation pattern/],
    ['a lower-case method', { 'get /x': { public: true } }, /not an operation pattern/],
    // Inherited fields were read where own ones are checked: the route was public.
    [
      'a requirement that inherits its fields',
      { 'GET /a': Object.create({ public: true }) as object },
      /must be a plain object/,
    ],
    // Its entries are no keys: it compiled to no rule at all, and every route was denied.
    [
      'a Map of rules',
      new Map([['GET /a', { public: true }]]),
      /^rbac\.rules: must be a plain object .*an instance of Map$/,
    ],
    // Checked as GET: a HEAD rule would never apply, and an app's own HEAD route ran under the GET rule.
    ['a HEAD rule', { 'HEAD /v1/report': { anyRoles: ['admin'] } }, /a HEAD request is decided by the rule of GET/],
    // Node's parser never delivers another method: the rule would never apply.
    ['a method Node does not serve', { 'FETCH /v1/x': { public: true } }, /"FETCH" is not an HTTP method/],
    ['CONNECT, which never reaches Express', { 'CONNECT /v1/x': { public: true } }, /"CONNECT" is not an HTTP method/],
    ['a gRPC pattern with a partial wildcard', { '/p.S/Get*': { public: true } }, /not a gRPC method pattern/],
    [
      'an HTTP route without its method',
      { '/v1/items/:id': { public: true } },
      /"\/v1\/items\/:id" is not a gRPC method pattern .*; an HTTP route needs its method: "GET \/v1\/items\/:id"/,
    ],
    ['a splat in the middle', { 'GET /a/*x/b': { public: true } }, /must be the last segment/],
    ['an optional group', { 'GET /a{/:b}': { public: true } }, /not supported/],
    // A client may send these encoded (`root%40corp`), which the rule would not match while the
    // route's parameter decodes it; a space or a letter past ASCII only ever arrives encoded.
    ...['root@corp', "o'neil", 'a,b', 'x;y', 'a=b', 'hr reports', 'café', 'a%40b'].map(
      (literal): [string, unknown, RegExp] => [
        `a literal segment "${literal}"`,
        { [`GET /v1/users/${literal}`]: { anyRoles: ['admin'] } },
        /a literal path segment may hold only letters, digits, "-", ".", "_" and "~"/,
      ],
    ),
    ['public with roles', { 'GET /x': { public: true, anyRoles: ['a'] } }, /cannot be combined/],
    ['public: false', { 'GET /x': { public: false } }, /must be true/],
    ['an empty requirement', { 'GET /x': {} }, /must name a requirement/],
    ['an empty role list', { 'GET /x': { anyRoles: [] } }, /anyRoles must be a non-empty array/],
    // A token's scopes are split at spaces: such a scope never matched.
    ...['a b', 'a\tb'].map((scope): [string, unknown, RegExp] => [
      `a scope with white space in it (${JSON.stringify(scope)})`,
      { 'GET /x': { scopes: ['artifacts:read', scope] } },
      /^rbac\.rules\["GET \/x"\]\.scopes\[1\] must be one scope, without white space: a token's scopes are split at spaces/,
    ]),
    ['an unknown field', { 'GET /x': { roles: ['a'] } }, /unknown field "roles"/],
    ['a misspelt field', { 'GET /x': { anyRole: ['a'] } }, /unknown field "anyRole" \(did you mean "anyRoles"\?\)/],
    [
      'a duplicate',
      [
        { operation: 'GET /x/', public: true },
        { operation: 'GET /x', public: true },
      ],
      /rbac.rules "GET \/x" names the operations of "GET \/x\/", written before it: only one could apply/,
    ],
    [
      'two parameters of other names at one place',
      [
        { operation: 'GET /v1/:id', anyRoles: ['admin'] },
        { operation: 'GET /v1/:name', anyRoles: ['reader'] },
      ],
      /"GET \/v1\/:name" names the operations of "GET \/v1\/:id"/,
    ],
    [
      'two wildcards of other names',
      { 'DELETE /files/*path': { anyRoles: ['admin'] }, 'DELETE /files/*rest/': { authenticated: true } },
      /"DELETE \/files\/\*rest\/" names the operations of "DELETE \/files\/\*path"/,
    ],
    ['a bad certificate rule', { '/p.S/M': { certificate: [] } }, /certificate/],
  ])('refuses %s', (_label, rules, message) => {
    expect(() => compileRbac(rules as RbacRules)).toThrow(ConfigurationError);
    expect(() => compileRbac(rules as RbacRules)).toThrow(message);
  });

  it('refuses overlapping routes where the router would run a route under another route’s rule', () => {
    // Express runs the first route that matches; RBAC applies the most specific rule. With the
    // general route first, GET /v1/public/reports ran the tenant's reports, decided as public.
    const reports = compileRbac([
      { operation: 'GET /v1/:tenant/reports', anyRoles: ['reports.reader'] },
      { operation: 'GET /v1/public/*path', public: true },
    ]);
    expect(() => {
      reports.checkRouteOrder(['GET /v1/:tenant/reports', 'GET /v1/public/*path']);
    }).toThrow(
      'rbac.rules: "GET /v1/public/reports" reaches the route "GET /v1/:tenant/reports", which the router tries first, but the rule "GET /v1/public/*path" decides it, not the rule "GET /v1/:tenant/reports" of that route\'s paths: register "GET /v1/public/*path" before "GET /v1/:tenant/reports", or make the two routes disjoint',
    );
    // The specific route first: what both match reaches it, under its own rule.
    expect(() => {
      reports.checkRouteOrder(['GET /v1/public/*path', 'GET /v1/:tenant/reports']);
    }).not.toThrow();
    // A route that no rule names, before one whose rule would let its requests through.
    const open = compileRbac([{ operation: 'GET /files/*path', public: true }]);
    expect(() => {
      open.checkRouteOrder(['* /:any/:thing', 'GET /files/*path']);
    }).toThrow(
      /"GET \/files\/x:" reaches the route "\* \/:any\/:thing".*the rule "GET \/files\/\*path" decides it, not no rule/,
    );
    // One rule over both, routes that never overlap, other methods, gRPC: nothing to say.
    const broad = compileRbac([{ operation: 'GET /v1/*path', anyRoles: ['r'] }]);
    expect(() => {
      broad.checkRouteOrder(['GET /v1/:tenant/reports', 'GET /v1/public/*path']);
    }).not.toThrow();
    expect(() => {
      rbac.checkRouteOrder([
        'GET /v1/artifacts',
        'GET /v1/artifacts/*path',
        'PUT /v1/artifacts/*path',
        'DELETE /v1/artifacts/*path',
        `${S}/GetArtifact`,
      ]);
    }).not.toThrow();
  });

  it('names the index and field of a bad rule in list form', () => {
    expect(() =>
      compileRbac([
        { operation: 'GET /a', public: true },
        { operation: 'GET /b', anyRoles: ['ok', ''] },
      ]),
    ).toThrow('rbac.rules[1].anyRoles[1] must be a non-empty string');
  });
});

describe('compileRbac: remembering which rule applies', () => {
  it('decides the same, first time or remembered, beyond the memo bound', () => {
    const rbac = compileRbac({
      'GET /v1/items/:id': { anyRoles: ['reader'] },
      'GET /v1/items/:id/secret': { anyRoles: ['admin'] },
    });
    const reader = {
      subject: 'r',
      roles: ['reader'],
      scopes: [],
      claims: {},
      certificate: undefined,
      authenticatedBy: 'jwt' as const,
    };
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5000; i++) {
        expect(rbac.authorize(`GET /v1/items/${i}`, reader).allowed).toBe(true);
        expect(rbac.authorize(`GET /v1/items/${i}/secret`, reader).allowed).toBe(false);
        expect(rbac.authorize(`GET /v1/other/${i}`, reader).reason).toBe('no_rule');
      }
    }
  });
});

describe('compileRbac: a request handed on to a later route', () => {
  const rbac = compileRbac({
    'GET /v1/docs/:page': { public: true },
    'GET /v1/:collection/:id': { anyRoles: ['admin'] },
    'GET /v1/settings/smtp_password': { anyRoles: ['admin'] },
    'GET /v1/settings/:key': { anyRoles: ['admin'] },
  });
  const mayServe = rbac.handOver(['GET /v1/settings/:key', 'GET /v1/docs/:page', 'GET /v1/:collection/:id']);

  it("refuses a route whose own rule is not the one that decided the request, another route's", () => {
    expect(mayServe('GET /v1/docs/payroll', 'GET /v1/docs/:page')).toBe(true);
    expect(mayServe('GET /v1/docs/payroll', 'GET /v1/:collection/:id')).toBe(false);
    expect(mayServe('GET /v1/settings/theme', 'GET /v1/:collection/:id')).toBe(false);
    expect(mayServe('GET /v1/users/1', 'GET /v1/:collection/:id')).toBe(true);
  });

  it('lets any route serve a request decided by a rule no route owns, or by none', () => {
    expect(mayServe('GET /v1/settings/smtp_password', 'GET /v1/settings/:key')).toBe(true);
    expect(mayServe('GET /v1/settings/smtp_password', 'GET /v1/:collection/:id')).toBe(true);
    expect(mayServe('GET /nowhere', 'GET /v1/:collection/:id')).toBe(true);
  });

  it('refuses a route that could not have matched the request as it arrived (a rewritten method or path)', () => {
    const rewritten = compileRbac({
      'POST /v1/items/*path': { anyRoles: ['reader'] },
      'GET /public/*path': { public: true },
      'DELETE /v1/items/*path': { anyRoles: ['admin'] },
      'GET /v1/items/*path': { anyRoles: ['admin'] },
      'GET /v1/files/report.pdf': { anyRoles: ['admin'] },
    }).handOver(['DELETE /v1/items/*path', 'GET /v1/items/*path', '* /v1/any/:id']);
    expect(rewritten('POST /v1/items/a', 'DELETE /v1/items/*path')).toBe(false);
    expect(rewritten('GET /public/a', 'GET /v1/items/*path')).toBe(false);
    expect(rewritten('GET /public/a', 'GET /public/*path')).toBe(true);
    expect(rewritten('POST /v1/items/a/b', 'POST /v1/items/*path')).toBe(true);
    expect(rewritten('POST /v1/items/a', 'POST /v1/items/:id/')).toBe(true);
    expect(rewritten('GET /public/a', 'GET /public')).toBe(false);
    expect(rewritten('POST /v1/items/a', '* /v1/items/:id')).toBe(true);
    expect(rewritten('POST /v1/items/a', 'POST /v1/:collection/:id')).toBe(true);
    expect(rewritten('POST /v1/items/a', 'POST /v1/:collection')).toBe(false);
    expect(rewritten('GET /v1/files/report.pdf', 'GET /v1/files/report.:ext')).toBe(true);
    expect(rewritten('GET /v1/files/report.pdf', 'GET /v1/files/other.pdf')).toBe(false);
  });

  it('takes every method Node serves, M-SEARCH included', () => {
    expect(
      compileRbac({ 'M-SEARCH /upnp': { public: true }, 'QUERY /v1/x': { public: true } }).ruleFor('M-SEARCH /upnp'),
    ).toBe('M-SEARCH /upnp');
  });

  it('refuses a request that now names an operation of another rule (its method or URL rewritten)', () => {
    expect(mayServe('GET /v1/settings/theme', 'GET /v1/settings/:key', 'GET /v1/settings/theme')).toBe(true);
    expect(mayServe('GET /v1/settings/theme', 'GET /v1/settings/:key', 'GET /v1/settings/smtp_password')).toBe(false);
    expect(mayServe('GET /v1/users/1', 'GET /v1/:collection/:id', 'GET /v1/users/2')).toBe(true);
    expect(mayServe('GET /v1/users/1', 'GET /v1/:collection/:id', 'DELETE /v1/users/1')).toBe(false);
  });

  it('lets every hand-over serve in shadow mode, as every call may', () => {
    const shadow = compileRbac(
      { 'GET /v1/docs/:page': { public: true }, 'GET /v1/:collection/:id': { anyRoles: ['admin'] } },
      { mode: 'shadow' },
    ).handOver(['GET /v1/docs/:page', 'GET /v1/:collection/:id']);
    expect(shadow('GET /v1/docs/payroll', 'GET /v1/:collection/:id')).toBe(true);
    expect(shadow('GET /v1/docs/readme', undefined, 'GET /v1/users/1')).toBe(true);
  });

  it('tests a middleware (no route) by the rewrite alone: the request must still name an operation of its rule', () => {
    expect(mayServe('GET /v1/docs/readme', undefined)).toBe(true);
    expect(mayServe('GET /v1/docs/readme', undefined, 'GET /v1/docs/readme')).toBe(true);
    expect(mayServe('GET /v1/docs/readme', undefined, 'GET /v1/docs/guide')).toBe(true);
    expect(mayServe('GET /v1/docs/readme', undefined, 'GET /v1/users/1')).toBe(false);
    expect(mayServe('GET /v1/docs/readme', undefined, 'GET /static/anything')).toBe(false);
    expect(mayServe('GET /nowhere', undefined, 'GET /elsewhere')).toBe(true);
  });
});
