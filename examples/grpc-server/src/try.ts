// A quick try of the reference gRPC server without grpcurl:
//   node examples/grpc-server/dist/try.js [host:port] [--token JWT] [--no-cert]
//                                          [--ca FILE] [--cert FILE] [--key FILE] [--lists N]
// Connects over TLS with the development CA and client certificate (FLUXGUARD_DEV_DIR, default
// .fluxguard/dev), checks health (public); with a token (--token or FLUXGUARD_TOKEN) it also
// uploads an artifact, reads it back, lists, asks for something that fails on the server (a
// directory) to show the safe error and its request id, and deletes. A refusal (a role the
// token lacks) is printed with its status, and the script goes on. With --lists N it only lists
// N times, to show the policy's rate limit: RESOURCE_EXHAUSTED and its retry-after.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  Client,
  Metadata,
  loadPackageDefinition,
  status as Status,
  type GrpcObject,
  type MethodDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createClientCredentials, defaultDeadline } from '@fluxguard/grpc';
import { PROTO_PATH, loadServerConfig } from '@fluxguard/example-artifact-store';

type Json = Record<string, unknown>;
type Method = MethodDefinition<Json, Json>;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    token: { type: 'string' },
    'no-cert': { type: 'boolean', default: false },
    ca: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    lists: { type: 'string' },
  },
});
const devDir = loadServerConfig().devDir;
const address = positionals[0] ?? `localhost:${process.env.FLUXGUARD_GRPC_PORT ?? '9000'}`;
const token = values.token ?? process.env.FLUXGUARD_TOKEN;
const client = new Client(
  address,
  createClientCredentials({
    caFile: values.ca ?? join(devDir, 'ca.crt'),
    ...(values['no-cert']
      ? {}
      : { certFile: values.cert ?? join(devDir, 'client.crt'), keyFile: values.key ?? join(devDir, 'client.key') }),
  }),
  // Every call gets a deadline: a server that does not answer cannot hang the script.
  { interceptors: [defaultDeadline(10_000)] },
);

function metadata(): Metadata {
  const m = new Metadata();
  if (token !== undefined && token !== '') m.set('authorization', `Bearer ${token}`);
  return m;
}

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
      metadata(),
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
      metadata(),
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
      metadata(),
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
  const e = err as Partial<ServiceError>;
  const name: unknown = typeof e.code === 'number' ? Status[e.code] : undefined;
  const code = typeof name === 'string' ? name : String(e.code);
  const requestId = e.metadata?.get('x-request-id')[0];
  const retryAfter = e.metadata?.get('retry-after')[0];
  return `${code}, "${e.details ?? String(err)}"${requestId === undefined ? '' : `, x-request-id ${String(requestId)}`}${retryAfter === undefined ? '' : `, retry-after ${String(retryAfter)} s`}`;
}

/** Runs one step and prints its result or its refusal; resolves false on a refusal. */
async function step(name: string, run: () => Promise<unknown>): Promise<boolean> {
  try {
    console.log(`${name}:`, await run());
    return true;
  } catch (err) {
    console.log(`${name}: refused: ${describeError(err)}`);
    return false;
  }
}

try {
  if (!(await step('health', () => unary(methodOf(health, 'Check'), { service: '' })))) {
    process.exitCode = 1;
  } else if (values.lists !== undefined) {
    const times = Number(values.lists);
    let ok = 0;
    for (let i = 0; i < times; i++) {
      try {
        await list('try/');
        ok += 1;
      } catch (err) {
        console.log(`list ${String(i + 1)} of ${String(times)}: refused: ${describeError(err)}`);
        break;
      }
    }
    console.log(`${String(ok)} lists answered`);
  } else if (token === undefined || token === '') {
    console.log('no token: only health is public. Pass --token "$(pnpm -s token --sub alice --roles artifacts.admin)"');
    await step('list without a token', () => list('try/'));
  } else {
    await step('upload', () => upload('try/hello.txt', Buffer.from('hello, fluxguard\n')));
    await step('get', async () => {
      const artifact = await unary(methodOf(store, 'GetArtifact'), { path: 'try/hello.txt' });
      return { ...artifact, content: String(artifact.content) };
    });
    await step('list', () => list('try/'));
    await step('get of a directory (the server log has the cause)', () =>
      unary(methodOf(store, 'GetArtifact'), { path: 'try' }),
    );
    await step('path traversal', () => unary(methodOf(store, 'GetArtifact'), { path: '../etc/passwd' }));
    await step('delete', () => unary(methodOf(store, 'DeleteArtifact'), { path: 'try/hello.txt' }));
  }
} catch (err) {
  console.error('failed:', err instanceof Error ? err.message : err);
  process.exitCode = 1;
} finally {
  client.close();
}
