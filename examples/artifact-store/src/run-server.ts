import { ConfigurationError, createAuditLogger, type AuditLogger } from '@fluxguard/core';
import { loadServerConfig } from './config.js';
import { loadReferenceSecurity, type ReferenceSecurity } from './security.js';

/** A started reference server, as {@link runReferenceServer} needs it. */
export interface RunningReferenceServer {
  readonly port: number;
  /** Lets work in flight finish (with the server's own grace period), then resolves. */
  close(): Promise<void>;
}

/** What a reference server's `start` receives: the options of `startGrpcServer` / `startHttpServer`. */
export interface ReferenceServerStartOptions {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly security: ReferenceSecurity;
  readonly audit: AuditLogger;
}

/** Where the server listens and with which material, for its quick-try commands. */
export interface QuickTryTarget {
  readonly port: number;
  /** The configured interface (`FLUXGUARD_HOST`). */
  readonly host: string;
  readonly devDir: string;
}

/** The quick-try commands of one server. */
export interface QuickTry {
  /** The heading and the commands, printed as they are. */
  readonly lines: readonly string[];
  /**
   * The second line of the note printed when the TLS material or the token issuer come from the
   * environment (the commands above use the development material).
   */
  readonly ownMaterialHint: string;
}

/** Options of {@link runReferenceServer}. */
export interface RunReferenceServerOptions<S extends RunningReferenceServer> {
  /**
   * Which reference server: picks its port (`FLUXGUARD_GRPC_PORT` or `FLUXGUARD_HTTP_PORT`) and
   * starts every log message.
   */
  readonly name: 'grpc' | 'http';
  start(options: ReferenceServerStartOptions): Promise<S>;
  /** Log fields that say where the started server listens (its address or URL). */
  listening(server: S): Record<string, unknown>;
  quickTry(target: QuickTryTarget): QuickTry;
}

/**
 * Quotes a value for a POSIX shell, so that a printed command works as printed.
 *
 * @example
 * ```ts
 * shellQuote('/tmp/my dir'); // "'/tmp/my dir'"
 * ```
 */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `main` of a reference server: reads the configuration and security from the environment,
 * starts the server, logs where it listens, prints the quick-try commands, and stops it on
 * SIGINT or SIGTERM (the server's `close` lets work in flight finish, then the security's
 * connections are released). A failure to start is logged and sets exit code 1.
 *
 * @example
 * ```ts
 * await runReferenceServer({
 *   name: 'http',
 *   start: startHttpServer,
 *   listening: ({ url }) => ({ url }),
 *   quickTry: ({ port }) => ({ lines: [`curl https://127.0.0.1:${port}/healthz`], ownMaterialHint: 'use your own CA' }),
 * });
 * ```
 */
export async function runReferenceServer<S extends RunningReferenceServer>(
  options: RunReferenceServerOptions<S>,
): Promise<void> {
  const { name } = options;
  const audit = createAuditLogger();
  let security: ReferenceSecurity | undefined;
  try {
    const config = loadServerConfig();
    security = await loadReferenceSecurity({ devDir: config.devDir, audit });
    const server = await options.start({
      host: config.host,
      port: name === 'grpc' ? config.grpcPort : config.httpPort,
      dataDir: config.dataDir,
      security,
      audit,
    });
    audit.logger.info(
      { ...options.listening(server), dataDir: config.dataDir, clientCertificates: security.tls.clientCertificates },
      `${name} server listening`,
    );
    const usesDevMaterial =
      process.env.FLUXGUARD_TLS_CERT === undefined && process.env.FLUXGUARD_JWKS_URL === undefined;
    const quickTry = options.quickTry({ port: server.port, host: config.host, devDir: config.devDir });
    const lines = ['', ...quickTry.lines, ''];
    if (!usesDevMaterial) {
      lines.push(
        'Note: TLS material or the token issuer come from the environment, not the development',
        quickTry.ownMaterialHint,
        '',
      );
    }
    // On stderr: stdout carries the JSON audit log alone, one line per event, for a log shipper.
    process.stderr.write(lines.join('\n'));

    let stopping = false;
    const loaded = security;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      audit.logger.info({ signal }, `${name} server stopping`);
      server
        .close()
        .then(() => loaded.close())
        .then(
          () => {
            audit.logger.info(`${name} server stopped`);
          },
          (err: unknown) => {
            audit.logger.error({ err }, `${name} server did not stop cleanly`);
            process.exitCode = 1;
          },
        );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  } catch (err) {
    if (err instanceof ConfigurationError) {
      // A setting to correct: its message says which and how, and a stack trace says nothing more.
      audit.logger.fatal({ event: 'server.start_refused', reason: err.message }, `${name} server failed to start`);
      process.stderr.write(`${name} server failed to start: ${err.message}\n`);
    } else {
      // A port in use, a host that does not resolve: the log keeps the stack, the console one line.
      audit.logger.fatal({ event: 'server.start_failed', err }, `${name} server failed to start`);
      const first = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
      process.stderr.write(`${name} server failed to start: ${first.slice(0, 300)}\n`);
    }
    process.exitCode = 1;
    await security?.close();
  }
}
