import { expect } from 'vitest';
import type { Outcome } from './clients.js';

/** Text that must never reach a client: stack frames, errno names and texts, library internals. */
const INTERNALS = [
  /\n\s+at /,
  /\bat [\w.<>]+ \(/,
  /\b(ENOENT|EISDIR|EACCES|EPERM|ENOTDIR|EEXIST|ERR_[A-Z_]+)\b/,
  /illegal operation on a directory/i,
  /no such file or directory/i,
  /node_modules/,
  /\.(ts|js|mjs):\d+/,
  // grpc-js's own status texts, which quote what the client sent or the server's limits.
  /does not implement the method|larger than max|unsupported encoding|grpc-timeout value|Failed to decompress|Error (de)?serializing/,
];

/** Asserts that nothing the client received names the data directory or any internal detail. */
export function expectNoLeak(outcome: Outcome, dataDir: string): void {
  expect(outcome.exposed).not.toContain(dataDir);
  expect(outcome.exposed).not.toContain('/tmp/');
  for (const pattern of INTERNALS) expect(outcome.exposed).not.toMatch(pattern);
}
