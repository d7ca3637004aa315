// Test support: a real node:tls server on 127.0.0.1:0 and a client that reports what happened.
import type { AddressInfo } from 'node:net';
import { connect, createServer, type ConnectionOptions, type Server, type TlsOptions, type TLSSocket } from 'node:tls';
import type { CertificateIdentity } from '../call/call-info.js';
import { identityFromTlsSocket } from '../mtls/peer-identity.js';

export const SERVER_GREETING = 'FLUXGUARD-OK';

/** What the server saw of one connection. */
export interface ServerSide {
  readonly authorized: boolean;
  readonly authorizationError: string | undefined;
  readonly identity: CertificateIdentity | undefined;
  /** What getPeerCertificate() claims, authorized or not: the trap. */
  readonly claimedCommonName: string | undefined;
  readonly protocol: string | null;
}

export interface TestServer {
  readonly server: Server;
  readonly port: number;
  readonly seen: ServerSide[];
  close(): Promise<void>;
}

export async function startTlsServer(options: TlsOptions): Promise<TestServer> {
  const seen: ServerSide[] = [];
  const sockets = new Set<TLSSocket>();
  const server = createServer(options, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const peer = socket.getPeerCertificate();
    const cn: unknown = (peer as { subject?: { CN?: unknown } }).subject?.CN;
    // Node sets authorizationError to an OpenSSL code string at run time, despite its type.
    const authorizationError: unknown = socket.authorizationError;
    seen.push({
      authorized: socket.authorized,
      authorizationError: typeof authorizationError === 'string' ? authorizationError : undefined,
      identity: identityFromTlsSocket(socket),
      claimedCommonName: typeof cn === 'string' ? cn : undefined,
      protocol: socket.getProtocol(),
    });
    socket.end(`${SERVER_GREETING}\n`);
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

export type ClientResult =
  | {
      readonly ok: true;
      readonly protocol: string | null;
      readonly cipher: string;
      readonly serverFingerprint256: string;
    }
  | { readonly ok: false; readonly error: string };

/**
 * Connects and waits for the server's greeting. Only the greeting proves the server accepted
 * the handshake: in TLS 1.3 the client finishes its side before the server checks its certificate.
 */
export function tryConnect(port: number, options: ConnectionOptions): Promise<ClientResult> {
  return new Promise((resolve) => {
    let data = '';
    let settled = false;
    const finish = (result: ClientResult): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(result);
    };
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...options });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      if (data.includes(SERVER_GREETING)) {
        const cert = socket.getPeerCertificate();
        finish({
          ok: true,
          protocol: socket.getProtocol(),
          cipher: socket.getCipher().name,
          serverFingerprint256: cert.fingerprint256.replaceAll(':', '').toLowerCase(),
        });
      }
    });
    socket.on('error', (err: Error & { code?: string }) => {
      finish({ ok: false, error: `${err.code ?? ''} ${err.message}` });
    });
    socket.on('close', () => {
      finish({ ok: false, error: 'closed without greeting' });
    });
    setTimeout(() => {
      finish({ ok: false, error: 'timeout' });
    }, 5000).unref();
  });
}
