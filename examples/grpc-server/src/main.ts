// The reference gRPC server: `pnpm start:grpc` (or `node examples/grpc-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_GRPC_PORT,
// FLUXGUARD_DATA_DIR); see README.md.
import { createAuditLogger } from '@fluxguard/core';
import { loadServerConfig } from '@fluxguard/example-artifact-store';
import { startGrpcServer } from './server.js';

const audit = createAuditLogger();

try {
  const config = loadServerConfig();
  const server = await startGrpcServer({
    host: config.host,
    port: config.grpcPort,
    dataDir: config.dataDir,
    audit,
  });
  audit.logger.info({ address: server.address, dataDir: config.dataDir }, 'grpc server listening');

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    audit.logger.info({ signal }, 'grpc server stopping');
    server.close().then(
      () => {
        audit.logger.info('grpc server stopped');
      },
      (err: unknown) => {
        audit.logger.error({ err }, 'grpc server did not stop cleanly');
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} catch (err) {
  audit.logger.fatal({ err }, 'grpc server failed to start');
  process.exitCode = 1;
}
