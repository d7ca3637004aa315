import { hiddenSlot } from '../hidden-slot/hidden-slot.js';
import type { AuthenticationMethod, Principal } from './call-info.js';

const AUTHENTICATION_METHODS: readonly AuthenticationMethod[] = ['jwt', 'mtls', 'both'];

// Principals that were checked whole and found frozen all through, marked before they were
// frozen themselves. A verified token's principal is marked once, when it is made, and every
// call that carries the token sets it without the check. The mark is a hidden slot: nothing
// outside this module can set or forge it.
const sound = hiddenSlot<true>();

/**
 * Whether `value` has the shape of a {@link Principal}: a non-empty subject, roles and scopes
 * that are arrays of strings, claims that are an object, a known `authenticatedBy`. Callers
 * may be plain JavaScript.
 *
 * @internal
 */
export function isWellFormedPrincipal(value: object): value is Principal {
  const raw: Partial<Record<keyof Principal, unknown>> = value;
  return (
    typeof raw.subject === 'string' &&
    raw.subject !== '' &&
    isStringArray(raw.roles) &&
    isStringArray(raw.scopes) &&
    typeof raw.claims === 'object' &&
    raw.claims !== null &&
    AUTHENTICATION_METHODS.includes(raw.authenticatedBy as AuthenticationMethod)
  );
}

/** Whether a well-formed principal's object, roles, scopes and claims are all frozen. */
export function isFrozenThrough(principal: Principal): boolean {
  return Object.isFrozen(principal) && arePartsFrozen(principal);
}

function arePartsFrozen(principal: Principal): boolean {
  return Object.isFrozen(principal.roles) && Object.isFrozen(principal.scopes) && Object.isFrozen(principal.claims);
}

/**
 * Freezes a principal core has just built as a new object, whose roles and scopes are lists core
 * made itself (frozen, plain data) and whose claims are frozen, and, when it is well formed,
 * marks it sound: {@link isSoundPrincipal} then answers without looking at it again. Returns
 * the same object, frozen. Never for an application's principal or lists: a frozen list can
 * still read through a getter, and must be checked on every call.
 *
 * @example
 * ```ts
 * const principal = freezeSound({ subject, roles, scopes, claims, certificate: undefined, authenticatedBy: 'jwt' });
 * ```
 *
 * @internal
 */
export function freezeSound(principal: Principal): Principal {
  // Marked before it is frozen: an engine may refuse a private field to a frozen object.
  if (arePartsFrozen(principal) && isWellFormedPrincipal(principal)) sound.set(principal, true);
  return Object.freeze(principal);
}

/**
 * Whether `principal` was marked by {@link freezeSound}: well formed and frozen all through.
 *
 * @internal
 */
export function isSoundPrincipal(principal: object): boolean {
  return sound.get(principal) === true;
}

// A loop rather than `every`: it runs for the roles and scopes of every principal checked.
function isStringArray(value: unknown): value is readonly string[] {
  if (!Array.isArray(value)) return false;
  for (const item of value as unknown[]) if (typeof item !== 'string') return false;
  return true;
}
