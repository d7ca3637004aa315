// The reference gRPC server: `pnpm start:grpc` (or `node examples/grpc-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_GRPC_PORT,
// FLUXGUARD_DATA_DIR, FLUXGUARD_DEV_DIR, and the security variables of loadReferenceSecurity:
// FLUXGUARD_POLICY, FLUXGUARD_JWKS_URL, FLUXGUARD_TLS_*, FLUXGUARD_CLIENT_CERTS, ...); see README.md.
import { runReferenceServer, shellQuote, type QuickTry, type QuickTryTarget } from '@fluxguard/example-artifact-store';
import { startGrpcServer } from './server.js';

await runReferenceServer({ name: 'grpc', start: startGrpcServer, listening: ({ address }) => ({ address }), quickTry });

function quickTry({ port, host, devDir }: QuickTryTarget): QuickTry {
  // The development server certificate names localhost, 127.0.0.1 and ::1; a host name, not an
  // IP address, is what TLS sends as server name (SNI).
  const target = ['0.0.0.0', '::', '127.0.0.1'].includes(host) ? 'localhost' : host;
  const address = `${target.includes(':') ? `[${target}]` : target}:${port}`;
  const env = `FLUXGUARD_DEV_DIR=${shellQuote(devDir)}`;
  const token = (roles: string): string => `--token "$(${env} pnpm -s token --sub alice --roles ${roles})"`;
  const tryJs = `${env} node examples/grpc-server/dist/try.js ${shellQuote(address)}`;
  return {
    lines: [
      'Try it (from the repository root; the client uses the development CA and client certificate):',
      `  ${tryJs}                                     # health only: public`,
      `  ${tryJs} ${token('artifacts.admin')}   # upload, get, list, delete`,
      `  ${tryJs} ${token('artifacts.reader')}  # reads allowed, upload PERMISSION_DENIED`,
      `  ${tryJs} --no-cert ${token('artifacts.reader')}  # no client certificate: refused by the policy`,
      `  ${tryJs} --lists 35 ${token('artifacts.reader')}  # 30 lists a minute, then RESOURCE_EXHAUSTED with retry-after`,
    ],
    ownMaterialHint:
      'material: pass your own CA, client certificate and token to try.js (--ca, --cert, --key, --token).',
  };
}
