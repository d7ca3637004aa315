import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createInputLimits } from '../limits/input-limits.js';
import { createConcurrencyLimit } from '../ratelimit/concurrency.js';
import { createRateLimit } from '../ratelimit/rate-limit.js';
import { createGuard } from '../guard/guard.js';
import { createJwtVerifier } from '../jwt/verifier.js';
import type { Control } from '../pipeline/control.js';
import { createPipeline } from '../pipeline/pipeline.js';
import { compileRbac } from '../rbac/rbac.js';
import { AUDIENCE, ISSUER, capturedAudit, makeKey } from '../testing/jwt-fixtures.js';
import { createTimeouts } from '../timeouts/timeouts.js';
import { createMessageValidation } from '../validation/message-validation.js';

const SERVED = Object.freeze([
  '/store.v1.Store/GetArtifact',
  '/store.v1.Store/ListArtifacts',
  'GET /v1/artifacts',
  'PUT /v1/artifacts/*path',
]);

/** Each factory with rules per operation, built with one operation pattern of its rules. */
const FACTORIES: readonly {
  readonly name: string;
  readonly build: (pattern: string, servedOperations?: unknown) => unknown;
  /** Where the error names the pattern. */
  readonly at: string;
  readonly grpcOnly?: boolean;
}[] = [
  {
    name: 'createRateLimit operations',
    build: (pattern, servedOperations) =>
      createRateLimit({
        rules: [{ name: 'r', key: 'peer', points: 5, durationSeconds: 1, operations: [pattern] }],
        servedOperations: servedOperations as string[],
      }),
    at: 'createRateLimit.rules[0].operations[0]',
  },
  {
    name: 'createRateLimit operationCosts',
    build: (pattern, servedOperations) =>
      createRateLimit({
        rules: [{ name: 'r', key: 'peer', points: 5, durationSeconds: 1, operationCosts: { [pattern]: 3 } }],
        servedOperations: servedOperations as string[],
      }),
    at: 'createRateLimit.rules[0].operationCosts',
  },
  {
    name: 'createInputLimits',
    build: (pattern, servedOperations) =>
      createInputLimits({
        rules: [{ operation: pattern, maxBodyBytes: 2048 }],
        servedOperations: servedOperations as string[],
      }),
    at: 'createInputLimits.rules[0].operation',
  },
  {
    name: 'createTimeouts',
    build: (pattern, servedOperations) =>
      createTimeouts({
        rules: [{ operation: pattern, idleMs: 5_000 }],
        servedOperations: servedOperations as string[],
      }),
    at: 'createTimeouts.rules[0].operation',
  },
  {
    name: 'createConcurrencyLimit',
    build: (pattern, servedOperations) =>
      createConcurrencyLimit({
        maxInFlight: 10,
        maxInFlightPerOperation: { [pattern]: 2 },
        servedOperations: servedOperations as string[],
      }),
    at: 'createConcurrencyLimit.maxInFlightPerOperation',
  },
  {
    name: 'createMessageValidation',
    build: (pattern, servedOperations) =>
      createMessageValidation({
        rules: [{ operation: pattern, schema: z.object({}) }],
        servedOperations: servedOperations as string[],
      }),
    at: 'createMessageValidation.rules[0].operation',
    grpcOnly: true,
  },
];

describe('servedOperations of the factories with rules per operation', () => {
  it.each(FACTORIES)('$name: a pattern naming a served operation is accepted', ({ build, grpcOnly }) => {
    expect(build('/store.v1.Store/GetArtifact', SERVED)).toBeDefined();
    expect(build('/store.v1.Store/*', SERVED)).toBeDefined();
    if (grpcOnly !== true) {
      expect(build('GET /v1/artifacts', SERVED)).toBeDefined();
      expect(build('PUT /v1/artifacts/*path', SERVED)).toBeDefined();
    }
  });

  it.each(FACTORIES)('$name: a misspelt method is refused, naming its place', ({ build, at }) => {
    // Without the list the rule is accepted: it would never apply to a call.
    expect(build('/store.v1.Store/GetArtifacts')).toBeDefined();
    expect(() => build('/store.v1.Store/GetArtifacts', SERVED)).toThrow(ConfigurationError);
    expect(() => build('/store.v1.Store/GetArtifacts', SERVED)).toThrow(
      `a pattern names operations this server does not serve: ${at} "/store.v1.Store/GetArtifacts"`,
    );
    expect(() => build('/store.v2.Store/*', SERVED)).toThrow('does not serve');
  });

  it.each(FACTORIES.filter((f) => f.grpcOnly !== true))('$name: a misspelt route is refused', ({ build, at }) => {
    expect(() => build('GET /v1/artifact', SERVED)).toThrow(`${at} "GET /v1/artifact"`);
    expect(() => build('POST /v1/artifacts', SERVED)).toThrow('does not serve');
  });

  it.each(FACTORIES)('$name: a list that is not of strings is refused', ({ build }) => {
    expect(() => build('/store.v1.Store/GetArtifact', '/store.v1.Store/GetArtifact')).toThrow(
      '"servedOperations" must be an array of strings',
    );
    expect(() => build('/store.v1.Store/GetArtifact', [42])).toThrow('"servedOperations" must be an array of strings');
    // An empty list held the patterns against nothing, and read as checked.
    expect(() => build('/store.v1.Store/GetArtifacts', [])).toThrow('"servedOperations" is empty');
  });

  it.each(FACTORIES)('$name: an entry of the list that is no operation is refused', ({ build }) => {
    // The gRPC name without its slash read as an HTTP route, and with no gRPC name left in the
    // list the misspelt gRPC pattern went unchecked.
    expect(() => build('/store.v1.Store/GetArtifacts', ['store.v1.Store/GetArtifact', 'GET /v1/artifacts'])).toThrow(
      '"servedOperations[0]" "store.v1.Store/GetArtifact" is not an operation: a gRPC method name starts with "/": "/store.v1.Store/GetArtifact"',
    );
    for (const [entry, problem] of [
      ['get /v1/artifacts', 'an HTTP method is written in capitals: "GET /v1/artifacts"'],
      ['/v1/artifacts/:id', 'an HTTP route needs its method: "GET /v1/artifacts/:id"'],
      ['/store.v1.Store/*', 'one method, not a service'],
      ['GETS /v1/artifacts', '"GETS" is not an HTTP method'],
      // Node hands CONNECT to its `connect` event, never to Express.
      ['CONNECT /v1/artifacts', '"CONNECT" is not an HTTP method Node\'s server hands to Express'],
      ['', 'expected a gRPC method "/pkg.Service/Method" or an HTTP route "METHOD /path"'],
      ['x', 'expected a gRPC method'],
    ]) {
      expect(() => build('/store.v1.Store/GetArtifact', [...SERVED, entry])).toThrow(
        `"servedOperations[${String(SERVED.length)}]" "${entry ?? ''}" is not an operation: `,
      );
      expect(() => build('/store.v1.Store/GetArtifact', [...SERVED, entry])).toThrow(problem);
    }
  });

  it('checks only the kinds of operation the list holds, or the transport kept', () => {
    const grpcServed = ['/store.v1.Store/GetArtifact'];
    // A rule list shared by both transports: the HTTP rule is not judged by a gRPC server's list.
    expect(
      createRateLimit({
        rules: [{ name: 'r', key: 'peer', points: 5, durationSeconds: 1, operations: ['GET /v1/nothing'] }],
        servedOperations: grpcServed,
      }),
    ).toBeDefined();
    expect(
      createTimeouts({ transport: 'http', rules: [{ operation: '/x.Y/Z', idleMs: 5_000 }], servedOperations: SERVED }),
    ).toBeDefined();
    expect(() =>
      createTimeouts({ transport: 'grpc', rules: [{ operation: '/x.Y/Z', idleMs: 5_000 }], servedOperations: SERVED }),
    ).toThrow('createTimeouts.rules[0].operation "/x.Y/Z"');
  });

  it('names every stray pattern at once', () => {
    expect(() =>
      createInputLimits({
        rules: [
          { operation: 'GET /v1/artifact', maxBodyBytes: 2048 },
          { operation: '/store.v1.Store/GetArtifact', maxBodyBytes: 2048 },
          { operation: '/store.v1.Store/Upload', maxBodyBytes: 2048 },
        ],
        servedOperations: SERVED,
      }),
    ).toThrow(
      'createInputLimits: patterns name operations this server does not serve: createInputLimits.rules[0].operation "GET /v1/artifact", createInputLimits.rules[2].operation "/store.v1.Store/Upload"',
    );
  });

  it('refuses a bad list even where there are no rules to check', () => {
    expect(() => createTimeouts({ servedOperations: 'GET /' as unknown as string[] })).toThrow(
      '"servedOperations" must be an array of strings',
    );
    expect(createTimeouts({ servedOperations: SERVED })).toBeDefined();
  });
});

describe('rule patterns that name a served operation only in other letter case', () => {
  /** The controls a factory of FACTORIES made. */
  const controlsOf = (made: unknown): readonly Control[] =>
    typeof made === 'object' && made !== null && 'controls' in made
      ? (made as { controls: readonly Control[] }).controls
      : [made as Control];

  it.each(FACTORIES)('$name: refused once the pipeline is told what is served', ({ build }) => {
    const pipeline = createPipeline('test', controlsOf(build('/store.v1.Store/getArtifact')));
    // The rule would never apply: GetArtifact falls under whatever broader rule there is.
    expect(() => {
      pipeline.checkServed(SERVED);
    }).toThrow(
      'test: the rule pattern "/store.v1.Store/getArtifact" names no operation this server serves, only "/store.v1.Store/GetArtifact" in other letter case',
    );
    expect(() => {
      createPipeline('test', controlsOf(build('/Store.v1.store/*'))).checkServed(SERVED);
    }).toThrow('only "/store.v1.Store/GetArtifact" in other letter case');
    // Exact, wildcard and other services' patterns pass.
    for (const pattern of ['/store.v1.Store/GetArtifact', '/store.v1.Store/*', '/other.v1.Other/getArtifact']) {
      expect(() => {
        createPipeline('test', controlsOf(build(pattern))).checkServed(SERVED);
      }).not.toThrow();
    }
  });

  it.each(FACTORIES.filter((f) => f.grpcOnly !== true))(
    '$name: an HTTP route in other letter case is refused',
    ({ build }) => {
      expect(() => {
        createPipeline('test', controlsOf(build('GET /v1/Artifacts'))).checkRoutes(SERVED);
      }).toThrow('"GET /v1/Artifacts" names no operation this server serves, only "GET /v1/artifacts"');
      expect(() => {
        createPipeline('test', controlsOf(build('PUT /V1/artifacts/*path'))).checkRoutes(SERVED);
      }).toThrow('only "PUT /v1/artifacts/*path" in other letter case');
      expect(() => {
        createPipeline('test', controlsOf(build('GET /v1/artifacts'))).checkRoutes(SERVED);
      }).not.toThrow();
    },
  );

  it('refuses an RBAC rule in other letter case: under a broader reader rule, an admin method was open to readers', async () => {
    const key = await makeKey('ES256', 'k1');
    const guard = createGuard({
      audit: capturedAudit().audit,
      rbac: compileRbac({
        '/store.v1.Store/*': { anyRoles: ['reader'] },
        '/store.v1.Store/deleteArtifact': { anyRoles: ['admin'] },
      }),
      jwt: createJwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [key.publicJwk] } }),
    });
    expect(() => {
      createPipeline('test', guard.controls).checkServed([...SERVED, '/store.v1.Store/DeleteArtifact']);
    }).toThrow(
      '"/store.v1.Store/deleteArtifact" names no operation this server serves, only "/store.v1.Store/DeleteArtifact"',
    );
  });
});
