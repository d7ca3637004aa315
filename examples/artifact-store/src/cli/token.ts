// `pnpm -s token --sub NAME --roles a,b [--scopes x,y] [--ttl 1h]`: prints a development token
// signed with the key the reference servers trust (created on first use). `-s` because a plain
// `pnpm token` runs pnpm's own `token` command, not this script.
import { parseArgs } from 'node:util';
import { FluxguardError } from '@fluxguard/core';
import { loadServerConfig } from '../config.js';
import { parseDuration, signDevToken } from '../dev-material.js';

try {
  const { values } = parseArgs({
    options: {
      sub: { type: 'string' },
      roles: { type: 'string', default: '' },
      scopes: { type: 'string' },
      ttl: { type: 'string', default: '1h' },
      jti: { type: 'string' },
    },
    strict: true,
  });
  if (values.sub === undefined || values.sub === '') throw new Error('--sub NAME is required');
  const list = (text: string): string[] =>
    text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  const token = await signDevToken({
    devDir: loadServerConfig().devDir,
    subject: values.sub,
    roles: list(values.roles),
    ...(values.scopes === undefined ? {} : { scopes: list(values.scopes) }),
    ttlSeconds: parseDuration(values.ttl),
    ...(values.jti === undefined ? {} : { jti: values.jti }),
  });
  process.stdout.write(`${token}\n`);
} catch (err) {
  process.stderr.write(`token: ${err instanceof FluxguardError || err instanceof Error ? err.message : String(err)}\n`);
  process.stderr.write('usage: pnpm -s token --sub NAME --roles role1,role2 [--scopes s1,s2] [--ttl 1h] [--jti ID]\n');
  process.exitCode = 2;
}
