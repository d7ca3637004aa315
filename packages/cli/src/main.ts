#!/usr/bin/env node
// The `fluxguard` command (package.json `bin`); everything it does is `runCli`.
import { runCli } from './cli.js';

process.exitCode = await runCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
});
