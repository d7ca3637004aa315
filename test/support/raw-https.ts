import { connect } from 'node:tls';
import type { E2eEnvironment } from './servers.js';

/**
 * Sends `request` as written (a request line, headers, maybe a body: what a Node client would
 * refuse to send, such as a header twice) over TLS with the valid client certificate, and
 * resolves with everything the server answered, once it closes, or once the head of the answer
 * has arrived when `untilHead` (a server that waits for a body it was promised).
 */
export function rawHttps(
  port: number,
  world: E2eEnvironment,
  request: string | Uint8Array,
  options: { readonly untilHead?: boolean } = {},
): Promise<string> {
  const { valid } = world.pki.clients;
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port, ca: world.pki.ca, cert: valid.cert, key: valid.key, servername: 'localhost' },
      () => {
        socket.write(request);
      },
    );
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within 10 s: ${text.slice(0, 200)}`));
    }, 10_000);
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (options.untilHead === true && text.includes('\r\n\r\n')) done();
    });
    socket.on('end', done);
    socket.on('close', done);
    // A server that closes on a refused head may reset the connection: what arrived is the answer.
    socket.on('error', (err: Error) => {
      if (text === '') {
        clearTimeout(timer);
        reject(err);
      } else done();
    });
  });
}
