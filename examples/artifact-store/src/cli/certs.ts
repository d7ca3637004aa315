// `pnpm certs`: (re)creates the development PKI and JWT signing key under FLUXGUARD_DEV_DIR.
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../config.js';
import { ensureDevMaterial } from '../dev-material.js';

const USAGE = [
  'usage: pnpm certs',
  '  replaces the development CA, server and client certificates and the JWT signing key under',
  '  FLUXGUARD_DEV_DIR (default .fluxguard/dev). Running servers reload the certificates but not',
  '  the key set they trust: restart them, or tokens signed with the new key are refused.',
  '',
].join('\n');

// It overwrites everything: an argument it does not take (a `--help`, a typo) must not.
let help = false;
try {
  help = parseArgs({ options: { help: { type: 'boolean', short: 'h' } }, strict: true }).values.help === true;
} catch (err) {
  process.stderr.write(`certs: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
  process.exit(2);
}
if (help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

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
    'Restart running servers: they reload the certificates, not the JWT key set.',
    '',
  ].join('\n'),
);
