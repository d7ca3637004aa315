import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import { GRPC_METHOD, HTTP_PATH } from './fixtures.js';
import { parseItem, serializeJson } from './grpc-service.js';
import type { BenchTls } from './servers.js';

/** Sends one request with this bearer token and settles once the full response has arrived. */
export type TokenSender = (token: string) => Promise<void>;

export interface BenchClient {
  readonly send: TokenSender;
  close(): void;
}

/** An HTTP/1.1 client over keep-alive connections (at most `concurrency`), reused across rounds. */
export function httpClient(port: number, concurrency: number, tls?: BenchTls): BenchClient {
  const agent =
    tls === undefined
      ? new HttpAgent({ keepAlive: true, maxSockets: concurrency })
      : new HttpsAgent({ keepAlive: true, maxSockets: concurrency, ca: tls.ca, cert: tls.cert, key: tls.key });
  const request = tls === undefined ? httpRequest : httpsRequest;
  const base: RequestOptions = { host: '127.0.0.1', port, path: HTTP_PATH, method: 'GET', agent };
  const send = (token: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request({ ...base, headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
      req.on('response', (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(
            new Error(`HTTP ${String(res.statusCode)} from port ${port}: the benchmark must measure successful calls`),
          );
          return;
        }
        res.on('error', reject);
        res.on('end', resolve);
        res.resume();
      });
      req.on('error', reject);
      req.end();
    });
  return {
    send,
    close: () => {
      agent.destroy();
    },
  };
}

/** A grpc-js client on one channel (HTTP/2: the requests in flight are streams of it). */
export function grpcClient(port: number, tls?: BenchTls): BenchClient {
  const credentials =
    tls === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert));
  const options: grpc.ChannelOptions =
    tls === undefined ? {} : { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' };
  const client = new grpc.Client(`127.0.0.1:${port}`, credentials, options);
  const send = (token: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${token}`);
      client.makeUnaryRequest(GRPC_METHOD, serializeJson, parseItem, { id: '42' }, metadata, (err) => {
        if (err === null) resolve();
        else reject(err);
      });
    });
  return {
    send,
    close: () => {
      client.close();
    },
  };
}
