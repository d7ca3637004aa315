// Entry of a server process: one server of one variant, alone in its process (and, with taskset,
// alone on its CPU). The spec comes as JSON in FLUXGUARD_BENCH_SERVER; the port goes to stdout
// as `port=<n>`, the only line this process prints there.
import { startServer, type ServerSpec } from './servers.js';

const raw = process.env.FLUXGUARD_BENCH_SERVER;
if (raw === undefined) throw new Error('server-process.js is started by the bench (FLUXGUARD_BENCH_SERVER is not set)');
const port = await startServer(JSON.parse(raw) as ServerSpec);
process.stdout.write(`port=${String(port)}\n`);
