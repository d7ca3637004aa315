/**
 * What the audit log never writes. Keys are matched at the top of a log line and one or two
 * levels down (headers, metadata, request bodies), in the spellings clients and libraries use.
 */
const SECRET_KEYS = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'token',
  'accessToken',
  'access_token',
  'refreshToken',
  'refresh_token',
  'idToken',
  'id_token',
  'password',
  'passphrase',
  'secret',
  'clientSecret',
  'client_secret',
  'apiKey',
  'api_key',
  'x-api-key',
  'privateKey',
  'private_key',
  'key',
];

function path(prefix: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${prefix}${key}` : `${prefix.replace(/\.$/, '')}["${key}"]`;
}

/** The pino `redact.paths` of the audit logger. */
export const REDACTED_PATHS: readonly string[] = Object.freeze(
  SECRET_KEYS.flatMap((key) => [path('', key), path('*.', key), path('*.*.', key)]),
);

/** What a redacted value is replaced with. */
export const REDACTED = '[REDACTED]';

// A compact JWS/JWE and a PEM private key block: scrubbed from error text, where key-based
// redaction cannot reach (a library may quote a token in its own message).
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?/g;
// A block cut short (a key's first lines pasted where a path belongs) loses what follows it too.
const PEM_PRIVATE_KEY =
  /-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\]*)/g;
const BEARER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi;
// A URL's user and password, and the values of query parameters named for secrets: Node's URL
// errors carry the URL they could not parse, a redirect's Location and its base among them. The
// URLs that fail to parse are those whose password holds a `@`, `/`, `?`, `#` or space unencoded:
// everything up to the last `@` goes (of the whole text, when the text is one such URL).
const URL_CREDENTIALS = /(\b[a-z][a-z0-9+.-]*:\/\/)\S*@/gi;
const WHOLE_URL_CREDENTIALS = /^(\s*[a-z][a-z0-9+.-]*:\/\/)[^\r\n]*@/i;
const SECRET_PARAMETER =
  /([?&;](?:access_token|id_token|refresh_token|token|api_key|api-key|apikey|key|access_key|password|passwd|pass|pwd|secret|client_secret|auth|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&#\s"']*/gi;

/**
 * Removes tokens, bearer credentials, private keys, a URL's user and password, and the values
 * of query parameters named for secrets (`access_token`, `key`, `password`, ...) from free text.
 *
 * @example
 * ```ts
 * import { scrubSecrets } from '@fluxguard/core/adapter';
 * scrubSecrets('bad token eyJhbGciOi.eyJzdWIi.sig'); // 'bad token [REDACTED]'
 * ```
 */
export function scrubSecrets(text: string): string {
  return text
    .replace(PEM_PRIVATE_KEY, REDACTED)
    .replace(BEARER, `$1 ${REDACTED}`)
    .replace(JWT_LIKE, REDACTED)
    .replace(WHOLE_URL_CREDENTIALS, `$1${REDACTED}@`)
    .replace(URL_CREDENTIALS, `$1${REDACTED}@`)
    .replace(SECRET_PARAMETER, `$1${REDACTED}`);
}

/**
 * Characters JSON leaves raw that act on a reader of the log: C1 controls (an 8-bit CSI or OSC
 * that a terminal obeys, NEL that a line splitter breaks at), Unicode line and paragraph
 * separators, bidirectional overrides and isolates, zero-width characters and the BOM.
 */
const LOG_UNSAFE = /[\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/**
 * Writes the characters of {@link LOG_UNSAFE} as `\uXXXX` escapes, so that text a client chose
 * (a method name, a token's `sub`) shows in a log line as what it is and acts on nothing. Applied
 * to a serialized line, it keeps the line valid JSON: these characters stand only inside strings.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the audit logger's line and field escaping
 * escapeLogText('a\u2028b'); // 'a\\u2028b'
 * ```
 */
export function escapeLogText(text: string): string {
  LOG_UNSAFE.lastIndex = 0;
  if (!LOG_UNSAFE.test(text)) return text;
  return text.replace(LOG_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Scrubs every string of a serialized error, down to a bounded depth. */
export function scrubDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return escapeLogText(scrubSecrets(value));
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrubDeep(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = scrubDeep(v, depth + 1);
  return out;
}
