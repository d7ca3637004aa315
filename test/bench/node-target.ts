import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { GRPC_METHOD, HTTP_PATH } from './fixtures.js';
import { ITEM_REQUEST, grpcFrame, serializeJson } from './grpc-service.js';
import type { BenchTls, Transport } from './servers.js';

/** How one call ended: served, refused as unauthenticated (401 / gRPC 16), or anything else. */
export type Outcome = 'ok' | 'refused' | 'other';

/** One server as the Node client sees it: `send` settles once the whole answer has arrived. */
export interface Target {
  send(authorization: string | undefined): Promise<Outcome>;
  close(): void;
}

const LOOPBACK = '127.0.0.1';
const GRPC_BODY = grpcFrame(serializeJson(ITEM_REQUEST));
const UNAUTHENTICATED = '16';

function http1Target(port: number, connections: number, tls: BenchTls | undefined): Target {
  const agent =
    tls === undefined
      ? new HttpAgent({ keepAlive: true, maxSockets: connections })
      : new HttpsAgent({ keepAlive: true, maxSockets: connections, ca: tls.ca, cert: tls.cert, key: tls.key });
  const request = tls === undefined ? httpRequest : httpsRequest;
  const send = (authorization: string | undefined): Promise<Outcome> =>
    new Promise((resolve) => {
      const headers = authorization === undefined ? {} : { authorization };
      const req = request({ host: LOOPBACK, port, path: HTTP_PATH, method: 'GET', agent, headers });
      req.on('response', (res: IncomingMessage) => {
        const outcome = res.statusCode === 200 ? 'ok' : res.statusCode === 401 ? 'refused' : 'other';
        res.on('end', () => {
          resolve(outcome);
        });
        res.on('error', () => {
          resolve('other');
        });
        res.resume();
      });
      req.on('error', () => {
        resolve('other');
      });
      req.end();
    });
  return {
    send,
    close: () => {
      agent.destroy();
    },
  };
}

/**
 * gRPC unary calls framed by hand over node:http2 (no grpc-js on the client side: its channel
 * machinery would be the bottleneck, not the server). Calls are spread over `connections`
 * sessions, reopened if one closes.
 */
function grpcTarget(port: number, connections: number, tls: BenchTls | undefined): Target {
  const authority = `${tls === undefined ? 'http' : 'https'}://${LOOPBACK}:${String(port)}`;
  const options =
    tls === undefined ? {} : { ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' as const };
  const sessions: (ClientHttp2Session | undefined)[] = Array.from({ length: connections }, () => undefined);
  let turn = 0;
  const session = (): ClientHttp2Session => {
    const i = turn++ % connections;
    let s = sessions[i];
    if (s === undefined || s.closed || s.destroyed) {
      s = connect(authority, options);
      s.on('error', () => undefined); // each stream reports its own failure
      sessions[i] = s;
    }
    return s;
  };
  const send = (authorization: string | undefined): Promise<Outcome> =>
    new Promise((resolve) => {
      let status: string | undefined;
      const headers: Record<string, string> = {
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: GRPC_METHOD,
        'content-type': 'application/grpc',
        te: 'trailers',
      };
      if (authorization !== undefined) headers.authorization = authorization;
      let stream;
      try {
        stream = session().request(headers);
      } catch {
        resolve('other');
        return;
      }
      // A refusal may come as trailers-only: grpc-status in the response headers.
      stream.on('response', (h) => {
        const s = h['grpc-status'];
        if (s !== undefined) status = String(s);
      });
      stream.on('trailers', (t: IncomingHttpHeaders) => {
        status = String(t['grpc-status']);
      });
      stream.on('data', () => undefined);
      stream.on('error', () => undefined);
      stream.on('close', () => {
        resolve(status === '0' ? 'ok' : status === UNAUTHENTICATED ? 'refused' : 'other');
      });
      stream.end(GRPC_BODY);
    });
  return {
    send,
    close: () => {
      for (const s of sessions) s?.close();
    },
  };
}

export function openTarget(transport: Transport, port: number, connections: number, tls: BenchTls): Target {
  switch (transport) {
    case 'http':
      return http1Target(port, connections, undefined);
    case 'https':
      return http1Target(port, connections, tls);
    case 'grpc':
      return grpcTarget(port, connections, undefined);
    case 'grpc-tls':
      return grpcTarget(port, connections, tls);
  }
}
