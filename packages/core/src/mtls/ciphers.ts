/**
 * TLS 1.2 suites: ECDHE only (forward secrecy), AEAD only (GCM, ChaCha20-Poly1305), ECDSA and
 * RSA certificates. TLS 1.3 suites are all AEAD; listed so that the order is ours. Then
 * OpenSSL's security level 2 (Node's own default is 1): keys of at least 112-bit strength (RSA
 * of 2048 bits or more, ECC of 224 or more) and no SHA-1 signature, for the server's
 * certificate and for every certificate of a client's chain.
 *
 * @example
 * ```ts
 * import { TLS_CIPHERS } from '@fluxguard/core/adapter';
 * TLS_CIPHERS.split(':').includes('ECDHE-ECDSA-AES128-GCM-SHA256'); // true
 * ```
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  '@SECLEVEL=2',
].join(':');
