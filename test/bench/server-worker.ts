// Worker-thread entry: the servers under test run on their own thread (and so, on a 2-core
// machine, on their own core), away from the load generator of the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { startServers, type ServerWorkerData } from './servers.js';

if (parentPort === null) throw new Error('server-worker.js runs as a worker thread of run.js');
const ports = await startServers(workerData as ServerWorkerData);
parentPort.postMessage(ports);
