// The reference HTTPS server: `pnpm start:http` (or `node examples/http-server/dist/main.js`).
// Configuration comes from the environment (FLUXGUARD_HOST, FLUXGUARD_HTTP_PORT,
// FLUXGUARD_DATA_DIR, FLUXGUARD_DEV_DIR, and the security variables of loadReferenceSecurity:
// FLUXGUARD_POLICY, FLUXGUARD_JWKS_URL, FLUXGUARD_TLS_*, FLUXGUARD_CLIENT_CERTS, ...); see README.md.
import { join } from 'node:path';
import { runReferenceServer, shellQuote, type QuickTry, type QuickTryTarget } from '@fluxguard/example-artifact-store';
import { startHttpServer } from './server.js';

await runReferenceServer({ name: 'http', start: startHttpServer, listening: ({ url }) => ({ url }), quickTry });

function quickTry({ port, host, devDir }: QuickTryTarget): QuickTry {
  // The development server certificate names localhost, 127.0.0.1 and ::1.
  const target = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const base = `https://${target.includes(':') ? `[${target}]` : target}:${port}`;
  const tls = `--cacert ${shellQuote(join(devDir, 'ca.crt'))} --cert ${shellQuote(join(devDir, 'client.crt'))} --key ${shellQuote(join(devDir, 'client.key'))}`;
  const token = (roles: string): string =>
    `-H "Authorization: Bearer $(FLUXGUARD_DEV_DIR=${shellQuote(devDir)} pnpm -s token --sub alice --roles ${roles})"`;
  return {
    lines: [
      'Try it (from the repository root):',
      `  curl ${tls} ${base}/healthz`,
      `  printf 'hello world' > /tmp/hello.txt`,
      `  curl ${tls} ${token('artifacts.writer')} -X PUT \\`,
      `    -H "Repr-Digest: sha-256=:$(openssl dgst -sha256 -binary /tmp/hello.txt | base64):" \\`,
      `    --data-binary @/tmp/hello.txt ${base}/v1/artifacts/demo/hello.txt`,
      `  curl ${tls} ${token('artifacts.reader')} ${base}/v1/artifacts/demo/hello.txt`,
      `  curl ${tls} ${token('artifacts.reader')} '${base}/v1/artifacts?prefix=demo/'`,
      `  curl -i ${tls} ${base}/v1/artifacts/demo/hello.txt   # 401: no token`,
      `  T=$(FLUXGUARD_DEV_DIR=${shellQuote(devDir)} pnpm -s token --sub bob --roles artifacts.reader)`,
      `  for i in $(seq 32); do curl -s -o /dev/null -w '%{http_code} ' ${tls} -H "Authorization: Bearer $T" '${base}/v1/artifacts?prefix=demo/'; done; echo`,
      `  curl -si ${tls} -H "Authorization: Bearer $T" '${base}/v1/artifacts' | grep -iE '^(HTTP|retry-after|ratelimit)'   # 429 after 30 lists a minute`,
    ],
    ownMaterialHint: 'material: use your own CA, client certificate and tokens in the commands above.',
  };
}
