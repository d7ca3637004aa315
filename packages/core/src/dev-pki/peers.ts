import type * as X509 from '@peculiar/x509';
import { ConfigurationError } from '../errors/fluxguard-error.js';

/**
 * The install command an error names: the development PKI's two libraries are optional peer
 * dependencies of @fluxguard/core, so that production installs, which never issue
 * certificates, do not carry them.
 */
const INSTALL = 'npm install --save-dev @peculiar/x509 reflect-metadata';

function isModuleMissing(err: unknown, specifier: string): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    typeof message === 'string' &&
    message.includes(specifier)
  );
}

async function load<T>(specifier: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (err) {
    if (!isModuleMissing(err, specifier)) throw err;
    throw new ConfigurationError(
      `@fluxguard/core/dev-pki needs the package "${specifier}", an optional peer dependency that is not installed: ${INSTALL}`,
      { cause: err },
    );
  }
}

/**
 * Loads @peculiar/x509 with the Reflect metadata polyfill it needs, or throws a
 * `ConfigurationError` naming the package to install. Imported dynamically, not statically,
 * because a static import of a missing package fails while the module graph is linked, before
 * any code of ours could explain what to install.
 *
 * @internal
 */
export async function loadX509(): Promise<typeof X509> {
  // tsyringe, under @peculiar/x509, reads the Reflect metadata API while it is evaluated: the
  // polyfill must be loaded first.
  await load('reflect-metadata', () => import('reflect-metadata'));
  return load('@peculiar/x509', () => import('@peculiar/x509'));
}
