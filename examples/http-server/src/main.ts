// The reference HTTP server: `pnpm start:http` (or `node examples/http-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_HTTP_PORT,
// FLUXGUARD_DATA_DIR); see README.md.
import { createAuditLogger } from '@fluxguard/core';
import { loadServerConfig } from '@fluxguard/example-artifact-store';
import { startHttpServer } from './server.js';

const audit = createAuditLogger();

try {
  const config = loadServerConfig();
  const server = await startHttpServer({
    host: config.host,
    port: config.httpPort,
    dataDir: config.dataDir,
    audit,
  });
  audit.logger.info({ url: server.url, dataDir: config.dataDir }, 'http server listening');

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    audit.logger.info({ signal }, 'http server stopping');
    server.close().then(
      () => {
        audit.logger.info('http server stopped');
      },
      (err: unknown) => {
        audit.logger.error({ err }, 'http server did not stop cleanly');
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} catch (err) {
  audit.logger.fatal({ err }, 'http server failed to start');
  process.exitCode = 1;
}
