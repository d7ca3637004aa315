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
// redaction cannot reach (a library may quote a token in its own message). Every pattern is
// linear in the text's length: error text may quote what a client sent, and a pattern that
// backtracks took seconds of CPU per request on 100 KB of `eyJeyJ...` or `a.a.a...`. A token
// starts where a run of its characters starts, so no other place in a run is tried.
const JWT_LIKE =
  /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?/g;
const PEM_BEGIN = /-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----/g;
const PEM_END = /-----END [A-Z ]{0,40}PRIVATE KEY-----/g;
const BEARER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi;
// The values of query parameters named for secrets.
const SECRET_PARAMETER =
  /([?&;](?:access_token|id_token|refresh_token|token|api_key|api-key|apikey|key|access_key|password|passwd|pass|pwd|secret|client_secret|auth|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&#\s"']*/gi;
// A run of text without spaces, for a URL's user and password.
const RUN = /\S+/g;
/** Error text longer than this is cut before it is scrubbed: nothing that long helps a reader. */
const MAX_SCRUBBED_LENGTH = 16_384;

/** Whether a UTF-16 code is one tokens are written with: base64, base64url, a JWT's dots. */
function isTokenCode(code: number): boolean {
  return (
    (code >= 0x30 && code <= 0x39) || // 0-9
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x61 && code <= 0x7a) || // a-z
    code === 0x2b || // +
    code === 0x2d || // -
    code === 0x2e || // .
    code === 0x2f || // /
    code === 0x3d || // =
    code === 0x5f || // _
    code === 0x7e // ~
  );
}

/**
 * `text` cut to at most `maxChars`, and short of a run of token characters the cut would split,
 * that run left out whole: a JWT cut within its claims keeps one dot, which no pattern reads as
 * a token, and would leave its header and claims in the log. Scanned back once, so linear.
 */
function cutBeforeSplitToken(text: string, maxChars: number): string {
  let end = maxChars;
  if (isTokenCode(text.charCodeAt(end))) while (end > 0 && isTokenCode(text.charCodeAt(end - 1))) end--;
  return text.slice(0, end);
}

/**
 * Removes tokens, bearer credentials, private keys, a URL's user and password, and the values
 * of query parameters named for secrets (`access_token`, `key`, `password`, ...) from free text.
 * Text past 16 KiB is cut off first, short of a token the cut would split. Cut what it returns,
 * not what it is given: a token cut in two is no longer found.
 *
 * @example
 * ```ts
 * import { scrubSecrets } from '@fluxguard/core/adapter';
 * scrubSecrets('bad token eyJhbGciOi.eyJzdWIi.sig'); // 'bad token [REDACTED]'
 * ```
 */
export function scrubSecrets(text: string): string {
  const bounded = text.length > MAX_SCRUBBED_LENGTH ? `${cutBeforeSplitToken(text, MAX_SCRUBBED_LENGTH)}…[cut]` : text;
  return withoutPrivateKeys(bounded)
    .replace(BEARER, `$1 ${REDACTED}`)
    .replace(JWT_LIKE, REDACTED)
    .replace(RUN, withoutUserinfo)
    .replace(SECRET_PARAMETER, `$1${REDACTED}`);
}

/**
 * One line for an error kept in a log line as the cause of something else: its type and its
 * message, scrubbed ({@link scrubSecrets}) and then cut to 300 characters, no stack.
 *
 * @example
 * ```ts
 * causeLine(new Error('connect to redis://:hunter2@cache:6379 failed')); // 'Error: connect to redis://[REDACTED]@cache:6379 failed'
 * ```
 *
 * @internal
 */
export function causeLine(cause: Error): string {
  return scrubSecrets(`${cause.name}: ${cause.message}`).slice(0, 300);
}

/**
 * A URL's user and password in a run of text without spaces: from its `://` to the last `@` of
 * the run, so that a password holding an unencoded `@`, `/`, `?` or `#` (the URLs whose parse
 * error quotes them) goes whole.
 */
function withoutUserinfo(run: string): string {
  const scheme = run.indexOf('://');
  if (scheme <= 0) return run;
  const at = run.lastIndexOf('@');
  return at < scheme ? run : `${run.slice(0, scheme + 3)}${REDACTED}${run.slice(at)}`;
}

/**
 * A URL that could not be parsed, as a whole (Node's `ERR_INVALID_URL` keeps it as `input`):
 * from its `://` to its last `@`, spaces included, since a space in a password is one reason
 * the URL did not parse.
 *
 * @internal
 */
export function withoutWholeUserinfo(url: string): string {
  const scheme = url.indexOf('://');
  const at = url.lastIndexOf('@');
  return scheme <= 0 || at < scheme ? url : `${url.slice(0, scheme + 3)}${REDACTED}${url.slice(at)}`;
}

/**
 * PEM private key blocks, each up to its END line; a block cut short (a key's first lines pasted
 * where a path belongs) with everything after it. Found by two linear scans, not by a pattern
 * that looks ahead for the END line from every BEGIN.
 */
function withoutPrivateKeys(text: string): string {
  if (!text.includes('PRIVATE KEY-----')) return text;
  const ends: { readonly at: number; readonly end: number }[] = [];
  for (const m of text.matchAll(PEM_END)) ends.push({ at: m.index, end: m.index + m[0].length });
  let out = '';
  let from = 0;
  let next = 0;
  for (const m of text.matchAll(PEM_BEGIN)) {
    if (m.index < from) continue;
    while (next < ends.length && (ends[next]?.at ?? 0) < m.index + m[0].length) next++;
    const end = ends[next];
    out += text.slice(from, m.index) + REDACTED;
    if (end === undefined) return out;
    from = end.end;
    next++;
  }
  return out + text.slice(from);
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
  // Node's URL parse error keeps the URL it could not parse, password and all.
  const { code, input } = value as { code?: unknown; input?: unknown };
  if (code === 'ERR_INVALID_URL' && typeof input === 'string')
    out.input = scrubDeep(withoutWholeUserinfo(input), depth + 1);
  return out;
}
