// `pnpm start`: runs both reference servers, each in its own process (each can also start
// alone: `pnpm start:grpc`, `pnpm start:http`). Stops both when either stops, on Ctrl-C, or when
// pnpm is killed.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const servers = [
  ['grpc', fileURLToPath(new URL('./grpc-server/dist/main.js', import.meta.url))],
  ['http', fileURLToPath(new URL('./http-server/dist/main.js', import.meta.url))],
];

let stopping = false;
const children = servers.map(([name, entry]) => {
  const child = spawn(process.execPath, [entry], { stdio: 'inherit', env: process.env });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${name} server stopped (${signal ?? `exit ${code}`}); stopping the other one`);
      stop(code ?? 1);
    }
  });
  return child;
});

function stop(exitCode) {
  stopping = true;
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  process.exitCode = exitCode;
}

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => stop(0));

// pnpm passes no signal on when it is killed itself (`kill <pid of pnpm>`): this process is
// left to another parent then, and the servers stop with it instead of holding their ports.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent && !stopping) {
    console.error('the command that started the servers is gone; stopping them');
    stop(0);
  }
}, 500).unref();
