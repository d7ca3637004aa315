#!/usr/bin/env node
// Run before the tests (`pnpm test`) and by CI: the tests start real redis-servers (and a
// Redis Cluster with redis-cli) and use
// openssl and curl as outside judges. On a fresh machine with only Node and npm, this installs
// what is missing with the system's package manager when it can (Debian/Ubuntu apt-get as
// root, or through sudo without a password; Alpine apk; Homebrew), and otherwise says plainly
// what to install. It never installs anything that is already there.
import { spawnSync } from 'node:child_process';

/** Command → package name per package manager. */
const TOOLS = {
  'redis-server': { apt: 'redis-server', apk: 'redis', brew: 'redis' },
  // Creates the local Redis Cluster of the rate-limit tests.
  'redis-cli': { apt: 'redis-tools', apk: 'redis', brew: 'redis' },
  // Sends what Node's own HTTP/2 client refuses to (a header twice), as an attacker would.
  nghttp: { apt: 'nghttp2-client', apk: 'nghttp2', brew: 'nghttp2' },
  openssl: { apt: 'openssl', apk: 'openssl', brew: 'openssl' },
  curl: { apt: 'curl', apk: 'curl', brew: 'curl' },
};

const has = (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
const run = (command, args) => spawnSync(command, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;

const missing = Object.keys(TOOLS).filter((command) => !has(command));
if (missing.length === 0) process.exit(0);

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const sudo = isRoot ? [] : has('sudo') && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0 ? ['sudo', '-n'] : undefined;

function install(manager, names, update, installArgs) {
  if (sudo === undefined && manager !== 'brew') return false;
  const packages = missing.map((command) => TOOLS[command][names]);
  console.log(`fluxguard tests need ${missing.join(', ')}: installing ${packages.join(' ')} with ${manager}`);
  const prefix = manager === 'brew' ? [] : sudo;
  const [cmd, ...rest] = [...prefix, manager];
  if (update !== undefined && !run(cmd, [...rest, ...update])) return false;
  return run(cmd, [...rest, ...installArgs, ...packages]);
}

let installed = false;
if (has('apt-get')) installed = install('apt-get', 'apt', ['update', '-qq'], ['install', '-y', '-qq']);
else if (has('apk')) installed = install('apk', 'apk', undefined, ['add', '--no-cache']);
else if (has('brew')) installed = install('brew', 'brew', undefined, ['install']);

const still = Object.keys(TOOLS).filter((command) => !has(command));
if (installed && still.length === 0) process.exit(0);
console.error(
  `fluxguard tests need these commands, which are not installed and could not be installed here: ${still.join(', ')}.\n` +
    'Install them with your package manager (Debian/Ubuntu: sudo apt-get install redis-server redis-tools openssl curl nghttp2-client; ' +
    'macOS: brew install redis openssl curl nghttp2), then run the tests again.',
);
process.exit(1);
