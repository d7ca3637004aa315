/**
 * Whether an HTTP/1 request has a body, from its head: it has one only when it says so, with a
 * `Transfer-Encoding` or a `Content-Length` above 0 (RFC 9112 section 6.3). Takes the two
 * header values rather than the request, so that each adapter asks its own kind of headers
 * without building anything.
 *
 * For adapter authors (`@fluxguard/core/adapter`).
 *
 * @example
 * ```ts
 * import { declaresBody } from '@fluxguard/core/adapter';
 * declaresBody(req.headers['transfer-encoding'], req.headers['content-length']); // GET: false
 * ```
 */
export function declaresBody(transferEncoding: string | undefined, contentLength: string | undefined): boolean {
  return transferEncoding !== undefined || (contentLength !== undefined && contentLength !== '0');
}
