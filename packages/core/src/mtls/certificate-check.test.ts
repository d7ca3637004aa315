import { describe, expect, it } from 'vitest';
import type { CertificateIdentity } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { SecurityError } from '../errors/security-error.js';
import { createCertificateCheck } from './certificate-check.js';

// Identities as the TLS stack reports verified certificates; the handshakes themselves are
// tested in tls-settings.test.ts and by both adapters over real TLS.
function identity(spiffeId: string, validTo = new Date(Date.now() + 60_000)): CertificateIdentity {
  return {
    spiffeId,
    uris: [spiffeId],
    dnsNames: [],
    commonName: undefined,
    fingerprint256: 'ab'.repeat(32),
    validFrom: new Date(0),
    validTo,
  };
}

describe('createCertificateCheck', () => {
  it('requires a certificate', () => {
    expect(() => createCertificateCheck().check(undefined)).toThrow(
      expect.objectContaining({ code: 'permission_denied', reason: 'client_certificate_required' }),
    );
  });

  it('accepts any verified certificate when no rule is given', () => {
    const id = identity('spiffe://example.org/anything');
    expect(createCertificateCheck().check(id)).toBe(id);
  });

  it('refuses a certificate that has expired since the handshake', () => {
    expect(() => createCertificateCheck().check(identity('spiffe://example.org/a', new Date(Date.now() - 1)))).toThrow(
      expect.objectContaining({ reason: 'client_certificate_required' }),
    );
  });

  it('applies the identity rules', () => {
    const check = createCertificateCheck({ allow: [{ spiffeId: 'spiffe://example.org/ns/*/sa/ops' }] });
    expect(check.check(identity('spiffe://example.org/ns/prod/sa/ops')).spiffeId).toBe(
      'spiffe://example.org/ns/prod/sa/ops',
    );
    expect(() => check.check(identity('spiffe://example.org/ns/prod/sa/web'))).toThrow(
      expect.objectContaining({ code: 'permission_denied', reason: 'certificate_mismatch' }),
    );
    expect(() => check.check(identity('spiffe://example.org/ns/a/b/sa/ops'))).toThrow(
      expect.objectContaining({ reason: 'certificate_mismatch' }),
    );
  });

  it('tells a certificate that failed verification from none, in the audit facts only', () => {
    const check = createCertificateCheck();
    const call = (peerCertificateError?: string) =>
      ({
        peerCertificate: undefined,
        ...(peerCertificateError === undefined ? {} : { peerCertificateError }),
      }) as never;
    const refusal = (run: () => unknown): SecurityError => {
      try {
        run();
      } catch (error) {
        if (error instanceof SecurityError) return error;
      }
      throw new Error('expected a refusal');
    };
    const untrusted = refusal(() => check.checkCall(call('CERT_HAS_EXPIRED')));
    const none = refusal(() => check.checkCall(call()));
    expect(untrusted).toMatchObject({
      reason: 'certificate_untrusted',
      auditFields: { certificateError: 'CERT_HAS_EXPIRED' },
    });
    expect(none).toMatchObject({ reason: 'client_certificate_required', auditFields: undefined });
    // What a client is told is the same.
    for (const error of [untrusted, none]) {
      expect([error.code, error.message, error.details]).toEqual([
        'permission_denied',
        'Permission denied.',
        undefined,
      ]);
    }
    // The control runs the same check.
    expect(() => check.onStart?.(call('CERT_REVOKED'), undefined as never)).toThrow(
      expect.objectContaining({ reason: 'certificate_untrusted', auditFields: { certificateError: 'CERT_REVOKED' } }),
    );
  });

  it('keeps a verified certificate that has expired since the handshake as client_certificate_required', () => {
    const expired = identity('spiffe://example.org/a', new Date(Date.now() - 1));
    expect(() => createCertificateCheck().checkCall({ peerCertificate: expired } as never)).toThrow(
      expect.objectContaining({ reason: 'client_certificate_required' }),
    );
  });

  it('refuses bad rules and misspelt options at construction', () => {
    expect(() => createCertificateCheck({ allow: [{ spiffeId: 'spiffe://a/(.*)' }] })).toThrow(ConfigurationError);
    expect(() => createCertificateCheck({ alow: [] } as never)).toThrow(/did you mean "allow"/);
  });
});
