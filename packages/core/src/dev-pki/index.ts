/**
 * `@fluxguard/core/dev-pki`: a development PKI generated in TypeScript (no openssl CLI). A
 * subpath of its own because @peculiar/x509 needs the `reflect-metadata` polyfill, which a
 * production import of `@fluxguard/core` should not load.
 */
export {
  createDevCertificateAuthority,
  createDevPki,
  DEV_CLIENT_SPIFFE_ID,
  type CertificateValidity,
  type ClientCertificateOptions,
  type CrlOptions,
  type DevCertificateAuthority,
  type DevCertificateAuthorityOptions,
  type DevPki,
  type DevPkiOptions,
  type IssuedCertificate,
  type ServerCertificateOptions,
  type ValidityOptions,
} from './dev-pki.js';
export {
  DEV_PKI_FILES,
  ensureDevPki,
  writeDevPki,
  type DevPkiPaths,
  type EnsureDevPkiOptions,
  type EnsureDevPkiResult,
} from './write.js';
export {
  DEV_JWT_FILES,
  DEV_TOKEN_DEFAULTS,
  ensureDevMaterial,
  parseDuration,
  signDevToken,
  type DevMaterial,
  type DevTokenOptions,
} from './dev-tokens.js';
