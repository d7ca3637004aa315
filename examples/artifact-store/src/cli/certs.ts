// `pnpm certs`: (re)creates the development PKI and JWT signing key under FLUXGUARD_DEV_DIR.
import { loadServerConfig } from '../config.js';
import { ensureDevMaterial } from '../dev-material.js';

const { devDir } = loadServerConfig();
const dev = await ensureDevMaterial(devDir, { force: true });
process.stdout.write(
  [
    `development material written to ${devDir}:`,
    `  CA            ${dev.pki.caFile}`,
    `  server        ${dev.pki.serverCertFile}, ${dev.pki.serverKeyFile}`,
    `  client        ${dev.pki.clientCertFile}, ${dev.pki.clientKeyFile} (spiffe://fluxguard.dev/client)`,
    `  JWT signing   ${dev.signingKeyFile}`,
    `  trusted JWKS  ${dev.jwksFile}`,
    '',
  ].join('\n'),
);
