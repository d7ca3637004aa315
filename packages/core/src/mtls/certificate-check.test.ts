import { describe, expect, it } from 'vitest';
import type { CertificateIdentity } from '../call/call-info.js';
import { ConfigurationError } from '../errors/fluxguard-error.js';
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

  it('refuses bad rules and misspelt options at construction', () => {
    expect(() => createCertificateCheck({ allow: [{ spiffeId: 'spiffe://a/(.*)' }] })).toThrow(ConfigurationError);
    expect(() => createCertificateCheck({ alow: [] } as never)).toThrow(/did you mean "allow"/);
  });
});
