// The development material now lives in `@fluxguard/core/dev-pki` (also behind the `fluxguard`
// command); the reference servers keep their names for it.
import { DEV_TOKEN_DEFAULTS } from '@fluxguard/core/dev-pki';

export {
  DEV_JWT_FILES,
  ensureDevMaterial,
  parseDuration,
  signDevToken,
  type DevMaterial,
  type DevTokenOptions,
} from '@fluxguard/core/dev-pki';

/** The issuer and audience of development tokens (the policy file names the same). */
export const DEV_ISSUER: string = DEV_TOKEN_DEFAULTS.issuer;
export const DEV_AUDIENCE: string = DEV_TOKEN_DEFAULTS.audience;
