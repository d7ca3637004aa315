import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGrpcServer } from '@fluxguard/example-grpc-server';
import { startHttpServer } from '@fluxguard/example-http-server';
import { captureLog, type CapturedLog } from './log-capture.js';
import { grpcArtifactClient, httpArtifactClient, type ArtifactClient } from './clients.js';

/** One reference server under test, with its client and its log. */
export interface TransportUnderTest {
  readonly transport: 'grpc' | 'http';
  readonly client: ArtifactClient;
  readonly log: CapturedLog;
  readonly dataDir: string;
  close(): Promise<void>;
}

/** Starts the named reference server on an ephemeral port over a fresh data directory. */
export async function startTransport(transport: 'grpc' | 'http'): Promise<TransportUnderTest> {
  const base = mkdtempSync(join(tmpdir(), `fluxguard-e2e-${transport}-`));
  const dataDir = join(base, 'data');
  const log = captureLog();
  if (transport === 'grpc') {
    const server = await startGrpcServer({ host: '127.0.0.1', port: 0, dataDir, audit: log.audit });
    const client = grpcArtifactClient(`127.0.0.1:${server.port}`);
    return { transport, client, log, dataDir, close: async () => { client.close(); await server.close(); rmSync(base, { recursive: true, force: true }); } };
  }
  const server = await startHttpServer({ host: '127.0.0.1', port: 0, dataDir, audit: log.audit });
  const client = httpArtifactClient(server.url);
  return { transport, client, log, dataDir, close: async () => { client.close(); await server.close(); rmSync(base, { recursive: true, force: true }); } };
}
