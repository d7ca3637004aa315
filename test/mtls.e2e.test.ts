import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { connect as http2Connect, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { request as httpsRequest } from 'node:https';
import { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { createOpensslCa, type OpensslCa } from '@fluxguard/test-support/openssl-ca';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HANDSHAKE_REFUSED, sha256, type ArtifactClient, type Expected } from './support/clients.js';
import { expectNoLeak } from './support/leaks.js';
import { rawGrpcStream } from './support/raw-http2.js';
import type { ClientCredential, TestPki } from './support/pki.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * mTLS end to end on both transports, with real handshakes: certificate checks in strict mode
 * (the handshake refuses) and per-operation mode (the policy refuses, health stays public),
 * identity rules, a certificate-only principal, fingerprint pinning, CRL revocation, reload of
 * the server certificate from disk, and the Debian openssl and curl binaries as outside judges.
 */

let world: E2eEnvironment;
beforeAll(async () => {
  world = await createE2eEnvironment();
});
afterAll(() => {
  world.cleanup();
});

type CertName = keyof TestPki['clients'] | 'none';
const cert = (name: CertName): ClientCredential | null => (name === 'none' ? null : world.pki.clients[name]);

interface CertRow {
  readonly name: string;
  readonly cert: CertName;
  /** Whether the call carries an admin token. */
  readonly token: boolean;
  readonly op: 'get' | 'delete' | 'health';
  readonly strict: Expected | 'ok';
  readonly perOperation: Expected | 'ok';
  /**
   * The audit line of the per-operation refusal: its reason, and Node's verification code of a
   * certificate that was presented and failed (`detail.certificateError`), if any.
   */
  readonly perOperationLine?: { readonly reason: string; readonly certificateError?: string };
}

const certRows: readonly CertRow[] = [
  {
    name: 'no client certificate',
    cert: 'none',
    token: true,
    op: 'get',
    strict: HANDSHAKE_REFUSED,
    perOperation: { code: 'permission_denied' },
    // The rule's `certificate` requirement, unmet by a token alone.
    perOperationLine: { reason: 'certificate_mismatch' },
  },
  {
    name: 'a certificate from another CA',
    cert: 'otherCa',
    token: true,
    op: 'get',
    strict: HANDSHAKE_REFUSED,
    perOperation: { code: 'permission_denied' },
    perOperationLine: { reason: 'certificate_untrusted', certificateError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
  },
  {
    name: 'an expired certificate',
    cert: 'expired',
    token: true,
    op: 'get',
    strict: HANDSHAKE_REFUSED,
    perOperation: { code: 'permission_denied' },
    perOperationLine: { reason: 'certificate_untrusted', certificateError: 'CERT_HAS_EXPIRED' },
  },
  {
    name: 'a certificate not yet valid',
    cert: 'notYetValid',
    token: true,
    op: 'get',
    strict: HANDSHAKE_REFUSED,
    perOperation: { code: 'permission_denied' },
    perOperationLine: { reason: 'certificate_untrusted', certificateError: 'CERT_NOT_YET_VALID' },
  },
  {
    name: 'a revoked certificate (CRL)',
    cert: 'revoked',
    token: true,
    op: 'get',
    strict: HANDSHAKE_REFUSED,
    perOperation: { code: 'permission_denied' },
    perOperationLine: { reason: 'certificate_untrusted', certificateError: 'CERT_REVOKED' },
  },
  {
    name: 'a SPIFFE ID outside the rules',
    cert: 'foreignSpiffe',
    token: true,
    op: 'get',
    strict: { code: 'permission_denied' },
    perOperation: { code: 'permission_denied' },
    perOperationLine: { reason: 'certificate_mismatch' },
  },
  {
    name: 'the development client certificate with a token',
    cert: 'valid',
    token: true,
    op: 'get',
    strict: 'ok',
    perOperation: 'ok',
  },
  {
    name: 'a mapped certificate identity with no token (read)',
    cert: 'backup',
    token: false,
    op: 'get',
    strict: 'ok',
    perOperation: 'ok',
  },
  {
    name: 'a mapped certificate identity with no token (delete)',
    cert: 'backup',
    token: false,
    op: 'delete',
    strict: { code: 'permission_denied' },
    perOperation: { code: 'permission_denied' },
  },
  {
    name: 'the mapped identity beside a second URI holding a NUL, no token',
    cert: 'backupBesideHiddenUri',
    token: false,
    op: 'get',
    strict: { code: 'unauthenticated' },
    perOperation: { code: 'unauthenticated' },
  },
  {
    name: 'a valid certificate without a token and no mapping',
    cert: 'valid',
    token: false,
    op: 'get',
    strict: { code: 'unauthenticated' },
    perOperation: { code: 'unauthenticated' },
  },
  {
    name: 'health without a client certificate',
    cert: 'none',
    token: false,
    op: 'health',
    strict: HANDSHAKE_REFUSED,
    perOperation: 'ok',
  },
];

async function call(client: ArtifactClient, op: CertRow['op']) {
  switch (op) {
    case 'get':
      return client.get('mtls/target.txt');
    case 'delete':
      return client.delete('mtls/target.txt');
    case 'health':
      return client.health();
  }
}

describe.each(TRANSPORTS)('mTLS over %s', (transport) => {
  describe.each(['strict', 'per-operation'] as const)('in %s mode', (mode) => {
    let t: TransportUnderTest;
    let adminToken: string;
    beforeAll(async () => {
      t = await startTransport(transport, world, { clientCertificates: mode });
      adminToken = await world.token('e2e-admin', ['artifacts.admin']);
      const seeded = await t.client.upload('mtls/target.txt', sha256('t'), [Buffer.from('t')]);
      expect(seeded.ok, seeded.exposed).toBe(true);
    });
    afterAll(async () => {
      await t.close();
    });

    it.each(certRows)('$name', async (row) => {
      const client = t.clientWith({ cert: cert(row.cert), token: row.token ? adminToken : null });
      const outcome = await call(client, row.op);
      const expected = mode === 'strict' ? row.strict : row.perOperation;
      if (expected === 'ok') {
        expect(outcome.ok, outcome.exposed).toBe(true);
        return;
      }
      expect(outcome.ok).toBe(false);
      expect(outcome.status).toBe(client.statusOf(expected));
      expectNoLeak(outcome, t.dataDir);
      const line = mode === 'per-operation' ? row.perOperationLine : undefined;
      if (line === undefined) return;
      const lines = t.log.lines.filter((l) => l.requestId === outcome.requestId);
      expect(lines).toEqual([expect.objectContaining({ event: 'request.denied', reason: line.reason })]);
      expect(lines[0]?.detail).toEqual(
        line.certificateError === undefined ? undefined : { certificateError: line.certificateError },
      );
    });

    if (mode === 'per-operation') {
      it('answers a certificate that failed verification exactly as it answers none', async () => {
        const answers: string[] = [];
        for (const name of ['none', 'expired', 'otherCa', 'revoked'] as const) {
          const outcome = await t.clientWith({ cert: cert(name), token: adminToken }).get('mtls/target.txt');
          expect(outcome.ok).toBe(false);
          const requestId = outcome.requestId ?? '';
          expect(requestId).not.toBe('');
          // All the client got, but what differs on every call: its request id, the date, and
          // the rate limits' remaining points (`RateLimit: "per-peer";r=286`), one fewer each call.
          answers.push(
            outcome.exposed
              .replaceAll(requestId, '<request id>')
              .replace(/"date":\[?"[^"]*"\]?,?/g, '')
              .replace(/;r=\d+;/g, ';r=<remaining>;'),
          );
        }
        expect(answers[0]).toContain(transport === 'http' ? '403' : 'Permission denied.');
        for (const answer of answers.slice(1)) expect(answer).toBe(answers[0]);
      });
    }

    it('never takes the identity of an untrusted self-signed certificate', async () => {
      // The other-CA certificate names the very SPIFFE ID the rules allow.
      const outcome = await t.clientWith({ cert: cert('otherCa'), token: null }).get('mtls/target.txt');
      expect(outcome.ok).toBe(false);
      expect(JSON.stringify(t.log.lines)).not.toContain('"subject":"spiffe://fluxguard.dev/client"');
    });
  });

  describe('fingerprint pinning', () => {
    let t: TransportUnderTest;
    beforeAll(async () => {
      // The reference policy with GetArtifact pinned to the development client certificate.
      const pinned = [
        { fingerprint256: world.pki.clients.valid.fingerprint256.toUpperCase().replace(/(..)(?!$)/g, '$1:') },
      ];
      const file = world.writePolicy(`pinned-${transport}`, (policy) => {
        for (const rule of policy.rbac.rules) {
          if (rule.operation.endsWith('/GetArtifact') || rule.operation === 'GET /v1/artifacts/*path') {
            rule.certificate = pinned;
          }
        }
        return policy;
      });
      t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: file } });
      await t.client.upload('pin/x.txt', sha256('x'), [Buffer.from('x')]);
    });
    afterAll(async () => {
      await t.close();
    });

    it('admits the pinned certificate and refuses another valid one from the same CA', async () => {
      const token = await world.token('pinned', ['artifacts.reader']);
      const pinned = await t.clientWith({ cert: cert('valid'), token }).get('pin/x.txt');
      expect(pinned.ok, pinned.exposed).toBe(true);
      // Same CA, a SPIFFE ID the rule's trust domain admits, a valid token: only the pin differs.
      const other = t.clientWith({ cert: cert('backup'), token });
      const refused = await other.get('pin/x.txt');
      expect(refused.status).toBe(other.statusOf({ code: 'permission_denied' }));
      expect(t.log.textFor(refused.requestId ?? 'none')).toContain('"reason":"certificate_mismatch"');
    });
  });
});

/** The SHA-256 fingerprint of the certificate a new connection to the server presents. */
function observeServerFingerprint(pki: TestPki, transport: 'grpc' | 'http', port: number): Promise<string> {
  const normalize = (fp: string): string => fp.replaceAll(':', '').toLowerCase();
  const { clients, ca } = pki;
  if (transport === 'http') {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/healthz',
          ca,
          cert: clients.valid.cert,
          key: clients.valid.key,
          servername: 'localhost',
          agent: false,
        },
        (res) => {
          const socket = res.socket;
          if (!(socket instanceof TLSSocket)) throw new Error('expected a TLS connection');
          const fp = socket.getPeerCertificate().fingerprint256;
          res.resume();
          res.on('end', () => {
            resolve(normalize(fp));
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }
  return new Promise((resolve, reject) => {
    let seen = '';
    const creds = grpc.credentials.createSsl(ca, clients.valid.key, clients.valid.cert, {
      checkServerIdentity: (_host, peer) => {
        seen = normalize(peer.fingerprint256);
        return undefined;
      },
    });
    // A host name, not the address: Node 25 and later refuse an IP address as the TLS server name.
    const client = new grpc.Client(`127.0.0.1:${port}`, creds, {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.ssl_target_name_override': 'localhost',
    });
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      () => Buffer.alloc(0),
      (b: Buffer) => b,
      {},
      (err) => {
        client.close();
        if (err) reject(err);
        else resolve(seen);
      },
    );
  });
}

/** What one listing over a connection of its own gave: whether it was served, and the TLS session. */
interface ListingOverSession {
  readonly ok: boolean;
  /** Whether the handshake resumed the session the call offered. */
  readonly reused: boolean;
  /** A session ticket the server issued on this connection (for the next one to resume). */
  readonly session: Buffer | undefined;
}

/**
 * Lists the artifacts over a new TLS connection that presents `cert`, or offers `session` for
 * resumption and no certificate. The development backup certificate may list without a token,
 * so a served listing shows that the connection carries that certificate's identity.
 */
function listOverSession(
  transport: 'grpc' | 'http',
  port: number,
  ca: Buffer,
  credentials: { readonly cert?: ClientCredential; readonly session?: Buffer | undefined },
): Promise<ListingOverSession> {
  const tls = {
    ca,
    servername: 'localhost',
    ...(credentials.cert === undefined ? {} : { cert: credentials.cert.cert, key: credentials.cert.key }),
    ...(credentials.session === undefined ? {} : { session: credentials.session }),
  };
  let session: Buffer | undefined;
  const keepTicket = (socket: Socket): void => {
    socket.on('session', (ticket: Buffer) => {
      session = ticket;
    });
  };
  if (transport === 'http') {
    return new Promise((resolve) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path: '/v1/artifacts', agent: false, ...tls }, (res) => {
        const reused = res.socket instanceof TLSSocket && res.socket.isSessionReused();
        res.resume();
        res.on('end', () => {
          // A TLS 1.3 ticket can arrive just after the answer; wait for it, bounded.
          setTimeout(() => {
            resolve({ ok: res.statusCode === 200, reused, session });
          }, 100);
        });
      });
      req.on('socket', (socket) => {
        keepTicket(socket);
      });
      req.on('error', () => {
        resolve({ ok: false, reused: false, session });
      });
      req.end();
    });
  }
  return new Promise((resolve) => {
    const client = http2Connect(`https://127.0.0.1:${port}`, tls);
    keepTicket(client.socket);
    const finish = (ok: boolean, reused: boolean): void => {
      setTimeout(() => {
        client.destroy();
        resolve({ ok, reused, session });
      }, 100);
    };
    client.on('error', () => {
      finish(false, false);
    });
    client.on('connect', () => {
      const reused = client.socket instanceof TLSSocket && client.socket.isSessionReused();
      const stream = rawGrpcStream(client, '/fluxguard.example.v1.ArtifactStore/ListArtifacts');
      let status: unknown;
      stream.on('response', (headers) => {
        status ??= headers['grpc-status'];
      });
      stream.on('trailers', (trailers: IncomingHttpHeaders) => {
        status ??= trailers['grpc-status'];
      });
      stream.resume();
      stream.on('close', () => {
        finish(status === '0', reused);
      });
      // An empty ListArtifactsRequest: no prefix.
      stream.end(Buffer.alloc(5));
    });
  });
}

describe.each(TRANSPORTS)('certificate reload over %s', (transport) => {
  let reloadWorld: E2eEnvironment;
  let t: TransportUnderTest;
  beforeAll(async () => {
    reloadWorld = await createE2eEnvironment();
    t = await startTransport(transport, reloadWorld);
  });
  afterAll(async () => {
    await t.close();
    reloadWorld.cleanup();
  });

  it('serves a renewed certificate written to disk to new connections, without a restart', async () => {
    expect(await observeServerFingerprint(reloadWorld.pki, transport, t.port)).toBe(
      reloadWorld.pki.serverFingerprint256,
    );
    const renewed = await reloadWorld.pki.replaceServerCertificate();
    let seen = '';
    // The watcher polls the files; wait for the change, bounded.
    for (let i = 0; i < 50 && seen !== renewed; i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = await observeServerFingerprint(reloadWorld.pki, transport, t.port);
    }
    expect(seen).toBe(renewed);
    // Hardening survives the reload: still mTLS-verified calls only, TLS 1.2 minimum (openssl below).
    expect((await t.client.health()).value).toBe('SERVING');
  });

  it('refuses a TLS session resumed after a new CRL revoked its certificate', async () => {
    const { pki } = reloadWorld;
    const first = await listOverSession(transport, t.port, pki.ca, { cert: pki.clients.backup });
    expect(first.ok).toBe(true);
    expect(first.session).toBeDefined();
    // Resumption is real here: without a reload, the ticket alone carries the identity.
    const resumed = await listOverSession(transport, t.port, pki.ca, { session: first.session });
    expect(resumed).toMatchObject({ ok: true, reused: true });
    const ticket = resumed.session ?? first.session;

    await pki.revoke('backup');
    let fresh = first;
    // The watcher polls the CRL; wait until a full handshake with the certificate is refused.
    for (let i = 0; i < 50 && fresh.ok; i++) {
      await new Promise((r) => setTimeout(r, 200));
      fresh = await listOverSession(transport, t.port, pki.ca, { cert: pki.clients.backup });
    }
    expect(fresh.ok).toBe(false);
    // The reload replaced the secure context and its ticket keys: the old session is not resumed.
    const afterRevocation = await listOverSession(transport, t.port, pki.ca, { session: ticket });
    expect(afterRevocation).toMatchObject({ ok: false, reused: false });
  });

  it('keeps the last good CRL when a forged one is written over it, and logs why', async () => {
    const { pki } = reloadWorld;
    // Another CA of the same name: its CRL names the served CA as issuer, with another key.
    const impostor = await createDevCertificateAuthority();
    const served = readFileSync(pki.crlFile);
    writeFileSync(`${pki.crlFile}.forged`, await impostor.createCrl({ revokedSerialNumbers: [] }));
    renameSync(`${pki.crlFile}.forged`, pki.crlFile);
    const failed = (): boolean =>
      t.log.lines.some(
        (line) =>
          line.event === 'tls.reload_failed' && JSON.stringify(line).includes('is not signed by any CA of the bundle'),
      );
    for (let i = 0; i < 50 && !failed(); i++) await new Promise((r) => setTimeout(r, 200));
    expect(failed()).toBe(true);
    // Applied, it would have failed every handshake; kept out, clients are served as before.
    const token = await reloadWorld.token('alice', ['artifacts.reader']);
    const listed = await t.clientWith({ cert: pki.clients.valid, token }).list('');
    expect(listed.ok, listed.exposed).toBe(true);
    writeFileSync(`${pki.crlFile}.next`, served); // the real CRL again, for what follows
    renameSync(`${pki.crlFile}.next`, pki.crlFile);
  });

  it('cuts an upload in progress when a new CRL revokes the uploading client', async () => {
    const { pki } = reloadWorld;
    const token = await reloadWorld.token('alice', ['artifacts.writer']);
    // About ten seconds of upload: closed gracefully, as other clients' connections are, it would
    // finish under the revocation.
    const parts = Array.from({ length: 40 }, (_, i) => Buffer.from(`part ${String(i)};`));
    const linesBefore = t.log.lines.length;
    const upload = t
      .clientWith({ cert: pki.clients.valid, token })
      .uploadPaced('revoked/mid-upload.txt', sha256(Buffer.concat(parts)), parts, { gapMs: 250 });
    await new Promise((r) => setTimeout(r, 500));
    await pki.revoke('valid');
    const outcome = await upload;
    expect(outcome.ok).toBe(false);
    expect(t.log.lines.some((line) => line.event === 'tls.connections_closed' && Number(line.revoked) >= 1)).toBe(true);
    // Logged as cut by the server, and why: not as an upload its client left.
    await expect
      .poll(() => t.log.lines.slice(linesBefore).filter((line) => line.event === 'request.cancelled'), {
        timeout: 5_000,
      })
      .toEqual([expect.objectContaining({ outcome: 'cancelled', reason: 'trust_revoked', transport })]);
  });
});

/**
 * A client certificate from an intermediate CA that the bundle trusts, and a CRL of the root
 * that revokes that intermediate written over the served one: the reload cuts the client's
 * connection in the middle of an upload and refuses its handshakes from then on, while a
 * client of another CA of the bundle is served as before.
 */
describe.each(TRANSPORTS)('a CRL revoking an intermediate CA, reloaded over %s', (transport) => {
  let chainWorld: E2eEnvironment;
  let root: OpensslCa;
  let crlFile: string;
  let crlsBefore: string;
  let viaIntermediate: ClientCredential;
  let t: TransportUnderTest;
  const dayAgo = (): Date => new Date(Date.now() - 86_400_000);
  const inADay = (): Date => new Date(Date.now() + 86_400_000);
  beforeAll(async () => {
    chainWorld = await createE2eEnvironment();
    const dir = join(chainWorld.base, 'chain');
    root = await createOpensslCa(join(dir, 'root'), 'ec', 'e2e chain root');
    const intermediate = await root.issueIntermediate('e2e chain intermediate');
    const issued = await intermediate.issueClient('c1a1', { spiffeId: 'spiffe://fluxguard.dev/client' });
    viaIntermediate = {
      cert: Buffer.from(issued.certPem),
      key: Buffer.from(issued.keyPem),
      fingerprint256: new X509Certificate(issued.certPem).fingerprint256,
      serialNumber: 'c1a1',
    };
    // The development CA of the other clients, the root, and the intermediate, each with its
    // CRL: with CRLs, OpenSSL wants one of every CA of the chain.
    const caFile = join(dir, 'bundle.crt');
    writeFileSync(caFile, chainWorld.pki.ca.toString() + root.certPem + intermediate.certPem);
    crlsBefore =
      readFileSync(chainWorld.pki.crlFile, 'utf8') +
      (await intermediate.crl({ lastUpdate: dayAgo(), nextUpdate: inADay() }));
    crlFile = join(dir, 'bundle.crl');
    writeFileSync(crlFile, crlsBefore + (await root.crl({ lastUpdate: dayAgo(), nextUpdate: inADay() })));
    t = await startTransport(transport, chainWorld, {
      clientCertificates: 'strict',
      env: { FLUXGUARD_TLS_CA: caFile, FLUXGUARD_TLS_CRL: crlFile },
    });
  });
  afterAll(async () => {
    await t.close();
    chainWorld.cleanup();
  });

  it('cuts an upload of a client of the revoked intermediate, refuses it afterwards, and serves the others', async () => {
    const token = await chainWorld.token('intermediate-client', ['artifacts.writer']);
    const client = t.clientWith({ cert: viaIntermediate, token });
    const before = await client.list('');
    expect(before.ok, before.exposed).toBe(true);

    // About ten seconds of upload, against which the revocation lands.
    const parts = Array.from({ length: 40 }, (_, i) => Buffer.from(`part ${String(i)};`));
    const linesBefore = t.log.lines.length;
    const upload = client.uploadPaced('chain/mid-upload.txt', sha256(Buffer.concat(parts)), parts, { gapMs: 250 });
    await new Promise((r) => setTimeout(r, 500));
    // The root's CRL now lists the intermediate (serial 1a2b, as the test CA issues it).
    const revoking = await root.crl({
      lastUpdate: new Date(Date.now() - 1_000),
      nextUpdate: inADay(),
      revoke: ['1a2b'],
    });
    writeFileSync(`${crlFile}.next`, crlsBefore + revoking);
    renameSync(`${crlFile}.next`, crlFile);

    const outcome = await upload;
    expect(outcome.ok).toBe(false);
    expect(t.log.lines.some((line) => line.event === 'tls.connections_closed' && Number(line.revoked) >= 1)).toBe(true);
    await expect
      .poll(() => t.log.lines.slice(linesBefore).filter((line) => line.event === 'request.cancelled'), {
        timeout: 5_000,
      })
      .toEqual([expect.objectContaining({ outcome: 'cancelled', reason: 'trust_revoked', transport })]);
    expect(readdirSync(t.dataDir, { recursive: true }).map(String)).not.toContain(join('chain', 'mid-upload.txt'));
    const fresh = await t.clientWith({ cert: viaIntermediate, token }).list('');
    expect(fresh.ok).toBe(false);
    expect(fresh.status).toBe(t.client.statusOf(HANDSHAKE_REFUSED));
    // The development CA's client is untouched by the intermediate's revocation.
    const other = await t.client.list('');
    expect(other.ok, other.exposed).toBe(true);
  });
});

/**
 * The Debian `openssl` and `curl` binaries, run against both reference servers, as judges
 * outside Node's TLS stack. TLS 1.0/1.1 are offered at security level 0 so that the refusal is
 * proven to come from the server, not from the client's own defaults.
 */
describe.each(TRANSPORTS)('openssl and curl agree over %s', (transport) => {
  let strict: TransportUnderTest;
  beforeAll(async () => {
    strict = await startTransport(transport, world, { clientCertificates: 'strict' });
  });
  afterAll(async () => {
    await strict.close();
  });

  const files = (): { ca: string; cert: string; key: string } => {
    const dir = world.base;
    writeFileSync(join(dir, 'client.crt'), world.pki.clients.valid.cert);
    writeFileSync(join(dir, 'client.key'), world.pki.clients.valid.key, { mode: 0o600 });
    return { ca: world.pki.caFile, cert: join(dir, 'client.crt'), key: join(dir, 'client.key') };
  };

  /** Runs a command with standard input closed (openssl s_client waits on it otherwise). */
  function runClosed(command: string, args: readonly string[]): Promise<{ code: number; out: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 15_000 });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => {
        resolve({ code: code ?? 1, out });
      });
    });
  }

  const sClient = (args: readonly string[]) =>
    runClosed('openssl', ['s_client', '-connect', `127.0.0.1:${strict.port}`, '-servername', 'localhost', ...args]);

  it.each([['-tls1'], ['-tls1_1']])('openssl: %s is refused by the server', async (flag) => {
    const { out } = await sClient([flag, '-cipher', 'DEFAULT@SECLEVEL=0', '-CAfile', files().ca]);
    expect(out).toMatch(/alert protocol version|no protocols available|unsupported protocol|wrong version number/i);
    // No session was established: openssl names the protocol it tried, but no cipher.
    expect(out).toMatch(/Cipher is \(NONE\)/);
  });

  it('openssl: TLS 1.3 is negotiated with a client certificate', async () => {
    const f = files();
    const { out } = await sClient(['-CAfile', f.ca, '-cert', f.cert, '-key', f.key, '-verify_return_error', '-brief']);
    expect(out).toMatch(/Protocol version: TLSv1\.3|TLSv1\.3/);
    expect(out).toMatch(/Verification: OK|Verify return code: 0/);
  });

  it.each([['-tls1_3'], ['-tls1_2']])(
    'openssl: the strict handshake fails without a client certificate (%s)',
    async (flag) => {
      // -ign_eof: wait for the server's verdict, which TLS 1.3 sends after the client's Finished.
      const { out } = await sClient(['-CAfile', files().ca, flag, '-ign_eof']);
      expect(out).toMatch(/alert certificate required|alert handshake failure|peer did not return a certificate/i);
    },
  );

  const curl = (args: readonly string[]) => {
    const path = transport === 'http' ? '/healthz' : '/grpc.health.v1.Health/Check';
    return runClosed('curl', [
      '-sS',
      '-v',
      '--max-time',
      '10',
      '--resolve',
      `localhost:${strict.port}:127.0.0.1`,
      ...args,
      `https://localhost:${strict.port}${path}`,
    ]);
  };

  it('curl: TLS 1.3 with the client certificate; TLS 1.1 and no certificate refused', async () => {
    const f = files();
    const ok = await curl([
      '--cacert',
      f.ca,
      '--cert',
      f.cert,
      '--key',
      f.key,
      ...(transport === 'grpc' ? ['--http2'] : []),
    ]);
    expect(ok.out).toMatch(/SSL connection using TLSv1\.3/);
    const old = await curl([
      '--cacert',
      f.ca,
      '--cert',
      f.cert,
      '--key',
      f.key,
      '--tlsv1.1',
      '--tls-max',
      '1.1',
      '--ciphers',
      'DEFAULT@SECLEVEL=0',
    ]);
    expect(old.code).not.toBe(0);
    expect(old.out).not.toMatch(/SSL connection using TLSv1\.[01]/);
    const noCert = await curl(['--cacert', f.ca, ...(transport === 'grpc' ? ['--http2'] : [])]);
    // The server ends the connection: curl sees the alert (56), a broken pipe (55) or a failed
    // handshake (35), depending on timing; never an HTTP response.
    expect([35, 55, 56]).toContain(noCert.code);
    expect(noCert.out).not.toMatch(/^< HTTP\//m);
  });
});
