import { fileURLToPath } from 'node:url';

/** Absolute path of the ArtifactStore proto (`fluxguard.example.v1`). */
export const PROTO_PATH: string = fileURLToPath(new URL('../proto/artifact_store.proto', import.meta.url));

/** The gRPC service name, for policies and operation names. */
export const ARTIFACT_STORE_SERVICE = 'fluxguard.example.v1.ArtifactStore';

export {
  ArtifactStore,
  readContent,
  type Artifact,
  type ArtifactInfo,
  type Listing,
  type ArtifactStoreOptions,
  type OpenedArtifact,
} from './store.js';
export { checkSha256Hex, parseReprDigest, reprDigestOf } from './digest.js';
export { loadServerConfig, type ServerConfig } from './config.js';
export * from './dev-material.js';
export {
  DEFAULT_POLICY_FILE,
  IN_FLIGHT_BUDGET,
  loadReferenceSecurity,
  type ReferenceSecurity,
  type ReferenceSecurityOptions,
} from './security.js';
export { openReferenceStore, type ReferenceServerOptions } from './server-options.js';
export {
  runReferenceServer,
  shellQuote,
  type QuickTry,
  type QuickTryTarget,
  type ReferenceServerStartOptions,
  type RunReferenceServerOptions,
  type RunningReferenceServer,
} from './run-server.js';
export { ARTIFACT_MESSAGE_RULES, IMPORT_BODY, LIST_QUERY } from './schemas.js';
