import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const core = fileURLToPath(new URL('../index.ts', import.meta.url)).replace(/\/src\/(.*)\.ts$/, '/dist/$1.js');

/** A child that writes `lines` refusals to the audit log (on standard output), then `then`. */
function childScript(lines: number, then: string): string {
  return `import { createAuditLogger, SecurityError } from ${JSON.stringify(core)};
    const audit = createAuditLogger({ foldRefusals: false });
    // Alive for as long as the process, as a server's is: its warnings come from it.
    globalThis.audit = audit;
    const refusal = new SecurityError('unauthenticated', { reason: 'missing_token' });
    for (let i = 0; i < ${String(lines)}; i++) {
      audit.recordFailure(refusal, { operation: 'GET /v1/x', requestId: 'r-' + i, peer: '10.0.' + (i % 250) + '.1:4000' });
    }
    process.stderr.write('written\\n');
    ${then}`;
}

interface Ended {
  /** `exit <code>`, or `hung` when the child had not ended within the bound. */
  readonly end: string;
  readonly stderr: string;
  readonly lines: number;
  /** Lines read when the child said `exiting` on standard error (undefined: it did not). */
  readonly linesBeforeExit: number | undefined;
}

/**
 * Runs `script` with its standard output a pipe held open and read from `readAfterMs` after the
 * child has written its lines on (never when undefined), or from when it says `readFrom` on
 * standard error; waits at most `boundMs` for it to end. With `answerAfterLines`, says `read` on
 * the child's standard input once that many lines have been read.
 */
async function runChild(
  script: string,
  readAfterMs: number | undefined,
  boundMs: number,
  readFrom = 'written',
  answerAfterLines?: number,
): Promise<Ended> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => undefined);
  child.stdout.pause();
  let lines = 0;
  let linesBeforeExit: number | undefined;
  let stderr = '';
  let reader: ReturnType<typeof setTimeout> | undefined;
  let started = false;
  const read = (): void => {
    child.stdout.on('data', (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10) lines += 1;
      if (answerAfterLines !== undefined && lines >= answerAfterLines) child.stdin.end('read\n');
    });
    child.stdout.resume();
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
    if (linesBeforeExit === undefined && stderr.includes('exiting\n')) linesBeforeExit = lines;
    if (started || !stderr.includes(`${readFrom}\n`)) return;
    started = true;
    if (readFrom !== 'written') read();
    else if (readAfterMs !== undefined) reader = setTimeout(read, readAfterMs);
  });
  try {
    const end = await new Promise<string>((resolve) => {
      const bound = setTimeout(() => {
        resolve('hung');
      }, boundMs);
      child.on('close', (code, signal) => {
        clearTimeout(bound);
        resolve(`exit ${String(code ?? signal)}`);
      });
    });
    return { end, stderr, lines, linesBeforeExit };
  } finally {
    clearTimeout(reader);
    child.kill('SIGKILL');
  }
}

// About 5 MB of lines: far past what a pipe (64 KiB) takes while nobody reads it.
const LINES = 20_000;

describe('the audit log on standard output that nobody reads', () => {
  // pino flushed what it held at exit, retrying the full pipe for ever: a server stopped while
  // its log shipper hung never ended. The bound is far past the one-second stall it waits now.
  it('lets process.exit end the process, and says on standard error what was lost', async () => {
    const ended = await runChild(childScript(LINES, 'setTimeout(() => process.exit(3), 200);'), undefined, 15_000);
    expect(ended.end).toBe('exit 3');
    expect(ended.stderr).toMatch(
      /\[FLUXGUARD_AUDIT_WRITE_FAILED\] Warning: createAuditLogger: standard output did not take the last \d+ bytes of audit lines at exit \(it failed, or took nothing for 1000 ms\); they are lost/,
    );
    // Neither the lines nor their contents are repeated there.
    expect(ended.stderr).not.toMatch(/missing_token|r-\d/);
  }, 30_000);

  it('lets a process whose work is done end by itself', async () => {
    const ended = await runChild(childScript(LINES, 'setTimeout(() => {}, 200);'), undefined, 15_000);
    expect(ended.end).toBe('exit 0');
    expect(ended.stderr).toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED.*at exit/);
  }, 30_000);
});

describe('the audit log on standard output read late', () => {
  it('gives every line to a reader that comes back while the process runs, and loses none', async () => {
    // Stalled for 2 s, past the second after which it is tried again from a timer: every line
    // arrives while it runs, not only from the flush at exit. The child waits for the reader to
    // say it has them all (a fixed wait lost that race on a loaded machine), and ends by itself
    // after 20 s if it never does: without the retry the lines only come at exit.
    const ended = await runChild(
      childScript(
        LINES,
        `const end = () => { process.stderr.write('exiting\\n'); clearTimeout(fallback); process.stdin.destroy(); };
        const fallback = setTimeout(end, 20_000);
        process.stdin.once('data', end);`,
      ),
      2000,
      30_000,
      'written',
      LINES,
    );
    expect(ended.end).toBe('exit 0');
    expect(ended.linesBeforeExit).toBe(LINES);
    expect(ended.lines).toBe(LINES);
    expect(ended.stderr).not.toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED/);
  }, 40_000);

  it('gives every line to a reader that reads as the process exits', async () => {
    const ended = await runChild(childScript(LINES, 'process.exit(0);'), 0, 30_000);
    expect(ended.end).toBe('exit 0');
    expect(ended.lines).toBe(LINES);
    expect(ended.stderr).not.toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED/);
  }, 40_000);
});

describe('the audit log on standard output read from the exit on', () => {
  // Within the first second of a stall pino waits to try its refused write again, and its own
  // flush at exit left that chunk out: up to 16 KiB of lines were lost without a word.
  it('gives every line when the process exits while pino waits to try a write again', async () => {
    const ended = await runChild(
      childScript(LINES, "setTimeout(() => { process.stderr.write('exiting\\n'); process.exit(0); }, 400);"),
      undefined,
      30_000,
      'exiting',
    );
    expect(ended.end).toBe('exit 0');
    expect(ended.lines).toBe(LINES);
    expect(ended.stderr).not.toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED/);
  }, 40_000);
});

describe('the audit log on standard output that fails at exit', () => {
  // sonic-boom's flush at exit retries any error but EAGAIN for ever: lines still held when the
  // process exits in the same turn as it logged them, on a full disk or a closed pipe, hung it.
  it('lets process.exit end the process on a full disk (Linux /dev/full)', () => {
    const full = openSync('/dev/full', 'w');
    try {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', childScript(3, 'process.exit(0);')], {
        stdio: ['ignore', full, 'pipe'],
        timeout: 15_000,
        encoding: 'utf8',
      });
      expect(child.signal).toBeNull();
      expect(child.status).toBe(0);
      expect(child.stderr).toMatch(/FLUXGUARD_AUDIT_WRITE_FAILED.*at exit/);
    } finally {
      closeSync(full);
    }
  });

  it('lets process.exit end the process when its reader has gone', async () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', childScript(3, 'process.exit(0);')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // The reader goes before the lines are written, and the process exits in the same turn as
    // it logged them: they meet EPIPE at exit, before any asynchronous write could.
    child.stdout.destroy();
    const end = await new Promise<string>((resolve) => {
      const bound = setTimeout(() => {
        resolve('hung');
      }, 15_000);
      child.on('close', (code, signal) => {
        clearTimeout(bound);
        resolve(`exit ${String(code ?? signal)}`);
      });
    });
    child.kill('SIGKILL');
    expect(end).toBe('exit 0');
  }, 30_000);
});
