import { describe, expect, it } from 'vitest';
import { claimsToPrincipal } from '../jwt/principal.js';
import { mergePrincipals } from '../mtls/identity-rules.js';
import { CallState } from '../pipeline/call-context.js';
import type { CertificateIdentity, Principal } from './call-info.js';
import { freezeSound, isSoundPrincipal } from './sound-principal.js';

function state(): CallState {
  return new CallState({ requestId: 'r', deadline: undefined, end: () => undefined, onReleaseError: () => undefined });
}

const identity: CertificateIdentity = Object.freeze({
  spiffeId: 'spiffe://example.org/client',
  uris: Object.freeze(['spiffe://example.org/client']),
  dnsNames: Object.freeze([]),
  commonName: undefined,
  fingerprint256: 'aa',
  validFrom: new Date(0),
  validTo: new Date(8.64e15),
});

describe('sound principals', () => {
  it('a verified token’s principal is marked sound, frozen all through, and set as it is', () => {
    const principal = claimsToPrincipal({ sub: 'alice', roles: ['reader'], scope: 'read write' });
    expect(isSoundPrincipal(principal)).toBe(true);
    expect(Object.isFrozen(principal)).toBe(true);
    expect(Object.isFrozen(principal.roles)).toBe(true);
    expect(Object.isFrozen(principal.claims)).toBe(true);
    const s = state();
    s.setPrincipal(principal);
    expect(s.principal).toBe(principal);
  });

  it('a copy of a sound principal is not sound: it is checked and frozen like any other', () => {
    const principal = claimsToPrincipal({ sub: 'alice', roles: ['reader'] });
    const roles = ['reader'];
    const copy = { ...principal, roles };
    expect(isSoundPrincipal(copy)).toBe(false);
    const s = state();
    s.setPrincipal(copy);
    expect(s.principal).not.toBe(copy);
    roles.push('admin');
    expect(s.principal?.roles).toEqual(['reader']);
    expect(() => {
      state().setPrincipal({ ...principal, subject: '' });
    }).toThrow(TypeError);
  });

  it('is not marked when malformed or when a part is not frozen', () => {
    const base = { subject: 'alice', scopes: Object.freeze([]), claims: Object.freeze({}), certificate: undefined };
    const unfrozen: Principal = { ...base, roles: ['reader'], authenticatedBy: 'jwt' };
    expect(isSoundPrincipal(freezeSound(unfrozen))).toBe(false);
    const malformed = { ...base, roles: Object.freeze([42]), authenticatedBy: 'jwt' } as unknown as Principal;
    expect(isSoundPrincipal(freezeSound(malformed))).toBe(false);
    expect(() => {
      state().setPrincipal(malformed);
    }).toThrow(TypeError);
  });

  it('a token and a certificate merged stay sound only when the token’s principal was', () => {
    const verified = claimsToPrincipal({ sub: 'alice', roles: ['reader'] });
    const merged = mergePrincipals(verified, identity);
    expect(merged.authenticatedBy).toBe('both');
    expect(isSoundPrincipal(merged)).toBe(true);
    // An application's principal whose role list reads through a getter: checked on every call.
    let role: unknown = 'reader';
    const roles = Object.freeze(Object.defineProperty([] as string[], 0, { get: () => role, enumerable: true }));
    const custom = Object.freeze({ ...verified, roles });
    const mergedCustom = mergePrincipals(custom, identity);
    expect(isSoundPrincipal(mergedCustom)).toBe(false);
    state().setPrincipal(mergedCustom);
    role = 42;
    expect(() => {
      state().setPrincipal(mergedCustom);
    }).toThrow(TypeError);
  });
});
