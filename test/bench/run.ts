// `pnpm bench`: fluxguard against bare servers measured in the same run. Not a test: it asserts
// nothing about speed and never runs under vitest (vitest.config.ts excludes test/bench/**).
import { availableParallelism, cpus } from 'node:os';
import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import { grpcClient, httpClient, type BenchClient } from './clients.js';
import { readConfig, type BenchConfig, type Group } from './config.js';
import { createSigningKey, HTTP_PATH, GRPC_METHOD, TokenMinter } from './fixtures.js';
import { startServerWorker } from './load.js';
import { runMicro } from './micro.js';
import { runRateLimitMemory } from './ratelimit-memory.js';
import {
  VARIANTS,
  formatDelta,
  runServerScenario,
  type ScenarioSummary,
  type TokenMode,
  type Variant,
} from './scenario.js';
import type { BenchTls, ServerKind } from './servers.js';
import { formatRatio } from './stats.js';

interface Pki {
  readonly server: BenchTls;
  readonly client: BenchTls;
}

const TITLES: Record<ServerKind, string> = {
  http: `HTTP/1.1 plain: Express 5, GET ${HTTP_PATH}; fluxguard({ audit, guard[, controls] })`,
  https: `HTTPS + mTLS: https.createServer vs createSecureServer (same certs, client cert required), GET ${HTTP_PATH}`,
  grpc: `gRPC unary, insecure: ${GRPC_METHOD}; fluxguardInterceptors({ audit, guard[, controls] }) + addService`,
  'grpc-tls': `gRPC unary, TLS + client cert: ServerCredentials.createSsl vs createServerCredentials, ${GRPC_METHOD}`,
};

const TOKEN_TITLES: Record<TokenMode, string> = {
  cached: 'same valid token on every request (verified-token cache hit)',
  cold: 'a new token on every request (full ES256 verification)',
};

async function makePki(): Promise<Pki> {
  const ca = await createDevCertificateAuthority({ commonName: 'fluxguard bench CA' });
  const server = await ca.issueServerCertificate();
  const client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/bench-client' });
  return {
    server: { ca: ca.certPem, cert: server.certPem, key: server.keyPem },
    client: { ca: ca.certPem, cert: client.certPem, key: client.keyPem },
  };
}

function clientFor(kind: ServerKind, port: number, config: BenchConfig, pki: Pki): BenchClient {
  switch (kind) {
    case 'http':
      return httpClient(port, config.concurrency);
    case 'https':
      return httpClient(port, config.concurrency, pki.client);
    case 'grpc':
      return grpcClient(port);
    case 'grpc-tls':
      return grpcClient(port, pki.client);
  }
}

async function runServerGroup(
  kind: ServerKind,
  config: BenchConfig,
  minter: TokenMinter,
  jwks: ReturnType<typeof createSigningKey>['jwks'],
  pki: Pki,
): Promise<ScenarioSummary[]> {
  const worker = await startServerWorker({ kind, jwks, tls: pki.server });
  const clients: Record<Variant, BenchClient> = {
    bare: clientFor(kind, worker.ports.bare, config, pki),
    fluxguard: clientFor(kind, worker.ports.guarded, config, pki),
    'fluxguard+ratelimit': clientFor(kind, worker.ports.ratelimit, config, pki),
  };
  try {
    const summaries: ScenarioSummary[] = [];
    for (const tokens of ['cached', 'cold'] as const) {
      summaries.push(
        await runServerScenario(config, minter, {
          title: `${TITLES[kind]}\n   tokens: ${TOKEN_TITLES[tokens]}`,
          tokens,
          senders: {
            bare: clients.bare.send,
            fluxguard: clients.fluxguard.send,
            'fluxguard+ratelimit': clients['fluxguard+ratelimit'].send,
          },
        }),
      );
    }
    return summaries;
  } finally {
    for (const variant of VARIANTS) clients[variant].close();
    await worker.stop();
  }
}

async function main(): Promise<void> {
  const config = readConfig();
  const started = Date.now();
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log('# fluxguard benchmarks');
  console.log(
    `   node ${process.version}, ${availableParallelism()} CPUs (${cpu}); servers on a worker thread, load from the main thread`,
  );
  console.log(
    `   rounds=${config.rounds} requests=${config.requests} warmup=${config.warmup} concurrency=${config.concurrency} microMs=${config.microMs} groups=${config.groups.join(',')}`,
  );
  console.log('   indicative numbers: compare ratios within one run, not absolute numbers across machines');

  const key = createSigningKey();
  const minter = new TokenMinter(key);
  const needsPki = config.groups.some((g) => g === 'https' || g === 'grpc-tls');
  const pki = needsPki
    ? await makePki()
    : { server: { ca: '', cert: '', key: '' }, client: { ca: '', cert: '', key: '' } };

  const summaries: ScenarioSummary[] = [];
  for (const group of config.groups) {
    if (group === 'micro') await runMicro(config, key);
    else if (group === 'ratelimit-memory') await runRateLimitMemory();
    else
      summaries.push(
        ...(await runServerGroup(
          group satisfies Exclude<Group, 'micro' | 'ratelimit-memory'>,
          config,
          minter,
          key.jwks,
          pki,
        )),
      );
  }

  if (summaries.length > 0) {
    console.log(
      '\n## summary: req/s / bare req/s (1.00 = no overhead); fluxguard, fluxguard+ratelimit, and the difference (what rate limiting costs)',
    );
    for (const s of summaries) {
      const ratios = `${formatRatio(s.ratios.fluxguard)}  ${formatRatio(s.ratios['fluxguard+ratelimit'])}  ${formatDelta(s.rateLimitCost).padStart(5)}`;
      console.log(`${ratios}  ${s.title.replace(/\n\s*/g, ' | ')}`);
    }
  }
  console.log(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

await main();
