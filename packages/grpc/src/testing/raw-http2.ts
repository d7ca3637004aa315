// Shared by this package's tests: gRPC over a raw node:http2 stream, for what grpc-js's own
// client would never send (odd headers, a declared length it never fills, a request it never ends).
import { once } from 'node:events';
import {
  connect,
  sensitiveHeaders,
  type ClientHttp2Session,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { rawGrpcStream } from '@fluxguard/test-support/connections';
import { FRAME, PREFACE, h2Frame, hpackLiterals } from '@fluxguard/test-support/http2-frames';

/**
 * What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame. A
 * socket that sends it has a session on the server, and falls under its idle limit.
 */
export const CLIENT_PREFACE = Buffer.concat([PREFACE, h2Frame(FRAME.SETTINGS, 0, 0)]);

/** An HTTP/2 session to `address` (`host:port`, cleartext) whose errors are ignored. */
export function openRawSession(address: string, settings?: Parameters<typeof connect>[1]): ClientHttp2Session {
  const session = connect(`http://${address}`, settings);
  session.on('error', () => undefined);
  return session;
}

/**
 * An HTTP/2 session over TLS to `address` (`host:port`), verifying the server as localhost (the
 * name of the test certificate), with `cert` as the client's certificate when given; its errors
 * are ignored.
 */
export function openTlsSession(
  address: string,
  tls: { readonly ca: string; readonly cert?: { readonly certPem: string; readonly keyPem: string } },
): ClientHttp2Session {
  const session = connect(`https://${address}`, {
    ca: tls.ca,
    ...(tls.cert === undefined ? {} : { cert: tls.cert.certPem, key: tls.cert.keyPem }),
    servername: 'localhost',
  });
  session.on('error', () => undefined);
  return session;
}

/** A gRPC message prefix: the compressed flag and the length it declares. */
export function grpcPrefix(length: number, compressed = false): Buffer {
  const out = Buffer.alloc(5);
  out.writeUInt8(compressed ? 1 : 0, 0);
  out.writeUInt32BE(length, 1);
  return out;
}

/** One length-prefixed gRPC message. */
export function grpcFrame(body: Buffer, compressed = false): Buffer {
  return Buffer.concat([grpcPrefix(body.length, compressed), body]);
}

/** What the client of a raw call saw. */
export interface RawAnswer {
  readonly grpcStatus: number | undefined;
  /** `grpc-message`, decoded. */
  readonly message: string;
  readonly requestId: string | undefined;
  readonly field: string | undefined;
  /** Everything the client received: headers, body, trailers (decoded). */
  readonly visible: string;
  /** The stream's RST_STREAM code once closed (`NO_ERROR` when it ended normally). */
  readonly rstCode: number;
  /** `x-request-id` of the response headers and of the trailers, each on its own. */
  readonly requestIds: { readonly headers: unknown; readonly trailers: unknown };
  /** The names the server sent as HPACK literals never indexed, in the headers and in the trailers. */
  readonly neverIndexed: { readonly headers: readonly string[]; readonly trailers: readonly string[] };
  /** The response headers as received (a refusal before any answer has its `grpc-status` here). */
  readonly headers: IncomingHttpHeaders;
}

/**
 * A gRPC call over a raw HTTP/2 stream of `session`: `body` is sent as it is; with `end: false`
 * the client never ends its request (and never closes the stream itself). Resolves once the
 * stream is closed.
 */
export async function rawGrpcCall(
  session: ClientHttp2Session,
  path: string,
  headers: OutgoingHttpHeaders,
  body: Buffer,
  end = true,
): Promise<RawAnswer> {
  const stream = rawGrpcStream(session, path, headers);
  let received: IncomingHttpHeaders = {};
  let trailers: IncomingHttpHeaders = {};
  const chunks: Buffer[] = [];
  stream.on('response', (h: IncomingHttpHeaders) => {
    received = h;
  });
  stream.on('trailers', (t: IncomingHttpHeaders) => {
    trailers = t;
  });
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  if (end) stream.end(body);
  else stream.write(body);
  await once(stream, 'close');
  const all = { ...received, ...trailers };
  const text = (name: string): string | undefined => {
    const value = all[name];
    return typeof value === 'string' ? value : undefined;
  };
  const status = text('grpc-status');
  return {
    grpcStatus: status === undefined ? undefined : Number(status),
    message: decodeURIComponent(text('grpc-message') ?? ''),
    requestId: text('x-request-id'),
    field: text('x-fluxguard-field'),
    visible: decodeURIComponent(JSON.stringify({ received, trailers, body: Buffer.concat(chunks).toString('latin1') })),
    rstCode: stream.rstCode,
    requestIds: { headers: received['x-request-id'], trailers: trailers['x-request-id'] },
    neverIndexed: { headers: neverIndexedNames(received), trailers: neverIndexedNames(trailers) },
    headers: received,
  };
}

/** The names Node's client marks as received never indexed (`http2.sensitiveHeaders`). */
function neverIndexedNames(headers: IncomingHttpHeaders): readonly string[] {
  const names: unknown = (headers as Record<symbol, unknown>)[sensitiveHeaders];
  return Array.isArray(names) ? names.filter((name): name is string => typeof name === 'string') : [];
}

/**
 * The header block of a gRPC request to `path` on a cleartext connection, as literal fields
 * (see `hpackLiterals`), with `extra` fields after the usual ones.
 */
export function grpcRequestHeaderBlock(path: string, extra: readonly (readonly [string, string])[] = []): Buffer {
  return hpackLiterals([
    [':method', 'POST'],
    [':scheme', 'http'],
    [':path', path],
    [':authority', 'localhost'],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
    ...extra,
  ]);
}
