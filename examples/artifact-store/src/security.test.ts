import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuditLogger, type CallInfo } from '@fluxguard/core';
import { ensureDevMaterial, parseDuration, signDevToken } from './dev-material.js';
import { loadReferenceSecurity } from './security.js';

const DEFAULT_POLICY = join(dirname(fileURLToPath(import.meta.url)), '..', 'policy', 'artifact-store.policy.json');
const devDir = mkdtempSync(join(tmpdir(), 'fluxguard-refsec-'));
const audit = createAuditLogger({ level: 'silent' });
afterAll(() => {
  rmSync(devDir, { recursive: true, force: true });
});

const callWith = (token: string): CallInfo => ({
  transport: 'grpc',
  operation: '/fluxguard.example.v1.ArtifactStore/GetArtifact',
  requestId: 'test',
  peerAddress: undefined,
  peerCertificate: undefined,
  headers: {
    get: (n) => (n.toLowerCase() === 'authorization' ? `Bearer ${token}` : undefined),
    getAll: (n) => (n.toLowerCase() === 'authorization' ? [`Bearer ${token}`] : []),
  },
  deadline: undefined,
  signal: new AbortController().signal,
});

describe('loadReferenceSecurity', () => {
  it('creates development material on first use, private keys readable by the owner only', async () => {
    const security = await loadReferenceSecurity({ devDir, audit, env: {} });
    for (const name of ['server.key', 'client.key', 'jwt-signing.key']) {
      expect(statSync(join(devDir, name)).mode & 0o077).toBe(0);
    }
    expect(security.tls).toMatchObject({ certFile: join(devDir, 'server.crt'), clientCertificates: 'per-operation' });
    await security.close();
  });

  it('creates one signing key when several servers start at once', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'fluxguard-refsec-race-'));
    try {
      const all = await Promise.all([1, 2, 3, 4].map(() => ensureDevMaterial(fresh)));
      const keys = new Set(all.map((m) => readFileSync(m.signingKeyFile, 'utf8')));
      expect(keys.size).toBe(1);
      const jwks = JSON.parse(readFileSync(join(fresh, 'jwks.json'), 'utf8')) as { keys: { kid: string }[] };
      const signing = JSON.parse([...keys][0] ?? '{}') as { kid: string };
      expect(jwks.keys.map((k) => k.kid)).toEqual([signing.kid]);
      expect(readdirSync(fresh).filter((f) => f.includes('.json.') || f.includes('.key.'))).toEqual([]);
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('trusts the tokens `pnpm -s token` signs, and only for their roles', async () => {
    const security = await loadReferenceSecurity({ devDir, audit, env: {} });
    const { authenticator } = security.guard('grpc');
    const token = await signDevToken({ devDir, subject: 'alice', roles: ['artifacts.reader'] });
    await expect(authenticator.authenticate(callWith(token))).resolves.toMatchObject({
      subject: 'alice',
      roles: ['artifacts.reader'],
    });
    const foreign = await signDevToken({
      devDir,
      subject: 'mallory',
      roles: ['artifacts.admin'],
      audience: 'another-service',
    });
    await expect(authenticator.authenticate(callWith(foreign))).rejects.toMatchObject({ code: 'unauthenticated' });
    await security.close();
  });

  it('gives each transport its own rules from the one policy', async () => {
    const security = await loadReferenceSecurity({ devDir, audit, env: {} });
    const grpc = security.guard('grpc').rbac;
    const http = security.guard('http').rbac;
    expect(grpc.ruleFor('/fluxguard.example.v1.ArtifactStore/DeleteArtifact')).toBeDefined();
    expect(grpc.ruleFor('DELETE /v1/artifacts/a.txt')).toBeUndefined();
    expect(http.ruleFor('DELETE /v1/artifacts/a.txt')).toBe('DELETE /v1/artifacts/*path');
    expect(http.ruleFor('/fluxguard.example.v1.ArtifactStore/DeleteArtifact')).toBeUndefined();
    await security.close();
  });

  it('refuses, at start-up, a rule that names no operation the server serves', async () => {
    const security = await loadReferenceSecurity({ devDir, audit, env: {} });
    expect(() => security.guard('grpc', ['/fluxguard.example.v1.ArtifactStore/GetArtifact'])).toThrow(
      /ListArtifacts|serve/,
    );
    await security.close();
  });

  it.each([
    [{ FLUXGUARD_JWKS_URL: 'https://id.example.com/jwks' }, /FLUXGUARD_JWT_ISSUER/],
    [{ FLUXGUARD_TLS_CERT: '/x.crt' }, /go together/],
    // Read by nothing without a JWKS URL: the development key set has its own issuer.
    [{ FLUXGUARD_JWT_ISSUER: 'https://id.example.com' }, /go with FLUXGUARD_JWKS_URL/],
    [{ FLUXGUARD_JWT_AUDIENCE: 'artifacts' }, /go with FLUXGUARD_JWKS_URL/],
    [{ FLUXGUARD_CLIENT_CERTS: 'optional' }, /strict" or "per-operation/],
    [{ FLUXGUARD_POLICY: '/nonexistent/policy.json' }, /policy/],
    [{ FLUXGUARD_RATE_LIMIT_MAX_KEYS: '0' }, /FLUXGUARD_RATE_LIMIT_MAX_KEYS must be a whole number/],
    [{ FLUXGUARD_RATE_LIMIT_MAX_KEYS: '1e5' }, /FLUXGUARD_RATE_LIMIT_MAX_KEYS must be a whole number/],
    // ioredis would take it for Redis on localhost.
    [{ FLUXGUARD_REDIS_URL: '' }, /FLUXGUARD_REDIS_URL must not be empty/],
    [{ FLUXGUARD_REDIS_URL: '  ' }, /FLUXGUARD_REDIS_URL must not be empty/],
  ])('refuses an unsafe or broken environment at start-up: %o', async (env, message) => {
    await expect(loadReferenceSecurity({ devDir, audit, env })).rejects.toThrow(message);
  });
});

/** The default policy changed by `change`, written to a file of its own for `run`; removed after. */
async function withPolicy(
  change: (policy: { jwt: Record<string, unknown>; mtls: Record<string, unknown> }) => void,
  run: (policyFile: string) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fluxguard-refsec-policy-'));
  try {
    const policy = JSON.parse(readFileSync(DEFAULT_POLICY, 'utf8')) as Parameters<typeof change>[0];
    change(policy);
    const policyFile = join(dir, 'changed.policy.json');
    writeFileSync(policyFile, JSON.stringify(policy));
    await run(policyFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('a policy of its own', () => {
  it('with strict client certificates: FLUXGUARD_CLIENT_CERTS cannot loosen them, and the guard holds every call to them', async () => {
    await withPolicy(
      (policy) => {
        policy.mtls.clientCertificates = 'strict';
      },
      async (policyFile) => {
        await expect(
          loadReferenceSecurity({
            devDir,
            audit,
            env: { FLUXGUARD_POLICY: policyFile, FLUXGUARD_CLIENT_CERTS: 'per-operation' },
          }),
        ).rejects.toThrow(/cannot loosen the policy's mtls\.clientCertificates "strict"/);
        const security = await loadReferenceSecurity({ devDir, audit, env: { FLUXGUARD_POLICY: policyFile } });
        expect(security.tls.clientCertificates).toBe('strict');
        await expect(security.guard('grpc').check(callWith('not-a-token'))).rejects.toMatchObject({
          reason: 'client_certificate_required',
        });
        await security.close();
      },
    );
  });

  it('naming its own key source is refused: the development key set replaced it without a word', async () => {
    await withPolicy(
      (policy) => {
        policy.jwt.jwksFile = 'prod-jwks.json';
      },
      async (policyFile) => {
        await expect(loadReferenceSecurity({ devDir, audit, env: { FLUXGUARD_POLICY: policyFile } })).rejects.toThrow(
          /jwt\.jwksFile names a key source, and the reference servers take theirs from the environment/,
        );
      },
    );
  });

  it('with settings of a remote key set: they are left out with the development key set, which is a file', async () => {
    await withPolicy(
      (policy) => {
        policy.jwt.jwksCooldownMs = 60_000;
      },
      async (policyFile) => {
        const security = await loadReferenceSecurity({ devDir, audit, env: { FLUXGUARD_POLICY: policyFile } });
        expect(security.policy.jwt).not.toHaveProperty('jwksCooldownMs');
        await security.close();
      },
    );
  });
});

describe('material of its own', () => {
  it('warns when TLS comes from the environment but tokens are still verified with the development key', async () => {
    const lines: Record<string, unknown>[] = [];
    const destination = { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) };
    const watched = createAuditLogger({ destination });
    const dev = await loadReferenceSecurity({ devDir, audit, env: {} });
    const tlsEnv = {
      FLUXGUARD_TLS_CERT: dev.tls.certFile,
      FLUXGUARD_TLS_KEY: dev.tls.keyFile,
      FLUXGUARD_TLS_CA: dev.tls.caFile,
    };
    await dev.close();
    const own = await loadReferenceSecurity({ devDir, audit: watched, env: tlsEnv });
    await own.close();
    const warning = lines.find((line) => line.event === 'config.development_tokens');
    expect(warning).toMatchObject({ level: 40, devDir });
    expect(String(warning?.hint)).toContain('set FLUXGUARD_JWKS_URL');
    // Development material for both, as `pnpm start` runs: nothing to warn of.
    lines.length = 0;
    await (await loadReferenceSecurity({ devDir, audit: watched, env: {} })).close();
    expect(lines.filter((line) => line.event === 'config.development_tokens')).toEqual([]);
  });
});

describe('parseDuration', () => {
  it('reads the units `pnpm -s token --ttl` takes', () => {
    expect(parseDuration('90')).toBe(90);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('1h')).toBe(3600);
    expect(parseDuration('2d')).toBe(172_800);
    expect(() => parseDuration('1 week')).toThrow(/duration/);
  });
});
