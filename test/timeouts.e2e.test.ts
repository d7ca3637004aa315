import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256, type Outcome, type Pace } from './support/clients.js';
import { expectNoLeak } from './support/leaks.js';
import {
  TRANSPORTS,
  createE2eEnvironment,
  forUploads,
  startTransport,
  type E2eEnvironment,
  type TransportUnderTest,
} from './support/servers.js';

/**
 * Deadlines and idle limits on both reference servers, from the policy's `timeouts` section
 * (short values here; the reference policy's are minutes). Each row is a paced upload that
 * would succeed without the limit: that it ends with `deadline_exceeded` is the limit at work,
 * and the audit line says which one.
 */
const UPLOAD_DEFAULT_MS = 600;
const UPLOAD_MAX_MS = 900;
const UPLOAD_IDLE_MS = 300;

const TIMEOUTS = {
  defaultMs: 5_000,
  maxMs: 10_000,
  idleMs: 2_000,
  rules: forUploads({ defaultMs: UPLOAD_DEFAULT_MS, maxMs: UPLOAD_MAX_MS, idleMs: UPLOAD_IDLE_MS }),
};

const PART = Buffer.from('0123456789abcdef');
const parts = (n: number): Buffer[] => Array.from({ length: n }, () => PART);

interface Row {
  readonly name: string;
  readonly pace: Pace;
  readonly count: number;
  /** The audit reason of the refusal; omitted: the upload succeeds. */
  readonly reason?: 'inbound_idle' | 'deadline_exceeded';
  readonly only?: 'grpc';
}

const rows: readonly Row[] = [
  { name: 'an upload paced within every limit completes', pace: { gapMs: 40 }, count: 5 },
  {
    name: 'a stalled upload (first part, then nothing) is ended by the idle limit',
    pace: { gapMs: 20, stallAfter: 1 },
    count: 3,
    reason: 'inbound_idle',
  },
  {
    name: 'a call without a client deadline gets the operation default',
    // 20 parts 100 ms apart: 2 s, longer than the 600 ms default, never idle for 300 ms.
    pace: { gapMs: 100, deadlineMs: Infinity },
    count: 20,
    reason: 'deadline_exceeded',
  },
  {
    name: 'a ten-hour client deadline is brought down to the maximum',
    pace: { gapMs: 100, deadlineMs: 10 * 3_600_000 },
    count: 20,
    reason: 'deadline_exceeded',
    only: 'grpc',
  },
];

let world: E2eEnvironment;
let policyFile: string;
beforeAll(async () => {
  world = await createE2eEnvironment();
  policyFile = world.writePolicy('timeouts', (policy) => ({ ...policy, timeouts: TIMEOUTS }));
});
afterAll(() => {
  world.cleanup();
});

describe.each(TRANSPORTS)('deadlines and idle limits over %s', (transport) => {
  let t: TransportUnderTest;
  beforeAll(async () => {
    t = await startTransport(transport, world, { env: { FLUXGUARD_POLICY: policyFile } });
  });
  afterAll(async () => {
    await t.close();
  });

  it.each(rows.filter((row) => row.only === undefined || row.only === transport))('$name', async (row) => {
    const content = Buffer.concat(parts(row.count));
    const path = `timeouts/${row.name.replaceAll(' ', '-').replaceAll(/[^a-z-]/g, '')}.bin`;
    const outcome: Outcome = await t.client.uploadPaced(path, sha256(content), parts(row.count), row.pace);
    if (row.reason === undefined) {
      expect(outcome.ok, outcome.exposed).toBe(true);
      return;
    }
    expect(outcome.ok).toBe(false);
    expect(outcome.status).toBe(t.client.statusOf({ code: 'deadline_exceeded' }));
    expectNoLeak(outcome, t.dataDir);
    expect(outcome.requestId).toMatch(/^[A-Za-z0-9._-]{1,200}$/);
    const lines = t.log.lines.filter(
      (line) => line.requestId === outcome.requestId && line.code === 'deadline_exceeded',
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reason: row.reason });
    // The handler's signal fired: the store removed its temporary file and kept nothing.
    await expect
      .poll(() =>
        readdirSync(t.dataDir, { recursive: true })
          .map(String)
          .filter((f) => f.includes('.upload-')),
      )
      .toEqual([]);
    expect(readdirSync(t.dataDir, { recursive: true }).map(String)).not.toContain(path);
  });
});
