// grpc-js's own texts quote what the client sent (a method path, an encoding), and become the
// cause of the call's audit line. A token the client put there must not reach the log in part:
// the text is cut to its first characters only once its tokens are scrubbed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status, type Client, type StatusObject } from '@grpc/grpc-js';
import { fluxguardInterceptors } from './index.js';
import { deserialize, serialize, type Json } from './testing/harness.js';
import { grpcFrame } from './testing/raw-http2.js';
import { op, startSecureServer, type SecureServer } from './testing/tls.js';

/** A compact JWT long enough that grpc-js's text, cut to 200 characters, ends in its claims. */
const HEADER = Buffer.from('{"alg":"ES256","typ":"JWT"}').toString('base64url');
const CLAIMS = Buffer.from(JSON.stringify({ sub: 'alice@example.com', pad: 'p'.repeat(300) })).toString('base64url');
const TOKEN = `${HEADER}.${CLAIMS}.${'s'.repeat(86)}`;

let secure: SecureServer;
let client: Client;

beforeAll(async () => {
  secure = await startSecureServer((audit) => fluxguardInterceptors({ audit, timeouts: false }));
  client = secure.client(secure.pki.reader);
});

afterAll(() => secure.close());

const lineOf = (requestId: string): Json | undefined => secure.lines().find((line) => line.requestId === requestId);

describe('a token quoted by grpc-js in its own text', () => {
  it('leaves no part of itself in the cause of the line, for a method path that holds it', async () => {
    const metadata = new Metadata();
    metadata.set('x-request-id', 'token-in-path');
    const status = await new Promise<StatusObject>((resolve) => {
      const call = client.makeUnaryRequest(
        `/x.Y/${TOKEN}`,
        serialize,
        deserialize,
        {},
        metadata,
        { deadline: Date.now() + 10_000 },
        () => undefined,
      );
      call.on('status', resolve);
    });
    expect(status.code).toBe(Status.UNIMPLEMENTED);
    const line = lineOf('token-in-path');
    expect(line).toMatchObject({ reason: 'unimplemented', operation: 'unknown' });
    expect(String(line?.cause)).toContain('does not implement the method /x.Y/');
    expect(JSON.stringify(line)).not.toContain(HEADER);
  });

  it('leaves no part of itself in the cause of the line, for a grpc-encoding that holds it', async () => {
    await secure.rawCall(
      op('Public'),
      { 'grpc-encoding': TOKEN, 'x-request-id': 'token-in-encoding' },
      { body: grpcFrame(Buffer.from('{}'), true), cert: secure.pki.reader },
    );
    const line = lineOf('token-in-encoding');
    expect(line).toMatchObject({ reason: 'message_encoding_unsupported' });
    expect(String(line?.cause)).toContain('unsupported encoding');
    expect(JSON.stringify(line)).not.toContain(HEADER);
  });
});
