// The reference HTTPS server: `pnpm start:http` (or `node examples/http-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_HTTP_PORT,
// FLUXGUARD_DATA_DIR, FLUXGUARD_DEV_DIR, and the security variables of loadReferenceSecurity:
// FLUXGUARD_POLICY, FLUXGUARD_JWKS_URL, FLUXGUARD_TLS_*, FLUXGUARD_CLIENT_CERTS, ...); see README.md.
import { join } from 'node:path';
import { createAuditLogger } from '@fluxguard/core';
import { loadReferenceSecurity, loadServerConfig, type ReferenceSecurity } from '@fluxguard/example-artifact-store';
import { startHttpServer } from './server.js';

const audit = createAuditLogger();

/** Quotes a value for a POSIX shell, so that a printed command works as printed. */
function sh(value: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

function quickTry(port: number, host: string, devDir: string, usesDevPki: boolean, usesDevKey: boolean): string {
  // The development server certificate names localhost, 127.0.0.1 and ::1.
  const target = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const base = `https://${target.includes(':') ? `[${target}]` : target}:${port}`;
  const tls = `--cacert ${sh(join(devDir, 'ca.crt'))} --cert ${sh(join(devDir, 'client.crt'))} --key ${sh(join(devDir, 'client.key'))}`;
  const token = (roles: string): string =>
    `-H "Authorization: Bearer $(FLUXGUARD_DEV_DIR=${sh(devDir)} pnpm -s token --sub alice --roles ${roles})"`;
  const lines = [
    '',
    'Try it (from the repository root):',
    `  curl ${tls} ${base}/healthz`,
    `  printf 'hello world' > /tmp/hello.txt`,
    `  curl ${tls} ${token('artifacts.writer')} -X PUT \\`,
    `    -H "Repr-Digest: sha-256=:$(openssl dgst -sha256 -binary /tmp/hello.txt | base64):" \\`,
    `    --data-binary @/tmp/hello.txt ${base}/v1/artifacts/demo/hello.txt`,
    `  curl ${tls} ${token('artifacts.reader')} ${base}/v1/artifacts/demo/hello.txt`,
    `  curl ${tls} ${token('artifacts.reader')} '${base}/v1/artifacts?prefix=demo/'`,
    `  curl -i ${tls} ${base}/v1/artifacts/demo/hello.txt   # 401: no token`,
    '',
  ];
  if (!usesDevPki || !usesDevKey) {
    lines.push(
      'Note: TLS material or the token issuer come from the environment, not the development',
      'material: use your own CA, client certificate and tokens in the commands above.',
      '',
    );
  }
  return lines.join('\n');
}

let security: ReferenceSecurity | undefined;
try {
  const config = loadServerConfig();
  security = await loadReferenceSecurity({ devDir: config.devDir, audit });
  const server = await startHttpServer({
    host: config.host,
    port: config.httpPort,
    dataDir: config.dataDir,
    security,
    audit,
  });
  audit.logger.info(
    { url: server.url, dataDir: config.dataDir, clientCertificates: security.tls.clientCertificates },
    'http server listening',
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
    audit.logger.info({ signal }, 'http server stopping');
    server
      .close()
      .then(() => loaded.close())
      .then(
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
  await security?.close();
}
