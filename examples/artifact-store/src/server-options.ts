import type { AuditLogger } from '@fluxguard/core';
import type { ReferenceSecurity } from './security.js';
import { ArtifactStore } from './store.js';

/**
 * The options both reference servers take (`startGrpcServer`, `startHttpServer`); each adds
 * its own default port and transport limits.
 *
 * @example
 * ```ts
 * const security = await loadReferenceSecurity({ devDir: '.fluxguard/dev', audit });
 * const options: ReferenceServerOptions = { port: 0, dataDir: '/tmp/artifacts', security, audit };
 * ```
 */
export interface ReferenceServerOptions {
  /** Interface to listen on. Default `127.0.0.1`. */
  readonly host?: string;
  /** Port; `0` picks a free one. Default: the server's own. */
  readonly port?: number;
  /** The directory that holds the artifacts. */
  readonly dataDir: string;
  /**
   * Required: TLS material and client-certificate mode, token verifier, RBAC rules and
   * certificate roles (`loadReferenceSecurity`). There is no way to start a reference server
   * without authentication, and no insecure default to fall back to.
   */
  readonly security: ReferenceSecurity;
  /** The audit logger; default: a new one writing to standard output. */
  readonly audit?: AuditLogger;
  /** Largest artifact accepted by an upload, in bytes. Default: the store's (64 MiB). */
  readonly maxArtifactBytes?: number;
  /** Most artifacts one listing returns; a longer one is continued from its last path. Default: the store's (10,000). */
  readonly maxListEntries?: number;
}

/**
 * The store of a reference server, the upload temporaries a crashed process left in its data
 * directory removed first (logged as `store.leftover_uploads_removed` with their count).
 *
 * @example
 * ```ts
 * const store = await openReferenceStore({ port: 0, dataDir: '/tmp/artifacts', security }, audit);
 * ```
 */
export async function openReferenceStore(options: ReferenceServerOptions, audit: AuditLogger): Promise<ArtifactStore> {
  const store = new ArtifactStore({
    dataDir: options.dataDir,
    ...(options.maxArtifactBytes === undefined ? {} : { maxArtifactBytes: options.maxArtifactBytes }),
    ...(options.maxListEntries === undefined ? {} : { maxListEntries: options.maxListEntries }),
  });
  const removed = await store.removeLeftoverUploads();
  if (removed > 0) {
    audit.logger.info({ event: 'store.leftover_uploads_removed', count: removed }, 'store.leftover_uploads_removed');
  }
  return store;
}
