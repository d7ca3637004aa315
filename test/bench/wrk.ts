import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { API_KEY_HEADER, HTTP_PATH } from './fixtures.js';
import type { Generator, LoadRequest, LoadResult } from './load.js';
import { runToEnd } from './processes.js';

// wrk reports through its `done` hook, one line of JSON, rather than its human output.
const REPORT = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'fluxguard-wrk {"requests":%d,"durationUs":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout))
end
`;

// Defining \`request\` makes wrk build every request in Lua, which costs the generator CPU: only
// the token pool needs it (a fixed token is a plain -H header).
const POOL = `
local tokens = {}
local next_index = 1
init = function(args)
  for line in io.lines(args[1]) do
    if line ~= "" then tokens[#tokens + 1] = line end
  end
  next_index = (tonumber(args[2]) or 0) % #tokens + 1
end
request = function()
  local token = tokens[next_index]
  next_index = next_index % #tokens + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token })
end
`;

// A new API key on every request: the thread's own counter and a random part, so that no two
// requests (and no two runs) send the same one.
const MADE_UP_API_KEYS = `
math.randomseed(os.time())
local sent = 0
local run = tostring(math.random(1, 1000000000))
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, { ["${API_KEY_HEADER}"] = "made-up-" .. run .. "-" .. sent })
end
`;

interface WrkReport {
  readonly requests: number;
  readonly durationUs: number;
  readonly non2xx: number;
  readonly connect: number;
  readonly read: number;
  readonly write: number;
  readonly timeout: number;
}

/** HTTP/1.1 load from wrk (one thread, on the load CPU); plain HTTP only (wrk has no client certificates). */
export function wrkGenerator(wrk: string, loadCpu: readonly string[], scratch: string): Generator {
  const reportScript = join(scratch, 'report.lua');
  const poolScript = join(scratch, 'pool.lua');
  const apiKeysScript = join(scratch, 'api-keys.lua');
  writeFileSync(reportScript, REPORT);
  writeFileSync(poolScript, POOL + REPORT);
  writeFileSync(apiKeysScript, MADE_UP_API_KEYS + REPORT);
  const scriptFor = { none: reportScript, repeated: reportScript, pool: poolScript, 'made-up-api-keys': apiKeysScript };

  return async (request: LoadRequest): Promise<LoadResult> => {
    if (request.transport !== 'http') throw new Error(`wrk cannot load ${request.transport}`);
    const { tokens } = request;
    const args = ['-t1', `-c${String(request.shape.connections)}`, `-d${String(request.seconds)}s`];
    if (tokens.kind === 'repeated') args.push('-H', `Authorization: Bearer ${tokens.token}`);
    args.push('-s', scriptFor[tokens.kind]);
    args.push(`http://127.0.0.1:${String(request.port)}${HTTP_PATH}`);
    if (tokens.kind === 'pool') args.push('--', tokens.file, String(tokens.start));

    const run = await runToEnd(loadCpu, wrk, args);
    const line = run.stdout.split('\n').find((l) => l.startsWith('fluxguard-wrk '));
    if (run.code !== 0 || line === undefined) {
      throw new Error(`wrk failed (exit ${String(run.code)}): ${run.stderr.trim() || run.stdout.trim()}`);
    }
    const report = JSON.parse(line.slice('fluxguard-wrk '.length)) as WrkReport;
    const seconds = report.durationUs / 1e6;
    return {
      requests: report.requests,
      ok: report.requests - report.non2xx,
      refused: report.non2xx,
      other: report.connect + report.read + report.write + report.timeout,
      seconds,
      generatorCpu: run.cpuSeconds === undefined ? undefined : run.cpuSeconds / run.wallSeconds,
    };
  };
}
