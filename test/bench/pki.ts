import { createDevCertificateAuthority } from '@fluxguard/core/dev-pki';
import type { BenchTls } from './servers.js';

/** The server's and the client's TLS material, from one development CA made for the run. */
export interface Pki {
  readonly server: BenchTls;
  readonly client: BenchTls;
}

/** No TLS: the plain transports ignore it. */
export const NO_TLS: BenchTls = { ca: '', cert: '', key: '' };

/** A CA, a server certificate and a client certificate (with a SPIFFE ID), made at each run. */
export async function makePki(): Promise<Pki> {
  const ca = await createDevCertificateAuthority({ commonName: 'fluxguard bench CA' });
  const server = await ca.issueServerCertificate();
  const client = await ca.issueClientCertificate({ spiffeId: 'spiffe://fluxguard.dev/bench-client' });
  return {
    server: { ca: ca.certPem, cert: server.certPem, key: server.keyPem },
    client: { ca: ca.certPem, cert: client.certPem, key: client.keyPem },
  };
}
