import { execFile } from 'node:child_process';

/** What a command printed and how it exited. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with empty standard input; never rejects on a non-zero exit. */
export function run(command: string, args: readonly string[], timeoutMs = 10_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(command, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err !== null && (err as { code?: unknown }).code === 'ENOENT') {
        reject(new Error(`${command} is required by this test (Debian: apt-get install ${command}) and was not found`));
        return;
      }
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end();
  });
}
