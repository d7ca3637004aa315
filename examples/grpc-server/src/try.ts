// A quick try of the reference gRPC server without grpcurl:
//   node examples/grpc-server/dist/try.js [host:port]
// Checks health, uploads an artifact, reads it back, lists, asks for something that fails on
// the server (a directory) to show the safe error and its request id, then deletes.
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  Client,
  Metadata,
  credentials,
  loadPackageDefinition,
  type GrpcObject,
  type MethodDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_PATH } from '@fluxguard/example-artifact-store';

type Json = Record<string, unknown>;
type Method = MethodDefinition<Json, Json>;

const address = process.argv[2] ?? `127.0.0.1:${process.env.FLUXGUARD_GRPC_PORT ?? '9000'}`;
const client = new Client(address, credentials.createInsecure());

function service(protoPath: string, name: string): Record<string, Method> {
  let node: unknown = loadPackageDefinition(
    loadSync(protoPath, { keepCase: true, longs: Number, enums: String, oneofs: true }),
  );
  for (const part of name.split('.')) node = (node as GrpcObject)[part];
  return (node as { service: Record<string, Method> }).service;
}

function methodOf(definitions: Record<string, Method>, name: string): Method {
  const m = definitions[name];
  if (m === undefined) throw new Error(`no method ${name}`);
  return m;
}

const health = service(fileURLToPath(new URL('../proto/health.proto', import.meta.url)), 'grpc.health.v1.Health');
const store = service(PROTO_PATH, 'fluxguard.example.v1.ArtifactStore');

function unary(m: Method, request: Json): Promise<Json> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      request,
      new Metadata(),
      {},
      (err, value) => {
        if (err) reject(err);
        else resolve(value ?? {});
      },
    );
  });
}

function upload(path: string, content: Buffer): Promise<Json> {
  const m = methodOf(store, 'UploadArtifact');
  return new Promise((resolve, reject) => {
    const call = client.makeClientStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      new Metadata(),
      {},
      (err, value) => {
        if (err) reject(err);
        else resolve(value ?? {});
      },
    );
    call.write({ header: { path, sha256: createHash('sha256').update(content).digest('hex') } });
    for (let i = 0; i < content.length; i += 64 * 1024) call.write({ chunk: content.subarray(i, i + 64 * 1024) });
    call.end();
  });
}

function list(prefix: string): Promise<Json[]> {
  const m = methodOf(store, 'ListArtifacts');
  return new Promise((resolve, reject) => {
    const items: Json[] = [];
    const call = client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      { prefix },
      new Metadata(),
      {},
    );
    call.on('data', (item: Json) => items.push(item));
    call.on('error', reject);
    call.on('end', () => {
      resolve(items);
    });
  });
}

function describeError(err: unknown): string {
  const e = err as ServiceError;
  return `code ${e.code}, "${e.details}", x-request-id ${String(e.metadata.get('x-request-id')[0])}`;
}

try {
  console.log('health:', await unary(methodOf(health, 'Check'), { service: '' }));
  console.log('upload:', await upload('try/hello.txt', Buffer.from('hello, fluxguard\n')));
  const artifact = await unary(methodOf(store, 'GetArtifact'), { path: 'try/hello.txt' });
  console.log('get:', { ...artifact, content: String(artifact.content) });
  console.log('list:', await list('try/'));
  await unary(methodOf(store, 'GetArtifact'), { path: 'try' }).then(
    () => {
      console.log('get of a directory unexpectedly succeeded');
    },
    (err: unknown) => {
      console.log('get of a directory (server log has the cause):', describeError(err));
    },
  );
  await unary(methodOf(store, 'GetArtifact'), { path: '../etc/passwd' }).catch((err: unknown) => {
    console.log('path traversal:', describeError(err));
  });
  console.log('delete:', await unary(methodOf(store, 'DeleteArtifact'), { path: 'try/hello.txt' }));
} catch (err) {
  console.error('failed:', err instanceof Error ? err.message : err);
  process.exitCode = 1;
} finally {
  client.close();
}
