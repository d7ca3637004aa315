// Two copies of @fluxguard/core in one process, as an install tree can hold (the adapter
// resolving one version, the application another): the adapters must map a refusal thrown by
// the application's copy to its status. The second copy is core's own sources compiled into a
// temporary directory and loaded by Node from there, so its classes share nothing with the
// copy the adapters import but the brand.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import {
  Metadata,
  Server as GrpcServer,
  ServerCredentials,
  credentials,
  makeGenericClientConstructor,
  status as Status,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { SecurityError } from '@fluxguard/core';
import type * as CoreModule from '@fluxguard/core';
import { errorHandler, notFound, requestId } from '@fluxguard/express';
import { addService, safeErrors } from '@fluxguard/grpc';
import { captureLog } from './support/log-capture.js';

type Core = typeof CoreModule;

const coreDir = fileURLToPath(new URL('../packages/core/', import.meta.url));
let workDir: string;
let second: Core;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'fluxguard-second-core-'));
  // Under a node_modules directory, so that the test runner leaves it to Node's own loader.
  const packageDir = join(workDir, 'node_modules', '@fluxguard', 'core');
  await mkdir(packageDir, { recursive: true });
  await writeFile(join(packageDir, 'package.json'), await readFile(join(coreDir, 'package.json')));
  // Core's own dependencies (jose, pino, ...) resolve from the workspace's install.
  await symlink(join(coreDir, 'node_modules'), join(packageDir, 'node_modules'), 'dir');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  await promisify(execFile)(process.execPath, [
    tsc,
    '-p',
    join(coreDir, 'tsconfig.build.json'),
    '--outDir',
    join(packageDir, 'dist'),
    '--composite',
    'false',
    '--incremental',
    'false',
    '--declaration',
    'false',
    '--declarationMap',
    'false',
    '--sourceMap',
    'false',
  ]);
  second = (await import(pathToFileURL(join(packageDir, 'dist', 'index.js')).href)) as Core;
}, 120_000);

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('a second copy of @fluxguard/core', () => {
  it('has classes of its own, which a plain instanceof would not recognise', () => {
    expect(second.SecurityError).not.toBe(SecurityError);
    expect(dirname(fileURLToPath(import.meta.url))).not.toBe(workDir);
    const foreign = new second.SecurityError('not_found');
    expect(Function.prototype[Symbol.hasInstance].call(SecurityError, foreign)).toBe(false);
  });

  describe('over a real Express server', () => {
    let server: Server;
    let base: string;
    const log = captureLog();

    beforeAll(async () => {
      const app = express();
      app.use(requestId());
      app.get('/missing', () => {
        throw new second.SecurityError('not_found', { reason: 'app.artifact_missing' });
      });
      app.get('/limited', () => {
        throw new second.SecurityError('rate_limited', { details: { retryAfterSeconds: 7 } });
      });
      app.get('/misconfigured', () => {
        throw new second.ConfigurationError('bad option');
      });
      app.use(notFound());
      app.use(errorHandler({ audit: log.audit }));
      server = app.listen(0, '127.0.0.1');
      await new Promise<void>((resolve) => server.once('listening', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    });

    it('answers a not_found of the other copy with 404, not 500', async () => {
      const res = await fetch(`${base}/missing`);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await res.json()).toMatchObject({ status: 404, code: 'not_found', detail: 'Not found.' });
      const line = log.lines.find((l) => l.reason === 'app.artifact_missing');
      expect(line).toMatchObject({ event: 'request.denied', code: 'not_found' });
    });

    it('keeps the safe details of the other copy (Retry-After)', async () => {
      const res = await fetch(`${base}/limited`);
      expect(res.status).toBe(429);
      expect(res.headers.get('retry-after')).toBe('7');
    });

    it('answers anything else of the other copy as internal', async () => {
      const res = await fetch(`${base}/misconfigured`);
      expect(res.status).toBe(500);
      expect(await res.text()).not.toMatch(/bad option/);
    });
  });

  describe('over a real gRPC server', () => {
    const json = {
      serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
      deserialize: (bytes: Buffer): unknown => JSON.parse(bytes.toString('utf8')) as unknown,
    };
    const service = {
      refuse: {
        path: '/fluxguard.test.SecondCore/Refuse',
        requestStream: false,
        responseStream: false,
        requestSerialize: json.serialize,
        requestDeserialize: json.deserialize,
        responseSerialize: json.serialize,
        responseDeserialize: json.deserialize,
      },
    } satisfies ServiceDefinition;
    let server: GrpcServer;
    let client: InstanceType<ReturnType<typeof makeGenericClientConstructor>>;
    const log = captureLog();

    beforeAll(async () => {
      server = new GrpcServer({ interceptors: [safeErrors({ audit: log.audit })] });
      addService(server, service, {
        refuse: () => {
          throw new second.SecurityError('permission_denied', { reason: 'app.not_owner' });
        },
      });
      const port = await new Promise<number>((resolve, reject) => {
        server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => {
          if (err) reject(err);
          else resolve(bound);
        });
      });
      const Client = makeGenericClientConstructor(service, 'SecondCore');
      client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    });

    afterAll(async () => {
      client.close();
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          resolve();
        });
      });
    });

    it('answers a permission_denied of the other copy with PERMISSION_DENIED', async () => {
      const error = await new Promise<ServiceError>((resolve, reject) => {
        const refuse = client.refuse as unknown as (
          request: unknown,
          metadata: Metadata,
          callback: (err: ServiceError | null) => void,
        ) => void;
        refuse.call(client, {}, new Metadata(), (err) => {
          if (err) resolve(err);
          else reject(new Error('the call succeeded'));
        });
      });
      expect(error.code).toBe(Status.PERMISSION_DENIED);
      expect(error.details).toBe('Permission denied.');
      expect(log.lines.find((l) => l.reason === 'app.not_owner')).toMatchObject({ code: 'permission_denied' });
    });
  });
});
