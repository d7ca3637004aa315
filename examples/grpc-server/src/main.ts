// The reference gRPC server: `pnpm start:grpc` (or `node examples/grpc-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_GRPC_PORT,
// FLUXGUARD_DATA_DIR, FLUXGUARD_DEV_DIR, and the security variables of loadReferenceSecurity:
// FLUXGUARD_POLICY, FLUXGUARD_JWKS_URL, FLUXGUARD_TLS_*, FLUXGUARD_CLIENT_CERTS, ...); see README.md.
import { createAuditLogger } from '@fluxguard/core';
import { loadReferenceSecurity, loadServerConfig, type ReferenceSecurity } from '@fluxguard/example-artifact-store';
import { startGrpcServer } from './server.js';

const audit = createAuditLogger();

/** Quotes a value for a POSIX shell, so that a printed command works as printed. */
function sh(value: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

function quickTry(port: number, host: string, devDir: string, usesDevPki: boolean, usesDevKey: boolean): string {
  // The development server certificate names localhost, 127.0.0.1 and ::1; a host name, not an
  // IP address, is what TLS sends as server name (SNI).
  const target = ['0.0.0.0', '::', '127.0.0.1'].includes(host) ? 'localhost' : host;
  const address = `${target.includes(':') ? `[${target}]` : target}:${port}`;
  const env = `FLUXGUARD_DEV_DIR=${sh(devDir)}`;
  const token = (roles: string): string => `--token "$(${env} pnpm -s token --sub alice --roles ${roles})"`;
  const tryJs = `${env} node examples/grpc-server/dist/try.js ${sh(address)}`;
  const lines = [
    '',
    'Try it (from the repository root; the client uses the development CA and client certificate):',
    `  ${tryJs}                                     # health only: public`,
    `  ${tryJs} ${token('artifacts.admin')}   # upload, get, list, delete`,
    `  ${tryJs} ${token('artifacts.reader')}  # reads allowed, upload PERMISSION_DENIED`,
    `  ${tryJs} --no-cert ${token('artifacts.reader')}  # no client certificate: refused by the policy`,
    '',
  ];
  if (!usesDevPki || !usesDevKey) {
    lines.push(
      'Note: TLS material or the token issuer come from the environment, not the development',
      'material: pass your own CA, client certificate and token to try.js (--ca, --cert, --key, --token).',
      '',
    );
  }
  return lines.join('\n');
}

let security: ReferenceSecurity | undefined;
try {
  const config = loadServerConfig();
  security = await loadReferenceSecurity({ devDir: config.devDir, audit });
  const server = await startGrpcServer({
    host: config.host,
    port: config.grpcPort,
    dataDir: config.dataDir,
    security,
    audit,
  });
  audit.logger.info(
    { address: server.address, dataDir: config.dataDir, clientCertificates: security.tls.clientCertificates },
    'grpc server listening',
  );
  process.stdout.write(
    quickTry(
      server.port,
      config.host,
      config.devDir,
      process.env.FLUXGUARD_TLS_CERT === undefined,
      process.env.FLUXGUARD_JWKS_URL === undefined,
    ),
  );

  let stopping = false;
  const loaded = security;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    audit.logger.info({ signal }, 'grpc server stopping');
    server
      .close()
      .then(() => loaded.close())
      .then(
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
  await security?.close();
  process.exitCode = 1;
}
