import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defaultConnectionsPerAddress } from './connection-gate.js';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { parseSecurityPolicy } from '../policy/policy.js';
import { CONNECTION_DEFAULTS, resolveConnectionLimits } from './connections.js';
import { descriptorBudget } from './descriptor-budget.js';

describe('resolveConnectionLimits', () => {
  it('fills in the secure defaults, the cap from the descriptor budget', () => {
    expect(resolveConnectionLimits()).toEqual({
      ...CONNECTION_DEFAULTS,
      maxConnections: descriptorBudget().connections,
      maxConnectionsPerAddress: defaultConnectionsPerAddress(descriptorBudget().connections),
    });
    expect(resolveConnectionLimits({ idleMs: 500 }).idleMs).toBe(500);
    // The share follows the cap unless it is given.
    expect(resolveConnectionLimits({ maxConnections: 800 }).maxConnectionsPerAddress).toBe(400);
    expect(resolveConnectionLimits({ maxConnectionsPerAddress: 5 }).maxConnectionsPerAddress).toBe(5);
  });

  it.each([
    [{ idleMs: 0 }, 'resolveConnectionLimits.idleMs must be a whole number of ms, from 1 to 2147483647'],
    [
      { handshakeTimeoutMs: 1.5 },
      'resolveConnectionLimits.handshakeTimeoutMs must be a whole number of ms, from 1 to 2147483647',
    ],
    // Node runs a longer timer after 1 ms: refused here, under the field's own name.
    [{ idleMs: 3e9 }, 'resolveConnectionLimits.idleMs must be a whole number of ms, from 1 to 2147483647'],
    [{ maxConnections: '100' }, 'resolveConnectionLimits.maxConnections must be a whole number of at least 1'],
    [{ idleMS: 100 }, 'resolveConnectionLimits: unknown option "idleMS" (did you mean "idleMs"?)'],
    [[], 'resolveConnectionLimits must be an object'],
    // The port's cap is reached first: a larger share per address would never apply.
    [
      { maxConnections: 2, maxConnectionsPerAddress: 5 },
      'resolveConnectionLimits.maxConnectionsPerAddress (5) is above maxConnections (2), so it would never apply: give at most maxConnections',
    ],
  ])('refuses %j', (limits, message) => {
    expect(() => resolveConnectionLimits(limits as never)).toThrow(new ConfigurationError(message));
  });

  it('is the policy section "connections", checked field by field', () => {
    expect(parseSecurityPolicy({ connections: { idleMs: 2_000 } }).connections).toEqual({ idleMs: 2_000 });
    expect(() => parseSecurityPolicy({ connections: { maxConnection: 5 } })).toThrow(
      'policy.connections: unknown field "maxConnection" (did you mean "maxConnections"?)',
    );
    expect(() => parseSecurityPolicy({ connections: { handshakeTimeoutMs: -1 } })).toThrow(
      'policy.connections.handshakeTimeoutMs must be a whole number of ms, from 1 to 2147483647',
    );
  });
});

describe('descriptorBudget', () => {
  it('spends 70 % of the open-file limit on connections and 10 % (at most 512) on calls in flight', () => {
    const module = fileURLToPath(new URL('./descriptor-budget.ts', import.meta.url)).replace(
      /\/src\/(.*)\.ts$/,
      '/dist/$1.js',
    );
    const budgetWith = (files: number): unknown =>
      JSON.parse(
        execFileSync(
          'sh',
          [
            '-c',
            `ulimit -n ${String(files)} && exec "$0" --input-type=module -e "$1"`,
            process.execPath,
            `import { descriptorBudget } from ${JSON.stringify(module)}; console.log(JSON.stringify(descriptorBudget()));`,
          ],
          { encoding: 'utf8' },
        ),
      );
    expect(budgetWith(1024)).toEqual({ openFiles: 1024, connections: 716, inFlight: 102 });
    expect(budgetWith(20_000)).toEqual({ openFiles: 20_000, connections: 14_000, inFlight: 512 });
  });

  it('takes no options: a limit given to it would be ignored', () => {
    expect(() => (descriptorBudget as (...args: unknown[]) => unknown)({ openFiles: 100 })).toThrow(
      'descriptorBudget: takes no options',
    );
  });
});
